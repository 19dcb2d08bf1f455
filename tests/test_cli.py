"""The command line's traps: each mistake is one line with exit status 2, or just works."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from advlab.__main__ import hydra_argv, resolve_cli_paths
from advlab.config import PROJECT_ROOT
from advlab.errors import ConfigError
from advlab.validate import validate_config
from tests.conftest import compose_config


def _advlab(*args: str, module: str = "advlab", cwd: Path = PROJECT_ROOT):
    # PYTHONPATH: this project's advlab, from whatever folder the command starts in
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "ADVLAB_NO_PROGRESS": "1"}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env=env,
    )


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("advlab: error: "), proc.stderr
    return lines[0]


def test_experiment_without_plus_names_the_plus_form() -> None:
    line = _one_error_line(_advlab("experiment=quickstart"))
    assert "+experiment=quickstart" in line


@pytest.mark.parametrize(
    "args",
    [
        ["seed=3", "--cfg", "job", "model.dropout=0.5"],
        ["seed=3", "model.dropout=0.5", "--cfg=job"],
        ["--cfg", "job", "seed=3", "model.dropout=0.5"],
    ],
)
def test_cfg_is_accepted_anywhere(args: list[str]) -> None:
    proc = _advlab(*args)
    assert proc.returncode == 0, proc.stderr
    cfg = yaml.safe_load(proc.stdout)
    assert cfg["seed"] == 3 and cfg["model"]["dropout"] == 0.5


def test_hydra_flags_go_first_and_overrides_keep_their_order() -> None:
    assert hydra_argv(["a=1", "--cfg", "job", "b=2", "--resolve", "c=3"]) == [
        "--cfg",
        "job",
        "--resolve",
        "a=1",
        "b=2",
        "c=3",
    ]
    assert hydra_argv(["a=1", "-m", "b=2,3"]) == ["-m", "a=1", "b=2,3"]
    assert hydra_argv(["a=1", "--info", "defaults", "b=2"]) == ["--info", "defaults", "a=1", "b=2"]


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["seed=1", "--cfg"], "--cfg needs one of job, hydra, all"),
        (["--cfg", "yes", "seed=1"], "got yes"),
        (["-m", "--cfg", "job", "seed=1"], "--cfg and -m cannot be combined"),
        (["--dry-run"], "unknown option --dry-run"),
        (["-m", "experiment=gender_fool"], "+experiment=gender_fool"),
    ],
)
def test_argument_mistakes_are_one_line(args: list[str], named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace("+", r"\+")):
        hydra_argv(args)


def test_argument_mistakes_exit_2_with_one_line_before_hydra() -> None:
    assert "cannot be combined" in _one_error_line(_advlab("-m", "--cfg", "job"))


def test_a_relative_data_root_typed_on_the_command_line_means_the_start_folder(
    tmp_path: Path,
) -> None:
    cfg = compose_config(["data=gender", "data.root=DataBases", "train.resume=ckpt/last.pt"])
    start = tmp_path / "work"
    (start / "runs").mkdir(parents=True)
    overrides = ["data=gender", "data.root=DataBases", "train.resume=ckpt/last.pt"]
    overrides.append("eval.transfer_from=[runs,0123456789abcdef0123456789abcdef]")
    cfg.eval.transfer_from = ["runs", "0123456789abcdef0123456789abcdef"]
    resolve_cli_paths(cfg, overrides, str(start))
    assert cfg.data.root == str(start / "DataBases")
    assert cfg.train.resume == str(start / "ckpt" / "last.pt")
    # an entry that exists from the start folder is a path; anything else stays (a run id)
    assert list(cfg.eval.transfer_from) == [str(start / "runs"), "0123456789abcdef0123456789abcdef"]


def test_paths_from_conf_keep_meaning_the_project(tmp_path: Path) -> None:
    cfg = compose_config(["data=cifar10"])
    resolve_cli_paths(cfg, ["data=cifar10"], str(tmp_path))
    assert cfg.data.root == str(PROJECT_ROOT / "data" / "cifar10")  # not typed: the project's
    assert cfg.paths.runs_dir == str(PROJECT_ROOT / "runs")


@pytest.mark.slow
def test_relative_data_root_from_another_folder_reaches_the_loader(tmp_path: Path) -> None:
    proc = _advlab(
        "data=gender",
        "data.root=DataBases",
        "tracking.enabled=false",
        "report.enabled=false",
        f"paths.runs_dir={tmp_path / 'runs'}",
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    assert f"data.root={tmp_path / 'DataBases'}: folder not found" in proc.stdout + proc.stderr


def test_transfer_without_sources_is_refused_in_one_line() -> None:
    cfg = compose_config(["+experiment=transfer", "data.root=/somewhere"])
    with pytest.raises(ConfigError) as info:
        validate_config(cfg)
    message = str(info.value)
    assert message.startswith("eval.transfer_from is required") and "\n" not in message
    given = compose_config(["+experiment=transfer", "data.root=/x", "eval.transfer_from=[run]"])
    validate_config(given)


def test_audit_help_is_the_audit_s() -> None:
    proc = _advlab("--help", module="advlab.audit")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("advlab.audit:")
    assert "audit.run" in proc.stdout and "python -m advlab +experiment" not in proc.stdout


def test_main_help_lists_every_config_group_and_its_options() -> None:
    # the help builds Hydra's repository once (advlab.cli.one_repository_per_help): it must list
    # what the conf/ folders hold, group by group
    proc = _advlab("--help")
    assert proc.returncode == 0, proc.stderr
    listed = dict(
        line.split(": ", 1)
        for line in proc.stdout.split("== Configuration groups ==")[1]
        .split("== Config ==")[0]
        .splitlines()
        if ": " in line
    )
    conf = PROJECT_ROOT / "conf"
    for group in ("model", "experiment", "adversarial", "data"):
        options = sorted(p.stem for p in (conf / group).glob("*.yaml"))
        assert listed[group].split(", ") == options


def test_the_help_patch_is_undone() -> None:
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    from advlab.cli import one_repository_per_help

    build = ConfigLoaderImpl._parse_overrides_and_create_caching_repo
    with one_repository_per_help():
        assert ConfigLoaderImpl._parse_overrides_and_create_caching_repo is not build
    assert ConfigLoaderImpl._parse_overrides_and_create_caching_repo is build


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    """The Makefile in a folder laid out like the project, with a store, run dirs and a PDF."""
    shutil.copy(PROJECT_ROOT / "Makefile", tmp_path / "Makefile")
    for path in ("runs/mlartifacts/1/a/model.pt", "runs/hydra/2025-01-01/x/results.json"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("x")
    (tmp_path / "runs" / "mlflow.db").write_text("store")
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "r.pdf").write_text("pdf")
    return tmp_path


def test_make_clean_keeps_the_store_and_clean_store_deletes_it_and_says_so(
    project_copy: Path,
) -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    clean = subprocess.run(["make", "clean"], cwd=project_copy, capture_output=True, text=True)
    assert clean.returncode == 0, clean.stderr
    assert (project_copy / "runs" / "mlflow.db").read_text() == "store"
    assert (project_copy / "runs" / "mlartifacts" / "1" / "a" / "model.pt").exists()
    assert not (project_copy / "runs" / "hydra").exists()
    assert not (project_copy / "reports" / "r.pdf").exists()
    assert "make clean-store" in clean.stdout
    store = subprocess.run(
        ["make", "clean-store"], cwd=project_copy, capture_output=True, text=True
    )
    assert store.returncode == 0, store.stderr
    assert not (project_copy / "runs" / "mlflow.db").exists()
    assert not (project_copy / "runs" / "mlartifacts").exists()
    assert "deleted the MLflow store" in store.stdout


def test_every_script_with_a_shebang_is_executable() -> None:
    scripts = [p for p in (PROJECT_ROOT / "scripts").rglob("*") if p.is_file()]
    with_shebang = [p for p in scripts if p.read_bytes().startswith(b"#!")]
    assert with_shebang
    not_executable = [str(p) for p in with_shebang if not os.access(p, os.X_OK)]
    assert not not_executable, not_executable
