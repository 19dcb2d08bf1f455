"""Every config option and experiment composes; bad values are refused with one clear line."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf

from advlab.config import (
    CONF_DIR,
    PROJECT_ROOT,
    experiment_names,
    experiment_option,
    experiment_sweeps,
)
from advlab.errors import ConfigError
from advlab.validate import validate_config
from tests.conftest import compose_config

GROUPS = ["data", "model", "optimizer"]
EXPERIMENTS = experiment_names()


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize(
    ("group", "option"), [(g, o) for g in GROUPS for o in _options(g)], ids=lambda v: str(v)
)
def test_every_option_composes_and_validates(group: str, option: str) -> None:
    overrides = [f"{group}={option}"]
    if group == "data" and option in ("gender", "folder"):
        overrides.append("data.root=/somewhere")
    cfg = compose_config(overrides)
    OmegaConf.resolve(cfg)
    validate_config(cfg)


def test_contract_options_exist() -> None:
    # Other issues and users build on these names.
    assert set(_options("data")) == {"mnist", "gender", "cifar10", "folder"}
    assert set(_options("model")) == {
        "perceptron",
        "course_cnn",
        "lenet5",
        "mnist_cnn",
        "vgg_small",
        "resnet_small",
    }
    assert set(_options("optimizer")) == {"sgd", "adam", "adamw"}


def test_every_attack_option_is_composed_under_attacks() -> None:
    cfg = compose_config()
    assert set(cfg.attacks) == set(_options("attack"))
    assert cfg.attacks.pgd.steps == 10
    assert compose_config(["attacks.pgd.steps=20"]).attacks.pgd.steps == 20


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_validates(experiment: str) -> None:
    # transfer refuses to start without its sources (tests/test_cli.py)
    sources = ["eval.transfer_from=[somerun]"] if experiment == "transfer" else []
    cfg = compose_config([f"+experiment={experiment}", "data.root=/somewhere", *sources])
    OmegaConf.resolve(cfg)
    validate_config(cfg)


def test_the_experiment_list_is_conf_experiment_with_each_one_s_data_and_sweep() -> None:
    assert EXPERIMENTS == sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
    for experiment in EXPERIMENTS:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("config", [f"+experiment={experiment}"], return_hydra_config=True)
        assert experiment_option(experiment, "data") == cfg.data.name, experiment
        assert experiment_sweeps(experiment) == bool(cfg.hydra.sweeper.params), experiment
    assert "transfer" in experiment_names(data="gender")
    assert experiment_names(data="mnist") == ["mnist_certified", "quickstart"]


def test_paths_resolve_against_the_project_root() -> None:
    cfg = compose_config()
    assert cfg.paths.root == str(PROJECT_ROOT)
    assert cfg.paths.runs_dir == str(PROJECT_ROOT / "runs")


@pytest.mark.parametrize(
    "override",
    [
        "train.epoch=3",
        "model.dropuot=0.5",
        "train.epochs=many",
        "eval.eps=oops",
        "model=resnet9000",
        # closed choices are enum-typed in the schemas: refused before validation even runs
        "device=tpu",
        "train.scheduler.name=exponential",
        "train.adversarial.method=free_at",
        "train.early_stopping.monitor=train_loss",
        "attacks.fgsm.targeted=most_likely",
    ],
)
def test_typos_wrong_types_and_unknown_options_fail_at_compose_time(override: str) -> None:
    with pytest.raises((ConfigCompositionException, MissingConfigException)):
        compose_config([override])


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("eval.eps=[0,-2,4]", "eval.eps"),
        ("model.dropout=1.0", "model.dropout"),
        ("train.early_stopping.patience=-1", "train.early_stopping.patience"),
        ("train.epochs=0", "train.epochs"),
        ("optimizer.lr=0", "optimizer.lr"),
        ("train.batch_size=0", "train.batch_size"),
        ("train.adversarial.eps=-8", "train.adversarial.eps"),
        ("train.early_stopping.monitor=val_pgd_acc", "train.early_stopping.monitor"),
        (
            "train.early_stopping.monitor=val_acc train.early_stopping.mode=min",
            "train.early_stopping.mode",
        ),
        ("eval.attacks=[fgsm,nope]", "eval.attacks"),
        ("data.val_fraction=1.5", "data.val_fraction"),
        ("optimizer=sgd optimizer.momentum=1.0", "optimizer.momentum"),
        ("train.scheduler.decay_rate=0", "train.scheduler.decay_rate"),
        ("data=folder data.root=/x data.image_size=3", "data.image_size"),
    ],
)
def test_out_of_range_values_are_refused_with_the_key_named(override: str, key: str) -> None:
    cfg = compose_config(override.split())
    with pytest.raises(ConfigError) as info:
        validate_config(cfg)
    message = str(info.value)
    assert message.startswith(f"{key}="), message
    assert "\n" not in message


# The bounds that used to be checked in several modules, with copies that disagreed; each now has
# one home (advlab.validate) and these are the answers.
def test_staircase_decay_rate_one_means_constant_and_is_accepted() -> None:
    validate_config(
        compose_config(["train.scheduler.name=staircase", "train.scheduler.decay_rate=1"])
    )
    with pytest.raises(ConfigError, match=r"^train.scheduler.decay_rate=1.5: must be in \(0, 1\]$"):
        validate_config(compose_config(["train.scheduler.decay_rate=1.5"]))


def test_momentum_of_one_or_more_is_refused() -> None:
    validate_config(compose_config(["optimizer=sgd", "optimizer.momentum=0.9"]))
    with pytest.raises(ConfigError, match=r"^optimizer.momentum=1.5: must be in \[0, 1\)$"):
        validate_config(compose_config(["optimizer=sgd", "optimizer.momentum=1.5"]))


def test_folder_image_size_needs_four_pixels() -> None:
    base = ["data=folder", "data.root=/x"]
    validate_config(compose_config([*base, "data.image_size=4"]))
    with pytest.raises(ConfigError, match=r"^data.image_size=2: must be >= 4$"):
        validate_config(compose_config([*base, "data.image_size=2"]))


def test_val_fraction_default_is_the_schemas_in_the_config_and_in_the_split() -> None:
    from advlab.config import DataConf
    from advlab.data import load_data

    cfg = compose_config(["data.limit_train=1000"])
    assert cfg.data.val_fraction == DataConf.val_fraction == 0.1
    splits = load_data(cfg.data, seed=0, cache_dir=PROJECT_ROOT / "data")
    assert len(splits.train) + len(splits.val) == 1000
    assert abs(len(splits.val) - 100) <= 5  # stratified per class, so rounding moves a few


def test_eps_grid_is_sorted_and_deduplicated_once_at_validation() -> None:
    cfg = compose_config(["eval.eps=[8,0,4,8]"])
    validate_config(cfg)
    assert list(cfg.eval.eps) == [0.0, 4.0, 8.0]


def test_gender_without_root_says_how_to_pass_it() -> None:
    cfg = compose_config(["data=gender"])
    with pytest.raises(ConfigError, match="data.root is required"):
        validate_config(cfg)


@pytest.mark.slow
def test_cli_refuses_a_bad_value_with_one_line_before_any_work(tmp_path) -> None:
    # How fast (issue 2: under 5 s) is a benchmark (benchmarks/bench_e2e.py), not a test.
    proc = subprocess.run(
        [sys.executable, "-m", "advlab", "eval.eps=[0,-1]", f"paths.runs_dir={tmp_path}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # the cwd must not matter
        timeout=60,
    )
    assert proc.returncode == 2
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "eval.eps" in errors[0], proc.stdout + proc.stderr
    assert not (tmp_path / "mlflow.db").exists()  # nothing was started


@pytest.mark.slow
def test_cli_help_shows_usage_experiments_and_options() -> None:
    # Its start-up time is a benchmark (benchmarks/bench_e2e.py), not a test.
    proc = subprocess.run(
        [sys.executable, "-m", "advlab", "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("advlab: train a CNN")
    experiments = next(line for line in proc.stdout.splitlines() if line.startswith("experiment:"))
    assert set(EXPERIMENTS) <= {e.strip() for e in experiments.split(":", 1)[1].split(",")}
    assert "model: course_cnn" in proc.stdout


@pytest.mark.parametrize("experiment", [e for e in EXPERIMENTS if e != "quickstart"])
def test_experiments_do_not_inherit_the_quickstart_preset(experiment: str) -> None:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[f"+experiment={experiment}", "data.root=/somewhere"],
            return_hydra_config=True,
        )
    assert cfg.hydra.runtime.choices.preset == "none"


def test_default_run_is_the_quickstart_experiment() -> None:
    plain = compose_config()
    named = compose_config(["+experiment=quickstart"])
    assert OmegaConf.to_container(plain, resolve=True) == OmegaConf.to_container(
        named, resolve=True
    )
    assert plain.model.dropout == 0.25 and plain.tracking.experiment == "quickstart"


def test_threads_must_be_positive() -> None:
    with pytest.raises(ConfigError, match=r"^threads=0"):
        validate_config(compose_config(["threads=0"]))
    validate_config(compose_config(["threads=1"]))


@pytest.mark.parametrize("data", ["gender", "cifar10", "folder"])
def test_choosing_another_dataset_drops_the_quickstart_sizing_and_name(data: str) -> None:
    cfg = compose_config([f"data={data}", "data.root=/somewhere"])
    quickstart = compose_config()
    assert cfg.tracking.experiment == data  # not filed under the quickstart's MLflow experiment
    assert cfg.eval.eps != quickstart.eval.eps and max(cfg.eval.eps) == 16  # not MNIST's 64/255
    assert cfg.eval.n_examples == 1000 and cfg.model.dropout == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["cifar10_adversarial_training", "gender_overfitting"])
def test_a_sweep_experiment_without_multirun_is_refused_naming_m(tmp_path, experiment) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "advlab", f"+experiment={experiment}", "data.root=/somewhere"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "run it with -m" in errors[0], proc.stdout + proc.stderr


@pytest.mark.parametrize("method", ["pgd", "fgsm_rs", "nfgsm", "trades"])
def test_one_spelling_turns_adversarial_training_on_with_its_consequences(method: str) -> None:
    cfg = compose_config(["+experiment=cifar10_fool", f"train.adversarial.method={method}"])
    validate_config(cfg)
    assert cfg.train.adversarial.val_robust is True
    assert cfg.train.early_stopping.monitor == "val_pgd_acc"
    assert cfg.train.early_stopping.mode == "max"


def test_standard_training_defaults_stop_on_validation_loss() -> None:
    cfg = compose_config()
    validate_config(cfg)
    assert cfg.train.adversarial.val_robust is False
    assert (cfg.train.early_stopping.monitor, cfg.train.early_stopping.mode) == ("val_loss", "min")
    explicit = compose_config(["train.early_stopping.monitor=val_acc"])
    validate_config(explicit)
    assert explicit.train.early_stopping.mode == "max"  # the direction val_acc improves in


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model.dropuot=0.5", "Key 'dropuot' not in 'CourseCnnConf'"),
        ("model=resnet9000", "options in 'model': course_cnn, lenet5"),
        ("device=tpu", "expected one of [auto, cpu, cuda]"),
        ("train.epochs=many", "'many' of type 'str' could not be converted to Integer"),
    ],
)
def test_cli_composition_errors_are_one_line(tmp_path, override: str, expected: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "advlab", override, f"paths.runs_dir={tmp_path}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert proc.returncode == 2
    assert len(lines) == 1 and lines[0].startswith("advlab: error: "), lines
    assert expected in lines[0]


@pytest.mark.slow
def test_the_report_app_has_its_own_help() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "advlab.report", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("advlab.report: a PDF report of MLflow runs")
    assert "report.experiment" in proc.stdout and "python -m advlab +experiment" not in proc.stdout


@pytest.mark.slow
def test_a_sweep_experiment_with_every_swept_key_fixed_runs_that_point(tmp_path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "advlab",
            "+experiment=gender_overfitting",
            # every key it sweeps, fixed: one point of the sweep
            "data.limit_train=1000",
            "model.dropout=0.5",
            "optimizer.weight_decay=0.0",
            "train.early_stopping.enabled=true",
            "seed=0",
            f"data.root={tmp_path / 'nowhere'}",
            f"paths.runs_dir={tmp_path / 'runs'}",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=180,
    )
    out = proc.stdout + proc.stderr
    assert "run it with -m" not in out  # not refused as a sweep: it ran, and met the missing data
    assert "nowhere" in out and proc.returncode == 2, out[-2000:]
