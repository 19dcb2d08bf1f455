"""What a search found, read from its study: every complete trial, the Pareto front, the best
trial and the importance of each searched key.

Read from the study (every trial's means and seed spreads were recorded there by its worker), so a
number in the PDF is the number in the study and in the trial's MLflow runs. The Pareto front is
over the feasible trials (clean accuracy at least ``search.min_clean``, no ``fail`` verdict):
clean accuracy against the objective, both maximised; the best trial is the feasible one with the
highest objective. Importances come from Optuna's default evaluator (PED-ANOVA).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from advlab import naming
from advlab.search import space, study, trial
from advlab.search.worker import Spec


@dataclass(frozen=True)
class Row:
    """One complete trial."""

    number: int
    values: dict[str, Any]
    value: float
    value_std: float | None  # None: one seed
    clean: float
    clean_std: float | None
    feasible: bool
    verdicts: tuple[str, ...]
    constant: float | None


@dataclass
class Summary:
    study: str
    objective: str
    min_clean: float
    rows: list[Row]
    errors: int  # trials that failed with an error of their own
    best: Row | None
    front: list[Row]
    command: str | None  # the best trial's command line
    importances: dict[str, float] = field(default_factory=dict)
    importance_note: str = ""

    def metrics(self) -> dict[str, float]:
        out = {
            naming.SEARCH_TRIALS: float(len(self.rows) + self.errors),
            naming.SEARCH_FEASIBLE: float(sum(r.feasible for r in self.rows)),
        }
        if self.best is not None:
            out[naming.SEARCH_BEST_VALUE] = self.best.value
            out[naming.SEARCH_BEST_CLEAN] = self.best.clean
            out[naming.SEARCH_BEST_TRIAL] = float(self.best.number)
        return out


def summarise(opened, spec: Spec) -> Summary:
    from optuna.trial import TrialState

    trials = opened.get_trials(deepcopy=False)
    rows = [_row(t) for t in trials if t.state == TrialState.COMPLETE]
    errors = sum(t.state == TrialState.FAIL and study.ERROR_ATTR in t.user_attrs for t in trials)
    feasible = [r for r in rows if r.feasible]
    best = max(feasible, key=lambda r: (r.value, r.clean), default=None)
    command = None
    if best is not None:
        command = trial.command(spec.base, space.overrides(best.values), spec.seeds)
    named = [str(t.user_attrs["objective"]) for t in trials if "objective" in t.user_attrs]
    objective = named[0] if named else spec.objective or "objective"
    importances, note = _importances(opened, len(rows))
    return Summary(
        spec.study,
        objective,
        spec.min_clean,
        rows,
        errors,
        best,
        pareto_front(feasible),
        command,
        importances,
        note,
    )


def _row(t) -> Row:
    attrs = t.user_attrs
    return Row(
        number=t.number,
        values=dict(t.params),
        value=float(t.value),
        value_std=attrs.get("value_std"),
        clean=float(attrs.get("clean_mean", float("nan"))),
        clean_std=attrs.get("clean_std"),
        feasible=study.feasible(t),
        verdicts=tuple(attrs.get("verdicts", ())),
        constant=attrs.get(naming.CONSTANT_ACC),
    )


def pareto_front(rows: list[Row]) -> list[Row]:
    """The rows no other row beats on both clean accuracy and objective, by clean accuracy."""
    front = [
        r
        for r in rows
        if not any(
            o.clean >= r.clean and o.value >= r.value and (o.clean, o.value) != (r.clean, r.value)
            for o in rows
        )
    ]
    return sorted(front, key=lambda r: r.clean)


def _importances(opened, complete: int) -> tuple[dict[str, float], str]:
    if complete < 2:
        return {}, f"Importances need at least 2 complete trials; the study has {complete}."
    import optuna

    try:
        return dict(optuna.importance.get_param_importances(opened)), ""
    except (RuntimeError, ValueError) as error:  # e.g. no key varied across the trials
        return {}, f"Importances could not be computed: {error}"
