"""The training loop: ``fit`` trains a model on ``data.train``, validating on ``data.val``.

What it does each epoch (1-based): train on shuffled (and augmented, and, with
``train.adversarial``, adversarially perturbed) batches in train mode; evaluate ``data.val`` in eval
mode (plus PGD accuracy on a fixed validation subset with ``train.adversarial.val_robust``); update
early stopping; write ``checkpoints/last.pt`` (and ``best.pt`` on improvement) atomically; hand the
epoch's metrics to ``on_epoch``. It never imports mlflow and never touches ``data.test``.

The loop is kept lean: loss and correct counts accumulate on the device and are read back once per
epoch, so there is no host-device synchronisation per batch.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from advlab.data.base import DataSplits, batches, to_float
from advlab.errors import ConfigError, DataError, TrainingError
from advlab.runtime import progress, resolve_precision
from advlab.training import adversarial
from advlab.training.checkpoint import (
    BEST,
    LAST,
    checkpoint_dir,
    load_checkpoint,
    resolve_resume,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from advlab.training.early_stopping import EarlyStopping, check_early_stopping_config
from advlab.training.param_groups import build_optimizer
from advlab.training.schedules import build_scheduler, check_scheduler_config, steps_per_epoch
from advlab.validate import LOSSES, PRECISIONS  # one list of the allowed values, checked twice

log = logging.getLogger(__name__)

# Metrics that depend on wall-clock time, not on the computation (excluded from equality checks).
TIMING_METRICS = ("epoch_seconds", "images_per_s")
# Keys of the train/optimizer config that may change on resume without changing the result.
_RESUME_FREE_KEYS = {"resume", "progress", "checkpoint", "epochs"}

EpochCallback = Callable[[int, dict[str, float]], None]  # (epoch, metrics); epoch is 1-based


@dataclass
class FitResult:
    """What :func:`fit` returns.

    ``best_epoch``: 1-based epoch whose weights the model ends with (the early-stopping best with
    ``restore_best``, else the last epoch). ``stopped_epoch``: last epoch run. ``history``: one
    metrics dict per epoch. ``seconds``: wall-clock training time, summed over resumed segments.
    """

    best_epoch: int
    stopped_epoch: int
    history: list[dict[str, float]]
    seconds: float


# ---------------------------------------------------------------------------------- losses
def per_example_loss(name: str, num_classes: int) -> Callable[[torch.Tensor, torch.Tensor], Any]:
    """``(logits (N, C), labels (N,)) -> loss (N,)`` for ``train.loss``.

    ``cross_entropy``: softmax cross-entropy on the logits. ``mse``: the course's mean squared
    error on one-hot targets, computed on the softmax probabilities (mean over the C classes), so
    the loss is bounded and comparable across models that output logits.
    """
    if name == "cross_entropy":
        return lambda logits, y: F.cross_entropy(logits, y, reduction="none")
    if name == "mse":

        def mse(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            target = F.one_hot(y, num_classes).to(torch.float32)
            return (logits.float().softmax(dim=1) - target).pow(2).mean(dim=1)

        return mse
    raise ConfigError(f"train.loss={name}: must be one of {', '.join(LOSSES)}")


# ------------------------------------------------------------------------------- validation
def check_fit_config(cfg_train: DictConfig, cfg_optimizer: DictConfig) -> None:
    """Every range check of the training config, so a bad value fails before the first batch."""
    if int(cfg_train.epochs) < 1:
        raise ConfigError(f"train.epochs={cfg_train.epochs}: must be >= 1")
    if int(cfg_train.batch_size) < 1:
        raise ConfigError(f"train.batch_size={cfg_train.batch_size}: must be >= 1")
    if cfg_train.loss not in LOSSES:
        raise ConfigError(f"train.loss={cfg_train.loss}: must be one of {', '.join(LOSSES)}")
    if cfg_train.precision not in PRECISIONS:
        raise ConfigError(
            f"train.precision={cfg_train.precision}: must be one of {', '.join(PRECISIONS)}"
        )
    lr = cfg_optimizer.get("lr")
    if lr is None or not float(lr) > 0:
        raise ConfigError(f"optimizer.lr={lr}: must be > 0")
    if float(cfg_optimizer.get("weight_decay", 0.0) or 0.0) < 0:
        raise ConfigError(f"optimizer.weight_decay={cfg_optimizer.weight_decay}: must be >= 0")
    check_scheduler_config(cfg_train.scheduler)
    adversarial.check_adversarial_config(cfg_train.adversarial)
    check_early_stopping_config(
        cfg_train.early_stopping, val_robust=bool(cfg_train.adversarial.val_robust)
    )


# ------------------------------------------------------------------------------------- fit
def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _plain_cfg(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def fit(
    model: nn.Module,
    data: DataSplits,
    cfg_train: DictConfig,
    cfg_optimizer: DictConfig,
    *,
    seed: int,
    device: torch.device,
    run_dir: Path,
    on_epoch: EpochCallback | None = None,
) -> FitResult:
    """Train ``model`` in place on ``data.train``, validating on ``data.val`` every epoch.

    ``cfg_train`` is ``cfg.train`` (:class:`advlab.config.TrainConf`), ``cfg_optimizer`` the
    ``_partial_`` optimizer node. ``seed`` seeds the batch order/augmentation, dropout and
    adversarial random starts. Per-epoch metrics (``train_loss``, ``train_acc``, ``val_loss``,
    ``val_acc``, ``lr``, ``epoch_seconds``, ``images_per_s``, ``gen_gap`` and, with adversarial
    validation, ``val_robust_acc``; accuracies in [0, 1]) go to ``on_epoch(epoch, metrics)``.
    Checkpoints go to ``run_dir / "checkpoints"``. With ``train.resume`` the run continues from a
    checkpoint and the earlier epochs' metrics are replayed through ``on_epoch`` first.

    Returns with the model in eval mode. Raises ConfigError (bad config, before the first
    batch), DataError (empty split) and TrainingError (the loss became NaN or infinite).
    """
    check_fit_config(cfg_train, cfg_optimizer)
    if len(data.train) == 0:
        raise DataError(f"data={data.name}: the training split is empty")
    if len(data.val) == 0:
        raise DataError(
            f"data={data.name}: the validation split is empty; raise data.val_fraction "
            "(validation drives early stopping and is never the test set)"
        )
    t_start = time.perf_counter()
    epochs, batch_size = int(cfg_train.epochs), int(cfg_train.batch_size)
    adv_cfg = cfg_train.adversarial
    adv_method = str(adv_cfg.method)  # read once: DictConfig access is slow inside the batch loop
    es_cfg = cfg_train.early_stopping
    loss_per_example = per_example_loss(cfg_train.loss, data.num_classes)

    def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return loss_per_example(logits, y).mean()

    model.to(device)
    memory_format = torch.channels_last if cfg_train.channels_last else torch.contiguous_format
    if cfg_train.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg_optimizer)
    n_steps = steps_per_epoch(len(data.train), batch_size)
    scheduler = build_scheduler(optimizer, cfg_train.scheduler, total_steps=n_steps * epochs)
    stopper = EarlyStopping.from_config(es_cfg, val_robust=bool(adv_cfg.val_robust))

    # Every random draw of the run derives from `seed`: dropout masks use torch's global RNG,
    # batch order and augmentation their own CPU generator, adversarial starts one on `device`.
    torch.manual_seed(seed)
    generators = {
        "batches": torch.Generator().manual_seed(seed),
        "adversarial": torch.Generator(device=device).manual_seed(seed + 1),
    }
    robust_x = robust_y = None
    if adv_cfg.val_robust:
        # A fixed validation subset, the same every epoch (and after a resume).
        pick = torch.randperm(len(data.val), generator=torch.Generator().manual_seed(seed + 2))
        pick = pick[: int(adv_cfg.val_robust_n)].numpy()
        robust_x = to_float(torch.from_numpy(data.val.images[pick]).to(device))
        robust_y = torch.from_numpy(data.val.labels[pick]).to(device)

    history: list[dict[str, float]] = []
    best_state: dict[str, torch.Tensor] | None = None
    start_epoch, prior_seconds = 1, 0.0
    if cfg_train.get("resume"):
        path = resolve_resume(cfg_train.resume)
        ckpt = load_checkpoint(path)
        _check_resume_config(path, ckpt, cfg_train, cfg_optimizer)
        try:
            model.load_state_dict(ckpt["model"])
        except RuntimeError as exc:
            raise ConfigError(
                f"train.resume={path}: the checkpoint's weights do not fit this model ({exc})"
            ) from exc
        optimizer.load_state_dict(ckpt["optimizer"])
        if (scheduler is None) != (ckpt["scheduler"] is None):
            raise ConfigError(
                f"train.resume={path}: train.scheduler.name differs from the checkpoint's run"
            )
        if scheduler is not None:
            scheduler.load_state_dict(ckpt["scheduler"])
        stopper.load_state_dict(ckpt["early_stopping"])
        set_rng_state(ckpt["rng"], generators)
        history = [dict(m) for m in ckpt["history"]]
        best_state = ckpt["best_model"]
        start_epoch, prior_seconds = int(ckpt["epoch"]) + 1, float(ckpt["seconds"])
        log.info("resuming from %s after epoch %d of %d", path, start_epoch - 1, epochs)
        if on_epoch is not None:
            # A resumed run is a new tracking run: replay the finished epochs so it is complete.
            for i, metrics in enumerate(history, start=1):
                on_epoch(i, metrics)

    ckpt_dir = checkpoint_dir(run_dir)
    precision = resolve_precision(str(cfg_train.precision), device)
    if precision != cfg_train.precision:
        log.info("train.precision=%s: training in %s on %s", cfg_train.precision, precision, device)

    def autocast() -> contextlib.AbstractContextManager:
        return _autocast(device, precision)

    for epoch in range(start_epoch, epochs + 1):
        if stopper.should_stop:  # a resumed run that had already stopped early
            break
        t_epoch = time.perf_counter()
        # ---- train (model.train(): dropout on, batch norm updates its running statistics)
        model.train()
        loss_sum = torch.zeros((), dtype=torch.float32, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        seen = 0
        train_batches = batches(
            data.train,
            batch_size,
            shuffle=True,
            generator=generators["batches"],
            augment=data.augment,
            device=device,
        )
        for x, y in progress(
            train_batches,
            enabled=bool(cfg_train.progress),
            desc=f"epoch {epoch}/{epochs}",
            total=n_steps,
            unit="batch",
        ):
            x = x.contiguous(memory_format=memory_format)
            if adv_method != "none":
                with autocast():
                    x = adversarial.perturb(
                        adv_cfg, model, x, y, loss_fn=loss_fn, generator=generators["adversarial"]
                    )
            with autocast():
                logits = model(x)
                loss = loss_fn(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            loss_sum += loss.detach().float() * y.shape[0]
            correct += (logits.detach().argmax(dim=1) == y).sum()
            seen += y.shape[0]
        train_loss = loss_sum.item() / seen  # the one host sync of the training phase
        train_acc = correct.item() / seen
        train_seconds = time.perf_counter() - t_epoch
        if not math.isfinite(train_loss):
            raise TrainingError(
                f"the training loss became {train_loss} in epoch {epoch}: lower optimizer.lr "
                f"(now {cfg_optimizer.lr}) or check the data"
            )
        # ---- validate (model.eval(): dropout off, batch norm uses running statistics)
        val_loss, val_acc = validation_metrics(
            model,
            data,
            loss_per_example,
            batch_size=max(batch_size, 256),
            device=device,
            memory_format=memory_format,
            precision=precision,
        )
        if not math.isfinite(val_loss):
            raise TrainingError(
                f"the validation loss became {val_loss} in epoch {epoch}: lower optimizer.lr "
                f"(now {cfg_optimizer.lr})"
            )
        metrics: dict[str, float] = {
            "train_loss": train_loss,
            "train_acc": train_acc,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "lr": float(optimizer.param_groups[0]["lr"]),
        }
        if robust_x is not None and robust_y is not None:
            model.eval()
            with autocast():
                metrics["val_robust_acc"] = adversarial.robust_accuracy(
                    model,
                    robust_x.contiguous(memory_format=memory_format),
                    robust_y,
                    eps=float(adv_cfg.eps),
                    steps=int(adv_cfg.val_robust_steps),
                    batch_size=max(batch_size, 256),
                    loss_fn=loss_fn,
                    generator=torch.Generator(device=device).manual_seed(seed + 3),
                )
        metrics["epoch_seconds"] = time.perf_counter() - t_epoch
        metrics["images_per_s"] = seen / max(train_seconds, 1e-9)
        metrics["gen_gap"] = train_acc - val_acc

        improved = stopper.step(epoch, metrics)
        history.append(metrics)
        if improved:
            best_state = _cpu_state(model)
        if cfg_train.checkpoint:
            if improved:
                save_checkpoint(
                    ckpt_dir / BEST, {"epoch": epoch, "model": best_state, "metrics": metrics}
                )
            save_checkpoint(
                ckpt_dir / LAST,
                {
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "early_stopping": stopper.state_dict(),
                    "best_model": best_state,
                    "rng": rng_state(generators),
                    "history": history,
                    "seconds": prior_seconds + time.perf_counter() - t_start,
                    "config": {
                        "train": _plain_cfg(cfg_train),
                        "optimizer": _plain_cfg(cfg_optimizer),
                    },
                },
            )
        log.info(
            "epoch %d/%d  %s",
            epoch,
            epochs,
            "  ".join(f"{k}={v:.4g}" for k, v in metrics.items()),
        )
        if on_epoch is not None:
            on_epoch(epoch, metrics)
        if stopper.should_stop:
            log.info(
                "early stopping after epoch %d: %s has not improved for %d epochs "
                "(best %.4g at epoch %d)",
                epoch,
                stopper.monitor,
                stopper.bad_epochs,
                stopper.best,
                stopper.best_epoch,
            )
            break

    stopped_epoch = len(history)
    best_epoch = stopped_epoch
    if es_cfg.enabled and es_cfg.restore_best and best_state is not None:
        if stopper.best_epoch != stopped_epoch:
            model.load_state_dict(best_state)
            log.info(
                "restored the weights of epoch %d (best %s)", stopper.best_epoch, es_cfg.monitor
            )
        best_epoch = stopper.best_epoch
    model.eval()
    return FitResult(
        best_epoch=best_epoch,
        stopped_epoch=stopped_epoch,
        history=[dict(m) for m in history],
        seconds=prior_seconds + time.perf_counter() - t_start,
    )


@torch.no_grad()
def validation_metrics(
    model: nn.Module,
    data: DataSplits,
    loss_per_example: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    batch_size: int,
    device: torch.device,
    memory_format: torch.memory_format = torch.contiguous_format,
    precision: str = "fp32",
) -> tuple[float, float]:
    """Mean loss and accuracy (in [0, 1]) of ``model`` on ``data.val`` in eval mode."""
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float32, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    n = 0
    for x, y in batches(data.val, batch_size, shuffle=False, generator=None, device=device):
        with _autocast(device, precision):
            logits = model(x.contiguous(memory_format=memory_format))
            loss_sum += loss_per_example(logits, y).float().sum()
        correct += (logits.argmax(dim=1) == y).sum()
        n += y.shape[0]
    return loss_sum.item() / n, correct.item() / n


def _check_resume_config(
    path: Path, ckpt: dict[str, Any], cfg_train: DictConfig, cfg_optimizer: DictConfig
) -> None:
    """Warn when the resumed run's settings differ from the checkpoint's (results would too).

    ``train.epochs`` may grow on resume (train longer), except with a cosine or one-cycle
    schedule, which spans the whole run: that is a ConfigError.
    """
    saved = ckpt.get("config") or {}
    now = {"train": _plain_cfg(cfg_train), "optimizer": _plain_cfg(cfg_optimizer)}
    old_epochs = saved.get("train", {}).get("epochs", cfg_train.epochs)
    if old_epochs != cfg_train.epochs and cfg_train.scheduler.name in ("cosine", "onecycle"):
        raise ConfigError(
            f"train.epochs={cfg_train.epochs} differs from the checkpoint's run ({old_epochs}); "
            f"train.scheduler.name={cfg_train.scheduler.name} spans the whole run, so resume "
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
