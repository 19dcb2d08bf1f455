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


def escalation_points_key(eps: float) -> str:
    """Name of the number of points the escalation re-attacked at ``eps`` (1/255 units)."""
    return f"escalation/points/eps_{format_eps(eps)}"


def escalation_flips_key(eps: float) -> str:
    """Name of the number of points the escalation broke at ``eps`` (every other attack failed)."""
    return f"escalation/flips/eps_{format_eps(eps)}"


WORST_CASE = "worst_case"  # pseudo-attack name: per-example worst case over all attacks run
MARGIN = "margin"  # the escalation's margin-loss attack (APGD-T, APGD-DLR or logit-margin PGD)
CLEAN_ACC = "clean_acc"
NUM_PARAMS = "num_params"
BEST_EPOCH = "best_epoch"
STOPPED_EPOCH = "stopped_epoch"
EPOCH_METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_seconds")
# Per-epoch robust validation accuracies of adversarial training (train.adversarial.val_robust).
VAL_PGD_ACC = "val_robust_acc"  # PGD (val_robust_steps); the early-stopping monitor
VAL_FGSM_ACC = "val_fgsm_acc"  # FGSM on the same subset: with PGD's, shows catastrophic overfitting
# Statuses of a sanity check, of a training check and of the run's verdict (no dependencies here,
# so the report and scripts name them without importing the attack code).
PASS, WARN, FAIL = "pass", "warn", "fail"
# The run's verdict (advlab.verdict): pass | warn | fail, and the one line naming the first problem.
VERDICT_TAG = "advlab.verdict"
VERDICT_REASON_TAG = "advlab.verdict_reason"
VERDICT_JSON = "results/verdict.json"  # {"verdict", "reason", "checks": [{name, status, evidence}]}


def option_name(target: str) -> str:
    """Option name from a ``_target_``: 'advlab.models.zoo.course_cnn' -> 'course_cnn'."""
    return target.rsplit(".", 1)[-1]


_EPS_METRIC_KINDS = ("robust_acc", "asr")


def parse_eps_metric(name: str) -> tuple[str, str, float] | None:
    """``(kind, attack, eps)`` of a name made by :func:`robust_acc_key` or :func:`asr_key`.

    The one reader of those names: ``'robust_acc/pgd/eps_8'`` -> ``('robust_acc', 'pgd', 8.0)``;
    any other name (``clean_acc``, ``audit/...``) -> None.
    """
    kind, sep, rest = name.partition("/")
    attack, sep2, eps_part = rest.rpartition("/")
    if kind not in _EPS_METRIC_KINDS or not sep or not sep2 or not attack or "/" in attack:
        return None
    if not eps_part.startswith("eps_"):
        return None
    try:
        eps = float(eps_part.removeprefix("eps_"))
    except ValueError:
        return None
    return kind, attack, eps
