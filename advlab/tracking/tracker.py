"""The :class:`Tracker`: one MLflow run, from start to its terminal status.

It starts the run (nested under the sweep's parent run when the job is part of a Hydra multirun),
logs the resolved config as params and as ``config/config.json``, the tags, metrics and artifacts
listed in ``docs/architecture.md`` ("What a run leaves in MLflow"), and always ends the run:
FINISHED, FAILED (error as tag ``advlab.error``) or KILLED (Ctrl-C, SIGTERM).

mlflow is imported inside functions so that ``import advlab.tracking`` stays cheap.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from advlab.errors import ConfigError
from advlab.fileio import atomic_write_text
from advlab.naming import CLEAN_ACC, asr_key, format_eps, robust_acc_key
from advlab.tracking import store
from advlab.tracking.metadata import (
    derive_run_name,
    flatten_config,
    mlflow_context_tags,
    param_value,
    run_tags,
    sweep_tags,
    typed_config_json,
)
from advlab.tracking.signals import restore_sigterm, sigterm_raises

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

_SANITY_ORDER = {"pass": 0, "warn": 1, "fail": 2}  # worst last; an unknown status is worse still


class Tracker:
    """One MLflow run; a context manager that always ends the run in the right status.

    ``with Tracker(cfg, run_dir=run_dir) as tracker: ...`` starts the run on enter and on exit sets
    FINISHED, FAILED (tag ``advlab.error`` = the error) or KILLED (Ctrl-C, or SIGTERM, which the
    tracker turns into :class:`~advlab.tracking.Terminated` while the run is open). With
    ``tracking.enabled=false`` every method is a no-op and MLflow is never imported; ``run_id`` is
    then None.
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
            self.tracking_uri = store.resolve_tracking_uri(cfg.tracking, cfg.get("paths"))

    # -- lifecycle
    def __enter__(self) -> Tracker:
        if not self.enabled:
            return self
        assert self.tracking_uri is not None
        client = store.open_client(self.tracking_uri)
        self._client = client
        artifact_root = store.resolve_artifact_root(
            self.cfg.tracking, self.cfg.get("paths"), self.tracking_uri
        )
        experiment_id = store.ensure_experiment(client, self.experiment_name, artifact_root)
        self.run_name = derive_run_name(self.cfg)
        tags = run_tags(self.cfg, run_dir=self.run_dir)
        tags.update(mlflow_context_tags())
        tags.update(sweep_tags(experiment_id))
        run = store.retry(
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
        self._prev_sigterm = sigterm_raises()
        try:
            self._log_config()
        except BaseException as err:
            self._restore_sigterm()
            self._close_run(type(err), err)
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> bool:
        if self.enabled and self.run_id is not None and self.status is None:
            self._close_run(exc_type, exc)
        self._restore_sigterm()
        return False  # never swallow the exception

    def _close_run(self, exc_type: type[BaseException] | None, exc: BaseException | None) -> None:
        """Await the queued writes, then end the run FINISHED, KILLED or FAILED after ``exc``."""
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
            store.end_run(self._client, self.run_id, status, tags)
            self.status = status
        except Exception:
            log.exception("could not end MLflow run %s as %s", self.run_id, status)
            raise

    def _restore_sigterm(self) -> None:
        restore_sigterm(self._prev_sigterm)
        self._prev_sigterm = None

    # -- logging
    def _active(self) -> MlflowClient | None:
        if not self.enabled:
            return None
        if self._client is None or self.run_id is None:
            raise RuntimeError("Tracker used outside its `with` block")
        return self._client

    def _log_config(self) -> None:
        """The config as params, as ``config/config.json`` (typed) and Hydra's ``hydra/`` files."""
        self.log_params(flatten_config(self.cfg))
        config_json = atomic_write_text(self.run_dir / "config.json", typed_config_json(self.cfg))
        self.log_artifact(config_json, "config")
        hydra_dir = self.run_dir / ".hydra"
        if hydra_dir.is_dir():
            self.log_artifact(hydra_dir, "hydra")

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log extra params (values become strings, truncated to MLflow's limit)."""
        if self._active() is None:
            return
        from mlflow.entities import Param

        limit = store.MAX_PARAM_VAL_LENGTH
        values = {
            store.clean_key(k): store.truncate(param_value(v), limit) for k, v in params.items()
        }
        self._log_batch("log params", params=[Param(k, v) for k, v in values.items()])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set (or overwrite) run tags, e.g. ``{'advlab.device': 'cuda'}``."""
        if self._active() is None:
            return
        from mlflow.entities import RunTag

        limit = store.MAX_TAG_VAL_LENGTH
        values = {store.clean_key(k): store.truncate(str(v), limit) for k, v in tags.items()}
        self._log_batch("set tags", tags=[RunTag(k, v) for k, v in values.items()])

    def log_data_facts(self, facts: Mapping[str, Any]) -> None:
        """Dataset facts as params ``facts.<key>`` (``facts.n_train``, ``facts.train_frac/<c>``)."""
        self.log_params({f"facts.{k}": v for k, v in facts.items()})

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log metrics at ``step`` (default 0: final values such as ``clean_acc``)."""
        if self._active() is None:
            return
        self._log_batch("log metrics", metrics=_metric_list(metrics, 0 if step is None else step))

    def _log_batch(self, what: str, **batch: list) -> None:
        """One ``log_batch`` call of ``params=``, ``tags=`` or ``metrics=`` (none if all empty)."""
        client = self._active()
        if client is not None and any(batch.values()):
            store.retry(lambda: client.log_batch(self.run_id, **batch), what=what)

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
        assert self.run_id is not None
        store.upload(client, self.run_id, path, artifact_path)

    def log_evaluation(self, evaluation: Any, eps_grid: Sequence[float]) -> None:
        """Robustness metrics, sanity tags and the files of an ``Evaluation``.

        Metrics: ``clean_acc`` (step 0) and, for each row of ``evaluation.table``,
        ``robust_acc/<attack>/eps_<e>`` and ``asr/<attack>/eps_<e>`` with step = index of eps in
        ``eps_grid`` (1/255 units, ``eval.eps``), so MLflow's chart draws the eps curve.
        Tags ``advlab.sanity`` (worst status) and ``advlab.sanity.<check>``. Artifacts: an MLflow
        table ``results/robustness_table.json`` and the files the evaluation wrote
        (``evaluation.artifacts``: robustness.csv/.json, per_class.csv, confusion.json,
        sanity.json, ...) as they are on disk, PNGs under ``grids/``, the rest under ``results/``.
        """
        client = self._active()
        if client is None:
            return
        metrics = _metric_list({CLEAN_ACC: evaluation.clean_acc}, 0)
        for row in evaluation.table.itertuples(index=False):
            attack, eps = str(row.attack), float(row.eps)
            metrics += _metric_list(
                {robust_acc_key(attack, eps): row.robust_acc, asr_key(attack, eps): row.asr},
                _eps_step(eps, eps_grid),
            )
        self._log_batch("log robustness", metrics=metrics)
        self.set_tags(_sanity_tags(evaluation.sanity))
        table, table_path = evaluation.table, "results/robustness_table.json"
        store.retry(lambda: client.log_table(self.run_id, table, table_path), what="log table")
        for path in evaluation.artifacts:
            path = Path(path)
            self.log_artifact(path, "grids" if path.suffix.lower() == ".png" else "results")


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
        out.append(Metric(store.clean_key(key), v, ts, int(step)))
    return out


def _eps_step(eps: float, eps_grid: Sequence[float]) -> int:
    for i, e in enumerate(eps_grid):
        if math.isclose(float(e), float(eps), rel_tol=1e-9, abs_tol=1e-9):
            return i
    raise ConfigError(
        f"eps {format_eps(eps)} of the evaluation table is not in eval.eps {list(eps_grid)}"
    )


def _sanity_tags(checks: Sequence[Any]) -> dict[str, str]:
    """``advlab.sanity`` (the worst status) and ``advlab.sanity.<name>`` per sanity check."""
    if not checks:
        return {}
    statuses = {str(c.name): str(c.status) for c in checks}
    worst = max(statuses.values(), key=lambda s: _SANITY_ORDER.get(s, len(_SANITY_ORDER)))
    return {"advlab.sanity": worst, **{f"advlab.sanity.{n}": s for n, s in statuses.items()}}
