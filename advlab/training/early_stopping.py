"""Early stopping on a recorded per-epoch metric, with state that survives a checkpoint.

The config is trusted: :func:`advlab.validate.check_train` has resolved ``auto`` monitor/mode and
checked monitor, mode, patience and min_delta (and that an enabled monitor is recorded and goes
the stated way).

Why a chance floor: a robust monitor (``val_pgd_acc``) is highest for a model that gives every
image one answer -- it keeps the share of that class at every eps -- so early stopping on it would
restore an early, constant-answer epoch of an adversarial run that went on to learn. An epoch whose
validation accuracy is not significantly above the most frequent class's share is therefore kept
as the best only while no epoch has been.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from omegaconf import DictConfig

from advlab.attacks.sanity import CHANCE_ALPHA, binomial_tail, chance_level
from advlab.config import Mode, Monitor
from advlab.errors import ConfigError
from advlab.naming import BEST_EPOCH, STOPPED_EPOCH, VAL_ACC, VAL_LOSS
from advlab.validate import MONITOR_MODE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChanceFloor:
    """What answering the most frequent validation class scores: ``share`` of the ``n``
    validation images. :meth:`admits` an epoch whose validation accuracy is above it by the exact
    one-sided binomial test at level ``alpha`` (the test of the ``clean_above_chance`` check)."""

    n: int
    share: float
    alpha: float = CHANCE_ALPHA

    @classmethod
    def of(cls, labels: np.ndarray, num_classes: int) -> ChanceFloor | None:
        """The floor of validation labels ``labels``; None without validation images."""
        if len(labels) == 0:
            return None
        return cls(len(labels), chance_level(labels, num_classes))

    def admits(self, val_acc: float) -> bool:
        if math.isnan(val_acc):
            return False
        return binomial_tail(round(val_acc * self.n), self.n, self.share) <= self.alpha


class EarlyStopping:
    """Track the best value of ``monitor``; stop after ``patience`` consecutive epochs without
    improvement (the Keras convention).

    An epoch improves when its value beats the best by more than ``min_delta`` (below it for
    ``mode="min"``, above it for ``mode="max"``). With ``enabled=False`` the best epoch is still
    tracked (for ``best.pt``) but :attr:`should_stop` stays False.

    ``floor`` (a :class:`ChanceFloor`): an epoch whose ``val_acc`` it does not admit is the best
    only until an admitted epoch comes, whatever the two monitor values.
    """

    def __init__(
        self,
        monitor: str = VAL_LOSS,
        mode: str = "min",
        patience: int = 5,
        min_delta: float = 0.0,
        enabled: bool = True,
        floor: ChanceFloor | None = None,
    ) -> None:
        # Plain strings: state_dict() must load with torch.load(weights_only=True), which refuses
        # the enum members a Hydra config holds.
        self.monitor = str(monitor)
        self.mode = str(mode)
        self.patience = int(patience)
        self.min_delta = float(min_delta)
        self.enabled = bool(enabled)
        self.floor = floor
        self.best_admitted = False  # whether the best epoch passed the floor
        self.best = math.inf if self.mode == Mode.min else -math.inf
        self.best_epoch = 0
        self.bad_epochs = 0
        self.stopped_epoch = 0

    @classmethod
    def from_config(
        cls, cfg: DictConfig, *, val_robust: bool = False, floor: ChanceFloor | None = None
    ) -> EarlyStopping:
        """From ``train.early_stopping``. When disabled it only picks ``best.pt``: by the monitor
        in its natural direction if recorded, else by ``val_loss``."""
        if cfg.enabled:
            return cls(cfg.monitor, cfg.mode, cfg.patience, cfg.min_delta, True, floor)
        monitor = Monitor(cfg.monitor)
        if monitor == Monitor.val_pgd_acc and not val_robust:
            monitor = Monitor.val_loss
        return cls(monitor, MONITOR_MODE[monitor], cfg.patience, cfg.min_delta, False, floor)

    def _improves(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.mode == Mode.min:
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def step(self, epoch: int, metrics: dict[str, float]) -> bool:
        """Record epoch ``epoch`` (1-based); return True when it is the new best."""
        if self.monitor not in metrics:
            raise ConfigError(
                f"train.early_stopping.monitor={self.monitor}: not among this run's metrics "
                f"({', '.join(sorted(metrics))})"
            )
        value = float(metrics[self.monitor])
        admitted = self._admitted(epoch, metrics)
        first = self.best_epoch == 0 or (admitted and not self.best_admitted)
        improves = first or (admitted == self.best_admitted and self._improves(value))
        if improves:
            self.best, self.best_epoch, self.best_admitted = value, int(epoch), admitted
            self.bad_epochs = 0
            return True
        self.bad_epochs += 1
        if self.enabled and self.bad_epochs >= self.patience and not self.stopped_epoch:
            self.stopped_epoch = int(epoch)
        return False

    def _admitted(self, epoch: int, metrics: dict[str, float]) -> bool:
        if self.floor is None or VAL_ACC not in metrics:
            return True
        if self.floor.admits(float(metrics[VAL_ACC])):
            return True
        log.info(
            "epoch %d: val_acc %.1f%% is not above answering the most frequent class (%.1f%% of "
            "%d validation images): it is the best epoch only until one is",
            epoch,
            100 * float(metrics[VAL_ACC]),
            100 * self.floor.share,
            self.floor.n,
        )
        return False

    @property
    def should_stop(self) -> bool:
        return self.enabled and self.stopped_epoch > 0

    def state_dict(self) -> dict[str, Any]:
        """Plain types only (loadable with ``torch.load(weights_only=True)``)."""
        return {
            "monitor": self.monitor,
            "mode": self.mode,
            "best": float(self.best),
            BEST_EPOCH: self.best_epoch,
            "bad_epochs": self.bad_epochs,
            STOPPED_EPOCH: self.stopped_epoch,
            "best_admitted": self.best_admitted,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("monitor") != self.monitor or state.get("mode") != self.mode:
            raise ConfigError(
                f"train.early_stopping.monitor={self.monitor} (mode {self.mode}) differs from the "
                f"checkpoint's {state.get('monitor')} (mode {state.get('mode')}); resume with the "
                "same settings"
            )
        self.best = float(state["best"])
        self.best_epoch = int(state[BEST_EPOCH])
        self.bad_epochs = int(state["bad_epochs"])
        self.stopped_epoch = int(state[STOPPED_EPOCH])
        # A checkpoint written before the floor existed judged every epoch admitted.
        self.best_admitted = bool(state.get("best_admitted", True))
