"""Validation during training: loss and accuracy on ``data.val``, the start loss, and accuracy
under PGD and FGSM on a fixed validation subset (``train.adversarial.val_robust``).

Everything here runs the model in eval mode (dropout off, batch-norm statistics frozen) and draws
no random number from the training's generators: PGD's random starts use a generator of their
own, re-seeded every epoch, so validating never changes what the training draws.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from dataclasses import dataclass

import torch
from omegaconf import DictConfig
from torch import nn

from advlab.config import Precision
from advlab.data.base import DataSplits, batches, to_float
from advlab.errors import TrainingError
from advlab.naming import VAL_FGSM_ACC, VAL_PGD_ACC, madry_step
from advlab.training import adversarial
from advlab.training.losses import BatchLoss, PerExampleLoss

log = logging.getLogger(__name__)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` for ``precision`` bf16; no-op for fp32."""
    if precision == Precision.bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass(frozen=True)
class ValSettings:
    """How the model is run outside the training step: device, precision (as used on the
    device), memory format, batch size and the training's loss (per example and batch mean)."""

    device: torch.device
    precision: str
    memory_format: torch.memory_format
    batch_size: int
    loss_per_example: PerExampleLoss
    loss: BatchLoss

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.device, self.precision)


# The start loss is a reference for the divergence rule (10x it), not a figure. An untrained
# model's per-image loss sits near ln K with little spread, so one batch of 64 validation images
# pins it to a few percent for a fraction of a validation pass.
START_LOSS_POINTS = 64


@torch.no_grad()
def validation_metrics(
    model: nn.Module, data: DataSplits, s: ValSettings, limit: int | None = None
) -> tuple[float, float]:
    """Mean loss and accuracy (in [0, 1]) of ``model`` on ``data.val`` (its first ``limit``
    images when given) in eval mode."""
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float32, device=s.device)
    correct = torch.zeros((), dtype=torch.int64, device=s.device)
    n = 0
    val = data.val if limit is None or limit >= len(data.val) else data.val.subset(slice(0, limit))
    for x, y in batches(val, s.batch_size, shuffle=False, generator=None, device=s.device):
        with s.autocast():
            logits = model(x.contiguous(memory_format=s.memory_format))
            loss_sum += s.loss_per_example(logits, y).float().sum()
        correct += (logits.argmax(dim=1) == y).sum()
        n += y.shape[0]
    # The one host sync of the validation pass.
    return loss_sum.item() / n, correct.item() / n


def start_loss(model: nn.Module, data: DataSplits, s: ValSettings) -> float:
    """The untrained model's mean loss on the first :data:`START_LOSS_POINTS` validation images:
    the divergence rule's reference. Measured in eval mode without drawing a random number, so
    the run's results do not change. Raises TrainingError when it is not finite: there is
    nothing to train."""
    loss, _ = validation_metrics(model, data, s, limit=START_LOSS_POINTS)
    if not math.isfinite(loss):
        raise TrainingError(
            f"the untrained model's validation loss is {loss}: its initial weights (or "
            "the data) hold non-finite values, so there is nothing to train"
        )
    n = min(START_LOSS_POINTS, len(data.val))
    log.info("start loss %.4g (the untrained model's mean loss on %d validation images)", loss, n)
    return loss


@dataclass(frozen=True)
class ValSubset:
    """A fixed validation subset (the same every epoch and after a resume), attacked at ``eps``
    (1/255 units) by ``steps``-step PGD from random starts seeded ``seed``, and by FGSM."""

    x: torch.Tensor
    y: torch.Tensor
    eps: float
    steps: int
    seed: int


def val_subset(
    data: DataSplits, adv_cfg: DictConfig, *, seed: int, device: torch.device
) -> ValSubset | None:
    """With ``val_robust``, ``val_robust_n`` validation examples drawn with their own seeded
    generator, so the subset depends on nothing else the run draws; else None."""
    if not adv_cfg.val_robust:
        return None
    pick = torch.randperm(len(data.val), generator=torch.Generator().manual_seed(seed + 2))
    pick = pick[: int(adv_cfg.val_robust_n)].numpy()
    return ValSubset(
        x=to_float(torch.from_numpy(data.val.images[pick]).to(device)),
        y=torch.from_numpy(data.val.labels[pick]).to(device),
        eps=float(adv_cfg.eps),
        steps=int(adv_cfg.val_robust_steps),
        seed=seed + 3,
    )


# The attacks of the validation subset, by the metric they give, in the order they run.
VAL_ATTACKS = (VAL_PGD_ACC, VAL_FGSM_ACC)


def attacked_accuracy(model: nn.Module, subset: ValSubset, metric: str, s: ValSettings) -> float:
    """Accuracy in [0, 1] of ``model`` in eval mode on ``subset`` under the attack of ``metric``
    (one of :data:`VAL_ATTACKS`), with the training's loss.

    ``val_pgd_acc``: L-inf PGD, ``subset.steps`` steps of Madry's 2.5 eps / steps from a random
    start drawn by a generator seeded ``subset.seed`` afresh on every call (the same starts every
    epoch). ``val_fgsm_acc``: FGSM, one step of eps from the clean point; it draws nothing.
    """
    if metric == VAL_PGD_ACC:
        attack = functools.partial(
            adversarial.pgd,
            alpha=madry_step(subset.eps, subset.steps),
            steps=subset.steps,
            generator=torch.Generator(device=s.device).manual_seed(subset.seed),
        )
    elif metric == VAL_FGSM_ACC:
        attack = adversarial.fgsm
    else:
        raise ValueError(f"no validation attack gives {metric!r}; known: {VAL_ATTACKS}")
    model.eval()
    with s.autocast():
        return adversarial.accuracy_under(
            model,
            subset.x.contiguous(memory_format=s.memory_format),
            subset.y,
            functools.partial(attack, model, eps=subset.eps, loss_fn=s.loss),
            s.batch_size,
        )


def attacked_metrics(model: nn.Module, subset: ValSubset, s: ValSettings) -> dict[str, float]:
    """``val_pgd_acc`` and ``val_fgsm_acc`` on ``subset`` (:func:`attacked_accuracy`). PGD
    runs first: FGSM draws nothing, so PGD's numbers are those of a run without FGSM."""
    return {metric: attacked_accuracy(model, subset, metric, s) for metric in VAL_ATTACKS}
