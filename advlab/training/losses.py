"""The training losses on the model's logits: those of ``train.loss`` (per example, and their
batch mean), and TRADES's, which adds a KL term between clean and adversarial predictions."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F

from advlab.config import Loss

PerExampleLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (N, C), (N,) -> (N,)
BatchLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (N, C), (N,) -> scalar


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


def batch_mean(loss_per_example: PerExampleLoss) -> BatchLoss:
    """The batch mean of ``loss_per_example``: what the optimizer and the attacks minimise or
    maximise."""

    def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return loss_per_example(logits, y).mean()

    return loss


def trades_loss(
    logits_clean: torch.Tensor,
    logits_adv: torch.Tensor,
    y: torch.Tensor,
    *,
    beta: float,
    loss_fn: BatchLoss,
) -> torch.Tensor:
    """TRADES's objective (Zhang et al. 2019): ``loss_fn(logits_clean, y) + beta * KL``.

    KL is ``KL(softmax(logits_clean) || softmax(logits_adv))``, summed over the C classes and
    averaged over the batch (the reference implementation's ``batchmean``); gradients flow
    through both logits. ``loss_fn`` is the batch mean of ``train.loss`` (cross-entropy, as in
    the paper, by default). Logits (N, C), labels int64 (N,); a scalar.
    """
    log_p = F.log_softmax(logits_clean.float(), dim=1)
    log_q = F.log_softmax(logits_adv.float(), dim=1)
    kl = F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)
    return loss_fn(logits_clean, y) + beta * kl
