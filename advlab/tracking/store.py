"""The MLflow store: where it is, opening it safely, and the writes every run and sweep share.

Resolves the tracking URI and artifact root from the config, opens a client on a store that
exists and is migrated (a fresh SQLite store is created by one process at a time, under a file
lock), retries while SQLite reports "database is locked", creates experiments, ends runs and
attaches files to runs that have ended. It also holds MLflow's limits on keys and values, which
every writer applies before sending.

mlflow is imported inside functions so that importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from advlab.config import PROJECT_ROOT
from advlab.errors import ConfigError

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

T = TypeVar("T")

# MLflow limits (mlflow.utils.validation): longer values are truncated, never rejected.
MAX_PARAM_VAL_LENGTH = 6000
MAX_TAG_VAL_LENGTH = 8000
MAX_KEY_LENGTH = 250

_BAD_KEY_CHARS = re.compile(r"[^/\w.\- ]")  # colon left out: Windows stores reject it


# ----------------------------------------------------------------------- MLflow's key/value rules
def clean_key(key: str) -> str:
    """``key`` as MLflow accepts it: odd characters -> ``_``, no empty or doubled ``/`` parts,
    at most 250 characters."""
    key = _BAD_KEY_CHARS.sub("_", str(key))
    key = re.sub(r"/{2,}", "/", key).strip("/") or "_"
    return key[:MAX_KEY_LENGTH]


def truncate(value: str, limit: int) -> str:
    """``value`` cut to ``limit`` characters, ending in ``...`` when cut."""
    return value if len(value) <= limit else value[: limit - 3] + "..."


# ----------------------------------------------------------------------------------- URIs
def _is_local_path(uri: str) -> bool:
    return "://" not in uri and not uri.startswith(("file:", "mlflow-artifacts:"))


def _resolve_path(path: str, root: str | Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else (Path(root) / p)


def _paths_get(paths: Any, key: str, default: str) -> str:
    value = paths.get(key) if paths is not None else None
    return str(value) if value else default


def resolve_tracking_uri(cfg_tracking: Any, paths: Any) -> str:
    """The MLflow tracking URI of a run: ``tracking.uri`` > ``$MLFLOW_TRACKING_URI`` > SQLite.

    The default is ``sqlite:///<paths.runs_dir>/mlflow.db`` with an absolute path. A relative SQLite
    path in ``tracking.uri`` resolves against ``paths.root`` (the project), never the working
    directory, because Hydra jobs may run anywhere.
    """
    root = _paths_get(paths, "root", str(PROJECT_ROOT))
    uri = cfg_tracking.get("uri") if cfg_tracking is not None else None
    if not uri:
        uri = os.environ.get("MLFLOW_TRACKING_URI") or None
    if not uri:
        runs_dir = _resolve_path(_paths_get(paths, "runs_dir", f"{root}/runs"), root)
        return f"sqlite:///{(runs_dir / 'mlflow.db').resolve()}"
    uri = str(uri)
    if uri.startswith("sqlite:///"):
        db = uri.removeprefix("sqlite:///")
        if db and db != ":memory:" and not Path(db).is_absolute():
            return f"sqlite:///{_resolve_path(db, root).resolve()}"
    elif _is_local_path(uri):
        raise ConfigError(
            f"tracking.uri={uri!r}: MLflow 3 needs a database or server URI, e.g. "
            f"'sqlite:///{root}/runs/mlflow.db' or 'http://127.0.0.1:5000'"
        )
    return uri


def resolve_artifact_root(cfg_tracking: Any, paths: Any, tracking_uri: str) -> str | None:
    """Artifact location given to experiments this project creates.

    ``tracking.artifact_root`` if set (a path, absolute or relative to the project, or a URI such as
    ``s3://bucket/advlab``); else ``<paths.runs_dir>/mlartifacts`` for database stores; else None
    for an HTTP tracking server, which then chooses (``mlflow-artifacts:/`` when it serves
    artifacts). Experiments that already exist keep their location.
    """
    root = _paths_get(paths, "root", str(PROJECT_ROOT))
    value = cfg_tracking.get("artifact_root") if cfg_tracking is not None else None
    if value:
        value = str(value)
        if _is_local_path(value):
            return _resolve_path(value, root).resolve().as_uri()
        return value
    if tracking_uri.startswith(("http://", "https://", "databricks")):
        return None
    runs_dir = _resolve_path(_paths_get(paths, "runs_dir", f"{root}/runs"), root)
    return (runs_dir / "mlartifacts").resolve().as_uri()


# ------------------------------------------------------------------------- opening the store
def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    db = uri.removeprefix("sqlite:///").split("?", 1)[0]
    return None if not db or db == ":memory:" else Path(db)


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Exclusive inter-process lock for creating/migrating a SQLite store and its experiments.

    MLflow migrates an empty SQLite database on first open; several processes doing that at the
    same moment crash (alembic "duplicate column name"). Holding ``<db>.lock`` while opening the
    store and creating the experiment makes exactly one process do it. Other URIs need no lock.
    """
    db = _sqlite_path(uri)
    if db is None:
        yield
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    lock_path = db.with_name(db.name + ".lock")
    try:
        import fcntl
    except ImportError:  # Windows: filelock (a torch dependency) gives the same guarantee
        from filelock import FileLock

        with FileLock(str(lock_path)):
            yield
        return
    with open(lock_path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _is_transient(err: BaseException) -> bool:
    text = str(err).lower()
    return "database is locked" in text or "database is busy" in text


def retry(fn: Callable[[], T], *, what: str, attempts: int = 8, base_delay: float = 0.2) -> T:
    """Call ``fn``; on SQLite "database is locked" retry with exponential backoff (seconds)."""
    for i in range(attempts):
        try:
            return fn()
        except Exception as err:  # MlflowException or sqlalchemy OperationalError
            if i == attempts - 1 or not _is_transient(err):
                raise
            delay = base_delay * 2**i
            log.warning("%s: store busy (%s); retrying in %.1f s", what, err, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def open_client(tracking_uri: str) -> MlflowClient:
    """An ``MlflowClient`` on ``tracking_uri`` whose store exists and is migrated.

    For SQLite the first open (which may create and migrate the database) runs under the store's
    file lock, so concurrent processes never race in MLflow's schema migration.
    """
    from mlflow import MlflowClient

    with _store_lock(tracking_uri):
        # The constructor opens (and if needed creates/migrates) the store; MLflow caches it per
        # process, so later clients on the same URI only read the schema version.
        client = retry(lambda: MlflowClient(tracking_uri=tracking_uri), what="open store")
    return client


def read_client(tracking_uri: str) -> MlflowClient:
    """An ``MlflowClient`` for *reading* ``tracking_uri``: the one read path of every reader
    (``advlab.results``, the report, the audit, the checkpoint sources).

    A reader never creates a store: a SQLite URI whose file does not exist raises one
    :class:`ConfigError` line naming the file, and no file is written.
    """
    from mlflow import MlflowClient

    db = _sqlite_path(tracking_uri)
    if db is not None and not db.is_file():
        raise ConfigError(
            f"no MLflow store at {db} (tracking URI {tracking_uri}): run something first"
        )
    return retry(lambda: MlflowClient(tracking_uri=tracking_uri), what="open store")


def experiment_ids(client: MlflowClient, experiment: str | Sequence[str] | None) -> dict[str, str]:
    """experiment id -> name for the named experiment(s), or every active experiment if None.

    An unknown name raises one :class:`ConfigError` line naming it and the known experiments.
    """
    if experiment is None:
        found = retry(client.search_experiments, what="list experiments")
        return {e.experiment_id: e.name for e in found}
    names = [experiment] if isinstance(experiment, str) else list(experiment)
    out = {}
    for name in names:
        exp = retry(lambda n=name: client.get_experiment_by_name(n), what="get experiment")
        if exp is None:
            known = sorted(e.name for e in client.search_experiments())
            raise ConfigError(
                f"experiment {name!r} not found in {client.tracking_uri}; "
                f"known: {', '.join(known) or 'none'}"
            )
        out[exp.experiment_id] = exp.name
    return out


def ensure_experiment(client: MlflowClient, name: str, artifact_root: str | None) -> str:
    """Id of the active experiment ``name``, created if absent.

    A new experiment stores its artifacts under ``<artifact_root>/<name>`` (None: the server's
    default), so the runs of different experiments do not mix in one folder.
    """
    from mlflow.exceptions import MlflowException

    artifact_location = None
    if artifact_root:
        artifact_location = f"{artifact_root.rstrip('/')}/{clean_key(name).replace(' ', '_')}"

    with _store_lock(client.tracking_uri):
        exp = retry(lambda: client.get_experiment_by_name(name), what="get experiment")
        if exp is None:
            try:
                return retry(
                    lambda: client.create_experiment(name, artifact_location=artifact_location),
                    what="create experiment",
                )
            except MlflowException as err:
                # Another process (on a server or PostgreSQL, where no lock is held) won the race.
                if "RESOURCE_ALREADY_EXISTS" not in str(err.error_code):
                    raise
                exp = client.get_experiment_by_name(name)
                if exp is None:
                    raise
    if exp.lifecycle_stage == "deleted":
        raise ConfigError(
            f"tracking.experiment={name!r} is a deleted MLflow experiment in "
            f"{client.tracking_uri}; restore it (mlflow experiments restore --experiment-id "
            f"{exp.experiment_id}) or choose another name"
        )
    return exp.experiment_id


# ------------------------------------------------------------------------------- run writes
def end_run(
    client: MlflowClient, run_id: str, status: str, tags: Mapping[str, str] | None = None
) -> None:
    """Set ``tags`` and terminate ``run_id`` with ``status`` (retrying while the store is busy)."""
    for k, v in (tags or {}).items():
        retry(
            lambda k=k, v=v: client.set_tag(run_id, k, truncate(v, MAX_TAG_VAL_LENGTH)), what="tag"
        )
    retry(lambda: client.set_terminated(run_id, status), what="end run")


def upload(
    client: MlflowClient, run_id: str, path: str | Path, artifact_path: str | None = None
) -> None:
    """Log a file, or a directory's contents, to ``run_id`` under ``artifact_path`` (None: root)."""
    path = Path(path)
    if path.is_dir():
        retry(lambda: client.log_artifacts(run_id, str(path), artifact_path), what="artifacts")
    elif path.is_file():
        retry(lambda: client.log_artifact(run_id, str(path), artifact_path), what="artifact")
    else:
        raise FileNotFoundError(f"artifact {path} does not exist")


def attach_artifact(
    run_id: str,
    path: str | Path,
    artifact_path: str | None = None,
    *,
    tracking_uri: str,
) -> None:
    """Log a file or directory to an existing (possibly finished) run, e.g. the PDF report."""
    upload(open_client(tracking_uri), run_id, path, artifact_path)
