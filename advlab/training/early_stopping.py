"""Early stopping on a recorded per-epoch metric, with state that survives a checkpoint."""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig

from advlab.errors import ConfigError

# Metrics fit() records every epoch that can be monitored, with the direction that is "better".
MONITORABLE = {"val_loss": "min", "val_acc": "max", "val_robust_acc": "max"}


def check_early_stopping_config(cfg: DictConfig, *, val_robust: bool) -> None:
    """ConfigError unless the monitor is recorded and mode/patience/min_delta make sense.

    With ``enabled=false`` nothing stops the run, so only the names and ranges are checked.
    """
    monitor, mode = cfg.monitor, cfg.mode
    if monitor not in MONITORABLE:
        raise ConfigError(
            f"train.early_stopping.monitor={monitor}: not a recorded metric "
            f"(one of {', '.join(MONITORABLE)})"
        )
    if mode not in ("min", "max"):
        raise ConfigError(f"train.early_stopping.mode={mode}: must be min or max")
    if int(cfg.patience) < 0:
        raise ConfigError(f"train.early_stopping.patience={cfg.patience}: must be >= 0")
    if float(cfg.min_delta) < 0:
        raise ConfigError(f"train.early_stopping.min_delta={cfg.min_delta}: must be >= 0")
    if not cfg.enabled:
        return
    if monitor == "val_robust_acc" and not val_robust:
        raise ConfigError(
            "train.early_stopping.monitor=val_robust_acc: it is only recorded with "
            "train.adversarial.val_robust=true"
        )
    if mode != MONITORABLE[monitor]:
        raise ConfigError(
            f"train.early_stopping.mode={mode}: {monitor} improves when it goes "
            f"{'down' if MONITORABLE[monitor] == 'min' else 'up'}; use "
            f"train.early_stopping.mode={MONITORABLE[monitor]}"
        )


class EarlyStopping:
    """Track the best value of ``monitor``; stop after ``patience`` consecutive epochs without
    improvement (the Keras convention).

    An epoch improves when its value beats the best by more than ``min_delta`` (below it for
    ``mode="min"``, above it for ``mode="max"``). With ``enabled=False`` the best epoch is still
    tracked (for ``best.pt``) but :attr:`should_stop` stays False.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        mode: str = "min",
        patience: int = 5,
        min_delta: float = 0.0,
        enabled: bool = True,
    ) -> None:
        self.monitor = monitor
        self.mode = mode
        self.patience = int(patience)
        self.min_delta = float(min_delta)
        self.enabled = bool(enabled)
        self.best = math.inf if mode == "min" else -math.inf
        self.best_epoch = 0
        self.bad_epochs = 0
        self.stopped_epoch = 0

    @classmethod
    def from_config(cls, cfg: DictConfig, *, val_robust: bool = False) -> EarlyStopping:
        """From ``train.early_stopping``. When disabled it only picks ``best.pt``: by the monitor
        in its natural direction if recorded, else by ``val_loss``."""
        if cfg.enabled:
            return cls(cfg.monitor, cfg.mode, cfg.patience, cfg.min_delta, True)
        monitor = cfg.monitor
        if monitor == "val_robust_acc" and not val_robust:
            monitor = "val_loss"
        return cls(monitor, MONITORABLE[monitor], cfg.patience, cfg.min_delta, False)

    def _improves(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.mode == "min":
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
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "stopped_epoch": self.stopped_epoch,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("monitor") != self.monitor or state.get("mode") != self.mode:
            raise ConfigError(
                f"train.early_stopping.monitor={self.monitor} (mode {self.mode}) differs from the "
                f"checkpoint's {state.get('monitor')} (mode {state.get('mode')}); resume with the "
                "same settings"
            )
        self.best = float(state["best"])
        self.best_epoch = int(state["best_epoch"])
        self.bad_epochs = int(state["bad_epochs"])
        self.stopped_epoch = int(state["stopped_epoch"])
