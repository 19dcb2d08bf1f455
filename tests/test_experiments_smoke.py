"""Every experiment runs to completion, shrunk to seconds, on the real data in ../shared/data.

The same shrinking works for users: append the overrides in SMOKE to any experiment's command line
to check it end to end before the full-size run (README, "Experiments").
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from advlab import naming
from advlab.config import experiment_names, experiment_option
from advlab.pipeline import run
from advlab.verdict import PASS
from tests.conftest import CIFAR10_ARCHIVE, CIFAR10_SHARED_MD5, GENDER_DIR, require

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SMOKE = [
    "train.epochs=1",
    "data.limit_train=256",
    "data.limit_test=64",
    "eval.n_examples=32",
    "eval.eps=[0,8]",
    "eval.grid_n=2",
    "eval.sanity.convergence_n=16",
    "attacks.pgd.steps=2",
    "train.adversarial.steps=2",
    "train.adversarial.val_robust_n=16",
    "train.adversarial.val_robust_steps=2",
]


@pytest.fixture(scope="module")
def course_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder laid out like the course's DataBases/ (data_10k.bin, data_test10k.bin, ...),
    holding the shared faces under the course's file names, so the gender experiments run with
    data.root alone, as a student runs them."""
    shared = require(GENDER_DIR)
    folder = tmp_path_factory.mktemp("DataBases")
    for course_tag, shared_tag in (("1k", "1k"), ("10k", "1k"), ("test10k", "test1k")):
        for kind in ("data", "gender"):
            (folder / f"{kind}_{course_tag}.bin").symlink_to(shared / f"{kind}_{shared_tag}.bin")
    return folder


def _data_overrides(experiment: str, course_folder: Path) -> list[str]:
    data = experiment_option(experiment, "data")
    if data == "gender":
        return [f"data.root={course_folder}"]  # no tags: the course's are the defaults
    if data == "cifar10":
        archive = require(CIFAR10_ARCHIVE)
        # The shared archive is a reconstruction with its own MD5 (see its README).
        return [
            f"data.root={archive.parent}",
            f"data.md5={CIFAR10_SHARED_MD5}",
            "data.download=false",
        ]
    return []


def _run_smoke(
    make_cfg, course_folder: Path, experiment: str, *extra: str
) -> tuple[dict[str, float], object]:
    data = _data_overrides(experiment, course_folder)
    cfg = make_cfg(f"+experiment={experiment}", *data, *SMOKE, *extra)
    return run(cfg), cfg


# Every experiment of conf/experiment/; transfer needs a source run: it has its own test below.
@pytest.mark.parametrize("experiment", [e for e in experiment_names() if e != "transfer"])
def test_experiment_runs_end_to_end(make_cfg, course_folder: Path, experiment: str) -> None:
    metrics, cfg = _run_smoke(make_cfg, course_folder, experiment, "report.enabled=true")
    assert naming.CLEAN_ACC in metrics
    assert naming.robust_acc_key(cfg.eval.attacks[0], 8) in metrics
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    experiment_id = client.get_experiment_by_name(cfg.tracking.experiment).experiment_id
    (mlflow_run,) = client.search_runs([experiment_id])
    assert mlflow_run.info.status == "FINISHED"
    assert list(Path(cfg.report.dir).glob("*.pdf"))
    # Every zoo model is bounded: the certified points were compared with every attack's, and
    # none was broken (a broken certificate is a bug in the bounds or in an attack).
    run_dir = Path(mlflow_run.data.tags[naming.RUN_DIR_TAG])
    checks = json.loads((run_dir / naming.VERDICT_JSON).read_text())["checks"]
    (sound,) = [c for c in checks if c["name"] == "certificate_sound"]
    assert sound["status"] == PASS and "not applicable" not in sound["evidence"], sound


def test_transfer_experiment_crafts_on_another_run(make_cfg, course_folder: Path) -> None:
    _source_metrics, source_cfg = _run_smoke(
        make_cfg, course_folder, "gender_cnn", "report.enabled=false"
    )
    client = MlflowClient(tracking_uri=source_cfg.tracking.uri)
    experiment_id = client.get_experiment_by_name("gender_cnn").experiment_id
    (source,) = client.search_runs([experiment_id])
    # By MLflow run id, as a user picks it in the UI (run directories are tested in test_evaluate)
    source_id = source.info.run_id
    metrics, cfg = _run_smoke(
        make_cfg,
        course_folder,
        "transfer",
        f"eval.transfer_from=[{source_id}]",
        "report.enabled=false",
    )
    assert naming.CLEAN_ACC in metrics
    (target,) = client.search_runs([client.get_experiment_by_name("transfer").experiment_id])
    transfer_csv = Path(target.data.tags["advlab.run_dir"]) / "results" / "transfer.csv"
    assert source_id in transfer_csv.read_text()  # the matrix names the source by its run id


def test_sweep_experiment_runs_as_a_multirun(tmp_path, course_folder: Path) -> None:
    """`-m` runs the experiment's sweep; here shrunk to 2 jobs by fixing the other swept keys."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "advlab",
            "-m",
            "+experiment=gender_overfitting",
            *_data_overrides("gender_overfitting", course_folder),
            *SMOKE,
            f"paths.runs_dir={tmp_path / 'runs'}",
            "model.dropout=0.0,0.5",  # data.limit_train is fixed by SMOKE
            "optimizer.weight_decay=0.0",
            "train.early_stopping.enabled=true",
            "seed=0",  # one of the experiment's seeds
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    experiment_id = client.get_experiment_by_name("gender_overfitting").experiment_id
    runs = client.search_runs([experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 2
    assert {r.data.params["model.dropout"] for r in children} == {"0.0", "0.5"}
    assert all(r.info.status == "FINISHED" for r in runs)
