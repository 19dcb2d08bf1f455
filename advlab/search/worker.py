"""A search worker: ask the study for a trial, run it, tell the result; until the total is reached.

Any number of workers (this process, joblib processes, jobs on other machines) run this loop on
one study. Counting the trials and asking for the next one happen under the storage's lock
(SQLite) so two workers never overshoot ``search.n_trials``; on a server the count is checked
again after asking. A trial is told:

- its objective (mean over the seeds) and its constraints, ``min_clean - clean`` and ``1`` when a
  run's verdict is ``fail``, which the samplers read: a fail verdict is infeasible, never best;
- FAIL with its error when advlab refused or broke one of its runs (it counts; never retried);
- FAIL without an error when the worker is interrupted (Ctrl-C, SIGTERM): its settings are queued
  again, as for a worker that died.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

from advlab.config import Sampler
from advlab.errors import AdvlabError
from advlab.search import parent, space, study, trial
from advlab.search.space import Param

log = logging.getLogger("advlab.search")


@dataclass(frozen=True)
class Spec:
    """Everything a worker needs, in plain values (it crosses to joblib processes)."""

    storage: str
    study: str
    sampler: Sampler
    n_trials: int
    params: tuple[Param, ...]
    base: tuple[str, ...]  # the search command's overrides that every trial gets
    seeds: tuple[int, ...]
    min_clean: float
    objective: str | None
    run_root: str  # trial directories: <run_root>/trial-<number>/seed-<seed>
    tracking_uri: str
    parent_run_id: str


def work(spec: Spec, worker: int = 0) -> int:
    """Run trials of ``spec``'s study until it holds ``spec.n_trials``; return how many ran here."""
    from optuna.trial import TrialState

    from advlab.tracking import process_tags

    if not logging.getLogger().handlers:  # a joblib worker: Hydra configured only the parent
        logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    parent.nest_trials(spec.parent_run_id, spec.study)
    opened = study.open_study(spec.storage, spec.study, spec.sampler, seed=None)
    ran = 0
    while True:
        with study.storage_lock(spec.storage):
            for number in study.reap_dead_trials(opened):
                log.warning("trial %d: its process is gone; its settings are queued again", number)
            if study.n_counted(opened) >= spec.n_trials:
                break
            with warnings.catch_warnings():  # Optuna: heartbeats are meant for optimize()
                warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
                asked = opened.ask()
            for key, value in process_tags().items():
                asked.set_user_attr(key, value)
        if _surplus(opened, asked.number, spec.n_trials):
            opened.tell(asked, state=TrialState.FAIL)  # a worker elsewhere asked first
            break
        values = {p.key: p.suggest(asked) for p in spec.params}
        parent.take_over(spec.tracking_uri, spec.parent_run_id)
        _run(spec, opened, asked, values, worker)
        ran += 1
    return ran


def _surplus(opened, number: int, n_trials: int) -> bool:
    before = [t for t in opened.get_trials(deepcopy=False) if t.number < number]
    return sum(study.counted(t) for t in before) >= n_trials


def _run(spec: Spec, opened, asked, values: dict, worker: int) -> None:
    from optuna.trial import TrialState

    settings = space.overrides(values)
    log.info("trial %d (worker %d): %s", asked.number, worker, " ".join(settings) or "-")

    def on_run(run_id: str) -> None:
        parent.tag_trial_run(spec.tracking_uri, run_id, spec.study, asked.number)

    run_root = Path(spec.run_root) / f"trial-{asked.number:04d}"
    try:
        with study.Heartbeat(opened, asked._trial_id):
            outcome = trial.run_trial(
                spec.base, settings, spec.seeds, run_root, objective=spec.objective, on_run=on_run
            )
    except AdvlabError as error:
        # These settings cannot run (refused, or the run broke): finished, and never retried.
        asked.set_user_attr(study.ERROR_ATTR, str(error))
        opened.tell(asked, state=TrialState.FAIL)
        log.error("trial %d failed: %s", asked.number, error)
        return
    except BaseException:
        opened.tell(asked, state=TrialState.FAIL)  # interrupted: run these settings again later
        study.requeue(opened, opened.get_trials(deepcopy=False)[asked.number])
        raise
    attrs = outcome.attrs()
    for key, value in attrs.items():
        asked.set_user_attr(key, value)
    violation = [spec.min_clean - attrs["clean_mean"], 1.0 if outcome.failed else 0.0]
    asked.set_constraint(study.MIN_CLEAN_CONSTRAINT, violation[0])
    asked.set_constraint(study.VERDICT_CONSTRAINT, violation[1])
    opened.tell(asked, attrs["value_mean"])
    log.info(
        "trial %d: %s %.1f%%, clean %.1f%%, verdicts %s%s",
        asked.number,
        attrs["objective"],
        100 * attrs["value_mean"],
        100 * attrs["clean_mean"],
        ",".join(outcome.verdicts),
        "" if all(v <= 0 for v in violation) else " (infeasible)",
    )
