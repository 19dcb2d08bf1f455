"""advlab.tracking against a real SQLite MLflow store in tmp_path (no mocks)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from advlab import naming
from advlab.attacks.evaluate import evaluate_robustness, evaluation_metrics
from advlab.config import PROJECT_ROOT
from advlab.errors import ConfigError
from advlab.fileio import atomic_write_text
from advlab.tracking import (
    MAX_PARAM_VAL_LENGTH,
    Tracker,
    attach_artifact,
    derive_run_name,
    flatten_config,
    resolve_tracking_uri,
)
from tests.test_evaluate import CPU, eval_config, synthetic_splits, train_tiny

# every test starts from a copy of one migrated empty store (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("fresh_store")


def _run(tracker: Tracker):
    return MlflowClient(tracker.tracking_uri).get_run(tracker.run_id)


def test_tracking_uri_precedence(make_cfg, tmp_path, monkeypatch):
    cfg = make_cfg("tracking.uri=null")
    assert resolve_tracking_uri(cfg.tracking, cfg.paths) == f"sqlite:///{tmp_path}/runs/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert resolve_tracking_uri(cfg.tracking, cfg.paths) == "http://127.0.0.1:1"
    cfg = make_cfg()  # tracking.uri set: wins over the environment
    assert resolve_tracking_uri(cfg.tracking, cfg.paths) == f"sqlite:///{tmp_path}/mlflow.db"
    # relative SQLite paths resolve against the project, never the working directory
    cfg = make_cfg("tracking.uri=sqlite:///runs/x.db")
    assert resolve_tracking_uri(cfg.tracking, cfg.paths) == f"sqlite:///{PROJECT_ROOT}/runs/x.db"
    with pytest.raises(ConfigError, match="tracking.uri='mlruns'"):
        resolve_tracking_uri(make_cfg("tracking.uri=mlruns").tracking, cfg.paths)


def test_run_names_and_flat_params(make_cfg):
    cfg = make_cfg("data.limit_train=null", "model.dropout=0.5", "optimizer.weight_decay=1e-4")
    assert derive_run_name(cfg) == "mnist-course_cnn-do0.5-wd1e-4-s0"
    cfg = make_cfg("train.adversarial.method=pgd", "data.augment.hflip=true", "seed=3")
    assert derive_run_name(cfg) == "mnist-course_cnn-do0.25-wd5e-4-n600-flip-at_pgd-s3"
    # a sweep over one augmentation knob gives its runs different names
    cfg = make_cfg(
        "data.augment.shift=2", "data.augment.rotation=10", "train.early_stopping.enabled=false"
    )
    assert derive_run_name(cfg) == "mnist-course_cnn-do0.25-wd5e-4-n600-shift2-rot10-noes-s0"
    # the seeds of one setting differ by their last part, a name given or derived
    assert derive_run_name(make_cfg("tracking.run_name=mine", "seed=2")) == "mine-s2"

    params = flatten_config(make_cfg("eval.attacks=[pgd]"))
    assert params["model.dropout"] == "0.25"
    assert params["optimizer.lr"] == "0.003"
    assert params["data.limit_train"] == "600"
    assert params["eval.eps"] == "[0.0, 4.0, 16.0]"
    assert params["attacks.pgd.steps"] == "3"
    # only attacks that run are params; the rest of attacks.* would only clutter the compare view
    assert not [k for k in params if k.startswith(("attacks.fgsm", "attacks.cw"))]
    assert not [k for k in params if k.startswith("hydra")]
    long = flatten_config({"a": {"b": "x" * 10_000}, "eval": {"attacks": []}})
    assert len(long["a.b"]) == MAX_PARAM_VAL_LENGTH and long["a.b"].endswith("...")


def test_finished_run_has_params_tags_metrics_artifacts(make_cfg, tmp_path):
    from advlab.tracking.metadata import run_facts

    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text("seed: 0\n")
    cfg = make_cfg("device=cpu")
    with Tracker(cfg, run_dir=run_dir) as tracker:
        tracker.log_run_info(run_facts(cfg))
        tracker.log_data_facts({"n_train": 540, "image_shape": "1x28x28", "train_frac/3": 0.1})
        for epoch in (1, 2):
            tracker.log_epoch(epoch, {naming.TRAIN_LOSS: 1.0 / epoch, naming.VAL_ACC: 0.5})
        tracker.log_metrics({naming.CLEAN_ACC: 0.9, naming.NUM_PARAMS: 1234})
        results_json = atomic_write_text(run_dir / naming.RESULTS_JSON, '{"clean_acc": 0.9}')
        tracker.log_artifact(results_json, naming.RESULTS_DIR)
    assert tracker.status == "FINISHED"
    run = _run(tracker)
    client = MlflowClient(tracker.tracking_uri)
    assert run.info.status == "FINISHED" and run.info.end_time is not None
    assert run.info.run_name == "mnist-course_cnn-do0.25-wd5e-4-n600-s0"
    assert client.get_experiment(run.info.experiment_id).name == "quickstart"
    assert run.info.artifact_uri.startswith((tmp_path / "mlartifacts" / "quickstart").as_uri())
    p, t, m = run.data.params, run.data.tags, run.data.metrics
    assert p["model.dropout"] == "0.25" and p["train.epochs"] == "2"
    assert p["facts.n_train"] == "540" and p["facts.train_frac/3"] == "0.1"
    # tags: what users filter on, and where the run's files are
    assert t[naming.DATASET_TAG] == "mnist" and t[naming.MODEL_TAG] == "course_cnn"
    assert t[naming.ADVERSARIAL_TRAINING_TAG] == "none" and t[naming.SEED_TAG] == "0"
    assert t[naming.RUN_DIR_TAG] == str(run_dir)
    assert naming.MLFLOW_PARENT_TAG not in t and naming.SWEEP_TAG not in t
    # the descriptive facts are in results/run_info.json, not tags; run_info() reads them
    assert not set(naming.INFO_KEYS) & set(t)
    local = client.download_artifacts(tracker.run_id, naming.RUN_INFO_JSON, str(tmp_path / "dl"))
    info = naming.run_info(t, json.loads(Path(local).read_text()))
    assert info == json.loads((run_dir / naming.RUN_INFO_JSON).read_text())
    assert info[naming.ATTACKS_INFO] == "fgsm,pgd"
    controls = "dropout=0.25,weight_decay=0.0005,early_stopping,train_size=600"
    assert info[naming.CONTROLS_INFO] == controls and info[naming.DEVICE_INFO] == "cpu"
    assert info[naming.GIT_DIRTY_INFO] in {"true", "false", "unknown"}
    commit = info[naming.GIT_COMMIT_INFO]
    assert len(commit) == 40 or commit == "unknown"
    for key in (naming.VERSION_INFO, naming.TORCH_VERSION_INFO, naming.TORCHATTACKS_VERSION_INFO):
        assert info[key]
    assert info[naming.COMMAND_INFO]
    hist = client.get_metric_history(tracker.run_id, naming.TRAIN_LOSS)
    assert [(h.step, h.value) for h in hist] == [(1, 1.0), (2, 0.5)]
    assert m[naming.CLEAN_ACC] == 0.9 and m[naming.NUM_PARAMS] == 1234
    arts = {a.path for a in client.list_artifacts(tracker.run_id, naming.HYDRA_DIR)}
    assert arts == {f"{naming.HYDRA_DIR}/config.yaml"}
    results = client.download_artifacts(tracker.run_id, naming.RESULTS_JSON, str(tmp_path))
    assert json.loads(Path(results).read_text()) == {naming.CLEAN_ACC: 0.9}


def test_typed_config_artifact(make_cfg, tmp_path):
    run_dir = tmp_path / "run"
    cfg = make_cfg("device=cpu", "train.early_stopping.enabled=false")
    with Tracker(cfg, run_dir=run_dir) as tracker:
        pass
    client = MlflowClient(tracker.tracking_uri)
    assert [a.path for a in client.list_artifacts(tracker.run_id, "config")] == [
        "config/config.json"
    ]
    local = client.download_artifacts(tracker.run_id, "config/config.json", str(tmp_path))
    logged = json.loads(Path(local).read_text())
    assert logged == json.loads((run_dir / "config.json").read_text())
    # typed, unlike params: a bool is a bool, a list a list, an enum its name
    assert logged["train"]["early_stopping"]["enabled"] is False
    assert logged["eval"]["eps"] == [0, 4, 16]
    assert logged["model"]["dropout"] == 0.25
    assert logged["device"] == "cpu" and "hydra" not in logged


def test_exception_ends_run_failed_with_error_tag(make_cfg, tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    tracker = Tracker(make_cfg("device=cpu"), run_dir=tmp_path)
    with pytest.raises(RuntimeError, match="loss became NaN"), tracker:
        raise RuntimeError("loss became NaN at epoch 3")
    run = _run(tracker)
    assert run.info.status == "FAILED"
    assert run.data.tags[naming.ERROR_TAG] == "RuntimeError: loss became NaN at epoch 3"
    assert signal.getsignal(signal.SIGTERM) is before  # the run's SIGTERM handler is gone


def test_keyboard_interrupt_ends_run_killed(make_cfg, tmp_path):
    tracker = Tracker(make_cfg("device=cpu"), run_dir=tmp_path)
    with pytest.raises(KeyboardInterrupt), tracker:
        raise KeyboardInterrupt
    run = _run(tracker)
    assert run.info.status == "KILLED" and naming.ERROR_TAG not in run.data.tags


def test_sigterm_ends_run_killed(make_cfg, tmp_path):
    cfg = make_cfg("device=cpu")
    cfg_file = tmp_path / "cfg.yaml"
    from omegaconf import OmegaConf

    OmegaConf.save(cfg, cfg_file, resolve=True)
    ready = tmp_path / "ready.json"
    script = textwrap.dedent(
        f"""
        import json, time
        from omegaconf import OmegaConf
        from advlab.tracking import Tracker
        cfg = OmegaConf.load({str(cfg_file)!r})
        with Tracker(cfg, run_dir={str(tmp_path)!r}) as tracker:
            open({str(ready)!r}, "w").write(json.dumps({{"run_id": tracker.run_id}}))
            time.sleep(120)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=PROJECT_ROOT)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() or not ready.read_text():
            assert proc.poll() is None, "the tracked process died before its run started"
            assert time.monotonic() < deadline, "the run did not start within 60 s"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    run_id = json.loads(ready.read_text())["run_id"]
    run = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(run_id)
    assert run.info.status == "KILLED"
    assert "SIGTERM" in run.data.tags[naming.STOP_REASON_TAG]


def test_short_epochs_share_one_write_and_reach_mlflow_by_the_end_of_the_run(
    make_cfg, tmp_path, monkeypatch
):
    from advlab.tracking import epoch_writer

    # an interval no slow machine outlasts between opening the run and its third epoch
    monkeypatch.setattr(epoch_writer, "EPOCH_WRITE_INTERVAL_S", 3600.0)
    with Tracker(make_cfg("device=cpu"), run_dir=tmp_path) as tracker:
        client = MlflowClient(tracker.tracking_uri)
        for epoch in (1, 2, 3):  # each ends within the interval of the run's start
            tracker.log_epoch(epoch, {"train_loss": 1.0 / epoch})
        for operation in tracker._epochs.pending:
            operation.wait()
        assert client.get_metric_history(tracker.run_id, "train_loss") == []  # held back
    history = client.get_metric_history(tracker.run_id, "train_loss")
    assert [(m.step, m.value) for m in history] == [(1, 1.0), (2, 0.5), (3, 1.0 / 3)]


def test_an_epoch_after_the_write_interval_is_written_at_once(make_cfg, tmp_path, monkeypatch):
    from advlab.tracking import epoch_writer

    monkeypatch.setattr(epoch_writer, "EPOCH_WRITE_INTERVAL_S", 0.0)
    with Tracker(make_cfg("device=cpu"), run_dir=tmp_path) as tracker:
        client = MlflowClient(tracker.tracking_uri)
        tracker.log_epoch(1, {"train_loss": 1.0})
        for operation in tracker._epochs.pending:
            operation.wait()
        steps = [m.step for m in client.get_metric_history(tracker.run_id, "train_loss")]
        assert steps == [1]  # in MLflow while the run is still RUNNING
        assert _run(tracker).info.status == "RUNNING"


def test_disabled_tracking_touches_no_store(make_cfg, tmp_path):
    cfg = make_cfg("tracking.enabled=false", f"tracking.uri=sqlite:///{tmp_path}/off.db")
    with Tracker(cfg, run_dir=tmp_path) as tracker:
        tracker.log_epoch(1, {"train_loss": 1.0})
        tracker.log_metrics({"clean_acc": 1.0})
        tracker.log_artifact(tmp_path / "absent.txt")  # no-op, not even a file check
    assert tracker.run_id is None
    assert not (tmp_path / "off.db").exists()


def test_log_evaluation_metrics_steps_and_the_files_the_evaluation_wrote(make_cfg, tmp_path):
    data = synthetic_splits()
    cfg_eval, attacks = eval_config("eval.eps=[0,4,8]", "eval.grid_eps=4", "eval.n_examples=60")
    out_dir = tmp_path / "run" / "results"
    evaluation = evaluate_robustness(
        train_tiny(data), data, cfg_eval, attacks, seed=0, device=CPU, out_dir=out_dir
    )
    written = {f"{naming.RESULTS_DIR}/{p.name}" for p in evaluation.artifacts}
    assert {naming.ROBUSTNESS_CSV, naming.PER_CLASS_CSV, naming.CONFUSION_JSON} <= written
    assert written & set(naming.artifact_candidates(naming.CHECKS_JSON))
    stamps = {p: p.stat().st_mtime_ns for p in evaluation.artifacts}
    with Tracker(make_cfg("device=cpu"), run_dir=tmp_path / "run") as tracker:
        tracker.log_evaluation(evaluation, list(cfg_eval.eps))
    assert {p: p.stat().st_mtime_ns for p in evaluation.artifacts} == stamps  # not rewritten

    client = MlflowClient(tracker.tracking_uri)
    pgd4 = evaluation.table.set_index(["attack", "eps"]).loc[("pgd", 4.0)]
    hist = client.get_metric_history(tracker.run_id, naming.robust_acc_key("pgd", 4))
    assert [(h.step, h.value) for h in hist] == [(1, pgd4.robust_acc)]  # step = index of eps 4
    assert client.get_metric_history(tracker.run_id, naming.asr_key("fgsm", 8))[0].step == 2
    run = _run(tracker)
    # exactly the evaluation's metrics (evaluation_metrics: no NaN success rate), nothing else
    assert run.data.metrics == evaluation_metrics(evaluation)
    assert all(v == v for v in run.data.metrics.values())
    # the checks' tags are the pipeline's, written once for the whole verdict
    assert not naming.checks_from_tags(run.data.tags)

    # every file the evaluation wrote is in the run, byte for byte: PNGs under grids/, the rest
    # under results/, beside the MLflow table
    for path in evaluation.artifacts:
        folder = naming.GRIDS_DIR if path.suffix == ".png" else naming.RESULTS_DIR
        local = client.download_artifacts(
            tracker.run_id, f"{folder}/{path.name}", str(tmp_path / "dl" / folder)
        )
        assert Path(local).read_bytes() == path.read_bytes()
    uploaded = {a.path for a in client.list_artifacts(tracker.run_id, naming.RESULTS_DIR)}
    assert {naming.ROBUSTNESS_TABLE, naming.ROBUSTNESS_JSON} <= uploaded
    assert {a.path for a in client.list_artifacts(tracker.run_id, naming.GRIDS_DIR)} == {
        f"{naming.GRIDS_DIR}/fgsm_eps_4.png",
        f"{naming.GRIDS_DIR}/pgd_eps_4.png",
    }


def test_attach_artifact_to_finished_run(make_cfg, tmp_path):
    with Tracker(make_cfg("device=cpu"), run_dir=tmp_path) as tracker:
        pass
    pdf = tmp_path / "quickstart.pdf"
    pdf.write_bytes(b"%PDF-1.4\n")
    folder = naming.REPORT_ARTIFACT_DIR
    attach_artifact(tracker.run_id, pdf, folder, tracking_uri=tracker.tracking_uri)
    client = MlflowClient(tracker.tracking_uri)
    assert [a.path for a in client.list_artifacts(tracker.run_id, folder)] == [
        f"{folder}/quickstart.pdf"
    ]
    assert client.get_run(tracker.run_id).info.status == "FINISHED"


def test_tracker_env_uri_and_existing_experiment(make_cfg, tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # reachable only through the environment
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    cfg = make_cfg("tracking.uri=null", "tracking.experiment=exp one", "device=cpu")
    ids = []
    for _ in range(2):  # the second run reuses the experiment the first created
        with Tracker(cfg, run_dir=tmp_path) as tracker:
            ids.append(tracker.run_id)
    assert tracker.tracking_uri == uri
    runs = MlflowClient(uri).search_runs(
        [MlflowClient(uri).get_experiment_by_name("exp one").experiment_id]
    )
    assert {r.info.run_id for r in runs} == set(ids)
    assert os.environ["MLFLOW_TRACKING_URI"] == uri  # the tracker never rewrites the environment


def test_a_sigterm_while_a_run_is_being_ended_is_held_then_delivered() -> None:
    import os
    import signal

    from advlab.tracking.signals import sigterm_deferred

    before = signal.getsignal(signal.SIGTERM)
    with sigterm_deferred() as held:
        os.kill(os.getpid(), signal.SIGTERM)  # would abort end_run mid-write without the hold
        assert held == [signal.SIGTERM]
    assert signal.getsignal(signal.SIGTERM) is before
