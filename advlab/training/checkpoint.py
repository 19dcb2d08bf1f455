"""Training checkpoints: written atomically every epoch, loaded with ``weights_only=True``.

``run_dir/checkpoints/last.pt`` holds everything needed to continue exactly where the run stopped:
model, optimizer, scheduler, early-stopping state, the best weights so far, every RNG state
(torch CPU/CUDA, NumPy, Python, the batch-order/augmentation generator and the adversarial
generator), the epoch and the metric history. ``best.pt`` holds the best epoch's model weights and
metrics. Everything is stored as tensors or built-in types so no pickled code runs on load.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from advlab.config import Scheduler
from advlab.errors import ConfigError
from advlab.fileio import atomic_path
from advlab.naming import CHECKPOINTS_DIR, TRAIN_LOSS
from advlab.training.early_stopping import EarlyStopping
from advlab.training.schedules import SPAN_THE_RUN

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
LAST = "last.pt"
BEST = "best.pt"
# Keys of the train config that may change on resume without changing the result.
_RESUME_FREE_KEYS = {"resume", "progress", "checkpoint", "epochs"}
# Key of the start loss in the checkpoint's ``config`` entry (the one entry of last.pt that fit
# fills freely; a resume compares only its "train" and "optimizer" groups). A resumed model is
# trained, so its start loss cannot be measured again.
START_LOSS_KEY = "start_loss"


@dataclass
class TrainingState:
    """What changes while a run trains: everything ``last.pt`` saves and a resume restores.

    ``history`` holds one metrics dict per finished epoch, so the next epoch is
    ``len(history) + 1``. ``best_model`` is a CPU copy of the best epoch's weights so far;
    ``prior_seconds`` the training time of the segments a resumed run continues.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: LRScheduler | None
    stopper: EarlyStopping
    generators: dict[str, torch.Generator]
    history: list[dict[str, float]] = field(default_factory=list)
    best_model: dict[str, torch.Tensor] | None = None
    prior_seconds: float = 0.0

    def record(self, epoch: int, metrics: dict[str, float]) -> bool:
        """Add the epoch to the history and early stopping; keep its weights if it is the best;
        whether it improved on the best so far."""
        improved = self.stopper.step(epoch, metrics)
        self.history.append(metrics)
        if improved:
            self.best_model = {
                k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()
            }
        return improved

    def append(self, metrics: dict[str, float]) -> bool:
        """Add a diverged epoch to the history only (early stopping never sees it, its weights
        are not kept); not improved."""
        self.history.append(metrics)
        return False

    def restore_best(self, es_cfg: DictConfig, weights_epoch: int) -> int:
        """With ``restore_best``, load the best epoch's weights; the epoch the model ends with.
        ``weights_epoch``: the epoch whose weights the model holds now."""
        if not (es_cfg.enabled and es_cfg.restore_best and self.best_model is not None):
            return weights_epoch
        if self.stopper.best_epoch != weights_epoch:
            self.model.load_state_dict(self.best_model)
            best, monitor = self.stopper.best_epoch, es_cfg.monitor
            log.info("restored the weights of epoch %d (best %s)", best, monitor)
        return self.stopper.best_epoch


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINTS_DIR


def run_config(cfg_train: DictConfig, cfg_optimizer: DictConfig) -> dict[str, Any]:
    """The train and optimizer config as plain types (what ``last.pt`` stores as ``config``)."""

    def plain(cfg: DictConfig) -> dict[str, Any]:
        # enum_to_str: enum members would make the file unloadable with weights_only=True.
        return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)  # type: ignore[return-value]

    return {"train": plain(cfg_train), "optimizer": plain(cfg_optimizer)}


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (plus a format version) to ``path`` atomically (temp file + os.replace)."""
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT_VERSION, **state}, tmp)


def epoch_payloads(
    state: TrainingState, *, improved: bool, seconds: float, config: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """What an epoch's checkpoints hold, by file name: ``best.pt`` when the epoch ``improved`` on
    the best so far, then ``last.pt``. Everything training changes later is copied (the weights,
    the optimizer's and early stopping's state, the history), so the files can be written while
    the next epoch trains; ``best_model`` is replaced, never changed, when a better epoch comes.

    ``seconds`` is the run's training time so far (all segments); ``config`` is
    :func:`run_config`'s, which a resume compares with its own.
    """
    epoch = len(state.history)
    payloads: dict[str, dict[str, Any]] = {}
    if improved:
        payloads[BEST] = {
            "epoch": epoch,
            "model": state.best_model,
            "metrics": dict(state.history[-1]),
        }
    scheduler = state.scheduler
    payloads[LAST] = {
        "epoch": epoch,
        "model": {k: v.detach().clone() for k, v in state.model.state_dict().items()},
        "optimizer": copy.deepcopy(state.optimizer.state_dict()),
        "scheduler": copy.deepcopy(scheduler.state_dict()) if scheduler is not None else None,
        "early_stopping": copy.deepcopy(state.stopper.state_dict()),
        "best_model": state.best_model,
        "rng": rng_state(state.generators),
        "history": [dict(m) for m in state.history],
        "seconds": seconds,
        "config": config,
    }
    return payloads


class EpochSaver:
    """``save(improved)`` after each epoch writes its checkpoints (:func:`epoch_payloads`) on a
    worker thread while the next epoch trains: the atomic, fsync'ed writes of ``best.pt`` and
    ``last.pt`` leave the training loop. One write is in flight at most (the next one waits for
    it); ``wait()`` returns once the last one is on disk and re-raises a write's error. The
    training time in each checkpoint runs from ``t_start`` (a ``time.perf_counter()``), added to
    the earlier segments'."""

    def __init__(
        self, state: TrainingState, ckpt_dir: Path, config: dict[str, Any], t_start: float
    ) -> None:
        self.state, self.ckpt_dir, self.config, self.t_start = state, ckpt_dir, config, t_start
        self._writing: threading.Thread | None = None
        self._error: BaseException | None = None

    def __call__(self, improved: bool) -> None:
        seconds = self.state.prior_seconds + time.perf_counter() - self.t_start
        payloads = epoch_payloads(
            self.state, improved=improved, seconds=seconds, config=self.config
        )
        self.wait()
        self._writing = threading.Thread(
            target=self._write, args=(payloads,), name="advlab-checkpoint"
        )
        self._writing.start()

    def _write(self, payloads: dict[str, dict[str, Any]]) -> None:
        try:
            for name, payload in payloads.items():  # best.pt first, as a resume expects
                save_checkpoint(self.ckpt_dir / name, payload)
        except BaseException as exc:  # re-raised on the training thread by wait()
            self._error = exc

    def wait(self) -> None:
        if self._writing is not None:
            self._writing.join()
            self._writing = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``)."""
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # corrupt, truncated, or holds objects weights_only refuses
        raise ConfigError(f"train.resume={path}: cannot read the checkpoint ({exc})") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise ConfigError(f"train.resume={path}: not an advlab training checkpoint")
    return state


def resolve_resume(resume: str | Path) -> Path:
    """``train.resume`` -> the checkpoint file: a file as given, or ``last.pt`` inside a run
    directory (``<run_dir>/checkpoints/last.pt``) or a checkpoints directory."""
    path = Path(str(resume)).expanduser()
    if path.is_file():
        return path.resolve()
    if path.is_dir():
        for candidate in (checkpoint_dir(path) / LAST, path / LAST):
            if candidate.is_file():
                return candidate.resolve()
        raise ConfigError(
            f"train.resume={resume}: no checkpoint in that directory "
            f"(looked for checkpoints/{LAST} and {LAST})"
        )
    raise ConfigError(f"train.resume={resume}: no such file or directory")


def restore(state: TrainingState, path: Path, ckpt: dict[str, Any]) -> None:
    """Put what :func:`save_epoch` wrote to ``path`` (loaded as ``ckpt``) back into ``state``:
    weights, optimizer, scheduler, early stopping, every RNG, the history and the time so far."""
    try:
        state.model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise ConfigError(
            f"train.resume={path}: the checkpoint's weights do not fit this model ({exc})"
        ) from exc
    state.optimizer.load_state_dict(ckpt["optimizer"])
    if (state.scheduler is None) != (ckpt["scheduler"] is None):
        raise ConfigError(
            f"train.resume={path}: train.scheduler.name differs from the checkpoint's run"
        )
    if state.scheduler is not None:
        state.scheduler.load_state_dict(ckpt["scheduler"])
    state.stopper.load_state_dict(ckpt["early_stopping"])
    set_rng_state(ckpt["rng"], state.generators)
    state.history = [dict(m) for m in ckpt["history"]]
    state.best_model = ckpt["best_model"]
    state.prior_seconds = float(ckpt["seconds"])


def resume(state: TrainingState, cfg_train: DictConfig, cfg_optimizer: DictConfig) -> float:
    """Continue from ``train.resume``: check the settings against the checkpoint's run, restore
    ``state`` (its history holds the finished epochs); return the start loss that run measured."""
    path = resolve_resume(cfg_train.resume)
    ckpt = load_checkpoint(path)
    check_resume_config(path, ckpt, run_config(cfg_train, cfg_optimizer))
    restore(state, path, ckpt)
    log.info("resuming from %s after epoch %d of %d", path, len(state.history), cfg_train.epochs)
    return saved_start_loss(path, ckpt, state.history)


def saved_start_loss(path: Path, ckpt: dict[str, Any], history: list[dict[str, float]]) -> float:
    """The start loss stored in the checkpoint. A checkpoint written before it was stored gets
    the first epoch's mean train loss instead: that epoch starts from the untrained model, so its
    loss is the closest record of the start (slightly below it) and never flags epoch 1 itself;
    the first epoch's validation loss could be 10 x below it on an easy task."""
    saved = (ckpt.get("config") or {}).get(START_LOSS_KEY)
    if saved is not None:
        return float(saved)
    fallback = float(history[0][TRAIN_LOSS]) if history else math.nan
    log.warning(
        "train.resume=%s: the checkpoint has no start loss; judging divergence against the "
        "first epoch's train loss (%.4g)",
        path,
        fallback,
    )
    return fallback


def check_resume_config(path: Path, ckpt: dict[str, Any], now: dict[str, Any]) -> None:
    """Warn when the resumed run's settings (``now``, from :func:`run_config`) differ from the
    checkpoint's: the result would differ from an uninterrupted run's.

    ``train.epochs`` may grow on resume (train longer), except with a cosine or one-cycle
    schedule, which spans the whole run: that is a ConfigError.
    """
    saved = ckpt.get("config") or {}
    epochs, scheduler = now["train"]["epochs"], now["train"]["scheduler"]["name"]
    old_epochs = saved.get("train", {}).get("epochs", epochs)
    if old_epochs != epochs and Scheduler(scheduler) in SPAN_THE_RUN:
        raise ConfigError(
            f"train.epochs={epochs} differs from the checkpoint's run ({old_epochs}); "
            f"train.scheduler.name={scheduler} spans the whole run, so resume "
            f"{path} with train.epochs={old_epochs}"
        )
    for group in ("train", "optimizer"):
        old, new = saved.get(group, {}), now[group]
        for key in sorted(set(old) | set(new)):
            if group == "train" and key in _RESUME_FREE_KEYS:
                continue
            if old.get(key) != new.get(key):
                log.warning(
                    "train.resume=%s: %s.%s was %r in the checkpoint's run, now %r; the result "
                    "will differ from an uninterrupted run",
                    path,
                    group,
                    key,
                    old.get(key),
                    new.get(key),
                )


# ------------------------------------------------------------------------------------ RNG state
def rng_state(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    """Every RNG state as tensors and plain types: torch (CPU + CUDA), NumPy, Python, and the
    named ``generators``."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "name": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": int(py_version), "internal": list(py_internal), "gauss": py_gauss},
        "generators": {name: g.get_state() for name, g in generators.items()},
    }


def set_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    """Restore what :func:`rng_state` saved (generators matched by name)."""
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["name"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
    for name, g in generators.items():
        if name in state["generators"]:
            g.set_state(state["generators"][name].cpu())
