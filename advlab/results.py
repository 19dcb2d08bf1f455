"""Read runs back from MLflow as tidy pandas DataFrames (what the report builds on).

``load`` gives one row per run: ``run_id``, ``run_name``, ``experiment``, ``status``, times, the
sweep it belongs to, and the columns ``params.<key>``, ``metrics.<key>`` (latest value) and
``tags.<key>`` with the names of ``docs/architecture.md`` ("What a run leaves in MLflow").
``robustness`` turns the ``robust_acc/<attack>/eps_<e>`` metrics into a long table,
``metric_history`` reads per-epoch curves, ``download_artifacts``/``read_json``/``read_table``
fetch artifacts. ``seed_groups`` pools the runs that differ only in their seed (``seed_group_key``
says what else may differ) into one row per setting with mean, std, min and max over the seeds of
each headline metric. Nothing here writes to MLflow.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from advlab.errors import ConfigError
from advlab.naming import BEST_EPOCH, CLEAN_ACC, EPOCH_METRICS, STOPPED_EPOCH, parse_eps_metric

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

BASE_COLUMNS = [
    "run_id",
    "run_name",
    "experiment",
    "experiment_id",
    "status",
    "start_time",
    "end_time",
    "duration_s",
    "parent_run_id",
    "sweep",
    "artifact_uri",
]


def default_tracking_uri(tracking_uri: str | None = None) -> str:
    """``tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else the project's ``runs/mlflow.db``."""
    from advlab.tracking import resolve_tracking_uri

    return resolve_tracking_uri({"uri": tracking_uri}, None)


def _client(tracking_uri: str | None) -> MlflowClient:
    from mlflow import MlflowClient

    uri = default_tracking_uri(tracking_uri)
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///").split("?", 1)[0])
        # Reading must not create an empty store where the user expected runs.
        if not db.is_file():
            raise ConfigError(f"no MLflow store at {db} (tracking URI {uri}): run something first")
    return MlflowClient(tracking_uri=uri)


def _experiment_ids(client: MlflowClient, experiment: str | Sequence[str] | None) -> dict[str, str]:
    """experiment id -> name for the named experiment(s), or every active experiment if None."""
    if experiment is None:
        return {e.experiment_id: e.name for e in client.search_experiments()}
    names = [experiment] if isinstance(experiment, str) else list(experiment)
    out = {}
    for name in names:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            known = sorted(e.name for e in client.search_experiments())
            raise ConfigError(
                f"experiment {name!r} not found in {client.tracking_uri}; known: {', '.join(known)}"
            )
        out[exp.experiment_id] = exp.name
    return out


def _coerce(series: pd.Series) -> pd.Series:
    """Params are strings in MLflow: make a column numeric (or bool) when all its values are."""
    values = series.dropna()
    if values.empty:
        return series
    if values.isin(["True", "False"]).all():
        return series.map({"True": True, "False": False})
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().all():
        return pd.to_numeric(series, errors="coerce")
    return series


def runs_to_frame(runs: Iterable[Any], experiments: dict[str, str] | None = None) -> pd.DataFrame:
    """MLflow ``Run`` objects -> one row per run (see :func:`load` for the columns)."""
    rows = []
    for run in runs:
        info, data = run.info, run.data
        tags = data.tags
        row: dict[str, Any] = {
            "run_id": info.run_id,
            "run_name": info.run_name or tags.get("mlflow.runName"),
            "experiment": (experiments or {}).get(info.experiment_id),
            "experiment_id": info.experiment_id,
            "status": info.status,
            "start_time": pd.to_datetime(info.start_time, unit="ms", utc=True),
            "end_time": (
                pd.to_datetime(info.end_time, unit="ms", utc=True) if info.end_time else pd.NaT
            ),
            "duration_s": (
                (info.end_time - info.start_time) / 1000.0 if info.end_time else float("nan")
            ),
            "parent_run_id": tags.get("mlflow.parentRunId"),
            "sweep": tags.get("advlab.sweep"),
            "artifact_uri": info.artifact_uri,
        }
        row.update({f"params.{k}": v for k, v in data.params.items()})
        row.update({f"metrics.{k}": v for k, v in data.metrics.items()})
        row.update({f"tags.{k}": v for k, v in tags.items()})
        rows.append(row)
    frame = pd.DataFrame(rows, columns=None if rows else BASE_COLUMNS)
    if frame.empty:
        return frame
    extra = sorted(c for c in frame.columns if c not in BASE_COLUMNS)
    order = (
        [c for c in extra if c.startswith("params.")]
        + [c for c in extra if c.startswith("metrics.")]
        + [c for c in extra if c.startswith("tags.")]
    )
    frame = frame[BASE_COLUMNS + order]
    for col in frame.columns:
        if col.startswith("params."):
            frame[col] = _coerce(frame[col])
    return frame.reset_index(drop=True)


def load(
    experiment: str | Sequence[str] | None = None,
    filter: str | None = None,  # noqa: A002 - the name of the documented API
    *,
    tracking_uri: str | None = None,
    run_ids: Sequence[str] | None = None,
    include_sweep_parents: bool = False,
    include_running: bool = True,
    max_results: int | None = None,
) -> pd.DataFrame:
    """Runs of an MLflow experiment as a tidy DataFrame, newest first.

    Args:
        experiment: experiment name (or names); None = every active experiment.
        filter: an MLflow search filter, e.g. ``"params.model.dropout = '0.5'"`` or
            ``"tags.advlab.sweep = '2024-05-01_12-00-00'"`` or ``"metrics.clean_acc > 0.9"``.
        tracking_uri: the store; None = ``$MLFLOW_TRACKING_URI``, else the project's
            ``runs/mlflow.db``.
        run_ids: load exactly these runs (``experiment`` and ``filter`` are then ignored).
        include_sweep_parents: keep the parent runs of sweeps (tag ``advlab.sweep_parent``), which
            carry no params or metrics of their own.
        include_running: keep runs whose status is RUNNING/SCHEDULED.
        max_results: at most this many runs (None: all).

    Returns:
        One row per run: ``run_id, run_name, experiment, experiment_id, status, start_time,
        end_time`` (UTC), ``duration_s, parent_run_id, sweep, artifact_uri``, then
        ``params.<key>`` (numbers/bools converted when the whole column parses), ``metrics.<key>``
        (latest value; robustness at each eps has its own column) and ``tags.<key>``.

    Raises:
        ConfigError: unknown experiment, missing SQLite store, bad filter string or run id.
    """
    from mlflow.entities import ViewType
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    try:
        if run_ids is not None:
            runs = [client.get_run(r) for r in run_ids]
            exps = {r.info.experiment_id for r in runs}
            experiments = {e: client.get_experiment(e).name for e in exps}
        else:
            experiments = _experiment_ids(client, experiment)
            runs = []
            if experiments:
                token = None
                while True:
                    page = client.search_runs(
                        list(experiments),
                        filter_string=filter or "",
                        run_view_type=ViewType.ACTIVE_ONLY,
                        max_results=min(max_results or 1000, 1000),
                        order_by=["attributes.start_time DESC"],
                        page_token=token,
                    )
                    runs.extend(page)
                    token = page.token
                    if not token or (max_results is not None and len(runs) >= max_results):
                        break
                if max_results is not None:
                    runs = runs[:max_results]
    except MlflowException as err:
        what = f"run_ids={list(run_ids)}" if run_ids is not None else f"filter={filter!r}"
        msg = str(err.message).splitlines()[0] if err.message else str(err)
        raise ConfigError(f"MLflow search with {what} failed: {msg}") from err
    frame = runs_to_frame(runs, experiments)
    if frame.empty:
        return frame
    if not include_sweep_parents and "tags.advlab.sweep_parent" in frame:
        frame = frame[frame["tags.advlab.sweep_parent"] != "true"]
    if not include_running:
        frame = frame[frame["status"].isin(["FINISHED", "FAILED", "KILLED"])]
    return frame.reset_index(drop=True)


def robustness(frame: pd.DataFrame) -> pd.DataFrame:
    """Long table of the robustness metrics of the runs in ``frame`` (output of :func:`load`).

    Columns: ``run_id, run_name, attack, eps`` (float, 1/255 units), ``robust_acc, asr``; one row
    per run x attack x eps, sorted by run, attack and eps.
    """
    rows: dict[tuple[str, str, float], dict[str, Any]] = {}
    for col in frame.columns:
        if not col.startswith("metrics."):
            continue
        parsed = parse_eps_metric(col.removeprefix("metrics."))
        if parsed is None:
            continue
        kind, attack, eps = parsed
        for run_id, run_name, value in zip(
            frame["run_id"], frame["run_name"], frame[col], strict=True
        ):
            if pd.isna(value):
                continue
            key = (run_id, attack, eps)
            row = rows.setdefault(
                key, {"run_id": run_id, "run_name": run_name, "attack": attack, "eps": eps}
            )
            row[kind] = float(value)
    columns = ["run_id", "run_name", "attack", "eps", "robust_acc", "asr"]
    out = pd.DataFrame(list(rows.values()), columns=columns)
    return out.sort_values(["run_id", "attack", "eps"]).reset_index(drop=True)


def metric_history(
    run_id: str,
    keys: str | Sequence[str] | None = None,
    *,
    tracking_uri: str | None = None,
) -> pd.DataFrame:
    """Every logged value of the run's metrics ``keys`` (default: the per-epoch metrics).

    Returns a long DataFrame ``key, step, value, timestamp`` (timestamp UTC) sorted by key and
    step; for epoch metrics ``step`` is the 1-based epoch.
    """
    client = _client(tracking_uri)
    if keys is None:
        present = client.get_run(run_id).data.metrics
        keys = [k for k in present if k in EPOCH_METRICS or k in _EXTRA_EPOCH_METRICS]
    elif isinstance(keys, str):
        keys = [keys]
    rows = [
        {"key": m.key, "step": m.step, "value": m.value, "timestamp": m.timestamp}
        for key in keys
        for m in client.get_metric_history(run_id, key)
    ]
    out = pd.DataFrame(rows, columns=["key", "step", "value", "timestamp"])
    out["timestamp"] = pd.to_datetime(out["timestamp"], unit="ms", utc=True)
    return out.sort_values(["key", "step", "timestamp"]).reset_index(drop=True)


_EXTRA_EPOCH_METRICS = ("images_per_s", "gen_gap", "val_pgd_acc")


def epoch_table(run_id: str, *, tracking_uri: str | None = None) -> pd.DataFrame:
    """Per-epoch metrics as a wide table: one row per epoch, columns ``epoch`` + metric names."""
    hist = metric_history(run_id, tracking_uri=tracking_uri)
    if hist.empty:
        return pd.DataFrame(columns=["epoch"])
    last = hist.drop_duplicates(["key", "step"], keep="last")
    wide = last.pivot(index="step", columns="key", values="value").reset_index()
    wide.columns.name = None
    return wide.rename(columns={"step": "epoch"})


def list_artifacts(
    run_id: str, path: str | None = None, *, tracking_uri: str | None = None
) -> list[str]:
    """Artifact file paths of a run under ``path``, recursively (``results/results.json``, ...)."""
    client = _client(tracking_uri)
    out: list[str] = []

    def walk(p: str | None) -> None:
        for info in client.list_artifacts(run_id, p):
            if info.is_dir:
                walk(info.path)
            else:
                out.append(info.path)

    walk(path)
    return sorted(out)


def download_artifacts(
    run_id: str,
    artifact_path: str = "",
    dst_dir: str | Path | None = None,
    *,
    tracking_uri: str | None = None,
) -> Path:
    """Download a run's artifact file or folder (``''``: everything); returns the local path."""
    from mlflow.artifacts import download_artifacts as _download

    _client(tracking_uri)  # validates the store
    local = _download(
        run_id=run_id,
        artifact_path=artifact_path or None,
        dst_path=None if dst_dir is None else str(dst_dir),
        tracking_uri=default_tracking_uri(tracking_uri),
    )
    return Path(local)


@contextlib.contextmanager
def quiet_downloads() -> Iterator[None]:
    """No tqdm bar per downloaded artifact (hundreds for a sweep); restores the caller's setting."""
    name = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(name)
    os.environ[name] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def read_json(run_id: str, artifact_path: str, *, tracking_uri: str | None = None) -> Any:
    """A JSON artifact of a run, parsed (e.g. ``results/results.json``, ``results/sanity.json``)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="advlab-artifact-") as tmp:
        path = download_artifacts(run_id, artifact_path, tmp, tracking_uri=tracking_uri)
        return json.loads(path.read_text())


def read_table(run_id: str, artifact_path: str, *, tracking_uri: str | None = None) -> pd.DataFrame:
    """A CSV or records-JSON artifact as a DataFrame (e.g. ``results/robustness.csv``)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="advlab-artifact-") as tmp:
        path = download_artifacts(run_id, artifact_path, tmp, tracking_uri=tracking_uri)
        if path.suffix == ".csv":
            return pd.read_csv(path)
        data = json.loads(path.read_text())
        if isinstance(data, dict) and {"columns", "data"} <= data.keys():  # mlflow.log_table
            return pd.DataFrame(data["data"], columns=data["columns"])
        return pd.DataFrame(data)


# ------------------------------------------------------------------------------------ seed groups
CONFIG_ARTIFACT = "config/config.json"  # the resolved config with its types, logged by Tracker
# Config nodes that say where and how a run was recorded, not what it trained or measured.
_BOOKKEEPING_NODES = ("paths", "tracking", "report", "audit")
_BOOKKEEPING_KEYS = (("seed",), ("train", "progress"), ("train", "checkpoint"), ("train", "resume"))


def seed_group_key(config: Mapping[str, Any]) -> str | None:
    """What two runs must share to count as seeds of one setting: the typed config, bookkeeping out.

    ``config`` is a run's ``config/config.json`` (the resolved config with its types). Left out,
    because they change where or how a run is recorded, not what it trained or measured:

    - ``seed``: what a seed sweep varies;
    - ``paths.*``: the project root, runs and cache folders (where files land);
    - ``tracking.*``: store URI, MLflow experiment, run name, artifact root, whether the model file
      is logged (runs of different MLflow experiments are kept apart by
      :func:`assign_seed_groups`, which compares the experiment the run is in);
    - ``report.*``: whether and where PDFs are written; ``audit.*``: the settings of
      ``python -m advlab.audit``, a later check of the run, not part of it;
    - ``train.progress`` (progress bars), ``train.checkpoint`` (whether epoch checkpoints are
      saved) and ``train.resume`` (the checkpoint a killed run continued from: the same training).

    Everything else counts, ``device``, ``threads`` and ``data.root`` included: a different device
    or thread count may round differently and a different data folder may hold other data, so such
    runs are not pooled. Returns canonical JSON of what is left; None for a run that logged no
    config (such a run is never pooled).
    """
    if not config:
        return None
    kept = json.loads(json.dumps(dict(config), default=str))  # a copy: the caller's stays whole
    for node in _BOOKKEEPING_NODES:
        kept.pop(node, None)
    for *parents, key in _BOOKKEEPING_KEYS:
        node = kept
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(key, None)
    return json.dumps(kept, sort_keys=True)


def assign_seed_groups(runs: Iterable[tuple[str | None, str, Mapping[str, Any]]]) -> list[int]:
    """The seed group (0, 1, ... in first-seen order) of each run given as (experiment, status,
    typed config).

    Runs are pooled when they are in the same MLflow experiment, FINISHED, and have the same
    :func:`seed_group_key`. A run that did not finish, or logged no config, is a group of its own:
    a failed seed must not pass for a measured one.
    """
    numbers: dict[tuple[Any, ...], int] = {}
    out = []
    for i, (experiment, status, config) in enumerate(runs):
        key = seed_group_key(config)
        ident = (experiment, key) if key is not None and status == "FINISHED" else (None, i)
        out.append(numbers.setdefault(ident, len(numbers)))
    return out


SPREAD_STATS = ("mean", "std", "min", "max", "n_seeds")


def spread(values: Iterable[float | None]) -> dict[str, float]:
    """:data:`SPREAD_STATS` of the values that are not None/NaN: mean, sample std (ddof 1; NaN for
    a single value), min, max and their count ``n_seeds``."""
    kept = pd.Series([v for v in values if v is not None], dtype=float).dropna()
    return {
        "mean": float(kept.mean()) if len(kept) else float("nan"),
        "std": float(kept.std()) if len(kept) > 1 else float("nan"),
        "min": float(kept.min()) if len(kept) else float("nan"),
        "max": float(kept.max()) if len(kept) else float("nan"),
        "n_seeds": float(len(kept)),
    }


HEADLINE_METRICS = (CLEAN_ACC, BEST_EPOCH, STOPPED_EPOCH)


def is_headline_metric(key: str) -> bool:
    """Metrics a seed group summarises: clean accuracy, best/stopped epoch, and the robust accuracy
    and attack success rate of every attack at every eps."""
    return key in HEADLINE_METRICS or parse_eps_metric(key) is not None


def seed_groups(frame: pd.DataFrame, *, tracking_uri: str | None = None) -> pd.DataFrame:
    """One row per seed group of the runs in ``frame`` (output of :func:`load`), first-seen order.

    Runs are grouped by :func:`assign_seed_groups` on each run's ``config/config.json``. Columns:
    ``experiment, status, start_time`` (the group's first start), ``run_ids, seeds`` (lists, in
    ``frame`` order), ``n_seeds`` (runs in the group), ``duration_s`` (mean per run), every
    ``params.<key>`` whose value the group's runs share (``params.seed`` is thus absent from
    groups of several seeds), and for each headline metric (:func:`is_headline_metric`)
    ``metrics.<key>.<stat>`` for each of :data:`SPREAD_STATS` (:func:`spread` over the runs).
    """
    if frame.empty:
        return pd.DataFrame(columns=["experiment", "status", "start_time", "run_ids", "n_seeds"])
    with quiet_downloads():
        configs = [_run_config(run_id, tracking_uri) for run_id in frame["run_id"]]
    numbers = assign_seed_groups(zip(frame["experiment"], frame["status"], configs, strict=True))
    params = [c for c in frame.columns if c.startswith("params.")]
    metrics = [c for c in frame.columns if c.startswith("metrics.") and is_headline_metric(c[8:])]
    rows = []
    for number in dict.fromkeys(numbers):
        members = [i for i, n in enumerate(numbers) if n == number]
        part = frame.iloc[members]
        row: dict[str, Any] = {
            "experiment": part["experiment"].iloc[0],
            "status": part["status"].iloc[0],
            "start_time": part["start_time"].min(),
            "run_ids": list(part["run_id"]),
            "seeds": [_seed(configs[i], frame.iloc[i]) for i in members],
            "n_seeds": len(members),
            "duration_s": float(part["duration_s"].mean()),
        }
        for column in params:
            if part[column].astype(str).nunique() == 1:
                row[column] = part[column].iloc[0]
        for column in metrics:
            for stat, value in spread(part[column]).items():
                row[f"{column}.{stat}"] = value
        rows.append(row)
    return pd.DataFrame(rows)


def _seed(config: Mapping[str, Any], row: pd.Series) -> Any:
    """The run's seed from its typed config, else from its params (runs without config.json)."""
    return config["seed"] if "seed" in config else row.get("params.seed")


def _run_config(run_id: str, tracking_uri: str | None) -> dict[str, Any]:
    """The run's typed config; {} when it logged none (the run then forms a group of its own)."""
    from mlflow.exceptions import MlflowException

    try:
        config = read_json(run_id, CONFIG_ARTIFACT, tracking_uri=tracking_uri)
    except (MlflowException, OSError, ValueError) as error:
        log.warning("run %s: no readable %s (%s): not pooled", run_id, CONFIG_ARTIFACT, error)
        return {}
    return config if isinstance(config, dict) else {}
