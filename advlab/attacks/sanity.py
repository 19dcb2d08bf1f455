"""Sanity checks that make a robustness number believable (Carlini et al. 2019; AutoAttack).

Every check returns a :class:`Check` with status ``pass``, ``warn`` or ``fail`` and an
evidence string stating the numbers it looked at, on the points of the figure it checks. ``fail``:
the check's condition fails outright and the figures mean nothing (an adversarial example outside
its eps ball or [0, 1]; eps 0 not giving the clean accuracy; clean accuracy not significantly
above chance). ``warn``: the robust accuracy may be
an over-estimate (attack too weak or unconverged, gradients masked, a margin loss or a black-box
attack finding more) and why. Neither stops the run; :mod:`advlab.verdict` turns them into the
run's verdict. :func:`check_bounds` (for callers outside
the evaluation, such as the audit) raises :class:`~advlab.errors.AttackError` instead.

All accuracies here are fractions in [0, 1]; eps values are in 1/255 units (the ``eval.eps`` grid).
The functions are pure (tables and arrays in, a verdict out) so they can be tested on their own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch

from advlab.errors import AttackError
from advlab.naming import MARGIN, WORST_CASE, format_eps
from advlab.verdict import FAIL, PASS, WARN, Check

BOUND_TOL = 1e-6  # float32 slack on ||x_adv - x||_inf <= eps (pixel units)


def _pct(value: float) -> str:
    return "nan" if value is None or math.isnan(value) else f"{100 * value:.1f}%"


def _curve(table: pd.DataFrame, attack: str) -> pd.Series:
    """Robust accuracy of ``attack`` indexed by eps (sorted)."""
    rows = table[table["attack"] == attack]
    return rows.set_index("eps")["robust_acc"].sort_index()


# ------------------------------------------------------------------------------------------ check 1
def bound_violation(
    attack: str,
    eps: float,
    x_adv: torch.Tensor,
    x: torch.Tensor,
    *,
    norm: str,
    budget: float | None,
) -> tuple[float, str | None]:
    """Check 1 for one attack x eps: is every ``x_adv`` finite, in [0, 1] and within its budget?

    ``x_adv``, ``x``: float (N, C, H, W). ``budget`` is the radius in pixel units in ``norm``
    ('linf' or 'l2'); ``None`` for unbounded (minimum-norm) attacks, where only [0, 1] is checked.
    Returns the largest perturbation found (pixel units, in ``norm``; L-inf when unbounded) and
    one line describing the violation, or None. A batch of the wrong shape cannot be scored at
    all: it raises :class:`AttackError`.
    """
    where = f"attack {attack!r} at eps {format_eps(eps)}/255"
    if x_adv.shape != x.shape:
        raise AttackError(
            f"{where}: adversarial batch shape {tuple(x_adv.shape)} != {tuple(x.shape)}"
        )
    if x_adv.numel() == 0:
        return 0.0, None
    if not torch.isfinite(x_adv).all():
        return math.nan, f"{where}: adversarial examples contain NaN or inf"
    delta = (x_adv - x).flatten(1)
    if norm == "l2":
        largest = float(delta.norm(p=2, dim=1).max())
        tol = BOUND_TOL + 1e-5 * (budget or 0.0)  # float32 norm of thousands of pixels
    else:
        largest = float(delta.abs().amax(dim=1).max())
        tol = BOUND_TOL
    low, high = float(x_adv.min()), float(x_adv.max())
    if low < 0.0 or high > 1.0:
        return largest, f"{where}: adversarial pixels leave [0, 1] (min {low:.6g}, max {high:.6g})"
    if budget is not None and largest > budget + tol:
        return largest, (
            f"{where}: perturbation {norm} norm {largest:.8g} exceeds the budget {budget:.8g} "
            f"(+{tol:g}); the attack does not respect its eps ball"
        )
    return largest, None


def check_bounds(*args: Any, **kwargs: Any) -> float:
    """:func:`bound_violation` (same arguments) that raises :class:`AttackError` on a violation;
    returns the largest perturbation."""
    largest, problem = bound_violation(*args, **kwargs)
    if problem is not None:
        raise AttackError(problem)
    return largest


def bounds_summary(n_checked: int, worst_ratio: float, violations: list[str]) -> Check:
    """Check 1 verdict over every attack x eps: ``fail`` naming the first violations, if any."""
    ratio = "n/a" if math.isnan(worst_ratio) else f"{worst_ratio:.6f}"
    if violations:
        shown = "; ".join(violations[:3]) + (
            f" (+{len(violations) - 3} more)" * (len(violations) > 3)
        )
        return Check(
            "bounds",
            FAIL,
            f"{len(violations)} attack x eps result(s) outside their eps ball or [0, 1]: {shown}; "
            "their robust accuracies are not measurements of this threat model",
        )
    return Check(
        "bounds",
        PASS,
        f"{n_checked} adversarial examples checked: all finite, in [0, 1] and within their eps "
        f"ball (largest perturbation / budget = {ratio})",
    )


# ------------------------------------------------------------------------------------------ check 2
def check_eps_zero(table: pd.DataFrame, clean_acc: float, n: int) -> Check:
    """Check 2: at eps = 0 every attack's robust accuracy equals the clean accuracy (else
    ``fail``: the adversarial path scores points differently from the clean pass)."""
    rows = table[(table["eps"] == 0) & (table["attack"] != WORST_CASE)]
    if rows.empty:
        return Check("eps0_clean", PASS, "not applicable: eps 0 is not in eval.eps")
    # Compare counts, not floats: the two must agree example for example.
    clean_count = round(clean_acc * n)
    off = [
        f"{r.attack} {_pct(r.robust_acc)}"
        for r in rows.itertuples()
        if round(r.robust_acc * n) != clean_count
    ]
    if off:
        return Check(
            "eps0_clean",
            FAIL,
            f"at eps 0 robust accuracy differs from clean {_pct(clean_acc)}: {', '.join(off)} "
            "(model not in eval mode, or an attack that moves points at eps 0)",
        )
    return Check(
        "eps0_clean",
        PASS,
        f"eps 0 gives the clean accuracy {_pct(clean_acc)} for {', '.join(rows['attack'])}",
    )


# ------------------------------------------------------------------------------------------ check 3
def check_pgd_le_fgsm(table: pd.DataFrame, tolerance: float) -> Check:
    """Check 3: PGD robust accuracy <= FGSM robust accuracy (+ tolerance) at each shared eps."""
    if not {"pgd", "fgsm"} <= set(table["attack"]):
        return Check("pgd_le_fgsm", PASS, "not applicable: needs both fgsm and pgd")
    pgd, fgsm = _curve(table, "pgd"), _curve(table, "fgsm")
    shared = pgd.index.intersection(fgsm.index)
    bad = [e for e in shared if pgd[e] > fgsm[e] + tolerance]
    if bad:
        detail = ", ".join(
            f"eps {format_eps(e)}: pgd {_pct(pgd[e])} > fgsm {_pct(fgsm[e])}" for e in bad
        )
        return Check(
            "pgd_le_fgsm",
            WARN,
            f"{detail} (tolerance {_pct(tolerance)}): PGD is too weak (more steps, larger alpha) "
            "or gradients are masked",
        )
    worst_gap = max((pgd[e] - fgsm[e] for e in shared), default=math.nan)
    return Check(
        "pgd_le_fgsm",
        PASS,
        f"pgd <= fgsm at all {len(shared)} eps (largest pgd - fgsm: {_pct(worst_gap)})",
    )


# ------------------------------------------------------------------------------------------ check 4
def check_monotone(table: pd.DataFrame, tolerance: float, *, cascade: bool = False) -> Check:
    """Check 4: for every attack, robust accuracy does not rise with eps (beyond tolerance).

    With the eps cascade on, bounded attacks are monotone by construction and the evidence says
    so: the check then only speaks for attacks the cascade does not cover (minimum-norm ones)."""
    bad = []
    for attack in dict.fromkeys(table["attack"]):
        curve = _curve(table, attack)
        for (e0, a0), (e1, a1) in zip(curve.items(), list(curve.items())[1:], strict=False):
            if a1 > a0 + tolerance:
                bad.append(
                    f"{attack}: eps {format_eps(e0)} {_pct(a0)} -> eps {format_eps(e1)} {_pct(a1)}"
                )
    if bad:
        return Check(
            "monotone_eps",
            WARN,
            f"robust accuracy rises with eps: {'; '.join(bad)} (tolerance {_pct(tolerance)}); "
            "a stronger budget should never help the model: suspect a weak or masked attack",
        )
    note = (
        "; bounded attacks are monotone by construction with eval.cascade=true (set it false "
        "for independent runs per eps)"
        if cascade
        else ""
    )
    return Check(
        "monotone_eps",
        PASS,
        f"robust accuracy never rises with eps (tolerance {_pct(tolerance)}){note}",
    )


# ------------------------------------------------------------------------------------------ check 5
def check_chance(table: pd.DataFrame, num_classes: int, margin: float) -> Check:
    """Check 5: at the largest eps the strongest attack brings accuracy near chance (1/K)."""
    largest = float(table["eps"].max())
    chance = 1.0 / num_classes
    if largest <= 0:
        return Check("chance_at_max_eps", PASS, "not applicable: the largest eps is 0")
    rows = table[table["eps"] == largest]
    best = rows.loc[rows["robust_acc"].idxmin()]
    evidence = (
        f"at eps {format_eps(largest)}/255 the strongest attack ({best['attack']}) leaves "
        f"{_pct(best['robust_acc'])}; chance is {_pct(chance)} (+ margin {_pct(margin)})"
    )
    if best["robust_acc"] > chance + margin:
        return Check(
            "chance_at_max_eps",
            WARN,
            evidence + ": possible gradient masking, or the largest eps is simply small for "
            "this task; try a larger eps or a gradient-free attack (square)",
        )
    return Check("chance_at_max_eps", PASS, evidence)


# ------------------------------------------------------------------------------------------ check 6
def check_convergence(
    base_correct: np.ndarray,
    double_correct: np.ndarray,
    *,
    steps: int,
    eps: float,
    points: str = "examples",
) -> Check:
    """Check 6: PGD with ``2 * steps`` moves robust accuracy by under 1 point.

    ``base_correct`` / ``double_correct``: bool (n,) robust-or-not per example, same examples;
    ``double_correct`` is the per-example worst case of the two runs, so it can only be lower.
    ``points`` names those examples in the evidence (e.g. "points of the pgd row").
    """
    n = len(base_correct)
    if n == 0:
        return Check("pgd_converged", PASS, "not applicable: no examples")
    base, double = float(np.mean(base_correct)), float(np.mean(double_correct))
    evidence = (
        f"PGD at eps {format_eps(eps)}/255 on the {n} {points}: {steps} steps {_pct(base)}, "
        f"{2 * steps} steps (continued on the points still robust) {_pct(double)}"
    )
    if abs(base - double) >= 0.01:
        return Check(
            "pgd_converged",
            WARN,
            evidence + ": not converged (moved by 1 point or more); raise attacks.pgd.steps",
        )
    return Check("pgd_converged", PASS, evidence)


# ------------------------------------------------------------------------------------------ check 7
def check_zero_gradients(zero_grad: np.ndarray, *, escalated: bool = False) -> Check:
    """Check 7: share of examples whose input gradient of the loss is exactly zero.

    ``zero_grad``: bool (N,). Any such example is invisible to gradient attacks (saturated
    softmax, dead ReLUs, a non-differentiable layer): their robust accuracy may be an
    over-estimate, unless ``escalated`` (the escalation re-attacked every such point left robust,
    with a black-box attack and random restarts; check ``masking_escalated`` has its numbers).
    """
    n = len(zero_grad)
    count = int(np.sum(zero_grad))
    share = count / n if n else 0.0
    evidence = f"{count} of {n} examples ({_pct(share)}) have an all-zero input gradient"
    if count and escalated:
        return Check(
            "zero_gradients",
            PASS,
            evidence + "; the escalation re-attacked every one left robust (masking_escalated)",
        )
    if count:
        return Check(
            "zero_gradients",
            WARN,
            evidence + ": gradient attacks cannot move them (gradient masking indicator); "
            "check with a black-box attack (eval.escalation, or square)",
        )
    return Check("zero_gradients", PASS, evidence)


# ------------------------------------------------------------------------------------------ check 8
def check_black_box(table: pd.DataFrame, white_box: Mapping[str, bool], tolerance: float) -> Check:
    """Check 8: a black-box attack never beats (lower accuracy than) every white-box attack."""
    black = [a for a, wb in white_box.items() if not wb]
    white = [a for a, wb in white_box.items() if wb]
    if not black or not white:
        return Check(
            "black_box_not_better", PASS, "not applicable: needs a black-box and a white-box attack"
        )
    bad = []
    for eps in sorted(set(table["eps"])):
        rows = table[table["eps"] == eps].set_index("attack")["robust_acc"]
        best_white = rows.reindex(white).min()
        for attack in black:
            if attack in rows and rows[attack] < best_white - tolerance:
                bad.append(
                    f"eps {format_eps(eps)}: {attack} {_pct(rows[attack])} < best white-box "
                    f"{_pct(best_white)}"
                )
    if bad:
        return Check(
            "black_box_not_better",
            WARN,
            f"{'; '.join(bad)}: gradients mislead the white-box attacks (gradient masking)",
        )
    return Check(
        "black_box_not_better",
        PASS,
        f"black-box {', '.join(black)} never beats the best white-box attack "
        f"({', '.join(white)}; tolerance {_pct(tolerance)})",
    )


# ------------------------------------------------------------------------------------------ check 9
def check_margin(table: pd.DataFrame, ce_attacks: list[str], tolerance: float) -> Check:
    """Check 9: the margin-loss row (``margin``) is within ``tolerance`` of the best of the
    cross-entropy ``ce_attacks`` at each eps where it ran.

    Both rows cover the same evaluated points (the margin row keeps the main attacks' examples
    where they fooled), so a gap is what a change of loss alone finds: more PGD steps will not.
    """
    margin = _curve(table, MARGIN)
    ce = [a for a in ce_attacks if a in set(table["attack"])]
    if margin.empty or not ce:
        return Check("ce_vs_margin", PASS, "not applicable: no margin attack (eval.escalation)")
    frame = table[table["attack"].isin(ce)]
    best = frame.loc[frame.groupby("eps")["robust_acc"].idxmin()].set_index("eps")
    gaps = [
        (e, best.loc[e, "attack"], best.loc[e, "robust_acc"], margin[e])
        for e in margin.index
        if e > 0 and e in best.index  # eps 0 is check 2's
    ]
    bad = [g for g in gaps if g[2] - g[3] > tolerance]
    shown = "; ".join(
        f"eps {format_eps(e)}: {a} {_pct(c)}, margin {_pct(m)}" for e, a, c, m in bad or gaps
    )
    if bad:
        return Check(
            "ce_vs_margin",
            WARN,
            f"{shown} (tolerance {_pct(tolerance)}, same points): the cross-entropy attacks "
            "over-estimate robustness; the worst case includes the margin attack",
        )
    return Check(
        "ce_vs_margin",
        PASS,
        f"the margin loss finds at most {_pct(tolerance)} less than the cross-entropy attacks "
        f"({shown})",
    )


# ----------------------------------------------------------------------------------------- check 10
def check_escalation(counts: pd.DataFrame, *, enabled: bool) -> Check:
    """Check 10: every robust point a masking indicator flagged was re-attacked.

    ``counts``: one row per eps with ``flagged`` (robust after every other attack and flagged),
    ``points`` (re-attacked), ``flips`` (broken by the re-attack) and ``left`` (flagged but not
    re-attacked: escalation off, or over ``eval.escalation.max_points``).
    """
    rows = counts[counts["flagged"] > 0]
    if rows.empty:
        return Check(
            "masking_escalated",
            PASS,
            "no point left robust has a zero input gradient or a loss an attack did not raise",
        )
    shown = "; ".join(
        f"eps {format_eps(r.eps)}: {r.flagged} flagged, {r.points} re-attacked, {r.flips} broken"
        for r in rows.itertuples()
    )
    left = int(rows["left"].sum())
    if left:
        why = "eval.escalation.enabled=false" if not enabled else "eval.escalation.max_points"
        return Check(
            "masking_escalated",
            WARN,
            f"{shown}: {left} flagged point-eps pairs were not re-attacked ({why}); their "
            "robustness may be masked gradients",
        )
    return Check("masking_escalated", PASS, f"{shown} (Square and PGD with restarts)")


# ----------------------------------------------------------------------------------------- check 11
CHANCE_ALPHA = 0.01  # one-sided significance level of "clean accuracy above chance"


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed exactly in log space (n up to 1e5 is fast)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    log_p, log_q = math.log(p), math.log1p(-p)
    log_n = math.lgamma(n + 1)
    terms = [
        log_n - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q
        for i in range(k, n + 1)
    ]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def chance_level(labels: np.ndarray, num_classes: int) -> float:
    """What a constant guess scores on ``labels`` (int class indices, at least one): the share of
    the most frequent class, at least 1/K."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
    return max(float(counts.max()) / len(labels), 1.0 / num_classes)


def check_clean_above_chance(
    correct: np.ndarray, labels: np.ndarray, num_classes: int, *, alpha: float = CHANCE_ALPHA
) -> Check:
    """Check 11: the clean accuracy is significantly above chance on the evaluated points (else
    ``fail``: robustness of a model that has learnt nothing means nothing).

    ``correct``: bool (n,) clean correctness; ``labels``: int (n,) true classes of the same points.
    Chance is what a constant guess gets there: the share of the most frequent class (at least
    1/K). The test is the exact one-sided binomial test of "k or more correct out of n by chance"
    at level ``alpha``, so the bar rises for small n instead of being a fixed margin.
    """
    n = len(correct)
    if n == 0:
        return Check("clean_above_chance", PASS, "not applicable: no evaluated points")
    k = int(np.sum(correct))
    chance = chance_level(labels, num_classes)
    p_value = binomial_tail(k, n, chance)
    evidence = (
        f"clean accuracy {_pct(k / n)} ({k} of {n} evaluated points); chance (the most frequent "
        f"class) {_pct(chance)}; P(>= {k} correct by chance) = {p_value:.2g}"
    )
    if p_value > alpha:
        return Check(
            "clean_above_chance",
            FAIL,
            evidence + f": not significantly above chance (one-sided binomial test, alpha "
            f"{alpha:g}); the model has learnt nothing its robustness could measure",
        )
    return Check("clean_above_chance", PASS, evidence)
