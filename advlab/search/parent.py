"""The search's MLflow run, ``search-<study>``: every trial's runs are its children.

One search run per study and experiment, found by its tags (``advlab.search = <study>``,
``advlab.search_parent = true``), so a resumed search and every worker write under the same run.
Workers that start at the same moment may each create one: all of them then keep the oldest and
the others delete their own. The run carries the liveness tags of the worker that last started a
trial (a dead worker's run is ended KILLED by the reaper, as any run's) and is set RUNNING again
whenever a worker takes it over; the worker that finishes the study ends it FINISHED. Its trial
runs are nested through the sweep mechanism (``ADVLAB_SWEEP_PARENT_RUN_ID``, inherited by joblib
workers), which :class:`advlab.tracking.Tracker` reads.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from advlab import __version__, naming, tracking
from advlab.fileio import atomic_write_text

log = logging.getLogger(__name__)


def _search_runs(client, experiment_id: str, study: str) -> list:
    filter_string = (
        f"tags.`{naming.SEARCH_TAG}` = '{study}' and tags.`{naming.SEARCH_PARENT_TAG}` = 'true'"
    )
    runs = tracking.retry(
        lambda: client.search_runs([experiment_id], filter_string=filter_string, max_results=1000),
        what="search the search run",
    )
    return sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))


def open_search_run(
    uri: str, experiment: str, artifact_root: str | None, study: str, facts: Mapping[str, str]
) -> tuple[str, str]:
    """The search run of ``study`` in ``experiment`` (created if absent, reopened if ended) and
    the experiment's id. ``facts``: tags it is created with (dataset, storage)."""
    client = tracking.open_client(uri)
    tracking.reap_dead_runs(client, None)
    experiment_id = tracking.ensure_experiment(client, experiment, artifact_root)
    found = _search_runs(client, experiment_id, study)
    if not found:
        tags = {naming.SEARCH_TAG: study, naming.SEARCH_PARENT_TAG: "true", **facts}
        tags |= tracking.process_tags()
        own = tracking.retry(
            lambda: client.create_run(
                experiment_id, run_name=naming.search_run_name(study), tags=tags
            ),
            what="create search run",
        ).info.run_id
        found = _search_runs(client, experiment_id, study)
        if found and found[0].info.run_id != own:  # another worker created one first
            tracking.retry(lambda: client.delete_run(own), what="delete duplicate search run")
        log.info("MLflow search run %s created for study %r", found[0].info.run_id, study)
    run_id = found[0].info.run_id
    take_over(uri, run_id)
    return run_id, experiment_id


def take_over(uri: str, run_id: str) -> None:
    """Tag the search run with this process (liveness) and set it RUNNING if it had ended."""
    from mlflow.entities import RunTag

    client = tracking.open_client(uri)
    tags = [RunTag(k, v) for k, v in tracking.process_tags().items()]
    tracking.retry(lambda: client.log_batch(run_id, tags=tags), what="tag search run")
    status = tracking.retry(lambda: client.get_run(run_id), what="get search run").info.status
    if status != "RUNNING":
        tracking.retry(lambda: client.update_run(run_id, status="RUNNING"), what="reopen run")


def log_facts(uri: str, run_id: str, work_dir: Path, overrides: Sequence[str]) -> None:
    """The search's ``results/run_info.json`` (command, overrides, code version), as a run's."""
    commit, dirty = tracking.git_state()
    facts = {
        naming.COMMAND_INFO: shlex.join(["python", "-m", "advlab.search", *overrides]),
        naming.OVERRIDES_INFO: shlex.join(overrides),
        naming.GIT_COMMIT_INFO: commit,
        naming.GIT_DIRTY_INFO: dirty,
        naming.VERSION_INFO: __version__,
    }
    path = atomic_write_text(work_dir / naming.RUN_INFO_JSON, json.dumps(facts, indent=2))
    tracking.store.upload(tracking.open_client(uri), run_id, path, naming.RESULTS_DIR)


def tag_trial_run(uri: str, run_id: str, study: str, number: int) -> None:
    """Tag a trial's run with its study and trial number (to filter on in the MLflow UI)."""
    from mlflow.entities import RunTag

    client = tracking.open_client(uri)
    tags = [RunTag(naming.SEARCH_TAG, study), RunTag(naming.SEARCH_TRIAL_TAG, str(number))]
    tracking.retry(lambda: client.log_batch(run_id, tags=tags), what="tag trial run")


def nest_trials(run_id: str, study: str) -> None:
    """Make every run this process (and its joblib workers) starts a child of the search run."""
    os.environ[tracking.ENV_PARENT_RUN_ID] = run_id
    os.environ[tracking.ENV_SWEEP_ID] = naming.search_run_name(study)


def unnest_trials() -> None:
    for var in (tracking.ENV_PARENT_RUN_ID, tracking.ENV_SWEEP_ID):
        os.environ.pop(var, None)


def end_search_run(
    uri: str, run_id: str, status: str, metrics: Mapping[str, float], reason: str | None = None
) -> None:
    """Log the search's summary metrics and end its run with ``status``."""
    from mlflow.entities import Metric

    client = tracking.open_client(uri)
    stamp = int(time.time() * 1000)
    batch = [Metric(k, float(v), stamp, 0) for k, v in metrics.items()]
    if batch:
        tracking.retry(lambda: client.log_batch(run_id, metrics=batch), what="log search metrics")
    extra = {naming.STOP_REASON_TAG: reason} if reason else {}
    tracking.end_run(client, run_id, status, extra)
