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

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn

from advlab import naming
from advlab.data.base import DataSplits, batches
from advlab.runtime import progress
from advlab.training import checkpoint
from advlab.training.checkpoint import TrainingState
from advlab.training.diagnostics import divergence, first_divergence, training_checks
from advlab.training.early_stopping import EarlyStopping
from advlab.training.setup import Loop, check_splits, prepare_loop, start_state
from advlab.training.validation import attacked_metrics, start_loss, validation_metrics
from advlab.validate import check_optimizer, check_train
from advlab.verdict import Check

log = logging.getLogger(__name__)

# Metrics that depend on wall-clock time, not on the computation (excluded from equality checks).
TIMING_METRICS = (naming.EPOCH_SECONDS, naming.IMAGES_PER_S)

EpochCallback = Callable[[int, dict[str, float]], None]  # (epoch, metrics); epoch is 1-based
Weights = dict[str, torch.Tensor]  # a state_dict


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
    (:func:`advlab.training.diagnostics.divergence`), or None. ``checks``: the training's
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
    check_splits(data)
    t_start = time.perf_counter()
    loop = prepare_loop(data, cfg_train, cfg_optimizer, seed=seed, device=device)
    state = start_state(model, loop, cfg_train, cfg_optimizer, seed=seed)
    if cfg_train.get("resume"):
        loss0 = checkpoint.resume(state, cfg_train, cfg_optimizer)
        _replay(state.history, on_epoch)
    else:
        loss0 = start_loss(state.model, data, loop.val)
    config = {**checkpoint.run_config(cfg_train, cfg_optimizer), checkpoint.START_LOSS_KEY: loss0}
    save = None
    if cfg_train.checkpoint:
        save = checkpoint.EpochSaver(state, checkpoint.checkpoint_dir(run_dir), config, t_start)
    try:
        diverged = _train_epochs(loop, state, loss0, on_epoch=on_epoch, save=save)
    finally:
        if save is not None:  # the last epoch's checkpoints are on disk when fit returns
            save.wait()
    # After a divergence the model holds the weights from before the diverged epoch.
    weights_epoch = len(state.history) - (diverged is not None)
    best_epoch = state.restore_best(cfg_train.early_stopping, weights_epoch)
    model.eval()
    return FitResult(
        best_epoch=best_epoch,
        stopped_epoch=len(state.history),
        history=[dict(m) for m in state.history],
        seconds=state.prior_seconds + time.perf_counter() - t_start,
        start_loss=loss0,
        diverged=diverged,
        checks=training_checks(state.history, start_loss=loss0, diverged=diverged, lr=loop.lr),
    )


def _replay(history: list[dict[str, float]], on_epoch: EpochCallback | None) -> None:
    """Replay a resumed run's finished epochs so the tracked run is complete: the tracker logs
    only the ones it lacks (a killed run may not have written its last epochs; a new run has
    none)."""
    if on_epoch is not None:
        for i, metrics in enumerate(history, start=1):
            on_epoch(i, _loggable(i, metrics))


def _train_epochs(
    loop: Loop,
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
        improved = state.record(epoch, metrics) if diverged is None else state.append(metrics)
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


# ---------------------------------------------------------------------------------- one epoch
def _epoch(loop: Loop, state: TrainingState, epoch: int) -> dict[str, float]:
    """Train one epoch, then validate; the epoch's metrics."""
    t_epoch = time.perf_counter()
    train_loss, train_acc, seen = _train_epoch(loop, state, epoch)
    train_seconds = time.perf_counter() - t_epoch
    val_loss, val_acc = validation_metrics(state.model, loop.data, loop.val)
    metrics: dict[str, float] = {
        naming.TRAIN_LOSS: train_loss,
        naming.TRAIN_ACC: train_acc,
        naming.VAL_LOSS: val_loss,
        naming.VAL_ACC: val_acc,
        naming.LR: float(state.optimizer.param_groups[0]["lr"]),
    }
    if loop.attacked is not None:
        metrics.update(attacked_metrics(state.model, loop.attacked, loop.val))
    metrics[naming.EPOCH_SECONDS] = time.perf_counter() - t_epoch
    metrics[naming.IMAGES_PER_S] = seen / max(train_seconds, 1e-9)
    metrics[naming.GEN_GAP] = train_acc - val_acc
    return metrics


def _train_epoch(loop: Loop, state: TrainingState, epoch: int) -> tuple[float, float, int]:
    """One pass over the shuffled training batches in train mode (dropout on, batch norm
    updating its statistics); returns mean loss, accuracy and the number of examples."""
    model, optimizer, scheduler = state.model, state.optimizer, state.scheduler
    objective, adv_generator = loop.objective, state.generators["adversarial"]
    device, memory_format = loop.val.device, loop.val.memory_format
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float32, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    train_batches = batches(
        loop.data.train,
        loop.batch_size,
        shuffle=True,
        generator=state.generators["batches"],
        augment=loop.data.augment,
        device=device,
    )
    for step, (x, y) in enumerate(
        progress(
            train_batches,
            enabled=loop.progress,
            desc=f"epoch {epoch}/{loop.epochs}",
            total=loop.n_steps,
            unit="batch",
        )
    ):
        x = x.contiguous(memory_format=memory_format)
        done = epoch - 1 + step / loop.n_steps  # fractional epochs done: IBP's ramp
        with loop.val.autocast():
            # The batch's loss: on the adversarial batch with train.adversarial (TRADES: clean
            # loss plus a KL term; IBP: clean and worst-case), its logits those trained on.
            loss, logits = objective(model, x, y, generator=adv_generator, epochs_done=done)
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


# ------------------------------------------------------------------------------ after an epoch
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
