"""Early stopping on a recorded per-epoch metric, with state that survives a checkpoint.

The config is trusted: :func:`advlab.validate.check_train` has resolved ``auto`` monitor/mode and
checked monitor, mode, patience and min_delta (and that an enabled monitor is recorded and goes
the stated way).
"""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig

from advlab.config import Mode, Monitor
from advlab.errors import ConfigError
from advlab.naming import BEST_EPOCH, STOPPED_EPOCH, VAL_LOSS
from advlab.validate import MONITOR_MODE


class EarlyStopping:
    """Track the best value of ``monitor``; stop after ``patience`` consecutive epochs without
    improvement (the Keras convention).

    An epoch improves when its value beats the best by more than ``min_delta`` (below it for
    ``mode="min"``, above it for ``mode="max"``). With ``enabled=False`` the best epoch is still
    tracked (for ``best.pt``) but :attr:`should_stop` stays False.
    """

    def __init__(
        self,
        monitor: str = VAL_LOSS,
        mode: str = "min",
        patience: int = 5,
        min_delta: float = 0.0,
        enabled: bool = True,
    ) -> None:
        # Plain strings: state_dict() must load with torch.load(weights_only=True), which refuses
        # the enum members a Hydra config holds.
        self.monitor = str(monitor)
        self.mode = str(mode)
        self.patience = int(patience)
        self.min_delta = float(min_delta)
        self.enabled = bool(enabled)
        self.best = math.inf if self.mode == Mode.min else -math.inf
        self.best_epoch = 0
        self.bad_epochs = 0
        self.stopped_epoch = 0

    @classmethod
    def from_config(cls, cfg: DictConfig, *, val_robust: bool = False) -> EarlyStopping:
        """From ``train.early_stopping``. When disabled it only picks ``best.pt``: by the monitor
        in its natural direction if recorded, else by ``val_loss``."""
        if cfg.enabled:
            return cls(cfg.monitor, cfg.mode, cfg.patience, cfg.min_delta, True)
        monitor = Monitor(cfg.monitor)
        if monitor == Monitor.val_pgd_acc and not val_robust:
            monitor = Monitor.val_loss
        return cls(monitor, MONITOR_MODE[monitor], cfg.patience, cfg.min_delta, False)

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
        if self._improves(value) or self.best_epoch == 0:
            self.best, self.best_epoch, self.bad_epochs = value, int(epoch), 0
            return True
        self.bad_epochs += 1
        if self.enabled and self.bad_epochs >= self.patience and not self.stopped_epoch:
            self.stopped_epoch = int(epoch)
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
