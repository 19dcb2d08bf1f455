"""The checks of one evaluation, in order (verdicts from :mod:`advlab.attacks.sanity`).

Check 11 (clean accuracy above chance) comes first: it decides whether the others mean anything.
All but check 6 judge what the evaluation already measured; check 6 (convergence) attacks the
points PGD left robust again, continuing PGD's own iterates for as many steps again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig

from advlab.attacks import sanity
from advlab.attacks.escalation import Escalation
from advlab.attacks.margin import LossPGD
from advlab.attacks.outcome import Outcome
from advlab.attacks.runner import AttackRunner
from advlab.config import Norm, PgdConf
from advlab.naming import madry_step, to_pixels
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
    pgd_last: torch.Tensor | None = None,
) -> list[Check]:
    """Checks 11 and 1-10 on the robustness ``table`` of the attacks ``runner`` ran; each is logged.

    ``outcomes``: per attack and eps (1/255), the per-example outcomes behind the table;
    ``escalation``: the escalation that ran after them (its counts feed checks 7 and 10);
    ``pgd_last``: the main PGD's images at ``eval.sanity.convergence_eps`` (check 6 goes on
    from them).
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
        convergence_check(runner, factories, attacks, outcomes, cfg_eval, pgd_last),
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
    pgd_last: torch.Tensor | None = None,
) -> Check:
    """Check 6: PGD with twice the steps, on the points of the ``pgd`` row it checks.

    When ``eval.sanity.convergence_eps`` is in the grid, the main PGD's outcome there is the
    baseline, on every evaluated point (the points it fooled included), so the evidence quotes
    the figure itself. Only the points it left robust are attacked again: a point it fooled is
    fooled whatever a longer run finds, so the per-point worst case of the two runs is compared
    with the main run. ``pgd_last`` (the main PGD's images at that eps, last iterates where it
    failed) lets the second half continue where the first stopped: ``steps`` more steps of the
    same size, the same trajectory as one run of twice the steps, at half the cost of starting
    again. An eps off the grid has no figure: PGD runs on the first ``eval.sanity.convergence_n``
    points and is continued the same way. A targeted PGD is run again with twice the steps.
    """
    if "pgd" not in factories:
        return Check("pgd_converged", PASS, "not applicable: pgd was not run")
    eps = float(cfg_eval.sanity.convergence_eps)
    options = attacks["pgd"]
    steps = int(options.get("steps", PgdConf.steps))
    if eps in outcomes["pgd"]:  # the figure's own points and numbers
        rows = np.arange(len(runner.x), dtype=np.int64)
        base, last = outcomes["pgd"][eps].correct, pgd_last
        points = "points of the pgd row"
    else:
        rows = np.arange(min(int(cfg_eval.sanity.convergence_n), len(runner.x)), dtype=np.int64)
        last, out = runner.attack("pgd", factories["pgd"], eps, rows)
        base = out.correct
        points = f"first evaluated points (eps {eps:g} is not in eval.eps)"
    double = base.copy()
    if base.any() and eps > 0:
        robust = rows[base]
        if last is None or options.get("targeted") is not None:
            double[base] = runner.attack("pgd", factories["pgd"], eps, robust, steps=2 * steps)[
                1
            ].correct
        else:
            double[base] = _continued(runner, options, eps, steps, robust, last[base])
    return sanity.check_convergence(base, double, steps=steps, eps=eps, points=points)


def _continued(
    runner: AttackRunner, options: Any, eps: float, steps: int, rows: np.ndarray, start
) -> np.ndarray:
    """Still robust after ``steps`` more untargeted PGD steps from ``start`` on ``rows``."""
    alpha = options.get("alpha")
    step = madry_step(eps, steps) if alpha is None else float(alpha)
    atk = LossPGD(
        runner.model, eps=to_pixels(eps), steps=steps, restarts=1, loss="ce", alpha=to_pixels(step)
    )
    sel = torch.from_numpy(rows).to(runner.x.device)
    robust = []
    for begin in range(0, len(rows), runner.batch_size):
        b = sel[begin : begin + runner.batch_size]
        _, fooled = atk.continue_from(runner.x[b], runner.y[b], start[begin : begin + len(b)])
        robust.append((~fooled).cpu().numpy())
    return np.concatenate(robust)
