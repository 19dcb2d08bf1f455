"""The escalation (``eval.escalation``) and the per-example worst case it feeds.

After the main attacks, at every eps in ascending order:

1. **margin** (``escalation.margin``, at ``escalation.margin_eps``, default every eps): the points
   every main L-inf attack left robust are attacked with a margin-loss attack
   (:func:`advlab.attacks.margin.margin_attack`: APGD-T, APGD-DLR or logit-margin PGD by the number
   of classes). Its table row ``margin`` is "the main attacks, then the margin attack": a point
   the main attacks fooled keeps their example, so the row compares with theirs on the same points.
2. **re-attack** (``escalation.attacks``): of the points still robust, those a gradient-masking
   indicator flags -- an all-zero input gradient of the loss at the clean point, or a
   cross-entropy loss that one of the white-box main attacks did not raise (true-class confidence
   after the attack >= before) -- are attacked again with Square (black-box, ``queries``) and
   PGD from ``restarts`` random starts; at most ``max_points`` of them (the first ones) per eps.
   ``reattack_all`` (``eval=thorough``) re-attacks every point still robust, flagged or not.

``worst_case`` is then, per example, robust only if robust against every main L-inf attack, the
margin attack and the re-attack. With ``eval.cascade`` an adversarial example found at a smaller
eps also counts at every larger one (it lies in the larger ball), as it does for the main attacks;
so the per-eps counts ``points`` (re-attacked) and ``flips`` (broken by the re-attack, which every
other attack left robust) include the points carried from a smaller eps.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from advlab.attacks.margin import margin_attack, pgd_restarts, square_queries
from advlab.attacks.outcome import Outcome, worst_case
from advlab.attacks.runner import AttackRunner
from advlab.attacks.tables import Tables
from advlab.config import EscalationAttack, MarginAttack, Norm
from advlab.naming import MARGIN
from advlab.runtime import progress

COUNT_COLUMNS = ["eps", "flagged", "points", "flips", "left"]


def merged(base: Outcome, rows: np.ndarray, sub: Outcome) -> Outcome:
    """``base`` with the examples ``rows`` replaced by ``sub`` (an outcome on those rows)."""
    out = dataclasses.replace(base, **{f: getattr(base, f).copy() for f in _ARRAYS})
    for f in _ARRAYS:
        getattr(out, f)[rows] = getattr(sub, f)
    return out


_ARRAYS = ("correct", "pred", "conf_true", "linf", "l2")


def _worst(parts: list[Outcome], seconds: float) -> Outcome:
    return dataclasses.replace(worst_case(parts) if len(parts) > 1 else parts[0], seconds=seconds)


class Escalation:
    """Runs the escalation through the evaluation's :class:`AttackRunner` and builds the worst
    case; ``counts`` (:data:`COUNT_COLUMNS`, one row per eps) says what the re-attack did."""

    def __init__(self, runner: AttackRunner, cfg: DictConfig, *, cascade: bool) -> None:
        self.runner, self.cfg, self.cascade = runner, cfg, cascade
        on = bool(cfg.enabled)
        self.margin: Any = None
        if on and cfg.margin != MarginAttack.none:
            self.margin = partial(
                margin_attack,
                steps=int(cfg.margin_steps),
                targets=int(cfg.margin_targets),
                version=str(cfg.margin),
            )
        self.margin_eps = None if cfg.margin_eps is None else {float(e) for e in cfg.margin_eps}
        makers = {
            EscalationAttack.square: partial(square_queries, queries=int(cfg.queries)),
            EscalationAttack.pgd_restarts: partial(
                pgd_restarts, steps=int(cfg.steps), restarts=int(cfg.restarts)
            ),
        }
        chosen = cfg.attacks if on else []
        self.reattacks = {f"escalation_{a}": makers[EscalationAttack(a)] for a in chosen}
        self.enabled = on
        self.counts = pd.DataFrame(columns=COUNT_COLUMNS)

    def worst_cases(
        self, outcomes: dict[str, dict[float, Outcome]], tables: Tables
    ) -> dict[float, Outcome]:
        """Per eps, the worst case over the main L-inf attacks and the escalation; the margin
        rows are added to ``tables``. Empty when no worst case applies (no L-inf attack, or a
        single one with the escalation off)."""
        linf = [n for n in outcomes if self.runner.norms[n] == Norm.linf]
        if not linf or (len(linf) < 2 and not self.enabled):
            return {}
        white = [n for n in linf if self.runner.white_box[n]]
        worst: dict[float, Outcome] = {}
        counts = []
        margin_prev = worst_prev = None
        grid = sorted(outcomes[linf[0]])
        for eps in progress(grid, desc="escalation", total=len(grid), unit="eps"):
            mains = [outcomes[n][eps] for n in linf]
            seconds = sum(o.seconds for o in mains)
            main = _worst(mains, seconds)
            margin, margin_seconds = self._margin(eps, main, margin_prev, tables)
            margin_prev = margin
            parts = mains + ([margin] if margin is not None else [])
            after = _worst(parts, seconds)
            earlier = [worst_prev] if self.cascade and worst_prev is not None else []
            before = _worst([after, *earlier], seconds)
            flagged = self._flagged(eps, [outcomes[n][eps] for n in white])
            extra, count = self._reattack(eps, before, flagged, after.correct & ~before.correct)
            counts.append(count)
            spent = seconds + margin_seconds + (0.0 if extra is None else extra.seconds)
            found = [*parts, *earlier, *([] if extra is None else [extra])]
            worst[eps] = worst_prev = _worst(found, spent)
        self.counts = pd.DataFrame(counts, columns=COUNT_COLUMNS)
        return worst

    def _margin(
        self, eps: float, main: Outcome, prev: Outcome | None, tables: Tables
    ) -> tuple[Outcome | None, float]:
        """The margin row at ``eps`` (recorded in ``tables``) and the seconds it took, or the
        carried row where it does not run; None without a margin attack."""
        carried = prev if self.cascade else None
        if self.margin is None or (self.margin_eps is not None and eps not in self.margin_eps):
            return carried, 0.0
        robust = main.correct if carried is None else main.correct & carried.correct
        rows = np.flatnonzero(robust)
        out, seconds = main, 0.0
        if len(rows):
            _, sub = self.runner.attack(MARGIN, self.margin, eps, rows)
            out, seconds = merged(main, rows, sub), sub.seconds
        out = _worst([out] if carried is None else [out, carried], seconds)
        tables.add(MARGIN, eps, out)
        return out, seconds

    def _flagged(self, eps: float, white: list[Outcome]) -> np.ndarray:
        """Points a masking indicator flags at ``eps``: zero input gradient at the clean point, or
        a cross-entropy loss that one of the white-box attacks did not raise (true-class
        confidence after >= before). None at eps 0, where nothing can be broken."""
        clean = self.runner.clean
        if eps == 0:
            return np.zeros_like(clean.correct)
        not_risen = np.zeros_like(clean.correct)
        for out in white:
            not_risen |= out.conf_true >= clean.conf_true
        return clean.zero_grad | not_risen

    def _reattack(
        self, eps: float, before: Outcome, flagged: np.ndarray, carried: np.ndarray
    ) -> tuple[Outcome | None, dict[str, float]]:
        """Re-attack the flagged points ``before`` left robust (at most ``max_points``).

        ``carried``: points the re-attack broke at a smaller eps that every other attack leaves
        robust at this one (counted in ``points`` and ``flips``)."""
        candidates = np.flatnonzero(before.correct & flagged)
        pool = candidates
        if self.cfg.reattack_all:  # AutoAttack's way: every robust point, the flagged ones first
            pool = np.concatenate([candidates, np.flatnonzero(before.correct & ~flagged)])
        rows = pool[: int(self.cfg.max_points)] if self.reattacks else pool[:0]
        extra, flips = None, 0
        if len(rows):
            subs = [self.runner.attack(n, f, eps, rows)[1] for n, f in self.reattacks.items()]
            sub = _worst(subs, sum(o.seconds for o in subs))
            extra, flips = merged(before, rows, sub), int((~sub.correct).sum())
        kept = int(carried.sum())
        count = {
            "eps": float(eps),
            "flagged": len(candidates) + kept,
            "points": len(rows) + kept,
            "flips": flips + kept,
            "left": int(np.setdiff1d(candidates, rows).size),
        }
        return extra, count
