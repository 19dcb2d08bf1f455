"""Names shared by evaluation, tracking, results.json and reports: one source for each."""

from __future__ import annotations


def format_eps(eps: float) -> str:
    """Eps in 1/255 units as it appears in metric names: 8.0 -> '8', 0.5 -> '0.5'."""
    eps = float(eps)
    return str(int(eps)) if eps.is_integer() else f"{eps:g}"


def robust_acc_key(attack: str, eps: float) -> str:
    """MLflow/results.json name of the robust accuracy of ``attack`` at ``eps`` (1/255 units)."""
    return f"robust_acc/{attack}/eps_{format_eps(eps)}"


def asr_key(attack: str, eps: float) -> str:
    """Name of the attack success rate (over points correct before the attack)."""
    return f"asr/{attack}/eps_{format_eps(eps)}"


WORST_CASE = "worst_case"  # pseudo-attack name: per-example worst case over all attacks run
CLEAN_ACC = "clean_acc"
NUM_PARAMS = "num_params"
BEST_EPOCH = "best_epoch"
STOPPED_EPOCH = "stopped_epoch"
EPOCH_METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_seconds")


def option_name(target: str) -> str:
    """Option name from a ``_target_``: 'advlab.models.zoo.course_cnn' -> 'course_cnn'."""
    return target.rsplit(".", 1)[-1]
