"""Sweeps: launcher configs compose, parent/child runs in MLflow, parallel writers lose no run."""

from __future__ import annotations

import atexit
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from mlflow import MlflowClient
from omegaconf import DictConfig, OmegaConf

from advlab import naming, results, tracking
from advlab.config import CONF_DIR, PROJECT_ROOT
from advlab.sweep_callback import MlflowSweepCallback


def _compose_with_hydra(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=True)


def _store_overrides(tmp_path: Path) -> list[str]:
    return [
        f"paths.runs_dir={tmp_path / 'runs'}",
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
        f"tracking.artifact_root={tmp_path / 'mlartifacts'}",
        f"hydra.sweep.dir={tmp_path / 'multirun' / '2024-01-02' / '03-04-05'}",
        "device=cpu",
    ]


@pytest.fixture
def make_callback():
    """A factory of sweep callbacks whose side effects on this process are undone after the test.

    ``on_multirun_start`` sets two environment variables, a SIGTERM handler and an atexit hook;
    a test that fails before ``on_multirun_end`` must not leave them to the tests after it.
    """
    env_names = (tracking.ENV_PARENT_RUN_ID, tracking.ENV_SWEEP_ID)
    saved_env = {name: os.environ.get(name) for name in env_names}
    saved_sigterm = signal.getsignal(signal.SIGTERM)
    made: list[MlflowSweepCallback] = []

    def make() -> MlflowSweepCallback:
        made.append(MlflowSweepCallback())
        return made[-1]

    try:
        yield make
    finally:
        for callback in made:
            atexit.unregister(callback._end_at_exit)
        signal.signal(signal.SIGTERM, saved_sigterm)
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def test_submitit_slurm_launcher_config_composes():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # composes without Hydra's schema-name deprecation warning
        cfg = _compose_with_hydra(
            ["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "+experiment=quickstart"]
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.partition == "gpu" and launcher.timeout_min == 240
    assert launcher.gpus_per_node == 1 and launcher.setup == ["source .venv/bin/activate"]
    # the plugin accepts every key (constructing it submits nothing)
    assert type(instantiate(launcher)).__name__ == "SlurmLauncher"


def test_joblib_launcher_and_sweep_callback_compose():
    cfg = _compose_with_hydra(["hydra/launcher=joblib_local"])
    assert cfg.hydra.launcher.n_jobs == 2
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher")
    assert cfg.hydra.callbacks.mlflow_sweep._target_ == "advlab.sweep_callback.MlflowSweepCallback"
    assert _compose_with_hydra(["hydra/callbacks=none"]).hydra.callbacks == {}


class _JobError(Exception):
    pass


def _job(cfg: DictConfig, tmp_path: Path, dropout: float, fail: bool = False) -> str:
    job_cfg = cfg.copy()
    job_cfg.model.dropout = dropout
    tracker = tracking.Tracker(job_cfg, run_dir=tmp_path / f"job{dropout}")
    try:
        with tracker:
            tracker.log_metrics({naming.CLEAN_ACC: 1 - dropout})
            if fail:
                raise _JobError("job failed on purpose")
    except _JobError:
        pass
    return tracker.run_id


def test_sweep_groups_jobs_under_a_parent_run(tmp_path, make_callback):
    cfg = _compose_with_hydra(_store_overrides(tmp_path) + ["tracking.experiment=sw"])
    sigterm_before = signal.getsignal(signal.SIGTERM)
    cb = make_callback()
    cb.on_multirun_start(cfg)
    parent = cb.parent_run_id
    try:
        info = (tmp_path / "multirun/2024-01-02/03-04-05" / naming.SWEEP_FILE).read_text()
        assert parent in info
        assert os.environ[tracking.ENV_PARENT_RUN_ID] == parent
        children = [_job(cfg, tmp_path, d) for d in (0.0, 0.5)]
    finally:
        cb.on_multirun_end(cfg)
    assert tracking.ENV_PARENT_RUN_ID not in os.environ
    assert signal.getsignal(signal.SIGTERM) is sigterm_before  # the sweep's handler is gone
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    prun = client.get_run(parent)
    assert prun.info.status == "FINISHED"
    assert prun.info.run_name == "sweep-2024-01-02_03-04-05"
    jobs, finished = naming.SWEEP_JOBS, naming.sweep_jobs_key("FINISHED")
    assert prun.data.metrics[jobs] == 2 and prun.data.metrics[finished] == 2
    # the sweep's facts are its results/run_info.json, as a run's
    local = client.download_artifacts(parent, naming.RUN_INFO_JSON, str(tmp_path / "dl"))
    facts = naming.run_info(prun.data.tags, json.loads(Path(local).read_text()))
    assert facts[naming.COMMAND_INFO] and naming.OVERRIDES_INFO in facts
    assert not set(naming.INFO_KEYS) & set(prun.data.tags)
    for run_id in children:
        tags = client.get_run(run_id).data.tags
        assert tags[naming.MLFLOW_PARENT_TAG] == parent
        assert tags[naming.SWEEP_TAG] == "2024-01-02_03-04-05"
    # the sweep is one filter away, and the parent (no params of its own) is left out by default
    df = results.load(
        "sw", "tags.advlab.sweep = '2024-01-02_03-04-05'", tracking_uri=cb.tracking_uri
    )
    assert set(df["run_id"]) == set(children)
    assert sorted(df["params.model.dropout"]) == [0.0, 0.5]
    df = results.load("sw", tracking_uri=cb.tracking_uri, include_sweep_parents=True)
    assert set(df["run_id"]) == {*children, parent}


def test_failed_or_interrupted_sweep_never_leaves_a_run_running(tmp_path, make_callback):
    cfg = _compose_with_hydra(_store_overrides(tmp_path))
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")

    cb = make_callback()
    cb.on_multirun_start(cfg)
    _job(cfg, tmp_path, 0.0)
    failed = _job(cfg, tmp_path, 0.5, fail=True)
    cb.on_multirun_end(cfg)
    assert client.get_run(failed).info.status == "FAILED"
    assert client.get_run(cb_parent(client, failed)).info.status == "FAILED"

    # Hydra skips on_multirun_end when a job raises or on Ctrl-C; the atexit hook ends the
    # parent, and a job whose process died without closing its run is ended KILLED.
    cb = make_callback()
    cb.on_multirun_start(cfg)
    parent = cb.parent_run_id
    exp_id = client.get_run(parent).info.experiment_id
    orphan = client.create_run(exp_id, tags={naming.MLFLOW_PARENT_TAG: parent}).info.run_id
    cb._end_at_exit()
    assert client.get_run(orphan).info.status == "KILLED"
    assert client.get_run(parent).info.status == "KILLED"
    assert naming.STOP_REASON_TAG in client.get_run(parent).data.tags


def cb_parent(client: MlflowClient, run_id: str) -> str:
    return client.get_run(run_id).data.tags[naming.MLFLOW_PARENT_TAG]


def _concurrent_writer(cfg_dict: dict, run_dir: str, barrier, queue) -> None:
    cfg = OmegaConf.create(cfg_dict)
    barrier.wait(timeout=120)  # all four open the fresh store at the same moment
    with tracking.Tracker(cfg, run_dir=Path(run_dir)) as tracker:
        tracker.log_data_facts({"n_train": 10})
        for epoch in range(1, 6):
            tracker.log_epoch(epoch, {"train_loss": 1.0 / epoch, "val_acc": 0.1 * epoch})
        tracker.log_metrics({"clean_acc": 0.5})
    queue.put(tracker.run_id)


@pytest.mark.slow
def test_four_processes_on_one_fresh_sqlite_store_lose_no_run(make_cfg, tmp_path):
    # MLflow crashes when several processes migrate a fresh SQLite store at once; the tracker's
    # file lock and retries must make all four runs land, complete.
    cfg = OmegaConf.to_container(make_cfg("device=cpu"), resolve=True)
    ctx = mp.get_context("spawn")  # like joblib's loky workers: fresh interpreters
    barrier, queue = ctx.Barrier(4), ctx.Queue()
    procs = [
        ctx.Process(target=_concurrent_writer, args=(cfg, str(tmp_path / f"r{i}"), barrier, queue))
        for i in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    run_ids = {queue.get(timeout=5) for _ in procs}
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("quickstart").experiment_id])
    assert {r.info.run_id for r in runs} == run_ids and len(run_ids) == 4
    for r in runs:
        assert r.info.status == "FINISHED"
        assert r.data.metrics["clean_acc"] == 0.5 and r.data.params["facts.n_train"] == "10"
        assert len(client.get_metric_history(r.info.run_id, "train_loss")) == 5


_APP = """
from pathlib import Path
import hydra
from hydra.core.hydra_config import HydraConfig
from advlab.config import CONF_DIR
from advlab.tracking import Tracker
from advlab.tracking.metadata import run_facts

@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def main(cfg):
    # the tracking part of the pipeline, without training: a run per job
    with Tracker(cfg, run_dir=Path(HydraConfig.get().runtime.output_dir)) as tracker:
        tracker.log_run_info(run_facts(cfg))
        tracker.log_metrics({"clean_acc": 1 - cfg.model.dropout})
        if cfg.model.dropout > 0.8:
            raise ValueError("dropout too high for this job")

main()
"""


def _multirun(tmp_path: Path, *overrides: str) -> tuple[subprocess.CompletedProcess, MlflowClient]:
    app = tmp_path / "app.py"
    app.write_text(textwrap.dedent(_APP))
    cmd = [sys.executable, str(app), "-m", *_store_overrides(tmp_path), *overrides]
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}  # this checkout's advlab
    proc = subprocess.run(
        cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    return proc, MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")


@pytest.mark.slow
def test_parallel_joblib_sweep_nests_every_job(tmp_path):
    proc, client = _multirun(
        tmp_path, "hydra/launcher=joblib_local", "model.dropout=0.1,0.2,0.3,0.4"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    exp = client.get_experiment_by_name("quickstart")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get(naming.SWEEP_PARENT_TAG) == "true"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    jobs = [r for r in runs if r.data.tags.get(naming.MLFLOW_PARENT_TAG) == parents[0].info.run_id]
    assert sorted(r.data.params["model.dropout"] for r in jobs) == ["0.1", "0.2", "0.3", "0.4"]
    assert {r.info.status for r in jobs} == {"FINISHED"}
    for r in jobs:  # each job records its own overrides, not just the sweep's command line
        run_dir = Path(r.data.tags[naming.RUN_DIR_TAG])
        facts = json.loads((run_dir / naming.RUN_INFO_JSON).read_text())
        assert f"model.dropout={r.data.params['model.dropout']}" in facts[naming.OVERRIDES_INFO]
        assert r.data.tags[naming.SWEEP_TAG] == "2024-01-02_03-04-05"


@pytest.mark.slow
def test_sweep_with_a_failing_job_ends_parent_failed(tmp_path):
    proc, client = _multirun(tmp_path, "model.dropout=0.1,0.9")
    assert proc.returncode != 0 and "dropout too high" in proc.stderr
    runs = client.search_runs([client.get_experiment_by_name("quickstart").experiment_id])
    by_status = {r.data.tags.get(naming.SWEEP_PARENT_TAG, "job"): r.info.status for r in runs}
    assert by_status["true"] == "FAILED"
    assert sorted(r.info.status for r in runs) == ["FAILED", "FAILED", "FINISHED"]
