"""The eight sanity checks of one evaluation, in order (verdicts from :mod:`advlab.attacks.sanity`).

All but check 6 judge what the evaluation already measured; check 6 (convergence) attacks a few
points again with twice the PGD steps, through the evaluation's :class:`AttackRunner`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from advlab.attacks import sanity
from advlab.attacks.outcome import Outcome
from advlab.attacks.runner import AttackRunner
from advlab.attacks.sanity import SanityCheck
from advlab.config import Norm, PgdConf

log = logging.getLogger(__name__)


def run_checks(
    table: pd.DataFrame,
    runner: AttackRunner,
    factories: dict[str, Callable[..., Any]],
    attacks: DictConfig,
    outcomes: dict[str, dict[float, Outcome]],
    cfg_eval: DictConfig,
) -> list[SanityCheck]:
    """Checks 1-8 on the robustness ``table`` of the attacks ``runner`` ran; each is logged.

    ``outcomes``: per attack and eps (1/255), the per-example outcomes behind the table.
    """
    clean = runner.clean
    tolerance = float(cfg_eval.sanity.tolerance)
    checks = [
        sanity.bounds_summary(runner.n_checked, runner.worst_ratio),
        sanity.check_eps_zero(table, float(clean.correct.mean()), len(clean.correct)),
        sanity.check_pgd_le_fgsm(table, tolerance),
        sanity.check_monotone(table, tolerance, cascade=bool(cfg_eval.cascade)),
        sanity.check_chance(table, runner.num_classes, float(cfg_eval.sanity.chance_margin)),
        convergence_check(runner, factories, attacks, outcomes, cfg_eval),
        sanity.check_zero_gradients(clean.zero_grad),
        sanity.check_black_box(
            table,
            {a: wb for a, wb in runner.white_box.items() if runner.norms[a] == Norm.linf},
            tolerance,
        ),
    ]
    for check in checks:
        (log.warning if check.status != sanity.PASS else log.info)(
            "sanity %s: %s: %s", check.name, check.status, check.evidence
        )
    return checks


def convergence_check(
    runner: AttackRunner,
    factories: dict[str, Callable[..., Any]],
    attacks: DictConfig,
    outcomes: dict[str, dict[float, Outcome]],
    cfg_eval: DictConfig,
) -> SanityCheck:
    """Check 6: PGD with twice the steps on the first ``convergence_n`` points at one eps.

    Only the points the main PGD left robust are attacked again: a point it already fooled is
    fooled whatever a longer run finds, so the per-point worst case of the two runs is compared
    with the main run. That is the question the check asks (would more steps lower robust
    accuracy?) at a fraction of the cost of a second full run.
    """
    if "pgd" not in factories:
        return SanityCheck("pgd_converged", sanity.PASS, "not applicable: pgd was not run")
    n = min(int(cfg_eval.sanity.convergence_n), len(runner.x))
    eps = float(cfg_eval.sanity.convergence_eps)
    steps = int(attacks["pgd"].get("steps", PgdConf.steps))
    rows = np.arange(n, dtype=np.int64)
    if eps in outcomes["pgd"]:  # reuse the main run instead of attacking again
        base = outcomes["pgd"][eps].correct[:n]
    else:
        base = runner.attack("pgd", factories["pgd"], eps, rows)[1].correct
    double = base.copy()
    if base.any():
        _, longer = runner.attack("pgd", factories["pgd"], eps, rows[base], steps=2 * steps)
        double[base] = longer.correct
    return sanity.check_convergence(base, double, steps=steps, eps=eps)
