"""One run as the leaderboard sees it: an :class:`Entry`, read from a row of
:func:`advlab.results.load` (params, metrics and tags of one bulk search: no artifact is
downloaded, so a store of hundreds of runs is read in seconds).

A run's *threat model* is what makes its worst case comparable with another run's: the eps it was
attacked at (its eps grid) and whether the escalation (margin-loss attack and re-attack of flagged
points) was on. The worst case itself is always over the L-inf attacks of the run
(:mod:`advlab.attacks.evaluate`).
"""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from advlab import naming
from advlab.verdict import FAIL

# The params a run records for its evaluation (flattened config keys, see tracking.metadata).
ESCALATION_PARAM = "eval.escalation.enabled"
ATTACKS_PARAM = "eval.attacks"
GRID_EPS_PARAM = "eval.grid_eps"
SEED_PARAM = "seed"
DATA_PARAM = "data.name"


@dataclass(frozen=True)
class Entry:
    """One run. Fractions in [0, 1], eps in 1/255 units; None where the run did not log it."""

    run_id: str
    experiment: str
    experiment_id: str
    name: str  # the run name
    setting: str  # the run name less its seed suffix: what the row is called
    status: str  # FINISHED | FAILED | KILLED | RUNNING | SCHEDULED
    seed: Any
    data: str
    model: str
    adversarial: str | None  # adversarial-training method; None or 'none': standard training
    clean: float | None
    verdict: str | None  # pass | warn | fail; None: recorded before verdicts
    verdict_reason: str | None
    checks: dict[str, str]  # checks that did not pass: name -> warn | fail
    train_seconds: float | None
    grid: tuple[float, ...]  # every eps a robust accuracy was logged at, ascending
    grid_eps: float | None  # eval.grid_eps: the eps the run's report quotes
    escalation: bool | None  # None: not recorded
    attacks: tuple[str, ...]
    error: str | None  # why a run did not finish
    params: dict[str, str] = field(repr=False, default_factory=dict)
    metrics: dict[str, float] = field(repr=False, default_factory=dict)

    def worst_at(self, eps: float) -> float | None:
        """The worst case over the run's attacks at ``eps``; None where it was not measured."""
        return self.metrics.get(naming.robust_acc_key(naming.WORST_CASE, eps))

    def certified_at(self, eps: float) -> float | None:
        """Certified accuracy at ``eps``; None where the run did not certify."""
        return self.metrics.get(naming.certified_acc_key(eps))

    @property
    def failed_checks(self) -> list[str]:
        return [name for name, status in self.checks.items() if status == FAIL]


def entries(frame: pd.DataFrame) -> list[Entry]:
    """An :class:`Entry` per row of ``frame`` (from :func:`advlab.results.load`)."""
    return [_entry(row) for row in _rows(frame)]


def _rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows as plain dicts without their empty cells (a run lacks another run's keys)."""
    return [
        {key: value for key, value in row.items() if not _missing(value)}
        for row in frame.to_dict("records")
    ]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT


def _entry(row: dict[str, Any]) -> Entry:
    # load() turns a param column numeric or bool when all of its values parse: str() gives
    # 'True', '8.0', the same text for the same value, which is all grouping and parsing need.
    params = {k.removeprefix("params."): str(v) for k, v in row.items() if k.startswith("params.")}
    metrics = {
        k.removeprefix("metrics."): float(v) for k, v in row.items() if k.startswith("metrics.")
    }
    tags = {k.removeprefix("tags."): str(v) for k, v in row.items() if k.startswith("tags.")}
    seed = tags.get(naming.SEED_TAG, _whole(params.get(SEED_PARAM)))
    name = str(row.get("run_name") or row["run_id"])
    return Entry(
        run_id=row["run_id"],
        experiment=str(row.get("experiment") or row["experiment_id"]),
        experiment_id=str(row["experiment_id"]),
        name=name,
        setting=setting_name(name, seed),
        status=str(row["status"]),
        seed=seed,
        data=tags.get(naming.DATASET_TAG, params.get(DATA_PARAM, "?")),
        model=tags.get(naming.MODEL_TAG, "?"),
        adversarial=tags.get(naming.ADVERSARIAL_TRAINING_TAG),
        clean=metrics.get(naming.CLEAN_ACC),
        verdict=tags.get(naming.VERDICT_TAG),
        verdict_reason=tags.get(naming.VERDICT_REASON_TAG),
        checks=naming.checks_from_tags(tags),
        train_seconds=metrics.get(naming.TRAIN_SECONDS),
        grid=_grid(metrics),
        grid_eps=_number(params.get(GRID_EPS_PARAM)),
        escalation=_flag(params.get(ESCALATION_PARAM)),
        attacks=tuple(_literal_list(params.get(ATTACKS_PARAM))),
        error=next(
            (tags[t] for t in (naming.ERROR_TAG, naming.STOP_REASON_TAG) if tags.get(t)), None
        ),
        params=params,
        metrics=metrics,
    )


def setting_name(name: str, seed: Any) -> str:
    """A run name less the ``-s<seed>`` every run name ends with: 'alice-s2' -> 'alice'."""
    if seed is None:
        return name
    return re.sub(rf"-s{re.escape(str(seed))}$", "", name) or name


def _grid(metrics: dict[str, float]) -> tuple[float, ...]:
    found = set()
    for key in metrics:
        parsed = naming.parse_eps_metric(key)
        if parsed is not None and parsed[0] == "robust_acc":
            found.add(parsed[2])
    return tuple(sorted(found))


def _number(text: str | None) -> float | None:
    try:
        return None if text is None else float(text)
    except ValueError:
        return None


def _whole(text: str | None) -> str | None:
    """'2.0' (a numeric param column) -> '2': a seed as the run name spells it."""
    number = _number(text)
    return str(int(number)) if number is not None and number.is_integer() else text


def _flag(text: str | None) -> bool | None:
    return {"True": True, "False": False}.get(str(text)) if text is not None else None


def _literal_list(text: str | None) -> list[str]:
    """A list param as MLflow stores it ('[\\'fgsm\\', \\'pgd\\']') back as a list."""
    if not text:
        return []
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return [text]
    return [str(v) for v in value] if isinstance(value, list | tuple) else [str(value)]
