"""Checkpoints: atomic, weights_only-loadable, and a killed run resumes to the same result."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from advlab.config import PROJECT_ROOT, AugmentConf
from advlab.data.base import DataSplits, ImageSet
from advlab.errors import ConfigError
from advlab.models import build_model
from advlab.training import fit
from advlab.training.checkpoint import resolve_resume
from advlab.training.fit import TIMING_METRICS
from tests.conftest import compose_config

CPU = torch.device("cpu")


def toy_splits(n_train: int = 192, n_val: int = 64, size: int = 12) -> DataSplits:
    """Two classes: class 1 has a bright centre square on noise."""
    rng = np.random.default_rng(0)

    def part(n: int) -> ImageSet:
        labels = rng.integers(0, 2, n).astype(np.int64)
        images = rng.integers(0, 110, (n, 1, size, size)).astype(np.uint8)
        images[labels == 1, :, 3 : size - 3, 3 : size - 3] += 120
        return ImageSet(images, labels)

    return DataSplits(
        "toy", part(n_train), part(n_val), part(16), ["a", "b"], (0.3,), (0.2,), AugmentConf()
    )


def same_results(a: dict, b: dict) -> None:
    """Identical weights and identical metrics (apart from wall-clock timings)."""
    assert a["state"].keys() == b["state"].keys()
    for k in a["state"]:
        assert torch.equal(a["state"][k], b["state"][k]), f"weights differ at {k}"

    def strip(history):
        return [{k: v for k, v in m.items() if k not in TIMING_METRICS} for m in history]

    assert strip(a["history"]) == strip(b["history"])
    assert (a["best_epoch"], a["stopped_epoch"]) == (b["best_epoch"], b["stopped_epoch"])


class Crash(Exception):
    """Raised from on_epoch to interrupt a run right after an epoch's checkpoint."""


def run(cfg, data, run_dir: Path, crash_after: int | None = None) -> dict:
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, data)

    def on_epoch(epoch: int, metrics: dict) -> None:
        if crash_after is not None and epoch == crash_after:
            raise Crash

    result = fit(
        model, data, cfg.train, cfg.optimizer, seed=cfg.seed, device=CPU, run_dir=run_dir,
        on_epoch=on_epoch,
    )  # fmt: skip
    return {
        "state": model.state_dict(),
        "history": result.history,
        "best_epoch": result.best_epoch,
        "stopped_epoch": result.stopped_epoch,
    }


@pytest.mark.parametrize(
    "overrides",
    [
        ["optimizer=adamw", "train.scheduler.name=onecycle", "data.augment.hflip=true"],
        [
            "optimizer=sgd",
            "optimizer.momentum=0.9",
            "train.scheduler.name=staircase",
            "train.scheduler.decay_steps=4",
            "train.adversarial.method=fgsm_rs",
            "train.adversarial.val_robust=true",
            "train.adversarial.val_robust_n=16",
            "train.adversarial.val_robust_steps=2",
            "data.augment.shift=2",
        ],
        ["model=vgg_small", "model.widths=[4,8]", "model.hidden=16", "train.loss=mse"],
    ],
    ids=["adamw-onecycle", "sgd-staircase-fgsm_rs", "vgg-bn-mse"],
)
def test_interrupted_run_resumes_to_identical_result(tmp_path: Path, overrides) -> None:
    cfg = compose_config(
        ["train.epochs=4", "train.batch_size=32", "model.dropout=0.25", "seed=5"] + overrides
    )
    data = toy_splits()
    data.augment = cfg.data.augment
    full = run(cfg, data, tmp_path / "full")
    with pytest.raises(Crash):
        run(cfg, data, tmp_path / "crashed", crash_after=2)
    cfg.train.resume = str(tmp_path / "crashed")
    resumed = run(cfg, data, tmp_path / "resumed")
    same_results(full, resumed)
    assert len(resumed["history"]) == 4


def test_checkpoints_hold_everything_and_load_weights_only(tmp_path: Path) -> None:
    cfg = compose_config(["train.epochs=2", "train.batch_size=64"])
    run(cfg, toy_splits(), tmp_path)
    ckpt_dir = tmp_path / "checkpoints"
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["best.pt", "last.pt"]  # no temp files
    last = torch.load(ckpt_dir / "last.pt", weights_only=True)
    for key in ("model", "optimizer", "scheduler", "early_stopping", "rng", "epoch", "history"):
        assert key in last
    assert last["epoch"] == 2 and len(last["history"]) == 2
    assert set(last["rng"]) >= {"torch", "numpy", "python", "generators"}
    best = torch.load(ckpt_dir / "best.pt", weights_only=True)
    assert best["epoch"] == last["early_stopping"]["best_epoch"]


def test_resume_of_a_finished_run_trains_no_further(tmp_path: Path) -> None:
    cfg = compose_config(["train.epochs=2", "train.batch_size=64"])
    data = toy_splits()
    done = run(cfg, data, tmp_path / "a")
    cfg.train.resume = str(tmp_path / "a" / "checkpoints" / "last.pt")
    seen: list[int] = []
    torch.manual_seed(0)
    model = build_model(cfg.model, data)
    result = fit(
        model, data, cfg.train, cfg.optimizer, seed=cfg.seed, device=CPU,
        run_dir=tmp_path / "b", on_epoch=lambda e, m: seen.append(e),
    )  # fmt: skip
    assert seen == [1, 2], "finished epochs are replayed to the callback"
    assert result.history == done["history"]
    assert not (tmp_path / "b" / "checkpoints").exists()


def test_resume_path_resolution(tmp_path: Path) -> None:
    ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"x")
    assert resolve_resume(tmp_path / "run") == ckpt.resolve()
    assert resolve_resume(tmp_path / "run" / "checkpoints") == ckpt.resolve()
    assert resolve_resume(ckpt) == ckpt.resolve()
    with pytest.raises(ConfigError, match="no such file"):
        resolve_resume(tmp_path / "nope")
    with pytest.raises(ConfigError, match="no checkpoint"):
        resolve_resume(tmp_path)
    cfg = compose_config(["train.epochs=1"])
    cfg.train.resume = str(ckpt)
    with pytest.raises(ConfigError, match="cannot read the checkpoint"):
        run(cfg, toy_splits(), tmp_path / "x")


# ------------------------------------------------------------------------------ SIGKILL test
CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np, torch
    from omegaconf import OmegaConf
    from advlab.data.base import DataSplits, ImageSet
    from advlab.models import build_model
    from advlab.runtime import seed_everything
    from advlab.training import fit

    torch.set_num_threads(1)
    cfg_path, data_path, run_dir, out = sys.argv[1:5]
    cfg = OmegaConf.load(cfg_path)
    z = np.load(data_path)
    data = DataSplits(
        "toy", ImageSet(z["xtr"], z["ytr"]), ImageSet(z["xva"], z["yva"]),
        ImageSet(z["xva"], z["yva"]), ["a", "b"], (0.3,), (0.2,), cfg.data.augment,
    )
    seed_everything(cfg.seed)
    model = build_model(cfg.model, data)
    result = fit(model, data, cfg.train, cfg.optimizer, seed=cfg.seed,
                 device=torch.device("cpu"), run_dir=run_dir)
    torch.save({"state": model.state_dict(), "history": result.history,
                "best_epoch": result.best_epoch, "stopped_epoch": result.stopped_epoch}, out)
    """
)


def _child(tmp_path: Path, cfg, name: str) -> tuple[list[str], Path, Path]:
    cfg_path = tmp_path / f"{name}.yaml"
    OmegaConf.save(cfg, cfg_path)
    run_dir, out = tmp_path / name, tmp_path / f"{name}.pt"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    cmd = [sys.executable, str(script), str(cfg_path), str(tmp_path / "data.npz"), str(run_dir)]
    return [*cmd, str(out)], run_dir, out


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", ADVLAB_NO_PROGRESS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    return env


def _checkpoint_epoch(path: Path) -> int:
    try:
        return int(torch.load(path, weights_only=True)["epoch"])
    except (FileNotFoundError, RuntimeError, EOFError):
        return 0


@pytest.mark.slow
def test_sigkill_mid_training_then_resume_equals_uninterrupted_run(tmp_path: Path) -> None:
    epochs, kill_after = 6, 2
    cfg = compose_config(
        [
            f"train.epochs={epochs}",
            "train.batch_size=16",
            "train.early_stopping.patience=100",
            "train.scheduler.name=cosine",
            "optimizer=adamw",
            "model.dropout=0.25",
            "data.augment.hflip=true",
            "data.augment.shift=2",
            "seed=11",
        ]
    )
    data = toy_splits(n_train=1024, n_val=128, size=16)  # epochs long enough to kill inside
    np.savez(
        tmp_path / "data.npz",
        xtr=data.train.images, ytr=data.train.labels, xva=data.val.images, yva=data.val.labels,
    )  # fmt: skip

    cmd, _, full_out = _child(tmp_path, cfg, "full")
    subprocess.run(cmd, check=True, env=_env(), timeout=300)

    cmd, killed_dir, _ = _child(tmp_path, cfg, "killed")
    proc = subprocess.Popen(cmd, env=_env())
    last = killed_dir / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 240
    try:
        while _checkpoint_epoch(last) < kill_after:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint appeared in time"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    killed_at = _checkpoint_epoch(last)
    assert kill_after <= killed_at < epochs, "the kill must land mid-training"

    cfg.train.resume = str(killed_dir)
    cmd, _, resumed_out = _child(tmp_path, cfg, "resumed")
    subprocess.run(cmd, check=True, env=_env(), timeout=300)

    full = torch.load(full_out, weights_only=True)
    resumed = torch.load(resumed_out, weights_only=True)
    assert len(full["history"]) == epochs
    same_results(full, resumed)


def test_resume_can_train_longer_unless_the_schedule_spans_the_run(tmp_path: Path) -> None:
    data = toy_splits()
    cfg = compose_config(["train.epochs=2", "train.early_stopping.enabled=false"])
    run(cfg, data, tmp_path / "a")
    cfg.train.resume = str(tmp_path / "a")
    cfg.train.epochs = 3
    longer = run(cfg, data, tmp_path / "b")
    assert len(longer["history"]) == 3 and longer["stopped_epoch"] == 3

    cosine = compose_config(["train.epochs=2", "train.scheduler.name=cosine"])
    run(cosine, data, tmp_path / "c")
    cosine.train.resume = str(tmp_path / "c")
    cosine.train.epochs = 4
    with pytest.raises(ConfigError, match=r"train\.epochs=4 differs"):
        run(cosine, data, tmp_path / "d")


# ------------------------------------------------------------- SIGKILL, then resume, in MLflow
@pytest.mark.slow
def test_pipeline_killed_then_resumed_is_one_finished_run_with_every_epoch_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from mlflow import MlflowClient

    from advlab.naming import KILLED_REASON_TAG
    from advlab.pipeline import run as run_pipeline

    epochs, uri = 8, f"sqlite:///{tmp_path / 'mlflow.db'}"
    overrides = [
        f"paths.runs_dir={tmp_path / 'runs'}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"tracking.uri={uri}",
        f"tracking.artifact_root={tmp_path / 'mlartifacts'}",
        "report.enabled=false",
        "tracking.log_model=false",
        "device=cpu",
        "threads=1",
        f"train.epochs={epochs}",
        "train.batch_size=32",
        "train.early_stopping.enabled=false",
        "data.limit_train=2000",  # about a second per epoch: long enough to be killed inside
        "data.limit_test=200",
        "eval.n_examples=64",
        "eval.eps=[0,8]",
        "attacks.pgd.steps=3",
        "eval.sanity.convergence_n=32",
        "eval.grid_n=2",
    ]
    killed_dir = tmp_path / "killed"
    cli = [sys.executable, "-m", "advlab", *overrides, f"hydra.run.dir={killed_dir}"]
    proc = subprocess.Popen(cli, env=_env(), cwd=PROJECT_ROOT)
    last = killed_dir / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 240
    try:
        while _checkpoint_epoch(last) < 2:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint appeared in time"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert _checkpoint_epoch(last) < epochs, "the kill must land mid-training"
    client = MlflowClient(uri)
    (killed,) = client.search_runs([client.get_experiment_by_name("quickstart").experiment_id])
    assert killed.info.status == "RUNNING"  # SIGKILL: nobody closed it

    caplog.set_level(logging.INFO, logger="advlab.pipeline")
    run_pipeline(compose_config([*overrides, f"train.resume={killed_dir}"]))

    (resumed,) = client.search_runs([killed.info.experiment_id])
    link = (
        f"http://127.0.0.1:5000/#/experiments/{killed.info.experiment_id}/runs/"
        f"{killed.info.run_id}?workflowType=machine_learning"
    )
    assert f"open in MLflow UI   {link}\n" in caplog.text  # the summary links the same run
    assert f"device              cpu (torch {torch.__version__})\n" in caplog.text
    assert resumed.info.run_id == killed.info.run_id
    assert resumed.info.status == "FINISHED"
    assert KILLED_REASON_TAG not in resumed.data.tags  # reaped, then continued
    for key in ("train_loss", "val_acc", "lr"):
        steps = [m.step for m in client.get_metric_history(resumed.info.run_id, key)]
        assert sorted(steps) == list(range(1, epochs + 1)), key
    assert resumed.data.metrics["stopped_epoch"] == epochs

    with pytest.raises(ConfigError, match="has FINISHED"):
        run_pipeline(compose_config([*overrides, f"train.resume={killed_dir}"]))


def _saver_state(tmp_path: Path):
    from torch import nn

    from advlab.training.checkpoint import TrainingState
    from advlab.training.early_stopping import EarlyStopping

    model = nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.rand(3, 4)).sum().backward()
    optimizer.step()  # a momentum buffer to copy
    state = TrainingState(
        model, optimizer, None, EarlyStopping(), {"batches": torch.Generator()}, [{"val_loss": 1.0}]
    )
    return model, optimizer, state


def test_checkpoints_written_in_the_background_hold_the_epoch_they_were_saved_at(
    tmp_path, monkeypatch
):
    import threading

    from advlab.training import checkpoint
    from advlab.training.checkpoint import LAST, EpochSaver, load_checkpoint

    trained_on = threading.Event()
    write = checkpoint.save_checkpoint

    def write_late(path, payload):  # the write starts only once training has moved on
        trained_on.wait(timeout=30)
        write(path, payload)

    monkeypatch.setattr(checkpoint, "save_checkpoint", write_late)
    model, optimizer, state = _saver_state(tmp_path)
    saved_weight = model.weight.detach().clone()
    saved_momentum = optimizer.state[model.weight]["momentum_buffer"].clone()
    saver = EpochSaver(state, tmp_path, {"train": {}}, time.perf_counter())
    saver(improved=False)
    with torch.no_grad():  # the next epoch goes on while the write may still be running
        model.weight.add_(1.0)
        optimizer.state[model.weight]["momentum_buffer"].add_(1.0)
    state.history.append({"val_loss": 0.5})
    trained_on.set()
    saver.wait()
    ckpt = load_checkpoint(tmp_path / LAST)
    assert torch.equal(ckpt["model"]["weight"], saved_weight)
    assert torch.equal(ckpt["optimizer"]["state"][0]["momentum_buffer"], saved_momentum)
    assert ckpt["history"] == [{"val_loss": 1.0}] and ckpt["epoch"] == 1


def test_a_failed_background_write_is_raised_on_the_training_thread(tmp_path):
    from advlab.training.checkpoint import EpochSaver

    _, _, state = _saver_state(tmp_path)
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")  # the checkpoints folder cannot be made here
    saver = EpochSaver(state, blocker / "checkpoints", {}, time.perf_counter())
    saver(improved=False)
    with pytest.raises(OSError):
        saver.wait()
    saver.wait()  # raised once
