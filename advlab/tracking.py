"""MLflow tracking: the only module that writes to MLflow.

One :class:`Tracker` per run. It opens the store safely (a fresh SQLite store is created and
migrated by one process at a time, under a file lock), starts the run (nested under the sweep's
parent run when the job is part of a Hydra multirun), logs the whole resolved config as params and
the tags, metrics and artifacts listed in ``docs/architecture.md`` ("What a run leaves in MLflow"),
and always ends the run: FINISHED, FAILED (error as tag ``advlab.error``) or KILLED (Ctrl-C,
SIGTERM).

mlflow is imported inside functions so that ``import advlab.tracking`` stays cheap.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from omegaconf import DictConfig, OmegaConf

from advlab import __version__
from advlab.config import PROJECT_ROOT
from advlab.errors import ConfigError
from advlab.naming import asr_key, format_eps, option_name, robust_acc_key

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

T = TypeVar("T")

# Environment variables and file through which a sweep's parent run reaches its jobs
# (set/written by advlab.sweep_callback.MlflowSweepCallback.on_multirun_start).
ENV_PARENT_RUN_ID = "ADVLAB_SWEEP_PARENT_RUN_ID"
ENV_SWEEP_ID = "ADVLAB_SWEEP_ID"
SWEEP_FILE = "mlflow_sweep.json"

# MLflow limits (mlflow.utils.validation): longer values are truncated, never rejected.
MAX_PARAM_VAL_LENGTH = 6000
MAX_TAG_VAL_LENGTH = 8000
MAX_KEY_LENGTH = 250

_TERMINAL = {"FINISHED", "FAILED", "KILLED"}
_BAD_KEY_CHARS = re.compile(r"[^/\w.\- ]")  # colon left out: Windows stores reject it


class Terminated(KeyboardInterrupt):
    """Raised by the SIGTERM handler a :class:`Tracker` installs, so the run ends KILLED.

    A ``KeyboardInterrupt`` subclass: ``except Exception`` blocks in library code do not swallow it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by signal {signal.Signals(signum).name}")
        self.signum = signum


# ----------------------------------------------------------------------------- store and URIs
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


def ensure_experiment(client: MlflowClient, name: str, artifact_root: str | None) -> str:
    """Id of the active experiment ``name``, created if absent.

    A new experiment stores its artifacts under ``<artifact_root>/<name>`` (None: the server's
    default), so the runs of different experiments do not mix in one folder.
    """
    from mlflow.exceptions import MlflowException

    artifact_location = None
    if artifact_root:
        artifact_location = f"{artifact_root.rstrip('/')}/{_clean_key(name).replace(' ', '_')}"

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


# ------------------------------------------------------------------------------ params and tags
def _clean_key(key: str) -> str:
    key = _BAD_KEY_CHARS.sub("_", str(key))
    key = re.sub(r"/{2,}", "/", key).strip("/") or "_"
    return key[:MAX_KEY_LENGTH]


def _truncate(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 3] + "..."


def _param_value(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return repr(value)  # 8.0 stays '8.0', so a swept float column stays one type
    return str(value)


def flatten_config(cfg: DictConfig | Mapping[str, Any]) -> dict[str, str]:
    """The resolved config as MLflow params: dotted keys -> string values.

    ``attacks.*`` keeps only the attacks listed in ``eval.attacks``; the ``hydra`` node is left out.
    Lists are one param (``eval.eps`` -> ``'[0.0, 1.0, 2.0]'``); values longer than MLflow's limit
    (6000 characters) are truncated with ``...``.
    """
    data: dict[str, Any] = {}
    for key in cfg:
        if key == "hydra":  # Hydra's own node (present in composed test configs) is not a param
            continue
        value = cfg[key]
        if OmegaConf.is_config(value):
            # A child node still resolves interpolations against the whole config.
            value = OmegaConf.to_container(value, resolve=True, throw_on_missing=False)
        data[str(key)] = value
    chosen = set((data.get("eval") or {}).get("attacks") or [])
    if isinstance(data.get("attacks"), dict):
        data["attacks"] = {k: v for k, v in data["attacks"].items() if k in chosen}

    out: dict[str, str] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k))
        else:
            text = "{}" if isinstance(node, dict) else _param_value(node)
            out[_clean_key(prefix)] = _truncate(text, MAX_PARAM_VAL_LENGTH)

    walk(data, "")
    return out


def _short_float(x: float) -> str:
    """Compact number for run names: 0.5 -> '0.5', 0.0001 -> '1e-4', 0.0005 -> '5e-4', 0 -> '0'."""
    x = float(x)
    if x == 0:
        return "0"
    if abs(x) < 1e-2:
        mantissa, exp = f"{x:.2e}".split("e")
        mantissa = mantissa.rstrip("0").rstrip(".")
        return f"{mantissa}e{int(exp)}"
    return f"{x:g}"


def derive_run_name(cfg: DictConfig) -> str:
    """``tracking.run_name`` or ``<data>-<model>-do<dropout>-wd<weight_decay>[-n<N>][-aug]...``.

    E.g. ``gender-course_cnn-do0.5-wd1e-4``; ``-n<N>`` when ``data.limit_train`` is set,
    ``-flip``/``-shift<px>``/``-rot<deg>`` with augmentation, ``-at_<method>`` with adversarial
    training, ``-noes`` without early stopping: runs of a sweep get names that tell them apart.
    """
    if cfg.tracking.get("run_name"):
        return str(cfg.tracking.run_name)
    parts = [
        str(cfg.data.name),
        option_name(str(cfg.model._target_)),
        f"do{_short_float(cfg.model.get('dropout', 0.0) or 0.0)}",
        f"wd{_short_float(cfg.optimizer.get('weight_decay', 0.0) or 0.0)}",
    ]
    if cfg.data.get("limit_train"):
        parts.append(f"n{int(cfg.data.limit_train)}")
    parts += _augment_parts(cfg)
    method = str(cfg.train.adversarial.method)
    if method != "none":
        parts.append(f"at_{method}")
    if not cfg.train.early_stopping.enabled:
        parts.append("noes")
    return "-".join(parts)


def _augment_parts(cfg: DictConfig) -> list[str]:
    aug = cfg.data.get("augment") or {}
    parts = ["flip"] if aug.get("hflip") else []
    if aug.get("shift"):
        parts.append(f"shift{int(aug.shift)}")
    if aug.get("rotation"):
        parts.append(f"rot{_short_float(aug.rotation)}")
    return parts


def _augment_on(cfg: DictConfig) -> bool:
    aug = cfg.data.get("augment") or {}
    return bool(aug.get("hflip")) or bool(aug.get("shift")) or bool(aug.get("rotation"))


def controls(cfg: DictConfig) -> str:
    """Overfitting controls in use, e.g. ``dropout=0.5,weight_decay=0.0001,early_stopping,augment``.

    ``train_size=<N>`` is added when ``data.limit_train`` caps the training set; ``none`` if no
    control is in use.
    """
    out = []
    dropout = float(cfg.model.get("dropout", 0.0) or 0.0)
    wd = float(cfg.optimizer.get("weight_decay", 0.0) or 0.0)
    if dropout > 0:
        out.append(f"dropout={dropout:g}")
    if wd > 0:
        out.append(f"weight_decay={wd:g}")
    if cfg.train.early_stopping.enabled:
        out.append("early_stopping")
    if _augment_on(cfg):
        out.append("augment")
    if cfg.data.get("limit_train"):
        out.append(f"train_size={int(cfg.data.limit_train)}")
    return ",".join(out) or "none"


def _git(*args: str) -> str | None:
    try:
        res = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), *args],
            capture_output=True,
            text=True,
            timeout=10,
            # Read-only: never take index.lock (a concurrent commit must not be disturbed).
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


def git_state() -> tuple[str, str]:
    """(commit sha or 'unknown', dirty flag 'true'/'false'/'unknown'); tolerant of no git at all."""
    commit = _git("rev-parse", "HEAD")
    if not commit:
        return "unknown", "unknown"
    status = _git("status", "--porcelain", "--untracked-files=no")
    dirty = "unknown" if status is None else ("true" if status else "false")
    return commit, dirty


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def resolve_device(device: str) -> str:
    """The device a run uses for ``cfg.device`` ('auto' -> 'cuda' if available, else 'cpu')."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def training_precision(cfg: DictConfig) -> str:
    """``train.precision`` as this machine trains in it (``auto`` resolved to fp32 or bf16)."""
    import torch

    from advlab.runtime import resolve_precision

    device = torch.device(resolve_device(str(cfg.get("device", "auto"))))
    return resolve_precision(str(cfg.train.precision), device)


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command that started this process, ``python -m advlab ...`` for the CLI."""
    argv = list(sys.argv if argv is None else argv)
    if argv and Path(argv[0]).name == "__main__.py" and Path(argv[0]).parent.name == "advlab":
        argv = ["python", "-m", "advlab", *argv[1:]]
    return shlex.join(argv)


RUN_DIR_TAG = "advlab.run_dir"  # where a run's files (model/model.pt, results/) live


def run_tags(cfg: DictConfig, *, run_dir: Path) -> dict[str, str]:
    """The ``advlab.*`` tags of a run (see docs/architecture.md)."""
    commit, dirty = git_state()
    tags = {
        "advlab.dataset": str(cfg.data.name),
        "advlab.model": option_name(str(cfg.model._target_)),
        "advlab.attacks": ",".join(str(a) for a in cfg.eval.attacks),
        "advlab.controls": controls(cfg),
        "advlab.adversarial_training": str(cfg.train.adversarial.method),
        "advlab.seed": str(cfg.seed),
        "advlab.git_commit": commit,
        "advlab.git_dirty": dirty,
        "advlab.version": __version__,
        "advlab.torch_version": _version("torch"),
        "advlab.torchattacks_version": _version("torchattacks"),
        "advlab.device": resolve_device(str(cfg.get("device", "auto"))),
        "advlab.precision": training_precision(cfg),
        "advlab.command": command_line(),
        RUN_DIR_TAG: str(run_dir),
    }
    overrides = _hydra_task_overrides()
    if overrides is not None:
        tags["advlab.overrides"] = shlex.join(overrides)
    return {k: _truncate(v, MAX_TAG_VAL_LENGTH) for k, v in tags.items()}


def _hydra_task_overrides() -> list[str] | None:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return [str(o) for o in HydraConfig.get().overrides.task]


def sweep_context() -> dict[str, str] | None:
    """The sweep a Hydra multirun job belongs to: ``parent_run_id``, ``sweep_id``, ... or None.

    From ``$ADVLAB_SWEEP_PARENT_RUN_ID``/``$ADVLAB_SWEEP_ID`` (set by the sweep callback in the
    submitting process, inherited by local and joblib jobs), else from
    ``<hydra.sweep.dir>/mlflow_sweep.json`` (written by the callback; the sweep dir is shared with
    cluster jobs). A multirun job without the callback still gets a sweep id from its sweep dir.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if os.environ.get(ENV_PARENT_RUN_ID):
        parent = os.environ[ENV_PARENT_RUN_ID]
        return {"parent_run_id": parent, "sweep_id": os.environ.get(ENV_SWEEP_ID, parent)}
    if HydraConfig.initialized():
        hc = HydraConfig.get()
        if hc.mode == RunMode.MULTIRUN:
            sweep_dir = Path(str(hc.sweep.dir))
            info_file = sweep_dir / SWEEP_FILE
            if info_file.is_file():
                return json.loads(info_file.read_text())
            return {"sweep_id": sweep_id_from_dir(sweep_dir)}
    return None


def sweep_id_from_dir(sweep_dir: Path) -> str:
    """Readable sweep id: ``.../multirun/2024-05-01/12-00-00`` -> ``'2024-05-01_12-00-00'``."""
    parts = Path(sweep_dir).parts
    return _clean_key("_".join(parts[-2:]) if len(parts) >= 2 else str(sweep_dir))


# ----------------------------------------------------------------------------------- helpers
def _metric_list(metrics: Mapping[str, Any], step: int) -> list:
    from mlflow.entities import Metric

    ts = int(time.time() * 1000)
    out = []
    for key, value in metrics.items():
        try:
            v = float(value)
        except (TypeError, ValueError):
            log.warning("metric %r=%r is not a number; not logged", key, value)
            continue
        out.append(Metric(_clean_key(key), v, ts, int(step)))
    return out


def _eps_step(eps: float, eps_grid: Sequence[float]) -> int:
    for i, e in enumerate(eps_grid):
        if math.isclose(float(e), float(eps), rel_tol=1e-9, abs_tol=1e-9):
            return i
    raise ConfigError(
        f"eps {format_eps(eps)} of the evaluation table is not in eval.eps {list(eps_grid)}"
    )


def _sanity_records(sanity: Any) -> list[dict[str, str]]:
    records = []
    for check in sanity or []:
        if isinstance(check, Mapping):
            rec = {k: str(check.get(k, "")) for k in ("name", "status", "evidence")}
        else:
            rec = {k: str(getattr(check, k, "")) for k in ("name", "status", "evidence")}
        records.append(rec)
    return records


def end_run(
    client: MlflowClient, run_id: str, status: str, tags: Mapping[str, str] | None = None
) -> None:
    """Set ``tags`` and terminate ``run_id`` with ``status`` (retrying while the store is busy)."""
    for k, v in (tags or {}).items():
        retry(
            lambda k=k, v=v: client.set_tag(run_id, k, _truncate(v, MAX_TAG_VAL_LENGTH)), what="tag"
        )
    retry(lambda: client.set_terminated(run_id, status), what="end run")


def attach_artifact(
    run_id: str,
    path: str | Path,
    artifact_path: str | None = None,
    *,
    tracking_uri: str,
) -> None:
    """Log a file or directory to an existing (possibly finished) run, e.g. the PDF report."""
    client = open_client(tracking_uri)
    path = Path(path)
    if path.is_dir():
        retry(lambda: client.log_artifacts(run_id, str(path), artifact_path), what="artifacts")
    elif path.is_file():
        retry(lambda: client.log_artifact(run_id, str(path), artifact_path), what="artifact")
    else:
        raise FileNotFoundError(f"artifact {path} does not exist")


# ----------------------------------------------------------------------------------- Tracker
class Tracker:
    """One MLflow run; a context manager that always ends the run in the right status.

    ``with Tracker(cfg, run_dir=run_dir) as tracker: ...`` starts the run on enter and on exit sets
    FINISHED, FAILED (tag ``advlab.error`` = the error) or KILLED (Ctrl-C, or SIGTERM, which the
    tracker turns into :class:`Terminated` while the run is open). With ``tracking.enabled=false``
    every method is a no-op and MLflow is never imported; ``run_id`` is then None.
    """

    def __init__(self, cfg: DictConfig, *, run_dir: Path) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.enabled = bool(cfg.tracking.enabled)
        self.experiment_name: str = str(cfg.tracking.experiment)
        self.run_id: str | None = None
        self.run_name: str | None = None
        self.status: str | None = None  # terminal status once the run has ended
        self.tracking_uri: str | None = None
        self._client: MlflowClient | None = None
        self._prev_sigterm: Any = None
        # Per-epoch metrics are queued (MLflow's async logging) so a database write never stalls
        # the training loop; every queued write is awaited before the run ends.
        self._pending: list[Any] = []
        if self.enabled:
            self.tracking_uri = resolve_tracking_uri(cfg.tracking, cfg.get("paths"))

    # -- lifecycle
    def __enter__(self) -> Tracker:
        if not self.enabled:
            return self
        assert self.tracking_uri is not None
        client = open_client(self.tracking_uri)
        self._client = client
        artifact_root = resolve_artifact_root(
            self.cfg.tracking, self.cfg.get("paths"), self.tracking_uri
        )
        experiment_id = ensure_experiment(client, self.experiment_name, artifact_root)
        self.run_name = derive_run_name(self.cfg)
        tags = run_tags(self.cfg, run_dir=self.run_dir)
        tags.update(_mlflow_context_tags())
        sweep = sweep_context()
        if sweep:
            tags["advlab.sweep"] = str(sweep["sweep_id"])
            parent = sweep.get("parent_run_id")
            same_exp = sweep.get("experiment_id") in (None, experiment_id)
            if parent and same_exp:
                tags["mlflow.parentRunId"] = str(parent)
            elif parent:
                log.warning(
                    "sweep parent run %s is in another experiment; run not nested under it", parent
                )
        run = retry(
            lambda: client.create_run(experiment_id, run_name=self.run_name, tags=tags),
            what="create run",
        )
        self.run_id = run.info.run_id
        log.info(
            "MLflow run %s (%s) in experiment %r at %s",
            self.run_name,
            self.run_id,
            self.experiment_name,
            self.tracking_uri,
        )
        self._install_sigterm()
        try:
            self._log_params(flatten_config(self.cfg))
            hydra_dir = self.run_dir / ".hydra"
            if hydra_dir.is_dir():
                self.log_artifact(hydra_dir, "hydra")
        except BaseException as err:
            self._restore_sigterm()
            self._finish(type(err), err)
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> bool:
        if self.enabled and self.run_id is not None and self.status is None:
            self._finish(exc_type, exc)
        self._restore_sigterm()
        return False  # never swallow the exception

    def _finish(self, exc_type: type[BaseException] | None, exc: BaseException | None) -> None:
        assert self._client is not None and self.run_id is not None
        tags: dict[str, str] = {}
        if exc_type is None:
            status = "FINISHED"
        elif issubclass(exc_type, KeyboardInterrupt):
            status = "KILLED"
            tags["advlab.stop_reason"] = str(exc) or "KeyboardInterrupt"
        else:
            status = "FAILED"
            tags["advlab.error"] = f"{exc_type.__name__}: {exc}".strip()
        try:
            self._flush()
        except Exception as error:  # a lost epoch metric must not leave the run RUNNING
            log.error("queued MLflow writes failed: %s", error)
            if status == "FINISHED":
                status = "FAILED"
                tags["advlab.error"] = f"queued MLflow writes failed: {error}"
        try:
            end_run(self._client, self.run_id, status, tags)
            self.status = status
        except Exception:
            log.exception("could not end MLflow run %s as %s", self.run_id, status)
            raise

    def _install_sigterm(self) -> None:
        # signal handlers can only be set from the main thread (joblib threads: skip).
        if threading.current_thread() is not threading.main_thread():
            return

        def _on_sigterm(signum: int, frame: Any) -> None:
            raise Terminated(signum)

        self._prev_sigterm = signal.signal(signal.SIGTERM, _on_sigterm)

    def _restore_sigterm(self) -> None:
        if self._prev_sigterm is not None:
            signal.signal(signal.SIGTERM, self._prev_sigterm)
            self._prev_sigterm = None

    # -- logging
    def _active(self) -> MlflowClient | None:
        if not self.enabled:
            return None
        if self._client is None or self.run_id is None:
            raise RuntimeError("Tracker used outside its `with` block")
        return self._client

    def _log_params(self, params: Mapping[str, str]) -> None:
        from mlflow.entities import Param

        client = self._active()
        if client is None or not params:
            return
        items = [
            Param(_clean_key(k), _truncate(str(v), MAX_PARAM_VAL_LENGTH)) for k, v in params.items()
        ]
        retry(lambda: client.log_batch(self.run_id, params=items), what="log params")

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log extra params (values become strings, truncated to MLflow's limit)."""
        self._log_params({k: _param_value(v) for k, v in params.items()})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set (or overwrite) run tags, e.g. ``{'advlab.device': 'cuda'}``."""
        from mlflow.entities import RunTag

        client = self._active()
        if client is None or not tags:
            return
        items = [
            RunTag(_clean_key(k), _truncate(str(v), MAX_TAG_VAL_LENGTH)) for k, v in tags.items()
        ]
        retry(lambda: client.log_batch(self.run_id, tags=items), what="set tags")

    def log_data_facts(self, facts: Mapping[str, Any]) -> None:
        """Dataset facts as params ``facts.<key>`` (``facts.n_train``, ``facts.train_frac/<c>``)."""
        self.log_params({f"facts.{k}": v for k, v in facts.items()})

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log metrics at ``step`` (default 0: final values such as ``clean_acc``)."""
        client = self._active()
        if client is None:
            return
        items = _metric_list(metrics, 0 if step is None else step)
        if items:
            retry(lambda: client.log_batch(self.run_id, metrics=items), what="log metrics")

    def log_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """Per-epoch metrics with step = epoch (1-based); usable as the fit loop's EpochCallback.

        Queued, not written on the spot: the fit loop goes on while MLflow writes."""
        client = self._active()
        if client is None:
            return
        items = _metric_list(metrics, int(epoch))
        if items:
            self._pending.append(client.log_batch(self.run_id, metrics=items, synchronous=False))

    def _flush(self) -> None:
        """Wait for every queued write (raises the first error, e.g. a store that went away)."""
        pending, self._pending = self._pending, []
        for operation in pending:
            if operation is not None:
                operation.wait()

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Log a file, or a directory's contents, under ``artifact_path`` (None: the root)."""
        client = self._active()
        if client is None:
            return
        path = Path(path)
        if path.is_dir():
            retry(
                lambda: client.log_artifacts(self.run_id, str(path), artifact_path),
                what="artifacts",
            )
        elif path.is_file():
            retry(
                lambda: client.log_artifact(self.run_id, str(path), artifact_path), what="artifact"
            )
        else:
            raise FileNotFoundError(f"artifact {path} does not exist")

    def log_artifacts(self, paths: Sequence[str | Path], artifact_path: str | None = None) -> None:
        """Log several files/directories under the same ``artifact_path``."""
        for p in paths:
            self.log_artifact(p, artifact_path)

    def log_model_file(self, path: str | Path) -> None:
        """Log ``model/model.pt`` (a ``save_model`` file) unless ``tracking.log_model=false``."""
        if self.cfg.tracking.get("log_model", True):
            self.log_artifact(path, "model")

    def log_results(self, headline: Mapping[str, float]) -> Path | None:
        """Write ``<run_dir>/results/results.json`` (headline metrics); log it under results/."""
        if not self.enabled:
            return None
        out = self.run_dir / "results" / "results.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(
            json.dumps({k: float(v) for k, v in headline.items()}, indent=2, sort_keys=True)
        )
        self.log_artifact(out, "results")
        return out

    def log_evaluation(self, evaluation: Any, eps_grid: Sequence[float]) -> None:
        """Robustness metrics, tables and evaluation artifacts of an ``Evaluation``.

        Metrics: ``clean_acc`` (step 0) and, for each row of ``evaluation.table``,
        ``robust_acc/<attack>/eps_<e>`` and ``asr/<attack>/eps_<e>`` with step = index of eps in
        ``eps_grid`` (1/255 units, ``eval.eps``), so MLflow's chart draws the eps curve.
        Artifacts: ``results/robustness.{csv,json}`` (the table, records orient),
        ``results/per_class.csv``, ``results/confusion.json``, ``results/sanity.json``, an MLflow
        table ``results/robustness_table.json``, PNGs of ``evaluation.artifacts`` under ``grids/``
        and its other files under ``results/``. Tags ``advlab.sanity`` (worst status) and
        ``advlab.sanity.<check>``.
        """
        client = self._active()
        if client is None:
            return
        table = evaluation.table
        metrics: list = _metric_list({"clean_acc": evaluation.clean_acc}, 0)
        for row in table.itertuples(index=False):
            step = _eps_step(row.eps, eps_grid)
            metrics += _metric_list(
                {
                    robust_acc_key(str(row.attack), float(row.eps)): row.robust_acc,
                    asr_key(str(row.attack), float(row.eps)): row.asr,
                },
                step,
            )
        retry(lambda: client.log_batch(self.run_id, metrics=metrics), what="log robustness")

        sanity = _sanity_records(getattr(evaluation, "sanity", []))
        if sanity:
            order = {"pass": 0, "warn": 1, "fail": 2}
            worst = max((s["status"] for s in sanity), key=lambda s: order.get(s, 3))
            tags = {"advlab.sanity": worst}
            tags.update({f"advlab.sanity.{s['name']}": s["status"] for s in sanity})
            self.set_tags(tags)

        with tempfile.TemporaryDirectory(prefix="advlab-results-") as tmp:
            tmp_dir = Path(tmp)
            written = {"robustness.csv", "robustness.json", "sanity.json"}
            table.to_csv(tmp_dir / "robustness.csv", index=False)
            table.to_json(tmp_dir / "robustness.json", orient="records", indent=2)
            (tmp_dir / "sanity.json").write_text(json.dumps(sanity, indent=2))
            per_class = getattr(evaluation, "per_class", None)
            if per_class is not None:
                per_class.to_csv(tmp_dir / "per_class.csv", index=False)
                written.add("per_class.csv")
            confusion = getattr(evaluation, "confusion", None)
            if confusion is not None:
                (tmp_dir / "confusion.json").write_text(json.dumps(confusion))
                written.add("confusion.json")
            self.log_artifact(tmp_dir, "results")
        retry(
            lambda: client.log_table(self.run_id, table, "results/robustness_table.json"),
            what="log table",
        )
        for path in getattr(evaluation, "artifacts", None) or []:
            path = Path(path)
            if not path.is_file() or path.name in written:
                continue  # the contract files above are written from the Evaluation itself
            self.log_artifact(path, "grids" if path.suffix.lower() == ".png" else "results")

    def attach(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Log an artifact after the run has ended (e.g. the PDF report)."""
        if not self.enabled or self.run_id is None:
            return
        assert self.tracking_uri is not None
        attach_artifact(self.run_id, path, artifact_path, tracking_uri=self.tracking_uri)


def _mlflow_context_tags() -> dict[str, str]:
    """MLflow's own source/user tags (``mlflow.source.name``, ``mlflow.user``, ...) if known."""
    try:
        from mlflow.tracking.context.registry import resolve_tags

        tags = resolve_tags({})
    except Exception as err:  # context providers probe git/notebooks; never fail a run for them
        log.debug("mlflow context tags unavailable: %s", err)
        return {}
    return {k: str(v) for k, v in tags.items() if k != "mlflow.runName"}
