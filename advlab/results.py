"""Read runs back from MLflow as tidy pandas DataFrames (what the report builds on).

``load`` gives one row per run: ``run_id``, ``run_name``, ``experiment``, ``status``, times, the
sweep it belongs to, and the columns ``params.<key>``, ``metrics.<key>`` (latest value) and
``tags.<key>`` with the names of ``docs/architecture.md`` ("What a run leaves in MLflow").
``robustness`` turns the ``robust_acc/<attack>/eps_<e>`` metrics into a long table,
``metric_history`` reads per-epoch curves, ``download_artifacts``/``read_json``/``read_table``
fetch artifacts (:mod:`advlab.seed_groups` pools the runs that differ only in their seed). Every
name comes from :mod:`advlab.naming`; names written by earlier releases are read under today's
names. Nothing here writes to MLflow, and nothing here creates a store.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from advlab import naming
from advlab.errors import ConfigError
from advlab.naming import EPOCH_METRICS, current_metric, parse_eps_metric

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
    from advlab.tracking.store import read_client

    return read_client(default_tracking_uri(tracking_uri))


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
            "run_name": info.run_name or tags.get(naming.MLFLOW_RUN_NAME_TAG),
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
            "parent_run_id": tags.get(naming.MLFLOW_PARENT_TAG),
            "sweep": tags.get(naming.SWEEP_TAG),
            "artifact_uri": info.artifact_uri,
        }
        row.update({f"params.{k}": v for k, v in data.params.items()})
        row.update({f"metrics.{current_metric(k)}": v for k, v in data.metrics.items()})
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
            ``"tags.advlab.sweep = '2024-05-01_12-00-00'"`` or ``"metrics.clean_acc > 0.9"``
            (a filter names metrics as stored: runs of earlier releases keep their old names).
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
        (latest value; robustness at each eps has its own column; a name of an earlier release
        under today's, :func:`advlab.naming.current_metric`) and ``tags.<key>``.

    Raises:
        ConfigError: unknown experiment, missing SQLite store, bad filter string or run id.
    """
    from mlflow.entities import ViewType
    from mlflow.exceptions import MlflowException

    from advlab.tracking.store import experiment_ids

    client = _client(tracking_uri)
    try:
        if run_ids is not None:
            runs = [client.get_run(r) for r in run_ids]
            exps = {r.info.experiment_id for r in runs}
            experiments = {e: client.get_experiment(e).name for e in exps}
        else:
            experiments = experiment_ids(client, experiment)
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
    parent_column = f"tags.{naming.SWEEP_PARENT_TAG}"
    if not include_sweep_parents and parent_column in frame:
        frame = frame[frame[parent_column] != "true"]
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
    step; for epoch metrics ``step`` is the 1-based epoch. Keys are today's names
    (:data:`advlab.naming.EPOCH_METRICS`): a run recorded by an earlier release, e.g. with
    ``val_robust_acc``, is read under ``val_pgd_acc``, and asking for either name finds it.
    """
    client = _client(tracking_uri)
    present = client.get_run(run_id).data.metrics
    if keys is None:
        wanted = set(EPOCH_METRICS)
    else:
        wanted = {current_metric(k) for k in ([keys] if isinstance(keys, str) else keys)}
    stored = [k for k in present if current_metric(k) in wanted]
    rows = [
        {"key": current_metric(m.key), "step": m.step, "value": m.value, "timestamp": m.timestamp}
        for key in stored
        for m in client.get_metric_history(run_id, key)
    ]
    out = pd.DataFrame(rows, columns=["key", "step", "value", "timestamp"])
    out["timestamp"] = pd.to_datetime(out["timestamp"], unit="ms", utc=True)
    return out.sort_values(["key", "step", "timestamp"]).reset_index(drop=True)


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
    """Artifact file paths of a run under ``path``, recursively (``naming.RESULTS_JSON``, ...)."""
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
    """A JSON artifact of a run, parsed (e.g. ``naming.RESULTS_JSON``)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="advlab-artifact-") as tmp:
        path = download_artifacts(run_id, artifact_path, tmp, tracking_uri=tracking_uri)
        return json.loads(path.read_text())


def read_table(run_id: str, artifact_path: str, *, tracking_uri: str | None = None) -> pd.DataFrame:
    """A CSV or records-JSON artifact as a DataFrame (e.g. ``naming.ROBUSTNESS_CSV``)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="advlab-artifact-") as tmp:
        path = download_artifacts(run_id, artifact_path, tmp, tracking_uri=tracking_uri)
        if path.suffix == ".csv":
            return pd.read_csv(path)
        data = json.loads(path.read_text())
        if isinstance(data, dict) and {"columns", "data"} <= data.keys():  # mlflow.log_table
            return pd.DataFrame(data["data"], columns=data["columns"])
        return pd.DataFrame(data)
