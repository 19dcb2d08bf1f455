"""Seed groups: the runs of one setting that differ only in their seed, and their statistics.

A sweep over ``seed`` (``-m ... seed=0,1,2``) repeats each setting; the report pools those runs
(:func:`advlab.seed_groups.assign_seed_groups`: same experiment, FINISHED, same config once
bookkeeping is left out) into a :class:`SeedGroup` and quotes mean ± std over its seeds. A
setting run once is a group of one, shown exactly as a single run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

import pandas as pd

from advlab import naming, seed_groups
from advlab.config import PerRun
from advlab.report.data import ROBUSTNESS_COLUMNS, Focus, RunData, best_epoch_gap, eps_union
from advlab.report.format import MISSING, fmt_num

SPREAD_COLUMNS = ("robust_std", "asr_std", "n_seeds")  # added to a group's robustness rows
VERDICT_FAIL = "VERDICT_FAIL"  # the status a verdict-fail run is grouped under: never pooled
FAIL_MARK = " (verdict fail)"  # appended to the name of a verdict-fail run's group


@dataclass
class SeedGroup:
    """Runs of one setting in start order (one run when the setting ran once)."""

    name: str  # display label, unique within a report
    runs: list[RunData]

    @property
    def run_id(self) -> str:
        """The first run's id: the group's key in palettes and line styles."""
        return self.runs[0].run_id

    @property
    def params(self) -> dict[str, str]:
        """The first run's params: its swept settings are the whole group's (seed aside)."""
        return self.runs[0].params

    @property
    def n_seeds(self) -> int:
        return len(self.runs)

    @property
    def failed(self) -> bool:
        """True for a run whose verdict is fail (never pooled: such a group holds that run only).
        Comparisons leave it out; tables list it, marked."""
        return any(run.failed_verdict for run in self.runs)

    @property
    def attacks(self) -> list[str]:
        """Attacks any of the runs evaluated, in first-seen order, worst case last."""
        found = dict.fromkeys(a for r in self.runs for a in r.attacks)
        return sorted(found, key=lambda a: a == naming.WORST_CASE)

    @property
    def eps_grid(self) -> list[float]:
        return eps_union(self.runs)

    def spread(self, value: Callable[[RunData], float | None]) -> dict[str, float]:
        """:func:`advlab.seed_groups.spread` of ``value(run)`` over the group's runs."""
        return seed_groups.spread(value(run) for run in self.runs)

    @property
    def certified_any(self) -> bool:
        """True when a run of the group logged certified accuracies (eval.certify)."""
        return any(run.certified for run in self.runs)

    @cached_property
    def robustness(self) -> pd.DataFrame:
        """One row per attack x eps: :data:`ROBUSTNESS_COLUMNS` averaged over the runs, and
        :data:`SPREAD_COLUMNS` (sample std over seeds, NaN for one run; runs with the value).

        ``ci_low``/``ci_high`` are the runs' 95% Wilson bounds averaged: one run's test-sampling
        interval placed around the mean (a group of one keeps its run's interval exactly).
        """
        frames = [r.robustness for r in self.runs if not r.robustness.empty]
        if not frames:
            return pd.DataFrame(columns=[*ROBUSTNESS_COLUMNS, *SPREAD_COLUMNS])
        by_point = pd.concat(frames, ignore_index=True).groupby(["attack", "eps"], sort=True)
        out = by_point[list(ROBUSTNESS_COLUMNS[2:])].mean()
        out["robust_std"] = by_point["robust_acc"].std()
        out["asr_std"] = by_point["asr"].std()
        out["n_seeds"] = by_point["robust_acc"].count()
        return out.reset_index()[[*ROBUSTNESS_COLUMNS, *SPREAD_COLUMNS]]

    def robust(self, attack: str, eps: float) -> pd.Series | None:
        """The group's robustness row of ``attack`` at ``eps``, or None."""
        table = self.robustness
        rows = table[(table["attack"] == attack) & (table["eps"] == float(eps))]
        return None if rows.empty else rows.iloc[0]


def headline_value(run: RunData, focus: Focus) -> float | None:
    """What best and worst are judged by: the focus attack's robust accuracy at the focus eps,
    else (no attacks) the clean accuracy."""
    if focus.attack is None or focus.eps is None:
        return run.clean_acc
    row = run.robust(focus.attack, focus.eps)
    return None if row is None else float(row["robust_acc"])


def group_runs(runs: Sequence[RunData], focus: Focus) -> list[SeedGroup]:
    """The seed groups of ``runs`` in first-seen order. Without a group of several seeds every
    group is named after its run (the report then reads as it does for single runs); otherwise
    after the swept settings other than the seed (``dropout=0.5, weight_decay=0.0001``)."""
    # A run whose verdict is fail joins no group (as an unfinished run joins none): its numbers
    # must not move a setting's mean over seeds.
    numbers = seed_groups.assign_seed_groups(
        (r.experiment, VERDICT_FAIL if r.failed_verdict else r.status, r.config) for r in runs
    )
    members: dict[int, list[RunData]] = {}
    for number, run in zip(numbers, runs, strict=True):
        members.setdefault(number, []).append(run)
    pooled = any(len(m) > 1 for m in members.values())
    knobs = [p for p in focus.swept if p != "seed"]
    groups = [SeedGroup(_label(m, knobs) if pooled else m[0].name, m) for m in members.values()]
    for group in groups:
        if group.failed:
            group.name += FAIL_MARK
    seen: dict[str, int] = {}
    for group in groups:  # settings that differ only in unswept keys (eval.batch_size, ...)
        seen[group.name] = seen.get(group.name, 0) + 1
        if seen[group.name] > 1:
            group.name = f"{group.name} #{seen[group.name]}"
    return groups


def _label(runs: list[RunData], knobs: list[str]) -> str:
    run = runs[0]
    label = ", ".join(f"{k.split('.', 1)[-1]}={fmt_num(run.params.get(k, MISSING))}" for k in knobs)
    label = label or run.tags.get(naming.MLFLOW_RUN_NAME_TAG) or run.name
    return label if run.status == "FINISHED" else f"{label} ({run.status})"


def pooled(groups: Sequence[SeedGroup]) -> bool:
    """True when some group holds several seeds: numbers are then quoted as mean ± std."""
    return any(g.n_seeds > 1 for g in groups)


def compared(groups: Sequence[SeedGroup]) -> list[SeedGroup]:
    """The groups comparisons are drawn over: all but verdict-fail runs."""
    return [g for g in groups if not g.failed]


def seed_counts(groups: Sequence[SeedGroup]) -> list[int]:
    """The distinct numbers of seeds per group, ascending."""
    return sorted({g.n_seeds for g in groups})


def group_table(groups: Sequence[SeedGroup], focus: Focus) -> pd.DataFrame:
    """One row per group: name, run_id, n_seeds, left_out (a verdict-fail run: not compared),
    then clean_acc, robust (the focus attack at the focus eps) and gen_gap (train - val accuracy
    at the best epoch), each the mean over the seeds with its ``<column>_std``, and one column per
    swept param (its MLflow param string; the seed only when no group holds several seeds)."""
    shown = [p for p in focus.swept if p != "seed" or not pooled(groups)]
    values: dict[str, Callable[[RunData], float | None]] = {
        naming.CLEAN_ACC: lambda r: r.clean_acc,
        "robust": lambda r: headline_value(r, focus) if focus.attack is not None else None,
        naming.GEN_GAP: best_epoch_gap,
    }
    rows = []
    for group in groups:
        row: dict[str, object] = {
            "name": group.name,
            "run_id": group.run_id,
            "n_seeds": group.n_seeds,
            "left_out": group.failed,
        }
        for column, value in values.items():
            stats = group.spread(value)
            row[column], row[f"{column}_std"] = stats["mean"], stats["std"]
        for key in shown:
            row[key] = group.params.get(key, MISSING)
        rows.append(row)
    stats = [f"{c}{std}" for c in values for std in ("", "_std")]
    # The columns are named even without groups (every run failed): callers select them.
    return pd.DataFrame(rows, columns=["name", "run_id", "n_seeds", "left_out", *stats, *shown])


def run_table(runs: Sequence[RunData], focus: Focus) -> pd.DataFrame:
    """:func:`group_table` with every run on its own (n_seeds 1, stds NaN, the seed a column
    when it was swept): one row per run."""
    return group_table([SeedGroup(run.name, [run]) for run in runs], focus)


def detail_runs(groups: Sequence[SeedGroup], focus: Focus, per_run: PerRun) -> list[RunData]:
    """The runs that get per-run pages: every run (``all``), none, or (``best_worst``) one run of
    the best and one of the worst group by mean :func:`headline_value` (verdict-fail runs are
    not candidates): the seed closest to its group's mean (the first such seed on a tie)."""
    if per_run == PerRun.none:
        return []
    if per_run == PerRun.all:
        return [run for group in groups for run in group.runs]
    means = [group.spread(lambda r: headline_value(r, focus))["mean"] for group in groups]
    scored = [
        (mean, i) for i, mean in enumerate(means) if not math.isnan(mean) and not groups[i].failed
    ]
    if not scored:
        return []
    best = max(scored, key=lambda item: item[0])[1]  # the first group on a tie
    worst = min(scored, key=lambda item: item[0])[1]
    ends = dict.fromkeys([best, worst])
    return [representative(groups[i], focus) for i in ends]


def representative(group: SeedGroup, focus: Focus) -> RunData:
    """The run whose :func:`headline_value` is closest to the group's mean (first on a tie)."""
    mean = group.spread(lambda r: headline_value(r, focus))["mean"]

    def distance(run: RunData) -> float:
        value = headline_value(run, focus)
        return math.inf if value is None or math.isnan(mean) else abs(value - mean)

    return min(group.runs, key=distance)


def within_spread(a: float, std_a: float, b: float, std_b: float) -> bool | None:
    """Whether two means over seeds differ by no more than their seeds do:
    |a - b| <= sqrt(std_a² + std_b²), the std of the difference between one run of each.

    A setting run once (std NaN) is taken to spread as much as the other one; None when neither
    std is known (or a mean is missing): the seeds then say nothing."""
    a, std_a, b, std_b = (float(v) for v in (a, std_a, b, std_b))
    std_a = std_b if math.isnan(std_a) else std_a
    std_b = std_a if math.isnan(std_b) else std_b
    if any(math.isnan(v) for v in (a, std_a, b, std_b)):
        return None
    return abs(a - b) <= math.hypot(std_a, std_b)
