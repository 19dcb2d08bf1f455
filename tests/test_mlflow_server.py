"""A real `mlflow server` on a loopback port: a run logs over HTTP and reads back via the client."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from advlab import results
from advlab.fileio import atomic_write_text
from advlab.tracking import Tracker


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`mlflow server` on 127.0.0.1: SQLite backend and proxied artifacts in tmp_path."""
    port = _free_port()
    artifacts = tmp_path / "server-artifacts"
    log_file = (tmp_path / "server.log").open("w")
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{tmp_path / 'server.db'}",
        "--serve-artifacts",
        "--artifacts-destination",
        str(artifacts),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    # A session of its own, so stopping it also stops the workers it spawned.
    proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"mlflow server exited: {(tmp_path / 'server.log').read_text()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("mlflow server did not answer /health within 120 s")
            time.sleep(0.5)
        yield url, artifacts
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        log_file.close()


@pytest.mark.slow
def test_run_logs_to_a_tracking_server_over_http(make_cfg, tmp_path, mlflow_server):
    url, artifacts = mlflow_server
    # tracking.artifact_root=null: the server decides (mlflow-artifacts:/, proxied to its folder)
    cfg = make_cfg(f"tracking.uri={url}", "tracking.artifact_root=null", "device=cpu")
    with Tracker(cfg, run_dir=tmp_path / "run") as tracker:
        tracker.log_data_facts({"n_train": 540})
        for epoch in (1, 2):
            tracker.log_epoch(epoch, {"train_loss": 1.0 / epoch})
        tracker.log_metrics({"clean_acc": 0.875})
        results_json = atomic_write_text(
            tmp_path / "run" / "results" / "results.json", json.dumps({"clean_acc": 0.875})
        )
        tracker.log_artifact(results_json, "results")
    assert tracker.tracking_uri == url

    client = MlflowClient(url)
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    assert run.data.params["facts.n_train"] == "540" and run.data.params["model.dropout"] == "0.25"
    assert run.data.tags["advlab.dataset"] == "mnist"
    assert [m.step for m in client.get_metric_history(tracker.run_id, "train_loss")] == [1, 2]

    df = results.load("quickstart", tracking_uri=url)
    assert list(df["run_id"]) == [tracker.run_id]
    assert df.loc[0, "metrics.clean_acc"] == 0.875
    assert results.read_json(tracker.run_id, "results/results.json", tracking_uri=url) == {
        "clean_acc": 0.875
    }
    # the artifact went through the server into its artifacts destination
    assert list(artifacts.rglob("results.json"))
