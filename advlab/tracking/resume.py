"""``train.resume`` continues the same MLflow run: finding it, checking it may go on, reopening it.

Every tracked run writes ``<run dir>/mlflow_run.json`` (run id, experiment, tracking URI) when it
starts. ``train.resume`` names a run directory or a checkpoint in one (``checkpoints/last.pt``);
the run recorded beside that checkpoint is continued: set RUNNING again (its end-state tags
removed), with each metric step it already holds not logged again, so the finished epochs that
the fit loop replays appear once. A checkpoint with no run recorded beside it (tracking was off,
or the checkpoint was copied elsewhere) continues in a new run that receives the replayed epochs.

Refused with a one-line :class:`~advlab.errors.ConfigError`, before any training: a missing
checkpoint, a run that is not in this store, deleted, in another experiment, FINISHED, or still
RUNNING (its process alive: dead ones were already ended by
:func:`~advlab.tracking.liveness.reap_dead_runs`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from advlab.errors import ConfigError
from advlab.fileio import atomic_write_text
from advlab.naming import (
    ERROR_TAG,
    HOST_TAG,
    KILLED_REASON_TAG,
    MLFLOW_RUN_FILE,
    PID_TAG,
    RESUMED_FROM_TAG,
    STOP_REASON_TAG,
)
from advlab.tracking import store

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

log = logging.getLogger(__name__)

_END_TAGS = (KILLED_REASON_TAG, ERROR_TAG, STOP_REASON_TAG)  # why the last segment ended


@dataclass
class Resumed:
    """A run being continued: what it already holds, so nothing is logged twice."""

    run_id: str
    run_name: str
    checkpoint: Path
    params: dict[str, str]  # logged params (MLflow params cannot change)
    steps: set[tuple[str, int]] = field(default_factory=set)  # (metric, step) logged
    changed: dict[str, list[str]] = field(default_factory=dict)  # see changed_params


def write_run_file(run_dir: Path, info: Mapping[str, str]) -> Path:
    """Record ``info`` (run id, experiment id and name, tracking URI) in ``run_dir``."""
    return atomic_write_text(Path(run_dir) / MLFLOW_RUN_FILE, json.dumps(dict(info), indent=2))


def _checkpoint_and_run_file(resume: Any) -> tuple[Path, Path]:
    """The checkpoint ``train.resume`` names and the run file of the run directory holding it."""
    from advlab.training.checkpoint import checkpoint_dir, resolve_resume

    checkpoint = resolve_resume(resume)  # ConfigError when there is none
    folder = checkpoint.parent
    run_dir = folder.parent if checkpoint_dir(folder.parent) == folder else folder
    return checkpoint, run_dir / MLFLOW_RUN_FILE


def _check_resumable(client: MlflowClient, run: Run, resume: Any, experiment: str) -> None:
    run_id, info = run.info.run_id, run.info
    if info.lifecycle_stage == "deleted":
        raise ConfigError(
            f"train.resume={resume}: MLflow run {run_id} is deleted; restore it "
            f"(mlflow runs restore --run-id {run_id}) or train anew without train.resume"
        )
    other = store.retry(lambda: client.get_experiment(info.experiment_id), what="experiment")
    if other.name != experiment:
        raise ConfigError(
            f"train.resume={resume}: its MLflow run {run_id} is in experiment {other.name!r}, "
            f"not tracking.experiment={experiment!r}; resume with tracking.experiment={other.name}"
        )
    if info.status == "FINISHED":
        raise ConfigError(
            f"train.resume={resume}: MLflow run {run_id} has FINISHED; only a run that was "
            "killed or failed is continued"
        )
    if info.status == "RUNNING":
        tags = run.data.tags
        raise ConfigError(
            f"train.resume={resume}: MLflow run {run_id} is still RUNNING (process "
            f"{tags.get(PID_TAG, '?')} on {tags.get(HOST_TAG, '?')}); stop it before resuming"
        )


def run_to_resume(client: MlflowClient, resume: Any, experiment: str) -> tuple[Run, Path] | None:
    """The run ``train.resume`` continues and its checkpoint; None without ``train.resume`` or
    when no run is recorded beside the checkpoint. Raises ConfigError (see the module docstring).
    """
    from mlflow.exceptions import MlflowException

    if not resume:
        return None
    checkpoint, run_file = _checkpoint_and_run_file(resume)
    if not run_file.is_file():
        log.info("train.resume=%s: no MLflow run recorded beside it; a new run continues", resume)
        return None
    run_id = str(json.loads(run_file.read_text())["run_id"])
    try:
        run = store.retry(lambda: client.get_run(run_id), what="get run")
    except MlflowException:
        raise ConfigError(
            f"train.resume={resume}: its MLflow run {run_id} is not in {client.tracking_uri} "
            "(tracking.uri); resume with the store it was logged to"
        ) from None
    _check_resumable(client, run, resume, experiment)
    return run, checkpoint


def reopen(client: MlflowClient, run: Run, checkpoint: Path, tags: Mapping[str, str]) -> Resumed:
    """Set ``tags`` (this process's, so no reaper takes the run for dead), remove the tags saying
    why the last segment ended, and set the run RUNNING again."""
    from mlflow.entities import RunTag

    run_id = run.info.run_id
    batch = [RunTag(k, v) for k, v in {**tags, RESUMED_FROM_TAG: str(checkpoint)}.items()]
    store.retry(lambda: client.log_batch(run_id, tags=batch), what="tag resumed run")
    for key in _END_TAGS:
        if key in run.data.tags:
            store.retry(lambda key=key: client.delete_tag(run_id, key), what="delete tag")
    store.retry(lambda: client.update_run(run_id, status="RUNNING"), what="reopen run")
    steps = set()
    for key in run.data.metrics:
        history = store.retry(
            lambda key=key: client.get_metric_history(run_id, key), what="metric history"
        )
        steps |= {(key, m.step) for m in history}
    log.info("continuing MLflow run %s from %s", run_id, checkpoint)
    return Resumed(run_id, run.info.run_name, checkpoint, dict(run.data.params), steps)


def changed_params(values: Mapping[str, str], logged: Mapping[str, str]) -> dict[str, list[str]]:
    """``{key: [logged value, new value]}`` for the params a resumed config changed."""
    return {k: [logged[k], v] for k, v in values.items() if k in logged and logged[k] != v}


def new_params(
    resumed: Resumed, values: Mapping[str, str]
) -> tuple[dict[str, str], dict[str, list[str]]]:
    """The params of ``values`` the resumed run does not hold yet (now recorded as held), and
    every param the resumed config changed so far, ``{key: [logged, now]}`` (empty: none)."""
    changed = changed_params(values, resumed.params)
    if changed:
        resumed.changed.update(changed)
    new = {k: v for k, v in values.items() if k not in resumed.params}
    resumed.params.update(new)
    return new, dict(resumed.changed) if changed else {}
