"""The ranking: which runs are ranked, which are listed apart and why, seeds pooled into one row.

A run is listed apart, with the reason, when it did not finish, when its verdict is ``fail`` (its
figures mean nothing), when it was evaluated under another threat model than the one ranked (not
attacked at the ranked eps, or the escalation not as asked: a run without the escalation may
over-state its robustness), or when it logged no worst case at that eps. The others are pooled
into seed groups (runs that differ only in their seed, same experiment, same run name less its
seed: two students' identical settings stay two rows), and a group whose mean clean accuracy is
below the floor is listed apart too. The rest is ranked by mean worst case, best first, within
each data set (a worst case on faces and one on CIFAR-10 are not comparable).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from advlab.leaderboard.entries import Entry
from advlab.report.format import fmt_eps, fmt_pct
from advlab.seed_groups import assign_seed_groups, spread
from advlab.verdict import FAIL, worst

FINISHED = "FINISHED"
FACTS_NODE = "facts"  # the params a run logs about its data (tracking.Tracker.log_facts)


@dataclass(frozen=True)
class ThreatModel:
    """What is ranked: the L-inf worst case at ``eps`` (1/255), evaluated with the escalation on
    or off, of runs whose clean accuracy is at least ``min_clean``."""

    eps: float
    escalation: bool
    min_clean: float

    def describe(self) -> str:
        floor = f", clean accuracy at least {fmt_pct(self.min_clean)}" if self.min_clean else ""
        on = "on" if self.escalation else "off"
        return f"worst case at {fmt_eps(self.eps)} (L-inf, escalation {on}){floor}"


@dataclass
class Row:
    """One line of the leaderboard: one run, or a seed group of runs of one setting."""

    entries: list[Entry]
    eps: float
    rank: int | None = None
    reason: str | None = None  # why the row is not ranked
    # runs of the same setting (experiment and run name less the seed) listed apart
    apart_seeds: int = 0

    @property
    def first(self) -> Entry:
        return self.entries[0]

    @property
    def label(self) -> str:
        """The setting's name for a seed group, the run's own name for a single run."""
        return self.first.setting if len(self.entries) > 1 else self.first.name

    @property
    def n_seeds(self) -> int:
        return len(self.entries)

    @property
    def seeds(self) -> list[Any]:
        return [e.seed for e in self.entries]

    def stat(self, what: str) -> dict[str, float]:
        """Mean, std (NaN for one seed), min, max and count of ``clean``, ``worst``,
        ``certified`` or ``train_time`` (seconds) over the row's runs
        (:func:`advlab.seed_groups.spread`)."""
        value = {
            "clean": lambda e: e.clean,
            "worst": lambda e: e.worst_at(self.eps),
            "certified": lambda e: e.certified_at(self.eps),
            "train_time": lambda e: e.train_seconds,
        }[what]
        return spread(value(e) for e in self.entries)

    @property
    def verdict(self) -> str | None:
        """The worst verdict of the row's runs (None when none recorded one)."""
        return worst(e.verdict for e in self.entries if e.verdict)

    @property
    def checks(self) -> dict[str, str]:
        """Every check that did not pass in some run of the row, with its worst status."""
        out: dict[str, str] = {}
        for entry in self.entries:
            for name, status in entry.checks.items():
                out[name] = worst([status, out.get(name, status)]) or status
        return out


@dataclass
class Board:
    """The leaderboard: the ranked rows (best first within each data set), the rows listed apart
    with their reason, and how many ranked rows ``top`` left out."""

    threat_model: ThreatModel
    tracking_uri: str
    experiments: list[str]
    ranked: list[Row]
    apart: list[Row]
    hidden: int = 0
    data_sets: list[str] = field(default_factory=list)


def apart_reason(entry: Entry, threat: ThreatModel) -> str | None:
    """Why ``entry`` cannot be ranked under ``threat`` (None: it can), in a few words."""
    if entry.status != FINISHED:
        return f"run {entry.status}" + (f": {entry.error}" if entry.error else "")
    if entry.verdict == FAIL:
        failed = ", ".join(entry.failed_checks) or entry.verdict_reason or "no reason recorded"
        return f"verdict fail: {failed}"
    if threat.eps not in entry.grid:
        grid = ", ".join(fmt_eps(e) for e in entry.grid) or "none"
        return f"another threat model: not attacked at {fmt_eps(threat.eps)} (eps {grid})"
    if entry.escalation is None:
        return "another threat model: escalation not recorded"
    if entry.escalation != threat.escalation:
        return f"another threat model: escalation {'on' if entry.escalation else 'off'}"
    if entry.worst_at(threat.eps) is None:
        return f"no worst case at {fmt_eps(threat.eps)}"
    return None


def rank(
    runs: Sequence[Entry], threat: ThreatModel, *, tracking_uri: str, top: int | None = None
) -> Board:
    """The :class:`Board` of ``runs``, read from ``tracking_uri``; ``top``: ranked rows kept per
    data set (None: all)."""
    apart: list[Row] = []
    candidates: list[Entry] = []
    for entry in runs:
        reason = apart_reason(entry, threat)
        if reason is None:
            candidates.append(entry)
        else:
            apart.append(Row([entry], threat.eps, reason=reason))
    ranked: list[Row] = []
    for row in seed_rows(candidates, threat.eps):
        clean = row.stat("clean")["mean"]
        if not clean >= threat.min_clean:  # NaN (no clean accuracy) is below every floor
            row.reason = f"clean {fmt_pct(clean)} below the floor {fmt_pct(threat.min_clean)}"
            apart.append(row)
        else:
            ranked.append(row)
    # A seed of a ranked setting listed apart (say its verdict failed) is counted on the row, so
    # the mean over the other seeds cannot pass for the whole setting.
    apart_settings = Counter((e.experiment_id, e.setting) for r in apart for e in r.entries)
    for row in ranked:
        row.apart_seeds = apart_settings[(row.first.experiment_id, row.first.setting)]
    ranked.sort(key=lambda r: (r.first.data, -r.stat("worst")["mean"], -r.stat("clean")["mean"]))
    shown: list[Row] = []
    for data in dict.fromkeys(r.first.data for r in ranked):
        rows = [r for r in ranked if r.first.data == data]
        for number, row in enumerate(rows, 1):
            row.rank = number
        shown += rows[:top] if top is not None else rows
    apart.sort(key=lambda r: (r.reason or "", r.first.experiment, r.first.name))
    return Board(
        threat_model=threat,
        tracking_uri=tracking_uri,
        experiments=sorted({e.experiment for e in runs}),
        ranked=shown,
        apart=apart,
        hidden=len(ranked) - len(shown),
        data_sets=list(dict.fromkeys(r.first.data for r in ranked)),
    )


def seed_rows(runs: Sequence[Entry], eps: float) -> list[Row]:
    """``runs`` pooled into seed groups, one :class:`Row` each, in first-seen order.

    The group key is :func:`advlab.seed_groups.seed_group_key` on the run's params (its
    flattened config, read in the same bulk search: no config.json per run is downloaded), in
    one experiment and under one run name less its seed.
    """
    keys = [(json.dumps([e.experiment_id, e.setting]), e.status, _config(e)) for e in runs]
    numbers = assign_seed_groups(keys)
    rows: dict[int, Row] = {}
    for number, entry in zip(numbers, runs, strict=True):
        rows.setdefault(number, Row([], eps)).entries.append(entry)
    for row in rows.values():
        row.entries.sort(key=lambda e: _seed_order(e.seed))
    return list(rows.values())


def _seed_order(seed: Any) -> tuple[int, float | str]:
    try:
        return (0, float(seed))
    except (TypeError, ValueError):
        return (1, str(seed))


def _config(entry: Entry) -> dict[str, Any]:
    """The run's config as its params give it. ``facts.*`` are left out: they are measured, not
    set (the split sizes and class shares change with the seed), and config.json has none."""
    config = nested(entry.params)
    config.pop(FACTS_NODE, None)
    return config


def nested(params: dict[str, str]) -> dict[str, Any]:
    """Flattened params ('train.adversarial.eps') back into the config's nesting."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):  # a leaf and a node of one name: keep it flat
                node, leaf = out, key
                break
            node = child
        node[leaf] = value
    return out
