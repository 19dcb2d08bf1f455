"""No run left RUNNING, one run per training: liveness tags, the reaper, resuming the same run.

Real SQLite stores in tmp_path and real processes (killed with SIGKILL); no mocks. The pipeline
test (SIGKILL during training, then resume) is in tests/test_checkpoint_resume.py.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from omegaconf import OmegaConf

from advlab.config import PROJECT_ROOT
from advlab.errors import ConfigError
from advlab.naming import (
    HEARTBEAT_TAG,
    HOST_TAG,
    KILLED_REASON_TAG,
    MLFLOW_PARENT_TAG,
    MLFLOW_RUN_FILE,
    PID_NAMESPACE_TAG,
    PID_TAG,
    PROCESS_START_TAG,
    RESUMED_CHANGES_TAG,
    RUN_DIR_TAG,
    STOP_REASON_TAG,
)
from advlab.tracking import (
    ENV_PARENT_RUN_ID,
    Tracker,
    reap_dead_runs,
    serve_command,
    ui_link,
)
from advlab.tracking.liveness import process_tags

# every test starts from a copy of one migrated empty store (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("fresh_store")


def _client(tmp_path: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")


def _ago(seconds: float) -> str:
    then = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds)
    return then.replace(microsecond=0).isoformat()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# --------------------------------------------------------------------------------- the reaper
def test_reaper_ends_only_runs_whose_process_is_gone(tmp_path):
    client = _client(tmp_path)
    exp = client.create_experiment("e")
    here = process_tags()  # this (live) process, on this machine

    def run(**tags: str) -> str:
        return client.create_run(exp, tags=tags).info.run_id

    other = {**here, HOST_TAG: "node-that-died", PID_NAMESPACE_TAG: "pid:[1]"}
    runs = {
        "dead pid": run(**{**here, PID_TAG: str(_dead_pid())}),
        "pid reused": run(**{**here, PROCESS_START_TAG: "1"}),
        "live": run(**{**here, HEARTBEAT_TAG: _ago(10 * 86400)}),  # alive here: never judged stale
        "stale host": run(**{**other, HEARTBEAT_TAG: _ago(7200)}),
        "fresh host": run(**{**other, HEARTBEAT_TAG: _ago(60)}),
        "not advlab": run(),
    }
    sweep_parent = run(**{**other, HEARTBEAT_TAG: _ago(7200)})
    job = run(**{**other, HEARTBEAT_TAG: _ago(60), MLFLOW_PARENT_TAG: sweep_parent})

    reaped = reap_dead_runs(client, stale_after_s=None)
    assert sorted(reaped) == sorted([runs["dead pid"], runs["pid reused"]])
    assert reap_dead_runs(client, stale_after_s=3600) == [runs["stale host"]]

    def status(run_id: str) -> tuple[str, str | None]:
        got = client.get_run(run_id)
        return got.info.status, got.data.tags.get(KILLED_REASON_TAG)

    pid = here[PID_TAG]
    assert status(runs["dead pid"])[1].endswith("is gone")
    assert status(runs["pid reused"]) == (
        "KILLED",
        f"process {pid} on {socket.gethostname()} is gone (its pid now belongs to another process)",
    )
    stale_status, stale_reason = status(runs["stale host"])
    assert stale_status == "KILLED"
    assert re.fullmatch(
        r"no heartbeat from node-that-died for 72\d\d s \(tracking.stale_after_s=3600\)",
        stale_reason,
    )
    for name in ("live", "fresh host", "not advlab"):
        assert status(runs[name]) == ("RUNNING", None), name
    # a sweep's parent lives as long as one of its running jobs does
    assert status(sweep_parent) == status(job) == ("RUNNING", None)


CHILD = textwrap.dedent(
    """
    import json, sys, time
    from omegaconf import OmegaConf
    from advlab.tracking import Tracker
    cfg_file, run_dir, ready = sys.argv[1:4]
    with Tracker(OmegaConf.load(cfg_file), run_dir=run_dir) as tracker:
        tracker.log_epoch(1, {"train_loss": 1.0})
        tracker._flush()
        open(ready, "w").write(json.dumps({"run_id": tracker.run_id}))
        time.sleep(120)  # "training": the test kills it or leaves it running
    """
)


def _start_child(cfg, tmp_path: Path) -> tuple[subprocess.Popen, str]:
    """A process with an open run that has logged an epoch; returns it and its run id."""
    cfg_file, ready = tmp_path / "child.yaml", tmp_path / "ready.json"
    OmegaConf.save(cfg, cfg_file, resolve=True)
    args = [str(cfg_file), str(tmp_path / "child_run"), str(ready)]
    proc = subprocess.Popen([sys.executable, "-c", CHILD, *args], cwd=PROJECT_ROOT)
    deadline = time.monotonic() + 60
    while not ready.exists() or not ready.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the child's run did not start within 60 s")
        time.sleep(0.1)
    return proc, json.loads(ready.read_text())["run_id"]


def test_sigkill_then_an_unrelated_run_ends_the_killed_run(make_cfg, tmp_path):
    cfg = make_cfg("device=cpu")
    proc, killed = _start_child(cfg, tmp_path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    client = _client(tmp_path)
    assert client.get_run(killed).info.status == "RUNNING"  # SIGKILL cannot be caught

    with Tracker(make_cfg("device=cpu", "tracking.experiment=unrelated"), run_dir=tmp_path / "b"):
        pass
    run = client.get_run(killed)
    assert run.info.status == "KILLED"
    reason = f"process {proc.pid} on {socket.gethostname()} is gone"
    assert run.data.tags[KILLED_REASON_TAG] == reason


def test_a_live_run_in_another_process_is_not_touched(make_cfg, tmp_path):
    cfg = make_cfg("device=cpu")
    proc, live = _start_child(cfg, tmp_path)
    try:
        with Tracker(cfg, run_dir=tmp_path / "b"):
            pass
        run = _client(tmp_path).get_run(live)
        assert run.info.status == "RUNNING" and KILLED_REASON_TAG not in run.data.tags
        assert run.data.tags[PID_TAG] == str(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)  # ends its own run KILLED
        proc.wait(timeout=60)
    assert _client(tmp_path).get_run(live).info.status == "KILLED"


def test_every_run_names_its_process_and_each_epoch_refreshes_the_heartbeat(make_cfg, tmp_path):
    with Tracker(make_cfg("device=cpu"), run_dir=tmp_path / "a") as tracker:
        client = _client(tmp_path)
        tags = client.get_run(tracker.run_id).data.tags
        assert tags[HOST_TAG] == socket.gethostname()
        assert tags[PID_TAG] == str(os.getpid())
        assert tags[PROCESS_START_TAG] == process_tags()[PROCESS_START_TAG]
        client.set_tag(tracker.run_id, HEARTBEAT_TAG, _ago(3600))
        tracker.log_epoch(1, {"train_loss": 1.0})
        tracker._flush()
        beat = dt.datetime.fromisoformat(client.get_run(tracker.run_id).data.tags[HEARTBEAT_TAG])
        assert (dt.datetime.now(dt.UTC) - beat).total_seconds() < 60
    recorded = json.loads((tmp_path / "a" / MLFLOW_RUN_FILE).read_text())
    assert recorded["run_id"] == tracker.run_id
    assert recorded["experiment_id"] == tracker.experiment_id


# ----------------------------------------------------------------------------------- resume
def _killed_run(make_cfg, run_dir: Path, epochs: int, *overrides: str) -> str:
    """A run that logged ``epochs`` epochs and a checkpoint file, then was interrupted."""
    tracker = Tracker(make_cfg("device=cpu", *overrides), run_dir=run_dir)
    with pytest.raises(KeyboardInterrupt), tracker:
        for epoch in range(1, epochs + 1):
            tracker.log_epoch(epoch, {"train_loss": 1.0 / epoch})
        tracker.log_metrics({"num_params": 10})
        (run_dir / "checkpoints").mkdir(parents=True)
        (run_dir / "checkpoints" / "last.pt").write_bytes(b"only its presence is read here")
        raise KeyboardInterrupt
    return tracker.run_id


def test_resume_continues_the_same_run_and_logs_each_step_once(make_cfg, tmp_path):
    killed = _killed_run(make_cfg, tmp_path / "a", 2)
    cfg = make_cfg("device=cpu", f"train.resume={tmp_path / 'a'}", "train.epochs=3")
    with Tracker(cfg, run_dir=tmp_path / "b") as tracker:
        assert tracker.run_id == killed
        for epoch in (1, 2, 3):  # the fit loop replays the finished epochs, then trains on
            tracker.log_epoch(epoch, {"train_loss": 1.0 / epoch})
        tracker.log_metrics({"num_params": 10})
    client = _client(tmp_path)
    (only,) = client.search_runs([tracker.experiment_id])
    assert only.info.run_id == killed and only.info.status == "FINISHED"
    assert STOP_REASON_TAG not in only.data.tags
    assert only.data.tags[RUN_DIR_TAG] == str(tmp_path / "b")
    history = client.get_metric_history(killed, "train_loss")
    assert sorted(m.step for m in history) == [1, 2, 3]
    assert len(client.get_metric_history(killed, "num_params")) == 1
    changes = json.loads(only.data.tags[RESUMED_CHANGES_TAG])
    assert changes["train.epochs"] == ["2", "3"]  # the params keep their first value
    assert only.data.params["train.epochs"] == "2"
    assert json.loads((tmp_path / "b" / MLFLOW_RUN_FILE).read_text())["run_id"] == killed


def test_resume_refuses_finished_runs_other_experiments_and_missing_checkpoints(make_cfg, tmp_path):
    def resume(target: Path, *overrides: str) -> None:
        cfg = make_cfg("device=cpu", f"train.resume={target}", *overrides)
        with Tracker(cfg, run_dir=tmp_path / "new"):
            pytest.fail("the resumed run must not start")

    with Tracker(make_cfg("device=cpu"), run_dir=tmp_path / "done") as finished:
        (tmp_path / "done" / "checkpoints").mkdir()
        (tmp_path / "done" / "checkpoints" / "last.pt").write_bytes(b"x")
    with pytest.raises(ConfigError, match=f"MLflow run {finished.run_id} has FINISHED"):
        resume(tmp_path / "done")

    _killed_run(make_cfg, tmp_path / "elsewhere", 1, "tracking.experiment=first")
    with pytest.raises(ConfigError, match="is in experiment 'first', not tracking.experiment="):
        resume(tmp_path / "elsewhere", "tracking.experiment=second")
    assert _client(tmp_path).get_experiment_by_name("second") is None

    (tmp_path / "no_checkpoint").mkdir()
    with pytest.raises(ConfigError, match="no checkpoint in that directory"):
        resume(tmp_path / "no_checkpoint")
    client = _client(tmp_path)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 2, "a refused resume creates no run"


# ------------------------------------------------------------------------------- UI links
def test_a_sweep_job_knows_it_is_one(make_cfg, tmp_path, monkeypatch):
    # What the summary's link to the sweep's runs depends on.
    with Tracker(make_cfg("device=cpu"), run_dir=tmp_path / "a") as alone:
        pass
    assert not alone.in_sweep
    parent = _client(tmp_path).create_run(alone.experiment_id).info.run_id
    monkeypatch.setenv(ENV_PARENT_RUN_ID, parent)
    with Tracker(make_cfg("device=cpu"), run_dir=tmp_path / "b") as job:
        pass
    assert job.in_sweep
    assert _client(tmp_path).get_run(job.run_id).data.tags[MLFLOW_PARENT_TAG] == parent


def test_ui_links_open_the_model_training_view():
    run_id = "a" * 32
    assert ui_link("sqlite:////x/mlflow.db", "7", run_id) == (
        f"http://127.0.0.1:5000/#/experiments/7/runs/{run_id}?workflowType=machine_learning"
    )
    assert ui_link("postgresql://u:p@db/mlflow", "7") == (
        "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning"
    )
    assert ui_link("https://me:secret@mlflow.example.org:8443/lab/", "3") == (
        "https://mlflow.example.org:8443/lab/#/experiments/3/runs?workflowType=machine_learning"
    )
    assert ui_link("http://127.0.0.1:5001") == (
        "http://127.0.0.1:5001/#/experiments?workflowType=machine_learning"
    )


def test_serve_command_names_what_serves_the_links():
    assert serve_command(f"sqlite:///{PROJECT_ROOT / 'runs' / 'mlflow.db'}") == "make ui"
    assert serve_command("sqlite:////tmp/my store.db") == (
        "mlflow ui --backend-store-uri 'sqlite:////tmp/my store.db'"
    )
    assert serve_command("http://mlflow.example.org:5000") is None
