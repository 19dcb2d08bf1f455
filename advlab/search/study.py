"""The Optuna study behind a search: its storage, its sampler, and which trials count.

The study lives in a relational store (SQLite beside the MLflow store by default, PostgreSQL on a
cluster), so a search stopped at any point resumes with the same command and keeps every finished
trial, and several workers share it. ``search.n_trials`` is a total over all of them: a trial
counts when it is complete, failed with an error of its own (advlab refused or broke it), or
running in a live process. A trial whose process died (SIGKILL, out of memory, a lost node) does
not count: it is marked FAIL and its settings are queued again, once per death, so the search
still reaches its total and runs no finished trial twice. Death is seen at once on this machine
(the trial records host, pid and process start, as runs do) and, from another machine, when
Optuna's heartbeat is older than :data:`GRACE_S`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from advlab.config import Sampler
from advlab.errors import ConfigError
from advlab.naming import HOST_TAG

if TYPE_CHECKING:
    import optuna

HEARTBEAT_S = 20  # seconds between a running trial's heartbeats
GRACE_S = 120  # no heartbeat for this long: the trial's process is gone (another machine)
# User attributes a trial records (study-level names: the study is advlab's own, not MLflow's).
ERROR_ATTR = "error"  # the trial failed by itself: counts as finished, never retried
RETRY_ATTR = "retry_of"  # the trial reruns the settings of this killed trial number
# The trial's constraints (Optuna 5's Trial.set_constraint; <= 0 is feasible), which TPE, NSGA-II
# and study.best_trial read.
MIN_CLEAN_CONSTRAINT = "min_clean"  # search.min_clean - the trial's mean clean accuracy
VERDICT_CONSTRAINT = "fail_verdict"  # 1 when a run's verdict is fail, else 0
_BACKENDS = ("sqlite", "postgresql", "mysql")


def storage_url(storage: str | None, tracking_uri: str) -> str:
    """The Optuna storage URL: ``search.storage``, else ``optuna.db`` beside the MLflow SQLite
    store. Raises :class:`ConfigError` for a URL SQLAlchemy cannot read or a backend Optuna's
    RDB storage does not serve."""
    if storage is None:
        if not tracking_uri.startswith("sqlite:///"):
            raise ConfigError(
                f"search.storage=null: the MLflow store {tracking_uri} is not a SQLite file, so "
                "there is no default place for the study; give search.storage=postgresql://..."
            )
        db = Path(tracking_uri.removeprefix("sqlite:///").split("?", 1)[0])
        return f"sqlite:///{db.parent / 'optuna.db'}"
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        backend = make_url(storage).get_backend_name()
    except ArgumentError as error:
        raise ConfigError(f"search.storage={storage!r}: not a storage URL ({error})") from error
    if backend not in _BACKENDS:
        raise ConfigError(
            f"search.storage={storage!r}: backend {backend!r} is not one of "
            f"{', '.join(_BACKENDS)} (e.g. sqlite:////abs/path/optuna.db, postgresql://host/db)"
        )
    return storage


@contextlib.contextmanager
def storage_lock(url: str) -> Iterator[None]:
    """Exclusive lock of ``<db>.lock`` for a SQLite storage (no-op for a server): creating the
    tables, and counting trials then asking for one, are done by one worker at a time."""
    if not url.startswith("sqlite:///"):
        yield
        return
    db = Path(url.removeprefix("sqlite:///").split("?", 1)[0])
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """The RDB storage at ``url``, with heartbeats; a trial found dead is queued again."""
    import optuna

    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # Workers write rarely (a trial's start and end, heartbeats): wait for the lock.
        kwargs = {"connect_args": {"timeout": 60}}
    with storage_lock(url):
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs=kwargs,
            heartbeat_interval=HEARTBEAT_S,
            grace_period=GRACE_S,
            failed_trial_callback=requeue,
        )


def make_sampler(kind: Sampler, seed: int | None) -> optuna.samplers.BaseSampler:
    """The sampler ``search.sampler`` names; TPE and NSGA-II read each trial's constraints."""
    import optuna

    if kind == Sampler.random:
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == Sampler.nsga2:
        return optuna.samplers.NSGAIISampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=5)


def feasible(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a complete trial met every constraint (clean accuracy, no fail verdict)."""
    return all(v <= 0 for v in trial.constraints.values())


def open_study(url: str, name: str, sampler: Sampler, seed: int | None) -> optuna.Study:
    """The study ``name`` at ``url``, created (maximising) if absent."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # advlab logs each trial itself
    storage = open_storage(url)
    with storage_lock(url):
        return optuna.create_study(
            storage=storage,
            study_name=name,
            sampler=make_sampler(sampler, seed),
            direction="maximize",
            load_if_exists=True,
        )


def requeue(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Queue the settings of a trial whose process died, so they still get run."""
    study.enqueue_trial(dict(trial.params), user_attrs={RETRY_ATTR: trial.number})


def reap_dead_trials(study: optuna.Study) -> list[int]:
    """Mark FAIL (and queue again) the RUNNING trials whose process is gone: on this machine by
    pid, elsewhere by Optuna's heartbeat. Returns their numbers."""
    import optuna
    from optuna.trial import TrialState

    from advlab.tracking.liveness import process_gone

    with warnings.catch_warnings():  # experimental since Optuna 2.9, and what optimize() calls
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # heartbeat older than GRACE_S: requeue() runs
    storage = study._storage  # the study's own storage object (Optuna has no public accessor)
    reaped = []
    now = dt.datetime.now()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        tags = {k: str(v) for k, v in trial.user_attrs.items()}
        # A worker killed between asking and naming itself left a trial without its tags.
        unnamed = HOST_TAG not in tags and (now - trial.datetime_start).total_seconds() > GRACE_S
        if not unnamed and process_gone(tags) is None:
            continue
        if storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
            requeue(study, trial)
            reaped.append(trial.number)
    return reaped


def counted(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a trial counts towards ``search.n_trials`` (see the module docstring)."""
    from optuna.trial import TrialState

    if trial.state in (TrialState.COMPLETE, TrialState.RUNNING):
        return True
    return trial.state == TrialState.FAIL and ERROR_ATTR in trial.user_attrs


def n_counted(study: optuna.Study) -> int:
    return sum(counted(t) for t in study.get_trials(deepcopy=False))


class Heartbeat:
    """A thread recording a running trial's heartbeat every :data:`HEARTBEAT_S` (the ask/tell
    loop has no heartbeat of its own; ``study.optimize`` would)."""

    def __init__(self, study: optuna.Study, trial_id: int) -> None:
        self._storage, self._trial_id = study._storage, trial_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def __enter__(self) -> Heartbeat:
        self._storage.record_heartbeat(self._trial_id)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self._storage.record_heartbeat(self._trial_id)
