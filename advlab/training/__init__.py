"""Training: the fit loop, early stopping, parameter groups, schedules, adversarial training and
checkpoints. Nothing here imports mlflow: per-epoch metrics leave through a callback."""

from __future__ import annotations

from advlab.training.early_stopping import EarlyStopping
from advlab.training.fit import EpochCallback, FitResult, fit
from advlab.training.param_groups import build_optimizer, param_groups

__all__ = [
    "EarlyStopping",
    "EpochCallback",
    "FitResult",
    "build_optimizer",
    "fit",
    "param_groups",
]
