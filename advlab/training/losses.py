"""The training losses of ``train.loss``, per example, on the model's logits."""

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
