"""The checks of one evaluation, in order (verdicts from :mod:`advlab.attacks.sanity`).

Check 11 (clean accuracy above chance) comes first: it decides whether the others mean anything.
All but check 6 judge what the evaluation already measured; check 6 (convergence) attacks the
points PGD left robust again with twice its steps, through the evaluation's :class:`AttackRunner`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from advlab.attacks import sanity
from advlab.attacks.escalation import Escalation
from advlab.attacks.outcome import Outcome
from advlab.attacks.runner import AttackRunner
from advlab.config import Norm, PgdConf
from advlab.verdict import PASS, Check

log = logging.getLogger(__name__)


def run_checks(
    table: pd.DataFrame,
    runner: AttackRunner,
    factories: dict[str, Callable[..., Any]],
    attacks: DictConfig,
    outcomes: dict[str, dict[float, Outcome]],
    cfg_eval: DictConfig,
    escalation: Escalation,
) -> list[Check]:
    """Checks 11 and 1-10 on the robustness ``table`` of the attacks ``runner`` ran; each is logged.

    ``outcomes``: per attack and eps (1/255), the per-example outcomes behind the table;
    ``escalation``: the escalation that ran after them (its counts feed checks 7 and 10).
    """
    clean = runner.clean
    tolerance = float(cfg_eval.sanity.tolerance)
    in_table = set(table["attack"])
    linf = {a: wb for a, wb in runner.white_box.items() if runner.norms[a] == Norm.linf}
    counts = escalation.counts
    escalated = escalation.enabled and not int(counts["left"].sum())
    checks = [
        sanity.check_clean_above_chance(clean.correct, runner.y.cpu().numpy(), runner.num_classes),
        sanity.bounds_summary(runner.n_checked, runner.worst_ratio, runner.violations),
        sanity.check_eps_zero(table, float(clean.correct.mean()), len(clean.correct)),
        sanity.check_pgd_le_fgsm(table, tolerance),
        sanity.check_monotone(table, tolerance, cascade=bool(cfg_eval.cascade)),
        sanity.check_chance(table, runner.num_classes, float(cfg_eval.sanity.chance_margin)),
        convergence_check(runner, factories, attacks, outcomes, cfg_eval),
        sanity.check_zero_gradients(clean.zero_grad, escalated=escalated),
        sanity.check_black_box(
            table, {a: wb for a, wb in linf.items() if a in in_table}, tolerance
        ),
        sanity.check_margin(table, [a for a in outcomes if linf.get(a)], tolerance),
        sanity.check_escalation(counts, enabled=escalation.enabled),
    ]
    return [log_check(check) for check in checks]


def log_check(check: Check) -> Check:
    """Log ``check`` (a warning unless it passed) and return it."""
    (log.warning if check.status != PASS else log.info)(
        "check %s: %s: %s", check.name, check.status, check.evidence
    )
    return check


def convergence_check(
    runner: AttackRunner,
    factories: dict[str, Callable[..., Any]],
    attacks: DictConfig,
    outcomes: dict[str, dict[float, Outcome]],
    cfg_eval: DictConfig,
) -> Check:
    """Check 6: PGD with twice the steps, on the points of the ``pgd`` row it checks.

    When ``eval.sanity.convergence_eps`` is in the grid, the main PGD's outcome there is the
    baseline, on every evaluated point (the points it fooled included), so the evidence quotes
    the figure itself. Only the points it left robust are attacked again: a point it fooled is
    fooled whatever a longer run finds, so the per-point worst case of the two runs is compared
    with the main run, at a fraction of the cost of a second full run. An eps off the grid has no
    figure: PGD and the doubled run then attack the first ``eval.sanity.convergence_n`` points.
    """
    if "pgd" not in factories:
        return Check("pgd_converged", PASS, "not applicable: pgd was not run")
    eps = float(cfg_eval.sanity.convergence_eps)
    steps = int(attacks["pgd"].get("steps", PgdConf.steps))
    if eps in outcomes["pgd"]:  # the figure's own points and numbers
        rows = np.arange(len(runner.x), dtype=np.int64)
        base = outcomes["pgd"][eps].correct
        points = "points of the pgd row"
    else:
        rows = np.arange(min(int(cfg_eval.sanity.convergence_n), len(runner.x)), dtype=np.int64)
        base = runner.attack("pgd", factories["pgd"], eps, rows)[1].correct
        points = f"first evaluated points (eps {eps:g} is not in eval.eps)"
    double = base.copy()
    if base.any():
        _, longer = runner.attack("pgd", factories["pgd"], eps, rows[base], steps=2 * steps)
        double[base] = longer.correct
    return sanity.check_convergence(base, double, steps=steps, eps=eps, points=points)
