"""Learning-rate schedules (``train.scheduler.name``), all stepped once per optimizer step.

- ``none``: constant lr.
- ``staircase``: the course's ``lr * decay_rate ** floor(step / decay_steps)``.
- ``cosine``: cosine annealing from lr to 0 over all steps of the run.
- ``onecycle``: Smith's one-cycle policy peaking at ``max_lr`` (default: the optimizer's lr).
"""

from __future__ import annotations

import math

import torch
from omegaconf import DictConfig
from torch.optim.lr_scheduler import CosineAnnealingLR, LambdaLR, LRScheduler, OneCycleLR

from advlab.errors import ConfigError

SCHEDULERS = ("none", "staircase", "cosine", "onecycle")


class _Staircase:
    """Multiplier ``decay_rate ** floor(step / decay_steps)`` (a class, so it pickles)."""

    def __init__(self, decay_rate: float, decay_steps: int) -> None:
        self.decay_rate = float(decay_rate)
        self.decay_steps = int(decay_steps)

    def __call__(self, step: int) -> float:
        return self.decay_rate ** (step // self.decay_steps)


def check_scheduler_config(cfg: DictConfig) -> None:
    """ConfigError for an unknown name or out-of-range staircase/onecycle values."""
    name = cfg.get("name", "none")
    if name not in SCHEDULERS:
        raise ConfigError(f"train.scheduler.name={name}: must be one of {', '.join(SCHEDULERS)}")
    if name == "staircase":
        if not 0 < float(cfg.decay_rate) <= 1:
            raise ConfigError(f"train.scheduler.decay_rate={cfg.decay_rate}: must be in (0, 1]")
        if int(cfg.decay_steps) < 1:
            raise ConfigError(f"train.scheduler.decay_steps={cfg.decay_steps}: must be >= 1")
    if name == "onecycle" and cfg.get("max_lr") is not None and not float(cfg.max_lr) > 0:
        raise ConfigError(f"train.scheduler.max_lr={cfg.max_lr}: must be > 0 (or null)")


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: DictConfig, *, total_steps: int
) -> LRScheduler | None:
    """The scheduler named by ``cfg.name`` (None for ``none``), to be stepped after every
    optimizer step; ``total_steps`` = epochs x batches per epoch (an upper bound is fine)."""
    check_scheduler_config(cfg)
    name = cfg.get("name", "none")
    total_steps = max(int(total_steps), 1)
    if name == "none":
        return None
    if name == "staircase":
        return LambdaLR(optimizer, _Staircase(cfg.decay_rate, cfg.decay_steps))
    if name == "cosine":
        return CosineAnnealingLR(optimizer, T_max=total_steps)
    max_lr = cfg.get("max_lr")
    if max_lr is None:
        max_lr = [g["lr"] for g in optimizer.param_groups]
    return OneCycleLR(optimizer, max_lr=max_lr, total_steps=total_steps)


def steps_per_epoch(n_examples: int, batch_size: int) -> int:
    """Optimizer steps per epoch when the last partial batch is kept."""
    return math.ceil(n_examples / batch_size)
