"""The run under audit: ``audit.run`` (a run directory or an MLflow run id) -> its files and run.

A run directory holds ``config.json`` (the typed config the Tracker wrote) and ``model/model.pt``;
its MLflow run is the one tagged ``advlab.run_dir`` = that directory, in the store named by the
run's own config. An MLflow run id is looked up in ``tracking.uri`` (as for any advlab command);
its files come from its run directory when that is on this machine, else from its artifacts
``config/config.json`` and ``model/model.pt``, downloaded beside the audit's own output.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advlab.config import PROJECT_ROOT
from advlab.errors import ConfigError
from advlab.naming import (
    CONFIG_ARTIFACT,
    CONFIG_FILE,
    MODEL_ARTIFACT,
    RESULTS_JSON,
    RUN_DIR_TAG,
    RUN_ID,
)
from advlab.tracking.store import read_client, resolve_tracking_uri


@dataclass
class RunSource:
    """Where the audited run's files are and which MLflow run (if any) receives the audit."""

    config: dict[str, Any]  # the run's typed config (config.json)
    model_path: Path
    out_dir: Path  # results/audit.json is written under it
    run_id: str | None = None  # None: the run was not tracked; the audit only writes its file
    tracking_uri: str | None = None
    experiment: str | None = None
    logged: dict[str, float] = field(default_factory=dict)  # the run's own headline metrics


def locate(ref: str, *, tracking_uri: str, download_dir: Path) -> RunSource:
    """The run named by ``audit.run``; a :class:`ConfigError` naming ``ref`` when there is none."""
    path = Path(str(ref)).expanduser()
    if not path.is_absolute():
        path = PROJECT_ROOT / path
    if path.is_dir():
        return _from_dir(path)
    if RUN_ID.fullmatch(str(ref)):
        return _from_run_id(str(ref), tracking_uri, Path(download_dir))
    raise ConfigError(
        f"audit.run={ref!r}: neither a run directory (resolved to {path}) nor an MLflow run id"
    )


def _files_of(run_dir: Path) -> tuple[dict[str, Any], Path] | None:
    config, model = run_dir / CONFIG_FILE, run_dir / MODEL_ARTIFACT
    if config.is_file() and model.is_file():
        return json.loads(config.read_text()), model
    return None


def _from_dir(run_dir: Path) -> RunSource:
    files = _files_of(run_dir)
    if files is None:
        raise ConfigError(
            f"audit.run={run_dir}: a run directory must hold {CONFIG_FILE} and {MODEL_ARTIFACT} "
            "(was the run made with tracking.log_model=false?)"
        )
    config, model = files
    results = run_dir / RESULTS_JSON
    source = RunSource(config, model, run_dir)
    if results.is_file():
        written = json.loads(results.read_text())  # metrics, plus the verdict's two strings
        source.logged = {k: float(v) for k, v in written.items() if not isinstance(v, str)}
    tracking = config.get("tracking") or {}
    if tracking.get("enabled", True):
        uri = resolve_tracking_uri(tracking, config.get("paths"))
        _attach_run(source, uri, run_dir)
    return source


def _attach_run(source: RunSource, uri: str, run_dir: Path) -> None:
    """Fill in the MLflow run tagged with ``run_dir`` (left None when the store has none)."""
    client = read_client(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    found = client.search_runs(ids, filter_string=f"tags.`{RUN_DIR_TAG}` = '{run_dir}'")
    if found:
        run = found[0]
        source.run_id, source.tracking_uri = run.info.run_id, uri
        source.experiment = client.get_experiment(run.info.experiment_id).name


def _from_run_id(run_id: str, uri: str, download_dir: Path) -> RunSource:
    from mlflow.exceptions import MlflowException

    client = read_client(uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise ConfigError(f"audit.run={run_id}: no MLflow run in {uri} (tracking.uri)") from None
    run_dir = Path(run.data.tags.get(RUN_DIR_TAG) or download_dir)
    files = _files_of(run_dir)
    if files is None:
        run_dir = download_dir / run_id
        run_dir.mkdir(parents=True, exist_ok=True)
        try:  # artifacts keep their paths: <run_dir>/config/config.json, <run_dir>/model/model.pt
            for artifact in (CONFIG_ARTIFACT, MODEL_ARTIFACT):
                client.download_artifacts(run_id, artifact, dst_path=str(run_dir))
        except (MlflowException, OSError):
            raise ConfigError(
                f"audit.run={run_id}: the run's directory is not on this machine and it has no "
                f"{CONFIG_ARTIFACT} and {MODEL_ARTIFACT} artifacts"
            ) from None
        (run_dir / CONFIG_ARTIFACT).replace(run_dir / CONFIG_FILE)
        files = _files_of(run_dir)
        assert files is not None
    config, model = files
    experiment = client.get_experiment(run.info.experiment_id).name
    logged = {k: float(v) for k, v in run.data.metrics.items()}
    return RunSource(config, model, run_dir, run_id, uri, experiment, logged)
