"""Learning-rate schedules (``train.scheduler.name``), all stepped once per optimizer step.

- ``none``: constant lr.
- ``staircase``: the course's ``lr * decay_rate ** floor(step / decay_steps)``.
- ``cosine``: cosine annealing from lr to 0 over all steps of the run.
- ``onecycle``: Smith's one-cycle policy peaking at ``max_lr`` (default: the optimizer's lr).

The values are trusted: :func:`advlab.validate.check_train` has checked them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from omegaconf import DictConfig
from torch.optim.lr_scheduler import CosineAnnealingLR, LambdaLR, LRScheduler, OneCycleLR

from advlab.config import Scheduler


class _Staircase:
    """Multiplier ``decay_rate ** floor(step / decay_steps)`` (a class, so it pickles)."""

    def __init__(self, decay_rate: float, decay_steps: int) -> None:
        self.decay_rate = float(decay_rate)
        self.decay_steps = int(decay_steps)

    def __call__(self, step: int) -> float:
        return self.decay_rate ** (step // self.decay_steps)


def _constant(optimizer: torch.optim.Optimizer, cfg: DictConfig, total_steps: int) -> None:
    return None


def _staircase(optimizer: torch.optim.Optimizer, cfg: DictConfig, total_steps: int) -> LambdaLR:
    return LambdaLR(optimizer, _Staircase(cfg.decay_rate, cfg.decay_steps))


def _cosine(
    optimizer: torch.optim.Optimizer, cfg: DictConfig, total_steps: int
) -> CosineAnnealingLR:
    return CosineAnnealingLR(optimizer, T_max=total_steps)


def _onecycle(optimizer: torch.optim.Optimizer, cfg: DictConfig, total_steps: int) -> OneCycleLR:
    max_lr = cfg.get("max_lr")
    if max_lr is None:
        max_lr = [g["lr"] for g in optimizer.param_groups]
    return OneCycleLR(optimizer, max_lr=max_lr, total_steps=total_steps)


_BUILDERS: dict[Scheduler, Callable[..., LRScheduler | None]] = {
    Scheduler.none: _constant,
    Scheduler.staircase: _staircase,
    Scheduler.cosine: _cosine,
    Scheduler.onecycle: _onecycle,
}
# Schedules whose shape depends on the run's total length (so train.epochs is fixed on resume).
SPAN_THE_RUN = frozenset({Scheduler.cosine, Scheduler.onecycle})


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: DictConfig, *, total_steps: int
) -> LRScheduler | None:
    """The scheduler named by ``cfg.name`` (None for ``none``), to be stepped after every
    optimizer step; ``total_steps`` = epochs x batches per epoch (an upper bound is fine)."""
    name = Scheduler(cfg.get("name", Scheduler.none))
    return _BUILDERS[name](optimizer, cfg, max(int(total_steps), 1))


def steps_per_epoch(n_examples: int, batch_size: int) -> int:
    """Optimizer steps per epoch when the last partial batch is kept."""
    return math.ceil(n_examples / batch_size)
