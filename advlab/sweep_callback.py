"""Hydra callback that groups a multirun sweep under one MLflow parent run.

Each job's run is written by its :class:`advlab.tracking.Tracker`; this callback writes the
sweep's parent run (creates it, logs its job counts, ends it) and ends job runs left RUNNING,
through the store functions of :mod:`advlab.tracking`.

``on_multirun_start`` (on the submitting machine, before any job starts) creates a parent run named
``sweep-<sweep id>`` and hands its id to the jobs through ``<hydra.sweep.dir>/mlflow_sweep.json``
(the sweep dir is shared with cluster jobs) and the environment (``ADVLAB_SWEEP_PARENT_RUN_ID``,
``ADVLAB_SWEEP_ID``; inherited by joblib workers). Each job's :class:`advlab.tracking.Tracker`
then tags its run ``mlflow.parentRunId`` and ``advlab.sweep``, so the MLflow UI nests the jobs under
the sweep and its compare view shows them as one table.

``on_multirun_end`` ends the parent: FAILED if a job's run failed, KILLED if one was killed, else
FINISHED. Hydra skips ``on_multirun_end`` when a job raises or the sweep is interrupted, so the
callback also registers an ``atexit`` hook (and, for the sweep's duration, a SIGTERM handler that
raises :class:`advlab.tracking.Terminated`, a ``KeyboardInterrupt``) which ends the parent then.
Job runs whose process died without closing them (SIGKILL, out of memory) are ended KILLED with
the tag ``advlab.killed_reason``: no run is left RUNNING. The parent run carries the sweep process's
host, pid and heartbeat tags, and ``on_multirun_start`` first ends the store's runs whose process
is gone (:func:`advlab.tracking.reap_dead_runs`), as every run's start does.

Enabled in ``conf/hydra/default.yaml`` through ``conf/hydra/callbacks/mlflow_sweep.yaml``.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shlex
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from advlab import __version__, naming, tracking
from advlab.fileio import atomic_write_text

log = logging.getLogger(__name__)

ORPHAN_MESSAGE = "the job's process ended without closing its run (killed or crashed)"


class MlflowSweepCallback(Callback):
    """One MLflow parent run per Hydra multirun (no-op with ``tracking.enabled=false``)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.parent_run_id: str | None = None
        self.tracking_uri: str | None = None
        self.experiment_id: str | None = None
        self._prev_sigterm: Any = None

    # -------------------------------------------------------------------------------- start
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.enabled or not config.tracking.enabled:
            return
        uri = tracking.resolve_tracking_uri(config.tracking, config.get("paths"))
        client = tracking.open_client(uri)
        tracking.reap_dead_runs(client, config.tracking.get("stale_after_s"))
        artifact_root = tracking.resolve_artifact_root(config.tracking, config.get("paths"), uri)
        name = str(config.tracking.experiment)
        experiment_id = tracking.ensure_experiment(client, name, artifact_root)

        sweep_dir = Path(str(config.hydra.sweep.dir))
        sweep_id = tracking.sweep_id_from_dir(sweep_dir)
        tags = {
            naming.SWEEP_TAG: sweep_id,
            naming.SWEEP_PARENT_TAG: "true",
            naming.SWEEP_DIR_TAG: str(sweep_dir),
            naming.LAUNCHER_TAG: naming.option_name(str(config.hydra.launcher.get("_target_", ""))),
            naming.DATASET_TAG: str(config.data.name),
            # The sweep process: the parent run is alive while it is (see tracking.liveness).
            **tracking.process_tags(),
        }
        sweeper_params = config.hydra.sweeper.get("params")
        if sweeper_params:
            params = OmegaConf.to_container(sweeper_params, resolve=True)
            tags[naming.SWEEP_PARAMS_TAG] = json.dumps(params, sort_keys=True)
        run = tracking.retry(
            lambda: client.create_run(experiment_id, run_name=f"sweep-{sweep_id}", tags=tags),
            what="create sweep run",
        )
        self.parent_run_id = run.info.run_id
        self.tracking_uri = uri
        self.experiment_id = experiment_id

        sweep_dir.mkdir(parents=True, exist_ok=True)
        facts = _sweep_facts(config)
        info_path = atomic_write_text(sweep_dir / naming.RUN_INFO_JSON, json.dumps(facts))
        tracking.store.upload(client, self.parent_run_id, info_path, naming.RESULTS_DIR)
        info = {
            "parent_run_id": self.parent_run_id,
            "sweep_id": sweep_id,
            "tracking_uri": uri,
            "experiment_id": experiment_id,
            "experiment": name,
        }
        # Atomic: a cluster job starting now reads the whole file or none of it.
        atomic_write_text(sweep_dir / naming.SWEEP_FILE, json.dumps(info, indent=2))
        os.environ[tracking.ENV_PARENT_RUN_ID] = self.parent_run_id
        os.environ[tracking.ENV_SWEEP_ID] = sweep_id
        atexit.register(self._end_at_exit)
        self._prev_sigterm = tracking.sigterm_raises()
        log.info("MLflow sweep %s: parent run %s in %r", sweep_id, self.parent_run_id, name)

    # ---------------------------------------------------------------------------------- end
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._end(completed=True)

    def _end_at_exit(self) -> None:
        # Hydra did not reach on_multirun_end: a job raised or the sweep was interrupted.
        try:
            self._end(completed=False)
        except Exception:
            log.exception("could not end MLflow sweep run %s", self.parent_run_id)

    def _end(self, *, completed: bool) -> None:
        if self.parent_run_id is None:
            return
        parent, uri = self.parent_run_id, self.tracking_uri
        assert uri is not None and self.experiment_id is not None
        self.parent_run_id = None
        atexit.unregister(self._end_at_exit)
        for var in (tracking.ENV_PARENT_RUN_ID, tracking.ENV_SWEEP_ID):
            os.environ.pop(var, None)
        tracking.restore_sigterm(self._prev_sigterm)
        self._prev_sigterm = None

        from mlflow.entities import Metric

        client = tracking.open_client(uri)
        children = tracking.retry(
            lambda: client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.mlflow.parentRunId = '{parent}'",
                max_results=10000,
            ),
            what="search sweep jobs",
        )
        statuses = []
        for child in children:
            status = child.info.status
            if status not in ("FINISHED", "FAILED", "KILLED"):
                reason = {naming.KILLED_REASON_TAG: ORPHAN_MESSAGE}
                tracking.end_run(client, child.info.run_id, "KILLED", reason)
                status = "KILLED"
            statuses.append(status)
        if "FAILED" in statuses:
            status = "FAILED"
        elif "KILLED" in statuses or not completed:
            status = "KILLED"
        else:
            status = "FINISHED"
        counts = {
            naming.sweep_jobs_key(s): float(statuses.count(s))
            for s in ("FINISHED", "FAILED", "KILLED")
        }
        counts[naming.SWEEP_JOBS] = float(len(statuses))
        ts = time.time()
        metrics = [Metric(k, v, int(ts * 1000), 0) for k, v in counts.items()]
        tracking.retry(lambda: client.log_batch(parent, metrics=metrics), what="log sweep counts")
        extra = (
            {}
            if completed
            else {naming.STOP_REASON_TAG: "the sweep stopped before all jobs returned"}
        )
        tracking.end_run(client, parent, status, extra)
        log.info(
            "MLflow sweep run %s ended %s (%d jobs); its runs in the MLflow UI: %s",
            parent,
            status,
            len(statuses),
            tracking.ui_link(uri, self.experiment_id),
        )


def _sweep_facts(config: DictConfig) -> dict[str, str]:
    """The sweep's descriptive facts (its ``results/run_info.json``, as a run's): the command,
    its overrides, the code's commit and version."""
    commit, dirty = tracking.git_state()
    return {
        naming.COMMAND_INFO: tracking.command_line(),
        naming.OVERRIDES_INFO: shlex.join(str(o) for o in config.hydra.overrides.task),
        naming.GIT_COMMIT_INFO: commit,
        naming.GIT_DIRTY_INFO: dirty,
        naming.VERSION_INFO: __version__,
    }
