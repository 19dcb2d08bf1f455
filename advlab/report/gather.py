"""Read one MLflow run or many into :class:`~advlab.report.data.RunData` (reads, never writes).

Only reads, through :func:`advlab.tracking.store.read_client` (which never creates a store):
params, tags, metrics (latest values and per-epoch histories) and the artifacts named in
:mod:`advlab.naming`. Nothing is recomputed: robust accuracy and attack success rate come from the
``robust_acc/...`` and ``asr/...`` metrics; the confidence interval, n and per-class numbers from
the run's result artifacts; the run's settings from its typed config artifact; versions and the
command from its run-info artifact (or, for runs of earlier releases, its tags).
"""

from __future__ import annotations

import io
import json
import logging
import math
import re
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from advlab import naming
from advlab.report.data import (
    CHECK_FIELDS,
    ROBUSTNESS_COLUMNS,
    UNFINISHED,
    ReportData,
    ReportError,
    RunData,
)
from advlab.results import quiet_downloads
from advlab.tracking.store import experiment_ids, read_client, retry

log = logging.getLogger(__name__)

_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
_CHECKS_FILES = naming.artifact_candidates(naming.CHECKS_JSON)  # today's name first
_WANTED = {
    naming.ROBUSTNESS_JSON,
    naming.PER_CLASS_CSV,
    naming.CONFUSION_JSON,
    *_CHECKS_FILES,
    naming.VERDICT_JSON,  # the run's verdict with every check it rests on
    naming.AUDIT_JSON,  # python -m advlab.audit
    naming.RESULTS_JSON,  # clean_n, robust_n
    naming.RUN_INFO_JSON,  # versions, command, attacks (tags on runs of earlier releases)
    naming.CONFIG_ARTIFACT,
}
_FOLDERS = (naming.RESULTS_DIR, naming.GRIDS_DIR, naming.CONFIG_DIR)
_STATUS_FILTER = re.compile(r"\bstatus\b", re.IGNORECASE)  # a filter that picks run statuses


# ------------------------------------------------------------------------------------ gathering
def gather(
    *, tracking_uri: str, experiment: str | None, runs: Sequence[str] | str | None
) -> ReportData:
    """Read the selected runs from MLflow.

    ``runs``: None (every run of ``experiment``), a list of run ids, or an MLflow filter string
    (``"params.model.dropout = '0.5'"``) applied within ``experiment``. A sweep's parent run is
    replaced by its children. Failed and killed runs are left out (and counted) unless they were
    asked for: by run id, or by a filter on the run status. Raises :class:`ReportError` (or the
    store's :class:`~advlab.errors.ConfigError`) when the store, the experiment or any reportable
    run is missing; the store is only read, never created.
    """
    from mlflow.exceptions import MlflowException

    client = read_client(tracking_uri)
    run_ids = _as_id_list(runs)
    try:
        if run_ids is not None:
            found = [_get_run(client, run_id, tracking_uri) for run_id in run_ids]
            selection = f"{len(run_ids)} run id(s) given"
            exp_names = sorted({_experiment_name(client, r.info.experiment_id) for r in found})
            exp_label = experiment or ", ".join(exp_names)
            found = _expand_parents(client, found)
        else:
            if experiment is None:
                raise ReportError(
                    "report.experiment is not set: name the MLflow experiment to report on "
                    "(report.experiment=NAME) or give run ids (report.runs=[ID,...])"
                )
            (experiment_id,) = experiment_ids(client, experiment)
            filter_string = runs if isinstance(runs, str) else None
            found = _search(client, experiment_id, filter_string)
            selection = (
                f"runs matching {filter_string!r}"
                if filter_string
                else "all runs of the experiment"
            )
            exp_label = experiment
            if not found:
                what = f"match report.runs={filter_string!r}" if filter_string else "exist"
                raise ReportError(
                    f"no runs {what} in MLflow experiment {experiment!r} ({tracking_uri})"
                )
    except MlflowException as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ReportError(f"MLflow could not answer ({tracking_uri}): {first}") from exc

    parents = {r.data.tags.get(naming.MLFLOW_PARENT_TAG) for r in found} - {None}
    kept = [r for r in found if r.info.run_id not in parents] or found
    omitted = len(found) - len(kept)
    asked = run_ids is not None or bool(isinstance(runs, str) and _STATUS_FILTER.search(runs))
    kept, left_out = (kept, {}) if asked else _leave_out_unfinished(kept, exp_label)
    kept.sort(key=lambda r: (r.info.start_time or 0, r.info.run_id))
    with tempfile.TemporaryDirectory(prefix="advlab-report-") as tmp, quiet_downloads():
        data = [_run_data(client, r, Path(tmp)) for r in kept]
    _make_names_unique(data)
    return ReportData(
        tracking_uri=tracking_uri,
        experiment=exp_label,
        selection=selection,
        runs=data,
        omitted_parents=omitted,
        left_out=left_out,
    )


def _leave_out_unfinished(found: list, experiment: str) -> tuple[list, dict[str, int]]:
    """The runs that did not fail or get killed, and how many of each status were left out.

    Raises a one-line :class:`ReportError` when nothing else is left: a PDF of failed runs
    would only repeat their error."""
    kept = [r for r in found if r.info.status not in UNFINISHED]
    left_out: dict[str, int] = {}
    for run in found:
        if run.info.status in UNFINISHED:
            left_out[run.info.status] = left_out.get(run.info.status, 0) + 1
    if not kept:
        counts = " and ".join(f"{n} {s.lower()}" for s, n in left_out.items())
        latest = max(found, key=lambda r: r.info.start_time or 0)
        why = latest.data.tags.get(naming.ERROR_TAG) or latest.data.tags.get(
            naming.KILLED_REASON_TAG
        )
        last = f"; the latest: {' '.join(why.split())[:200]}" if why else ""
        raise ReportError(
            f"MLflow experiment {experiment!r} has no finished run to report ({counts}){last}"
        )
    return kept, left_out


def latest_experiment(tracking_uri: str) -> str:
    """The experiment of the most recently started run in the store (the report's default)."""
    client = read_client(tracking_uri)
    ids = experiment_ids(client, None)
    newest = (
        retry(
            lambda: client.search_runs(
                list(ids), order_by=["attributes.start_time DESC"], max_results=1
            ),
            what="latest run",
        )
        if ids
        else []
    )
    if not newest:
        raise ReportError(f"no runs in the MLflow store {tracking_uri}: run something first")
    return ids[newest[0].info.experiment_id]


def _as_id_list(runs: Sequence[str] | str | None) -> list[str] | None:
    """A list of run ids, or None when ``runs`` is None or a filter string."""
    if runs is None:
        return None
    if isinstance(runs, str):
        parts = [p.strip() for p in runs.split(",") if p.strip()]
        # A bare id (or comma-separated ids) is a selection by id, anything else a filter.
        if parts and all(_RUN_ID.match(p) for p in parts):
            return parts
        return None
    ids = [str(r).strip() for r in runs]
    if not ids:
        raise ReportError("report.runs is an empty list: give run ids, a filter string or null")
    return ids


def _get_run(client, run_id: str, tracking_uri: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException as exc:
        raise ReportError(
            f"report.runs: no MLflow run with id {run_id!r} in {tracking_uri}"
        ) from exc


def _experiment_name(client, experiment_id: str) -> str:
    return client.get_experiment(experiment_id).name


def _search(client, experiment_id: str, filter_string: str | None) -> list:
    from mlflow.exceptions import MlflowException

    out: list = []
    token = None
    while True:
        try:
            page = client.search_runs(
                [experiment_id],
                filter_string=filter_string or "",
                max_results=1000,
                order_by=["attributes.start_time ASC"],
                page_token=token,
            )
        except MlflowException as exc:
            first = str(exc).strip().splitlines()[0]
            raise ReportError(
                f"report.runs={filter_string!r} is not a valid MLflow filter: {first}"
            ) from exc
        out.extend(page)
        token = page.token
        if not token:
            return out


def _expand_parents(client, runs: list) -> list:
    """Replace sweep parent runs by their children (a parent holds no results of its own)."""
    out: list = []
    for run in runs:
        children = _search(
            client, run.info.experiment_id, f"tags.mlflow.parentRunId = '{run.info.run_id}'"
        )
        out.extend(children or [run])
    unique = {r.info.run_id: r for r in out}
    return list(unique.values())


def _run_data(client, run, tmp: Path) -> RunData:
    info, data = run.info, run.data
    metrics = {k: float(v) for k, v in data.metrics.items()}
    artifacts = _artifacts(client, info.run_id, tmp)
    start = datetime.fromtimestamp(info.start_time / 1000, tz=UTC) if info.start_time else None
    checks_file = next((artifacts[p] for p in _CHECKS_FILES if p in artifacts), None)
    run_info = _json_or_none(artifacts.get(naming.RUN_INFO_JSON))
    results_json = _json_or_none(artifacts.get(naming.RESULTS_JSON))
    return RunData(
        run_id=info.run_id,
        name=info.run_name or data.tags.get(naming.MLFLOW_RUN_NAME_TAG) or info.run_id[:8],
        experiment=_experiment_name(client, info.experiment_id),
        status=info.status,
        start_time=start,
        params=dict(data.params),
        tags=dict(data.tags),
        config=_config(artifacts.get(naming.CONFIG_ARTIFACT)),
        metrics=metrics,
        history=_history(client, info.run_id, metrics),
        robustness=_robustness(metrics, artifacts.get(naming.ROBUSTNESS_JSON)),
        per_class=_per_class(artifacts.get(naming.PER_CLASS_CSV)),
        confusion=_json_or_none(artifacts.get(naming.CONFUSION_JSON)),
        sanity=_checks(_json_or_none(checks_file)),
        verdict_file=_verdict(artifacts.get(naming.VERDICT_JSON)),
        audit=_json_or_none(artifacts.get(naming.AUDIT_JSON)),
        grids=[
            (p, b) for p, b in sorted(artifacts.items()) if p.startswith(f"{naming.GRIDS_DIR}/")
        ],
        info=naming.run_info(dict(data.tags), run_info if isinstance(run_info, dict) else None),
        results=results_json if isinstance(results_json, dict) else {},
    )


def _history(client, run_id: str, metrics: dict[str, float]) -> pd.DataFrame:
    """One row per epoch of every per-epoch metric the run logged, under today's names (a run
    of an earlier release that logged ``val_robust_acc`` shows it as ``val_pgd_acc``)."""
    columns: dict[str, dict[int, float]] = {}
    for key in sorted(metrics, key=lambda k: k != naming.current_metric(k)):  # today's name wins
        name = naming.current_metric(key)
        if name not in naming.EPOCH_METRICS or name in columns:
            continue
        columns[name] = {m.step: m.value for m in client.get_metric_history(run_id, key)}
    if not columns:
        return pd.DataFrame(columns=["epoch"])
    frame = pd.DataFrame(columns).sort_index()
    frame.index.name = "epoch"
    return frame.reset_index()


def _artifacts(client, run_id: str, tmp: Path) -> dict[str, bytes]:
    """The report's artifacts of a run as {artifact path: bytes}; absent ones are simply missing."""
    out: dict[str, bytes] = {}
    for folder in _FOLDERS:
        try:
            listing = client.list_artifacts(run_id, folder)
        except Exception as exc:  # an unreachable artifact store must not sink the whole report
            log.warning("run %s: cannot list artifacts under %s/: %s", run_id, folder, exc)
            continue
        for item in listing:
            if item.is_dir:
                continue
            grid = folder == naming.GRIDS_DIR and item.path.endswith(".png")
            if item.path in _WANTED or grid:
                try:
                    local = client.download_artifacts(run_id, item.path, str(tmp))
                    out[item.path] = Path(local).read_bytes()
                except Exception as exc:
                    log.warning("run %s: cannot download %s: %s", run_id, item.path, exc)
    return out


def _robustness(metrics: dict[str, float], raw: bytes | None) -> pd.DataFrame:
    """Robustness rows: values from the metrics, CI and n from robustness.json where present."""
    values: dict[tuple[str, float], dict[str, float]] = {}
    for key, value in metrics.items():
        parsed = naming.parse_eps_metric(key)
        if parsed is not None:
            kind, attack, eps = parsed
            values.setdefault((attack, eps), {})[kind] = value
    extra: dict[tuple[str, float], dict] = {}
    if raw is not None:
        try:
            for row in json.loads(raw):
                extra[(str(row["attack"]), float(row["eps"]))] = row
        except (ValueError, KeyError, TypeError) as exc:
            log.warning(
                "%s is unreadable (%s); using the metrics only", naming.ROBUSTNESS_JSON, exc
            )
    rows = []
    for (attack, eps), vals in values.items():
        more = extra.get((attack, eps), {})
        rows.append(
            {
                "attack": attack,
                "eps": eps,
                "robust_acc": vals.get("robust_acc", more.get("robust_acc", math.nan)),
                "ci_low": more.get("ci_low", math.nan),
                "ci_high": more.get("ci_high", math.nan),
                "asr": vals.get("asr", more.get("asr", math.nan)),
                "n": more.get("n", math.nan),
            }
        )
    frame = pd.DataFrame(rows, columns=list(ROBUSTNESS_COLUMNS))
    for column in ROBUSTNESS_COLUMNS[1:]:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    return frame.sort_values(["attack", "eps"], ignore_index=True)


def _per_class(raw: bytes | None) -> pd.DataFrame | None:
    if raw is None:
        return None
    try:
        frame = pd.read_csv(io.BytesIO(raw))
    except ValueError as exc:
        log.warning("%s is unreadable: %s", naming.PER_CLASS_CSV, exc)
        return None
    needed = {"attack", "eps", "class", "robust_acc"}
    if not needed <= set(frame.columns):
        missing = sorted(needed - set(frame.columns))
        log.warning("%s lacks columns %s", naming.PER_CLASS_CSV, missing)
        return None
    frame["class"] = frame["class"].astype(str)
    return frame


def _config(raw: bytes | None) -> dict[str, Any]:
    """The run's typed config; {} for runs that did not log one (they then show no settings)."""
    config = _json_or_none(raw)
    return config if isinstance(config, dict) else {}


def _json_or_none(raw: bytes | None):
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError as exc:
        log.warning("an artifact is not valid JSON: %s", exc)
        return None


def _checks(rows: Any) -> list[dict[str, str]] | None:
    """Check rows ({name, status, evidence}) as strings; None when ``rows`` is not a list."""
    if not isinstance(rows, list):
        return None
    return [{k: str(row.get(k, "")) for k in CHECK_FIELDS} for row in rows if isinstance(row, dict)]


def _verdict(raw: bytes | None) -> dict[str, Any] | None:
    """The verdict file as {verdict, reason, checks}; None when absent or not an object."""
    found = _json_or_none(raw)
    if not isinstance(found, dict):
        return None
    return {
        "verdict": str(found.get("verdict") or "") or None,
        "reason": str(found.get("reason") or "") or None,
        "checks": _checks(found.get("checks")),
    }


def _make_names_unique(runs: list[RunData]) -> None:
    seen: dict[str, int] = {}
    for run in runs:
        seen[run.name] = seen.get(run.name, 0) + 1
    for run in runs:
        if seen[run.name] > 1:
            run.name = f"{run.name} ({run.run_id[:6]})"
