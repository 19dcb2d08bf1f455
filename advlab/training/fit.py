"""The training loop: ``fit`` trains a model on ``data.train``, validating on ``data.val``.

Before epoch 1 it measures the start loss: the untrained model's mean validation loss. What it
does each epoch (1-based): train on shuffled (and augmented, and, with ``train.adversarial``,
adversarially perturbed) batches in train mode; evaluate ``data.val`` in eval mode (plus PGD and
FGSM accuracy on a fixed validation subset with ``train.adversarial.val_robust``); judge divergence
(:mod:`advlab.training.diagnostics`); update early stopping; write ``checkpoints/last.pt`` (and
``best.pt`` on improvement) atomically; hand the epoch's metrics to ``on_epoch``. A diverged epoch
ends training: the model gets back the weights it had before that epoch, and the run goes on to
evaluation with a failing ``training_stable`` check instead of an exception. It never imports
mlflow and never touches ``data.test``.

The loop is kept lean: loss and correct counts accumulate on the device and are read back once per
epoch, so there is no host-device synchronisation per batch.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from advlab.config import Loss, Precision
from advlab.data.base import DataSplits, batches, to_float
from advlab.errors import DataError, TrainingError
from advlab.naming import VAL_FGSM_ACC, VAL_PGD_ACC
from advlab.runtime import progress, resolve_precision
from advlab.training import adversarial
from advlab.training.checkpoint import (
    TrainingState,
    check_resume_config,
    checkpoint_dir,
    load_checkpoint,
    resolve_resume,
    restore,
    run_config,
    save_epoch,
)
from advlab.training.diagnostics import divergence, first_divergence, training_checks
from advlab.training.early_stopping import EarlyStopping
from advlab.training.param_groups import build_optimizer
from advlab.training.schedules import build_scheduler, steps_per_epoch
from advlab.validate import check_optimizer, check_train
from advlab.verdict import Check

log = logging.getLogger(__name__)

# Metrics that depend on wall-clock time, not on the computation (excluded from equality checks).
TIMING_METRICS = ("epoch_seconds", "images_per_s")

EpochCallback = Callable[[int, dict[str, float]], None]  # (epoch, metrics); epoch is 1-based
PerExampleLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (N, C), (N,) -> (N,)
Weights = dict[str, torch.Tensor]  # a state_dict
# Key of the start loss in the checkpoint's ``config`` entry (the one entry of last.pt that fit
# fills freely; a resume compares only its "train" and "optimizer" groups). A resumed model is
# trained, so its start loss cannot be measured again.
_START_LOSS_KEY = "start_loss"


@dataclass
class FitResult:
    """What :func:`fit` returns.

    ``best_epoch``: 1-based epoch whose weights the model ends with (the early-stopping best with
    ``restore_best``, else the last epoch; after a divergence the epoch before the diverged one,
    0 for the initial weights). ``stopped_epoch``: last epoch run (the diverged one, if any).
    ``history``: one metrics dict per epoch, as measured (a diverged epoch's non-finite losses
    included; ``on_epoch`` got them without). ``seconds``: wall-clock training time, summed over
    resumed segments. ``start_loss``: the untrained model's mean validation loss, the reference of
    the divergence rule. ``diverged``: why training diverged
    (:func:`advlab.training.diagnostics.divergence`), or None. ``checks``: the training's sanity
    checks (:func:`advlab.training.diagnostics.training_checks`: ``training_stable``,
    ``catastrophic_overfitting``), for the run's verdict.
    """

    best_epoch: int
    stopped_epoch: int
    history: list[dict[str, float]]
    seconds: float
    start_loss: float
    diverged: str | None
    checks: list[Check]


# ---------------------------------------------------------------------------------- losses
def _cross_entropy(logits: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="none")


def _mse(logits: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    target = F.one_hot(y, num_classes).to(torch.float32)
    return (logits.float().softmax(dim=1) - target).pow(2).mean(dim=1)


_LOSSES = {Loss.cross_entropy: _cross_entropy, Loss.mse: _mse}


def per_example_loss(name: str, num_classes: int) -> PerExampleLoss:
    """``(logits (N, C), labels (N,)) -> loss (N,)`` for ``train.loss``.

    ``cross_entropy``: softmax cross-entropy on the logits. ``mse``: the course's mean squared
    error on one-hot targets, computed on the softmax probabilities (mean over the C classes), so
    the loss is bounded and comparable across models that output logits.
    """
    return functools.partial(_LOSSES[Loss(name)], num_classes=num_classes)


# ------------------------------------------------------------------------------------- fit
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
    ``_partial_`` optimizer node; both are checked with :mod:`advlab.validate` first. ``seed``
    seeds the batch order/augmentation, dropout and adversarial random starts. Per-epoch metrics
    (``train_loss``, ``train_acc``, ``val_loss``, ``val_acc``, ``lr``, ``epoch_seconds``,
    ``images_per_s``, ``gen_gap`` and, with adversarial validation, ``val_pgd_acc`` (PGD) and
    ``val_fgsm_acc`` (FGSM, same subset); accuracies in [0, 1]) go to ``on_epoch(epoch,
    metrics)``, less any non-finite value (a diverged epoch's loss: MLflow refuses it).
    Checkpoints go to ``run_dir / "checkpoints"``. With ``train.resume`` the run continues from a
    checkpoint and the earlier epochs' metrics are replayed through ``on_epoch`` first; the start
    loss comes from the checkpoint, and a run that had diverged or stopped early trains no more.

    Divergence (the train or validation loss not finite, or the train loss above
    ``DIVERGENCE_FACTOR`` x the start loss) stops training after that epoch and puts back the
    weights of its start, so the model stays finite; it is reported in ``FitResult.diverged`` and
    a FAIL ``training_stable`` check, not raised.

    Returns with the model in eval mode. Raises ConfigError (bad config, before the first
    batch), DataError (empty split) and TrainingError (the untrained model's validation loss is
    not finite: there is nothing to train).
    """
    check_train(cfg_train)
    check_optimizer(cfg_optimizer)
    _check_splits(data)
    t_start = time.perf_counter()
    loop = _prepare_loop(data, cfg_train, cfg_optimizer, seed=seed, device=device)
    state = _start(model, loop, cfg_train, cfg_optimizer, seed=seed)
    if cfg_train.get("resume"):
        start_loss = _resume(state, cfg_train, cfg_optimizer, on_epoch)
    else:
        start_loss = _start_loss(loop, state.model)
    config = {**run_config(cfg_train, cfg_optimizer), _START_LOSS_KEY: start_loss}
    save = _saver(state, checkpoint_dir(run_dir), config, t_start) if cfg_train.checkpoint else None
    diverged = _train_epochs(loop, state, start_loss, on_epoch=on_epoch, save=save)
    # After a divergence the model holds the weights from before the diverged epoch.
    weights_epoch = len(state.history) - (diverged is not None)
    best_epoch = _restore_best(state, cfg_train.early_stopping, weights_epoch)
    model.eval()
    return FitResult(
        best_epoch=best_epoch,
        stopped_epoch=len(state.history),
        history=[dict(m) for m in state.history],
        seconds=state.prior_seconds + time.perf_counter() - t_start,
        start_loss=start_loss,
        diverged=diverged,
        checks=training_checks(state.history, start_loss=start_loss, diverged=diverged, lr=loop.lr),
    )


def _saver(
    state: TrainingState, ckpt_dir: Path, config: dict, t_start: float
) -> Callable[[bool], None]:
    """``save(improved)``: write the epoch's checkpoints (:func:`save_epoch`)."""

    def save(improved: bool) -> None:
        seconds = state.prior_seconds + time.perf_counter() - t_start
        save_epoch(ckpt_dir, state, improved=improved, seconds=seconds, config=config)

    return save


def _train_epochs(
    loop: _Loop,
    state: TrainingState,
    start_loss: float,
    *,
    on_epoch: EpochCallback | None,
    save: Callable[[bool], None] | None,
) -> str | None:
    """Run the epochs left, until the last, early stopping or a divergence; why it diverged."""
    found = first_divergence(state.history, start_loss)  # a resumed run that had diverged
    if found is not None:
        return found[1]
    for epoch in range(len(state.history) + 1, loop.epochs + 1):
        if state.stopper.should_stop:  # a resumed run that had already stopped early
            break
        snapshot = _snapshot(state.model)
        metrics = _epoch(loop, state, epoch)
        diverged = divergence(metrics, start_loss)
        if diverged is not None:
            state.model.load_state_dict(snapshot)
        # A diverged epoch is never the early-stopping best: its weights are not kept.
        improved = _record(state, epoch, metrics) if diverged is None else _append(state, metrics)
        if save is not None:
            save(improved)
        log.info(
            "epoch %d/%d  %s",
            epoch,
            loop.epochs,
            "  ".join(f"{k}={v:.4g}" for k, v in metrics.items()),
        )
        if on_epoch is not None:
            on_epoch(epoch, _loggable(epoch, metrics))
        if diverged is not None:
            _log_divergence(state.model, epoch, diverged, loop.lr)
            return diverged
        if state.stopper.should_stop:
            _log_early_stop(state.stopper, epoch)
            break
    return None


# ------------------------------------------------------------------------------ the run's setup
def _check_splits(data: DataSplits) -> None:
    if len(data.train) == 0:
        raise DataError(f"data={data.name}: the training split is empty")
    if len(data.val) == 0:
        raise DataError(
            f"data={data.name}: the validation split is empty; raise data.val_fraction "
            "(validation drives early stopping and is never the test set)"
        )


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == Precision.bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass(frozen=True)
class _RobustSubset:
    """Robust validation: a fixed validation subset (the same every epoch and after a resume),
    attacked with ``steps``-step PGD at ``eps`` (1/255 units) from random starts seeded ``seed``."""

    x: torch.Tensor
    y: torch.Tensor
    eps: float
    steps: int
    seed: int


@dataclass(frozen=True)
class _Loop:
    """What every epoch reads and no epoch changes, read from the config once (DictConfig access
    is slow inside the batch loop)."""

    data: DataSplits
    device: torch.device
    epochs: int
    batch_size: int
    n_steps: int  # optimizer steps per epoch
    precision: str  # as used on the device: fp32 or bf16
    memory_format: torch.memory_format
    loss_per_example: PerExampleLoss
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # the batch mean of it
    perturb: adversarial.Perturbation | None  # the adversarial-training attack, if any
    robust: _RobustSubset | None
    progress: bool
    lr: float  # optimizer.lr, named in the divergence messages

    @property
    def eval_batch_size(self) -> int:
        return max(self.batch_size, 256)

    def autocast(self) -> contextlib.AbstractContextManager:
        return _autocast(self.device, self.precision)


def _prepare_loop(
    data: DataSplits,
    cfg_train: DictConfig,
    cfg_optimizer: DictConfig,
    *,
    seed: int,
    device: torch.device,
) -> _Loop:
    """The loop's fixed settings: precision for ``device``, loss, adversarial attack, the robust
    validation subset."""
    precision = resolve_precision(str(cfg_train.precision), device)
    if precision != cfg_train.precision:
        log.info("train.precision=%s: training in %s on %s", cfg_train.precision, precision, device)
    loss_per_example = per_example_loss(cfg_train.loss, data.num_classes)

    def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return loss_per_example(logits, y).mean()

    batch_size = int(cfg_train.batch_size)
    return _Loop(
        data=data,
        device=device,
        epochs=int(cfg_train.epochs),
        batch_size=batch_size,
        n_steps=steps_per_epoch(len(data.train), batch_size),
        precision=precision,
        memory_format=torch.channels_last if cfg_train.channels_last else torch.contiguous_format,
        loss_per_example=loss_per_example,
        loss=loss,
        perturb=adversarial.training_perturbation(cfg_train.adversarial, loss_fn=loss),
        robust=_robust_subset(data, cfg_train.adversarial, seed=seed, device=device),
        progress=bool(cfg_train.progress),
        lr=float(cfg_optimizer.lr),
    )


def _robust_subset(
    data: DataSplits, adv_cfg: DictConfig, *, seed: int, device: torch.device
) -> _RobustSubset | None:
    """With ``val_robust``, ``val_robust_n`` validation examples drawn with their own seeded
    generator, so the subset depends on nothing else the run draws; else None."""
    if not adv_cfg.val_robust:
        return None
    pick = torch.randperm(len(data.val), generator=torch.Generator().manual_seed(seed + 2))
    pick = pick[: int(adv_cfg.val_robust_n)].numpy()
    return _RobustSubset(
        x=to_float(torch.from_numpy(data.val.images[pick]).to(device)),
        y=torch.from_numpy(data.val.labels[pick]).to(device),
        eps=float(adv_cfg.eps),
        steps=int(adv_cfg.val_robust_steps),
        seed=seed + 3,
    )


def _start(
    model: nn.Module,
    loop: _Loop,
    cfg_train: DictConfig,
    cfg_optimizer: DictConfig,
    *,
    seed: int,
) -> TrainingState:
    """Epoch 0: the model on the device, optimizer, schedule, early stopping, seeded RNGs."""
    model.to(loop.device)
    if loop.memory_format == torch.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg_optimizer)
    total_steps = loop.n_steps * loop.epochs
    scheduler = build_scheduler(optimizer, cfg_train.scheduler, total_steps=total_steps)
    stopper = EarlyStopping.from_config(
        cfg_train.early_stopping, val_robust=bool(cfg_train.adversarial.val_robust)
    )
    # Every random draw of the run derives from `seed`: dropout masks use torch's global RNG,
    # batch order and augmentation their own CPU generator, adversarial starts one on the device.
    torch.manual_seed(seed)
    generators = {
        "batches": torch.Generator().manual_seed(seed),
        "adversarial": torch.Generator(device=loop.device).manual_seed(seed + 1),
    }
    return TrainingState(model, optimizer, scheduler, stopper, generators)


def _start_loss(loop: _Loop, model: nn.Module) -> float:
    """The untrained model's mean validation loss: the divergence rule's reference. Measured in
    eval mode without drawing a random number, so the run's results do not change."""
    start_loss, _ = validation_metrics(
        model,
        loop.data,
        loop.loss_per_example,
        batch_size=loop.eval_batch_size,
        device=loop.device,
        memory_format=loop.memory_format,
        precision=loop.precision,
    )
    if not math.isfinite(start_loss):
        raise TrainingError(
            f"the untrained model's validation loss is {start_loss}: its initial weights (or "
            "the data) hold non-finite values, so there is nothing to train"
        )
    log.info("start loss %.4g (the untrained model's mean validation loss)", start_loss)
    return start_loss


def _resume(
    state: TrainingState,
    cfg_train: DictConfig,
    cfg_optimizer: DictConfig,
    on_epoch: EpochCallback | None,
) -> float:
    """Continue from ``train.resume``: restore ``state``, replay the finished epochs' metrics;
    the start loss the checkpoint's run measured."""
    path = resolve_resume(cfg_train.resume)
    ckpt = load_checkpoint(path)
    check_resume_config(path, ckpt, run_config(cfg_train, cfg_optimizer))
    restore(state, path, ckpt)
    log.info("resuming from %s after epoch %d of %d", path, len(state.history), cfg_train.epochs)
    if on_epoch is not None:
        # Replay the finished epochs so the tracked run is complete: the tracker logs only the
        # ones it lacks (a killed run may not have written its last epochs; a new run has none).
        for i, metrics in enumerate(state.history, start=1):
            on_epoch(i, _loggable(i, metrics))
    return _saved_start_loss(path, ckpt, state.history)


def _saved_start_loss(path: Path, ckpt: dict, history: list[dict[str, float]]) -> float:
    """The start loss stored in the checkpoint. A checkpoint written before it was stored gets
    the first epoch's mean train loss instead: that epoch starts from the untrained model, so its
    loss is the closest record of the start (slightly below it) and never flags epoch 1 itself;
    the first epoch's validation loss could be 10 x below it on an easy task."""
    saved = (ckpt.get("config") or {}).get(_START_LOSS_KEY)
    if saved is not None:
        return float(saved)
    fallback = float(history[0]["train_loss"]) if history else math.nan
    log.warning(
        "train.resume=%s: the checkpoint has no start loss; judging divergence against the "
        "first epoch's train loss (%.4g)",
        path,
        fallback,
    )
    return fallback


# ---------------------------------------------------------------------------------- one epoch
def _epoch(loop: _Loop, state: TrainingState, epoch: int) -> dict[str, float]:
    """Train one epoch, then validate; the epoch's metrics."""
    t_epoch = time.perf_counter()
    train_loss, train_acc, seen = _train_epoch(loop, state, epoch)
    train_seconds = time.perf_counter() - t_epoch
    val_loss, val_acc = validation_metrics(
        state.model,
        loop.data,
        loop.loss_per_example,
        batch_size=loop.eval_batch_size,
        device=loop.device,
        memory_format=loop.memory_format,
        precision=loop.precision,
    )
    metrics: dict[str, float] = {
        "train_loss": train_loss,
        "train_acc": train_acc,
        "val_loss": val_loss,
        "val_acc": val_acc,
        "lr": float(state.optimizer.param_groups[0]["lr"]),
    }
    if loop.robust is not None:
        # PGD first, with its own fresh generator: FGSM draws nothing, so PGD's numbers are
        # those of a run without FGSM validation.
        metrics[VAL_PGD_ACC] = _robust_accuracy(loop, loop.robust, state.model)
        metrics[VAL_FGSM_ACC] = _fgsm_accuracy(loop, loop.robust, state.model)
    metrics["epoch_seconds"] = time.perf_counter() - t_epoch
    metrics["images_per_s"] = seen / max(train_seconds, 1e-9)
    metrics["gen_gap"] = train_acc - val_acc
    return metrics


def _train_epoch(loop: _Loop, state: TrainingState, epoch: int) -> tuple[float, float, int]:
    """One pass over the shuffled training batches in train mode (dropout on, batch norm
    updating its statistics); returns mean loss, accuracy and the number of examples."""
    model, optimizer, scheduler = state.model, state.optimizer, state.scheduler
    perturb, adv_generator = loop.perturb, state.generators["adversarial"]
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float32, device=loop.device)
    correct = torch.zeros((), dtype=torch.int64, device=loop.device)
    seen = 0
    train_batches = batches(
        loop.data.train,
        loop.batch_size,
        shuffle=True,
        generator=state.generators["batches"],
        augment=loop.data.augment,
        device=loop.device,
    )
    for x, y in progress(
        train_batches,
        enabled=loop.progress,
        desc=f"epoch {epoch}/{loop.epochs}",
        total=loop.n_steps,
        unit="batch",
    ):
        x = x.contiguous(memory_format=loop.memory_format)
        if perturb is not None:
            with loop.autocast():
                x = perturb(model, x, y, generator=adv_generator)
        with loop.autocast():
            logits = model(x)
            loss = loop.loss(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        loss_sum += loss.detach().float() * y.shape[0]
        correct += (logits.detach().argmax(dim=1) == y).sum()
        seen += y.shape[0]
    # The one host sync of the training phase.
    return loss_sum.item() / seen, correct.item() / seen, seen


def _robust_accuracy(loop: _Loop, robust: _RobustSubset, model: nn.Module) -> float:
    model.eval()
    with loop.autocast():
        return adversarial.robust_accuracy(
            model,
            robust.x.contiguous(memory_format=loop.memory_format),
            robust.y,
            eps=robust.eps,
            steps=robust.steps,
            batch_size=loop.eval_batch_size,
            loss_fn=loop.loss,
            generator=torch.Generator(device=loop.device).manual_seed(robust.seed),
        )


def _fgsm_accuracy(loop: _Loop, robust: _RobustSubset, model: nn.Module) -> float:
    model.eval()
    with loop.autocast():
        return adversarial.fgsm_accuracy(
            model,
            robust.x.contiguous(memory_format=loop.memory_format),
            robust.y,
            eps=robust.eps,
            batch_size=loop.eval_batch_size,
            loss_fn=loop.loss,
        )


@torch.no_grad()
def validation_metrics(
    model: nn.Module,
    data: DataSplits,
    loss_per_example: PerExampleLoss,
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


# ------------------------------------------------------------------------------ after an epoch
def _record(state: TrainingState, epoch: int, metrics: dict[str, float]) -> bool:
    """Add the epoch to the history and early stopping; keep its weights if it is the best."""
    improved = state.stopper.step(epoch, metrics)
    state.history.append(metrics)
    if improved:
        state.best_model = {
            k: v.detach().to("cpu", copy=True) for k, v in state.model.state_dict().items()
        }
    return improved


def _append(state: TrainingState, metrics: dict[str, float]) -> bool:
    """Add a diverged epoch to the history only (early stopping never sees it); not improved."""
    state.history.append(metrics)
    return False


def _snapshot(model: nn.Module) -> Weights:
    """A copy of the weights (and buffers) on their device, to put back after a divergence."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _non_finite_tensors(model: nn.Module) -> list[str]:
    return [
        k
        for k, v in model.state_dict().items()
        if v.is_floating_point() and not bool(torch.isfinite(v).all())
    ]


def _loggable(epoch: int, metrics: dict[str, float]) -> dict[str, float]:
    """``metrics`` less its non-finite values (a diverged epoch's losses), which MLflow refuses;
    the history keeps them."""
    dropped = sorted(k for k, v in metrics.items() if not math.isfinite(v))
    if dropped:
        log.warning("epoch %d: not logging the non-finite %s", epoch, ", ".join(dropped))
    return {k: v for k, v in metrics.items() if k not in dropped}


def _log_divergence(model: nn.Module, epoch: int, why: str, lr: float) -> None:
    log.error(
        "training diverged in epoch %d: %s; stopped, with the weights from before epoch %d "
        "(lower optimizer.lr, now %g)",
        epoch,
        why,
        epoch,
        lr,
    )
    broken = _non_finite_tensors(model)
    if broken:  # only when the weights were non-finite before training began
        log.warning("the restored weights still hold non-finite values: %s", ", ".join(broken))


def _log_early_stop(stopper: EarlyStopping, epoch: int) -> None:
    log.info(
        "early stopping after epoch %d: %s has not improved for %d epochs (best %.4g at epoch %d)",
        epoch,
        stopper.monitor,
        stopper.bad_epochs,
        stopper.best,
        stopper.best_epoch,
    )


def _restore_best(state: TrainingState, es_cfg: DictConfig, weights_epoch: int) -> int:
    """With ``restore_best``, load the best epoch's weights; the epoch the model ends with.
    ``weights_epoch``: the epoch whose weights the model holds now."""
    if not (es_cfg.enabled and es_cfg.restore_best and state.best_model is not None):
        return weights_epoch
    if state.stopper.best_epoch != weights_epoch:
        state.model.load_state_dict(state.best_model)
        log.info(
            "restored the weights of epoch %d (best %s)", state.stopper.best_epoch, es_cfg.monitor
        )
    return state.stopper.best_epoch
