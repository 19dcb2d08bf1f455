"""Runs whose process is gone do not stay RUNNING: who runs a run, its heartbeat, and the reaper.

Every run (and a sweep's parent run) is tagged with the process that writes it: ``advlab.host``
(hostname), ``advlab.pid``, ``advlab.pid_namespace`` and ``advlab.process_start`` (Linux: the pid
namespace and the process start time, from ``/proc``; empty elsewhere) and ``advlab.heartbeat``
(UTC time, ISO 8601), which every write of the :class:`~advlab.tracking.Tracker` refreshes (run
start, each epoch, the final metrics) at no extra store call.

When an advlab process opens a store (a run or a sweep starts), :func:`reap_dead_runs` ends as
KILLED, with tag ``advlab.killed_reason``, the RUNNING runs whose process is gone:

- same machine (same hostname and pid namespace): the pid is not alive, or it is alive but started
  at another time than the run's process (the pid was reused). Without ``/proc`` (macOS, Windows)
  the start time is unknown and a reused pid keeps a dead run RUNNING until its heartbeat is stale.
- another machine: no heartbeat for longer than ``tracking.stale_after_s`` (null: never). A sweep's
  parent run counts as alive while one of its RUNNING jobs has a fresh heartbeat.

A live process's run is never touched on its own machine, whatever its heartbeat says, so a long
epoch or evaluation there is safe. Runs without these tags (other tools, older advlab) are left
alone. The cost is one ``search_experiments`` and one ``search_runs`` per open, plus one
``get_run`` per run found dead (re-read just before it is ended, so a run that ended meanwhile
keeps its status).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from advlab.naming import (
    HEARTBEAT_TAG,
    HOST_TAG,
    KILLED_REASON_TAG,
    MLFLOW_PARENT_TAG,
    PID_NAMESPACE_TAG,
    PID_TAG,
    PROCESS_START_TAG,
)
from advlab.tracking import store

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

log = logging.getLogger(__name__)

_MAX_RUNS = 10000  # RUNNING runs read per open; a store has a handful


# ------------------------------------------------------------------------- this process
def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")  # e.g. 'pid:[4026531836]'
    except OSError:
        return ""


def _process_start(pid: int) -> str:
    """Start time of ``pid`` in clock ticks since boot (``/proc/<pid>/stat`` field 22); '' when
    unknown (no ``/proc``, or no such process)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    return stat.rsplit(")", 1)[-1].split()[19]


def heartbeat() -> dict[str, str]:
    """``{advlab.heartbeat: <now, UTC, ISO 8601>}``."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    return {HEARTBEAT_TAG: now.isoformat()}


def process_tags() -> dict[str, str]:
    """The tags naming this process (host, pid, pid namespace, start time) and a heartbeat."""
    pid = os.getpid()
    return {
        HOST_TAG: socket.gethostname(),
        PID_TAG: str(pid),
        PID_NAMESPACE_TAG: _pid_namespace(),
        PROCESS_START_TAG: _process_start(pid),
        **heartbeat(),
    }


# ------------------------------------------------------------------------------ the reaper
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _heartbeat_age(tags: Mapping[str, str], now: dt.datetime) -> float | None:
    try:
        beat = dt.datetime.fromisoformat(tags[HEARTBEAT_TAG])
    except (KeyError, ValueError):
        return None
    return (now - beat).total_seconds()


def _death_reason(
    tags: Mapping[str, str], age: float | None, stale_after_s: float | None
) -> str | None:
    """Why the process of a RUNNING run with ``tags`` is gone, or None if it may be alive.

    ``age`` is the seconds since the freshest heartbeat that speaks for the run (for a sweep's
    parent run, its own or one of its RUNNING jobs')."""
    host, pid = tags.get(HOST_TAG), tags.get(PID_TAG, "")
    if host is None or not pid.isdigit():
        return None  # not written by advlab's liveness tags: not ours to judge
    here = socket.gethostname(), _pid_namespace()
    if (host, tags.get(PID_NAMESPACE_TAG, "")) == here:
        if not _pid_alive(int(pid)):
            return f"process {pid} on {host} is gone"
        started = tags.get(PROCESS_START_TAG, "")
        if started and _process_start(int(pid)) not in ("", started):
            return f"process {pid} on {host} is gone (its pid now belongs to another process)"
        return None
    if stale_after_s is None or age is None or age <= stale_after_s:
        return None
    return f"no heartbeat from {host} for {age:.0f} s (tracking.stale_after_s={stale_after_s:g})"


def process_gone(tags: Mapping[str, str]) -> str | None:
    """Why the process that :func:`process_tags` named in ``tags`` is gone, when it ran on this
    machine and is gone; None otherwise (alive, or on another machine: judge that by heartbeat).
    A search uses it for its trials, which record these tags in the study."""
    return _death_reason(tags, None, None)


def _running_runs(client: MlflowClient) -> list[Run]:
    from mlflow.entities import ViewType

    experiments = store.retry(
        lambda: client.search_experiments(view_type=ViewType.ACTIVE_ONLY, max_results=50000),
        what="list experiments",
    )
    if not experiments:
        return []
    ids = [e.experiment_id for e in experiments]
    return store.retry(
        lambda: client.search_runs(
            ids, filter_string="attributes.status = 'RUNNING'", max_results=_MAX_RUNS
        ),
        what="search running runs",
    )


def _writer(tags: Mapping[str, str]) -> tuple[str | None, ...]:
    """Who last wrote a run, and when: a change means the run is alive (or was resumed)."""
    return tuple(tags.get(k) for k in (HOST_TAG, PID_TAG, PROCESS_START_TAG, HEARTBEAT_TAG))


def reap_dead_runs(client: MlflowClient, stale_after_s: float | None) -> list[str]:
    """End as KILLED (tag ``advlab.killed_reason``) every RUNNING run of the store whose process
    is gone (see the module docstring); return their ids."""
    now = dt.datetime.now(dt.UTC)
    runs = _running_runs(client)
    ages = {r.info.run_id: _heartbeat_age(r.data.tags, now) for r in runs}
    for run in runs:  # a sweep's parent lives as long as one of its running jobs does
        parent, age = run.data.tags.get(MLFLOW_PARENT_TAG), ages[run.info.run_id]
        if parent in ages and age is not None:
            own = ages[parent]
            ages[parent] = age if own is None else min(own, age)
    reaped = []
    for run in runs:
        run_id = run.info.run_id
        reason = _death_reason(run.data.tags, ages[run_id], stale_after_s)
        if reason is None:
            continue
        # Re-read: the run may have ended, or been resumed by a new process, since the search.
        fresh = store.retry(lambda run_id=run_id: client.get_run(run_id), what="get run")
        if fresh.info.status != "RUNNING" or _writer(fresh.data.tags) != _writer(run.data.tags):
            continue
        store.end_run(client, run_id, "KILLED", {KILLED_REASON_TAG: reason})
        log.warning("MLflow run %s was left RUNNING: ended KILLED (%s)", run_id, reason)
        reaped.append(run_id)
    return reaped
