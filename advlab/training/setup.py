"""The setup of a training run: the loop's fixed settings (:class:`Loop`, read from the config
once) and the state at epoch 0 (:func:`start_state`: model on the device, optimizer, schedule,
early stopping, seeded generators)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from omegaconf import DictConfig
from torch import nn

from advlab.config import AdversarialMethod
from advlab.data.base import DataSplits
from advlab.errors import DataError
from advlab.runtime import resolve_precision
from advlab.training import adversarial
from advlab.training.checkpoint import TrainingState
from advlab.training.early_stopping import ChanceFloor, EarlyStopping
from advlab.training.losses import batch_mean, per_example_loss
from advlab.training.param_groups import build_optimizer
from advlab.training.schedules import build_scheduler, steps_per_epoch
from advlab.training.validation import ValSettings, ValSubset, val_subset

log = logging.getLogger(__name__)


def check_splits(data: DataSplits) -> None:
    """DataError for an empty training or validation split."""
    if len(data.train) == 0:
        raise DataError(f"data={data.name}: the training split is empty")
    if len(data.val) == 0:
        raise DataError(
            f"data={data.name}: the validation split is empty; raise data.val_fraction "
            "(validation drives early stopping and is never the test set)"
        )


@dataclass(frozen=True)
class Loop:
    """What every epoch reads and no epoch changes, read from the config once (DictConfig access
    is slow inside the batch loop)."""

    data: DataSplits
    epochs: int
    batch_size: int
    n_steps: int  # optimizer steps per epoch
    val: ValSettings  # device, precision, memory format, loss; batch size of the eval passes
    objective: adversarial.Objective  # a batch's loss and logits (adversarial, with training)
    attacked: ValSubset | None  # the subset attacked each epoch (val_pgd_acc, val_fgsm_acc)
    progress: bool
    lr: float  # optimizer.lr, named in the divergence messages


def prepare_loop(
    data: DataSplits,
    cfg_train: DictConfig,
    cfg_optimizer: DictConfig,
    *,
    seed: int,
    device: torch.device,
) -> Loop:
    """The loop's fixed settings: precision for ``device``, loss, the batch objective (with its
    adversarial attack), the validation subset attacked each epoch."""
    precision = resolve_precision(str(cfg_train.precision), device)
    if precision != cfg_train.precision:
        log.info("train.precision=%s: training in %s on %s", cfg_train.precision, precision, device)
    _warn_short_ramp(cfg_train)
    loss_per_example = per_example_loss(cfg_train.loss, data.num_classes)
    loss = batch_mean(loss_per_example)
    batch_size = int(cfg_train.batch_size)
    val = ValSettings(
        device=device,
        precision=precision,
        memory_format=torch.channels_last if cfg_train.channels_last else torch.contiguous_format,
        # Eval passes hold no activations for a backward pass: larger batches are cheap.
        batch_size=max(batch_size, 256),
        loss_per_example=loss_per_example,
        loss=loss,
    )
    return Loop(
        data=data,
        epochs=int(cfg_train.epochs),
        batch_size=batch_size,
        n_steps=steps_per_epoch(len(data.train), batch_size),
        val=val,
        objective=adversarial.training_objective(cfg_train.adversarial, loss_fn=loss),
        attacked=val_subset(data, cfg_train.adversarial, seed=seed, device=device),
        progress=bool(cfg_train.progress),
        lr=float(cfg_optimizer.lr),
    )


def _warn_short_ramp(cfg_train: DictConfig) -> None:
    """IBP's eps ramp that does not end before the last epoch never trains at full eps."""
    adv = cfg_train.adversarial
    if adv.method != AdversarialMethod.ibp:
        return
    ramp_end = int(adv.warmup_epochs) + int(adv.ramp_epochs)
    if ramp_end >= int(cfg_train.epochs):
        log.warning(
            "train.adversarial: warmup_epochs + ramp_epochs = %d reaches eps=%g only at the end "
            "of epoch %d, and train.epochs=%d: give the ramp fewer epochs or training more",
            ramp_end,
            float(adv.eps),
            ramp_end,
            int(cfg_train.epochs),
        )


def start_state(
    model: nn.Module,
    loop: Loop,
    cfg_train: DictConfig,
    cfg_optimizer: DictConfig,
    *,
    seed: int,
) -> TrainingState:
    """Epoch 0: the model on the device, optimizer, schedule, early stopping, seeded RNGs."""
    model.to(loop.val.device)
    if loop.val.memory_format == torch.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg_optimizer)
    total_steps = loop.n_steps * loop.epochs
    scheduler = build_scheduler(optimizer, cfg_train.scheduler, total_steps=total_steps)
    stopper = EarlyStopping.from_config(
        cfg_train.early_stopping,
        val_robust=bool(cfg_train.adversarial.val_robust),
        floor=ChanceFloor.of(loop.data.val.labels, int(loop.data.num_classes)),
    )
    # Every random draw of the run derives from `seed`: dropout masks use torch's global RNG,
    # batch order and augmentation their own CPU generator, adversarial starts one on the device.
    torch.manual_seed(seed)
    generators = {
        "batches": torch.Generator().manual_seed(seed),
        "adversarial": torch.Generator(device=loop.val.device).manual_seed(seed + 1),
    }
    return TrainingState(model, optimizer, scheduler, stopper, generators)
