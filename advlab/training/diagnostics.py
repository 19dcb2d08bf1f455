"""Training diagnostics: did the run diverge, did adversarial training overfit catastrophically.

Pure functions (a metrics history in, :class:`~advlab.verdict.Check` out), so the fit
loop, the verdict and the report judge a run by the same rules. A history is one metrics dict per
epoch (1-based: ``history[0]`` is epoch 1), as :func:`advlab.training.fit.fit` returns it;
accuracies are fractions in [0, 1].

- Divergence: an epoch whose train or validation loss is not finite, or whose train loss exceeds
  :data:`DIVERGENCE_FACTOR` times the start loss (the untrained model's validation loss). A bounded
  loss (``train.loss=mse`` stays below 2 / num_classes) can only diverge to a non-finite value.
- Catastrophic overfitting (Wong, Rice & Kolter 2020, "Fast is better than free"): during FGSM
  adversarial training the PGD accuracy can collapse to about 0 within a single epoch while the
  FGSM accuracy jumps up: the model has learnt to defeat the one-step attack only (its loss
  surface bends so a single gradient step no longer finds the adversarial point), and multi-step
  attacks go through. A rising FGSM accuracy is what tells this apart from a run that simply got
  worse against every attack.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from advlab.naming import TRAIN_LOSS, VAL_FGSM_ACC, VAL_LOSS, VAL_PGD_ACC
from advlab.verdict import FAIL, PASS, WARN, Check

DIVERGENCE_FACTOR = 10.0  # train loss above this many times the start loss: diverged
# Catastrophic overfitting in epoch e: PGD accuracy at most this fraction of epoch e-1's ...
COLLAPSE_RATIO = 0.5
# ... and at least this much lower (accuracy points), so noise on a near-zero value is not flagged.
COLLAPSE_DROP = 0.10

TRAINING_STABLE = "training_stable"
CATASTROPHIC_OVERFITTING = "catastrophic_overfitting"


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def divergence(metrics: Mapping[str, float], start_loss: float) -> str | None:
    """Why the epoch of ``metrics`` diverged (``train_loss`` or ``val_loss`` not finite, or
    ``train_loss`` above :data:`DIVERGENCE_FACTOR` x ``start_loss``), or None.

    Only the losses present are judged: a missing one is no evidence either way.
    """
    for key, label in ((TRAIN_LOSS, "train loss"), (VAL_LOSS, "validation loss")):
        if key in metrics and not math.isfinite(metrics[key]):
            return f"{label} became {metrics[key]}"
    train_loss = metrics.get(TRAIN_LOSS)
    limit = DIVERGENCE_FACTOR * start_loss
    if train_loss is not None and _finite(start_loss) and start_loss > 0 and train_loss > limit:
        ratio = train_loss / start_loss
        return f"train loss {train_loss:.2g} is {ratio:.2g} x its start {start_loss:.3g}"
    return None


def first_divergence(
    history: Sequence[Mapping[str, float]], start_loss: float
) -> tuple[int, str] | None:
    """``(epoch, why)`` of the first diverged epoch of ``history`` (1-based), or None."""
    for epoch, metrics in enumerate(history, start=1):
        why = divergence(metrics, start_loss)
        if why is not None:
            return epoch, why
    return None


def catastrophic_epochs(history: Sequence[Mapping[str, float]]) -> list[int]:
    """1-based epochs ``e`` in which the PGD validation accuracy (``val_pgd_acc``) collapsed
    while the FGSM one (``val_fgsm_acc``) rose, against epoch ``e - 1``:

    ``pgd[e] <= 0.5 * pgd[e-1]`` and ``pgd[e-1] - pgd[e] >= 0.10`` and ``fgsm[e] > fgsm[e-1]``.

    The halving catches the sudden collapse Wong et al. (2020) describe (PGD accuracy to about 0
    within an epoch); the 10-point floor keeps noise on an already small accuracy from counting;
    the rising FGSM accuracy is the signature of overfitting to the single-step attack. Epochs
    where either metric is missing or not finite, in ``e`` or ``e - 1``, are skipped.
    """
    flagged = []
    for epoch in range(2, len(history) + 1):
        before, now = history[epoch - 2], history[epoch - 1]
        values = [m.get(k) for m in (before, now) for k in (VAL_PGD_ACC, VAL_FGSM_ACC)]
        if not all(_finite(v) for v in values):
            continue
        pgd_before, fgsm_before, pgd_now, fgsm_now = values
        collapsed = pgd_now <= COLLAPSE_RATIO * pgd_before and pgd_before - pgd_now >= COLLAPSE_DROP
        if collapsed and fgsm_now > fgsm_before:
            flagged.append(epoch)
    return flagged


def training_checks(
    history: Sequence[Mapping[str, float]],
    *,
    start_loss: float,
    diverged: str | None,
    lr: float,
) -> list[Check]:
    """The training's checks: ``training_stable`` and ``catastrophic_overfitting``.

    ``diverged`` is :func:`divergence`'s reason for the epoch training stopped at (None when it
    did not diverge); ``lr`` is ``optimizer.lr``, named in the advice.
    """
    return [
        _stability_check(history, start_loss=start_loss, diverged=diverged, lr=lr),
        _overfitting_check(history),
    ]


def _stability_check(
    history: Sequence[Mapping[str, float]], *, start_loss: float, diverged: str | None, lr: float
) -> Check:
    if diverged is not None:
        # The epoch the reason belongs to: the first one the rule flags, else the last one run
        # (a history read back from MLflow lacks the non-finite values that were not logged).
        found = first_divergence(history, start_loss)
        epoch = found[0] if found is not None else len(history)
        return Check(
            TRAINING_STABLE,
            FAIL,
            f"training diverged in epoch {epoch}: {diverged}; training stopped there "
            f"(lower optimizer.lr, now {lr:g})",
        )
    losses = [m[TRAIN_LOSS] for m in history if _finite(m.get(TRAIN_LOSS))]
    if not losses:
        return Check(
            TRAINING_STABLE, PASS, f"start loss {start_loss:.3g}; no epoch's train loss recorded"
        )
    return Check(
        TRAINING_STABLE,
        PASS,
        f"train loss {losses[-1]:.3g} after {len(history)} epoch(s), from a start loss of "
        f"{start_loss:.3g}; never above {DIVERGENCE_FACTOR:g} x the start",
    )


def _overfitting_check(history: Sequence[Mapping[str, float]]) -> Check:
    both = [
        (epoch, m)
        for epoch, m in enumerate(history, start=1)
        if _finite(m.get(VAL_PGD_ACC)) and _finite(m.get(VAL_FGSM_ACC))
    ]
    if not both:
        return Check(
            CATASTROPHIC_OVERFITTING,
            PASS,
            "not applicable: no robust validation (train.adversarial.val_robust)",
        )
    flagged = catastrophic_epochs(history)
    if flagged:
        collapses = "; ".join(_collapse(history, epoch) for epoch in flagged)
        return Check(
            CATASTROPHIC_OVERFITTING,
            WARN,
            f"{collapses} (Wong et al. 2020): the model resists the single-step attack only; "
            "early-stop on val_pgd_acc, lower train.adversarial.alpha or train with nfgsm or pgd",
        )
    last_epoch, last = both[-1]
    return Check(
        CATASTROPHIC_OVERFITTING,
        PASS,
        f"no epoch's PGD validation accuracy collapsed while FGSM's rose ({len(both)} epoch(s); "
        f"epoch {last_epoch}: PGD {_pct(last[VAL_PGD_ACC])}, FGSM {_pct(last[VAL_FGSM_ACC])})",
    )


def _collapse(history: Sequence[Mapping[str, float]], epoch: int) -> str:
    before, now = history[epoch - 2], history[epoch - 1]
    return (
        f"in epoch {epoch} PGD validation accuracy fell {_pct(before[VAL_PGD_ACC])} -> "
        f"{_pct(now[VAL_PGD_ACC])} while FGSM's rose {_pct(before[VAL_FGSM_ACC])} -> "
        f"{_pct(now[VAL_FGSM_ACC])}"
    )
