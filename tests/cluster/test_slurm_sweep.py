"""advlab sweeps on a real one-node SLURM into a real `mlflow server` on PostgreSQL.

The commands are the ones docs/tracking.md shows a lab ("SLURM through Hydra's submitit
launcher"), shrunk to seconds with the smoke overrides: a 4-job sweep that must finish under its
parent run, its model served back through the server, its sweep report built from the server,
and one long job cancelled with `scancel` that must end KILLED.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from mlflow.entities import Run
from pypdf import PdfReader

from advlab import naming
from advlab.config import PROJECT_ROOT
from advlab.data import load_data
from advlab.data.base import batches
from advlab.models.io import load_model
from scripts.cluster.box import ClusterBox
from tests.conftest import compose_config
from tests.test_experiments_smoke import SMOKE

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.e2e]

DROPOUTS = (0.0, 0.25, 0.5, 0.75)
SWEEP_TIMEOUT_S = 420  # 4 jobs, 2 at a time on 2 cores, ~1 min; a stuck job fails, not hangs
# Each job: 1 CPU, 1 torch thread, 1 GB, 10 min at most; the job shell activates this .venv.
LAUNCHER = [
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    "hydra.launcher.timeout_min=10",
    f"hydra.launcher.setup=['source {PROJECT_ROOT / '.venv' / 'bin' / 'activate'}']",
]


def _app_overrides(box: ClusterBox, tmp: Path, experiment: str) -> list[str]:
    """What every job of these sweeps runs: the smoke-sized quickstart, tracked on the box."""
    return [
        f"paths.runs_dir={tmp / 'runs'}",
        f"tracking.uri={box.mlflow_uri}",
        f"tracking.experiment={experiment}",
        "report.enabled=false",  # the sweep report below is built from the server instead
        "device=cpu",
        "threads=1",
        *SMOKE,
    ]


def _advlab(box: ClusterBox, *args: str, module: str = "advlab") -> subprocess.Popen:
    """``python -m <module> args`` from the project root, as a user types it, on the box."""
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=PROJECT_ROOT,
        env=box.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(proc: subprocess.Popen, timeout: float, box: ClusterBox) -> str:
    """Wait for ``proc``; its output, or a failure quoting it and the daemons' logs."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"still running after {timeout:.0f} s:\n{out[-4000:]}\n{box.log_tails()}")
    finally:  # Ctrl-C included: no process of the test outlives it (the box cancels the jobs)
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    if proc.returncode != 0:
        pytest.fail(f"exit {proc.returncode}:\n{out[-4000:]}\n{box.log_tails()}")
    return out


def _poll(what: str, value: Callable[[], object], timeout: float, box: ClusterBox) -> object:
    deadline = time.monotonic() + timeout
    while not (found := value()):
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not seen within {timeout:.0f} s\n{box.log_tails()}")
        time.sleep(1)
    return found


def _runs(client: MlflowClient, experiment: str) -> list[Run]:
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id]) if found else []


@pytest.fixture(scope="module")
def sweep(box: ClusterBox, tmp_path_factory: pytest.TempPathFactory):
    """The 4-job sweep over model.dropout on SLURM (docs/tracking.md's command), run to the end."""
    tmp = tmp_path_factory.mktemp("sweep")
    app = _app_overrides(box, tmp, "cluster")
    dropouts = "model.dropout=" + ",".join(map(str, DROPOUTS))
    launcher = ["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=0", *LAUNCHER]
    _finish(_advlab(box, "-m", *launcher, *app, dropouts), SWEEP_TIMEOUT_S, box)
    client = MlflowClient(box.mlflow_uri)
    runs = _runs(client, "cluster")
    (parent,) = [r for r in runs if r.data.tags.get("advlab.sweep_parent") == "true"]
    children = [r for r in runs if r is not parent]
    return app, client, parent, children, tmp


def test_every_job_finishes_under_the_sweep_parent_with_its_metrics(sweep) -> None:
    _app, client, parent, children, tmp = sweep
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["jobs"] == 4 and parent.data.metrics["jobs_finished"] == 4
    assert sorted(float(r.data.params["model.dropout"]) for r in children) == list(DROPOUTS)
    expected = {naming.CLEAN_ACC, naming.robust_acc_key("pgd", 8), naming.asr_key("fgsm", 8)}
    for run in children:
        assert run.info.status == "FINISHED", run.info.run_name
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["advlab.sweep"] == parent.data.tags["advlab.sweep"]
        assert expected <= set(run.data.metrics), run.info.run_name
        # the job's own point, rerunnable alone, not submitit's `_submit.py <folder>`
        # (a descriptive fact: in results/run_info.json, served like every artifact)
        local = client.download_artifacts(
            run.info.run_id, naming.RUN_INFO_JSON, str(tmp / run.info.run_id)
        )
        command = naming.run_info(run.data.tags, json.loads(Path(local).read_text()))[
            naming.COMMAND_INFO
        ]
        assert command.startswith("python -m advlab ") and "model.dropout=" in command, command
        # proxied by the server: the jobs never wrote to the artifact folder themselves
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")


def test_a_jobs_model_downloads_through_the_server_and_reloads_to_its_accuracy(
    sweep, box: ClusterBox
) -> None:
    app, client, _parent, children, tmp = sweep
    run = max(children, key=lambda r: float(r.data.params["model.dropout"]))
    local = client.download_artifacts(run.info.run_id, "model/model.pt", str(tmp / "download"))
    assert list(box.artifacts.rglob("model.pt"))  # stored where the server keeps artifacts
    model, _spec = load_model(Path(local))
    # the job's config: the sweep's overrides at this job's point
    cfg = compose_config([*app, f"model.dropout={run.data.params['model.dropout']}"])
    from advlab.attacks.evaluate import select_subset

    data = load_data(cfg.data, seed=cfg.seed, cache_dir=Path(cfg.paths.cache_dir))
    rows = select_subset(len(data.test), cfg.eval.n_examples, cfg.seed)
    correct = 0
    with torch.no_grad():
        for images, labels in batches(
            data.test.subset(rows), 64, shuffle=False, generator=None, augment=None, device="cpu"
        ):
            correct += int((model.eval()(images).argmax(1) == labels).sum())
    # the served weights are the ones the job evaluated: same accuracy on the same points
    assert correct / len(rows) == pytest.approx(run.data.metrics[naming.CLEAN_ACC], abs=1e-9)


def test_the_sweep_report_is_built_from_the_server(sweep, box: ClusterBox) -> None:
    _app, _client, _parent, children, tmp = sweep
    reports = tmp / "reports"
    args = ["report.experiment=cluster", f"tracking.uri={box.mlflow_uri}", f"report.dir={reports}"]
    _finish(_advlab(box, *args, module="advlab.report"), 300, box)
    (pdf,) = reports.glob("cluster-*.pdf")
    text = " ".join(" ".join(page.extract_text().split()) for page in PdfReader(pdf).pages)
    assert f"from the MLflow store {box.mlflow_uri}" in text
    assert "Swept parameters: model.dropout (0, 0.25, 0.5, 0.75)" in text
    for run in children:  # the runs table lists every job (run names may wrap, ids do not)
        assert run.info.run_id in text


def test_scancel_during_training_leaves_the_run_killed(box: ClusterBox, tmp_path: Path) -> None:
    client = MlflowClient(box.mlflow_uri)
    app = _app_overrides(box, tmp_path, "cluster-scancel")
    # far more epochs than the test waits for, early stopping off: cancelled while it trains
    long = ["train.epochs=1000", "train.early_stopping.enabled=false"]
    proc = _advlab(box, "-m", "hydra/launcher=slurm_cpu", *LAUNCHER, *app, *long)
    try:
        (job_run,) = _poll(
            "the job's run with an epoch logged",
            lambda: [
                r
                for r in _runs(client, "cluster-scancel")
                if "advlab.sweep_parent" not in r.data.tags and "train_loss" in r.data.metrics
            ],
            SWEEP_TIMEOUT_S,
            box,
        )
        (job_id,) = box.jobs()
        subprocess.run(["scancel", job_id], env=box.env(), check=True)
        run = _poll(
            "the cancelled run's end",
            lambda: (r := client.get_run(job_run.info.run_id)).info.status != "RUNNING" and r,
            60,
            box,
        )
        assert run.info.status == "KILLED", run.data.tags
        # ended by the job itself on SLURM's SIGTERM, not later by the sweep's clean-up
        assert run.data.tags["advlab.stop_reason"] == "terminated by signal SIGTERM"
        _poll("the cancelled job to leave the queue", lambda: not box.jobs(), 60, box)
        # With accounting off (no slurmdbd) submitit cannot see that the job was cancelled and
        # would wait for its result forever: stop the sweep as a user would (kill <pid>).
        proc.terminate()
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    parent = client.get_run(run.data.tags["mlflow.parentRunId"])
    assert parent.info.status == "KILLED"
    assert parent.data.metrics["jobs"] == 1 and parent.data.metrics["jobs_killed"] == 1
