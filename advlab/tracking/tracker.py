"""The :class:`Tracker`: one MLflow run, from start to its terminal status.

It first ends the store's runs whose process is gone (:mod:`~advlab.tracking.liveness`), then
starts the run (nested under the sweep's parent run when the job is part of a Hydra multirun), or
reopens the run ``train.resume`` continues (:mod:`~advlab.tracking.resume`), tags it with this
process and a heartbeat, logs the resolved config as params and as ``config/config.json``, the
tags, metrics and artifacts listed in ``docs/architecture.md`` ("What a run leaves in MLflow"),
and always ends the run: FINISHED, FAILED (error as tag ``advlab.error``) or KILLED (Ctrl-C,
SIGTERM).

mlflow is imported inside functions so that ``import advlab.tracking`` stays cheap.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from advlab import naming
from advlab.errors import ConfigError
from advlab.fileio import atomic_write_text
from advlab.naming import ERROR_TAG, RESUMED_CHANGES_TAG, STOP_REASON_TAG, format_eps
from advlab.tracking import store
from advlab.tracking.epoch_writer import EpochWriter, heartbeat_tags
from advlab.tracking.liveness import process_tags, reap_dead_runs
from advlab.tracking.metadata import (
    derive_run_name,
    flatten_config,
    mlflow_context_tags,
    param_value,
    run_tags,
    sweep_tags,
    typed_config_json,
)
from advlab.tracking.resume import (
    Resumed,
    new_params,
    reopen,
    run_to_resume,
    write_run_file,
)
from advlab.tracking.signals import Terminated, restore_sigterm, sigterm_deferred, sigterm_raises

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

log = logging.getLogger(__name__)


class Tracker:
    """One MLflow run; a context manager that always ends the run in the right status.

    ``with Tracker(cfg, run_dir=run_dir) as tracker: ...`` starts the run on enter and on exit sets
    FINISHED, FAILED (tag ``advlab.error`` = the error) or KILLED (Ctrl-C, or SIGTERM, which the
    tracker turns into :class:`~advlab.tracking.Terminated` while the run is open). With
    ``train.resume`` it continues the run recorded beside that checkpoint instead of starting one
    (:mod:`~advlab.tracking.resume`). With ``tracking.enabled=false`` every method is a no-op and
    MLflow is never imported; ``run_id`` is then None.
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
        self.experiment_id: str | None = None
        self.in_sweep = False  # a job of a Hydra multirun (tag advlab.sweep)
        self.model_id: str | None = None  # the run's MLflow LoggedModel, once logged
        self._test_dataset: Any = None  # the test split's MLflow Dataset: metrics link to it
        self._resumed: Resumed | None = None  # the run train.resume continues, if any
        self._client: MlflowClient | None = None
        self._prev_sigterm: Any = None
        # Per-epoch metrics are queued so a database write never stalls the training loop;
        # every queued write is awaited before the run ends.
        self._epochs = EpochWriter()
        if self.enabled:
            self.tracking_uri = store.resolve_tracking_uri(cfg.tracking, cfg.get("paths"))

    # -- lifecycle
    def __enter__(self) -> Tracker:
        if not self.enabled:
            return self
        assert self.tracking_uri is not None
        client = store.open_client(self.tracking_uri)
        self._client = client
        reap_dead_runs(client, self.cfg.tracking.get("stale_after_s"))
        # Before the experiment is created: a refused resume leaves nothing behind.
        to_resume = run_to_resume(client, self.cfg.train.get("resume"), self.experiment_name)
        artifact_root = store.resolve_artifact_root(
            self.cfg.tracking, self.cfg.get("paths"), self.tracking_uri
        )
        self.experiment_id = store.ensure_experiment(client, self.experiment_name, artifact_root)
        self._start_run(client, self.experiment_id, to_resume)
        where = (self.run_name, self.run_id, self.experiment_name, self.tracking_uri)
        log.info("MLflow run %s (%s) in experiment %r at %s", *where)
        self._prev_sigterm = sigterm_raises()
        try:
            # The run a later train.resume of this directory continues.
            info = {"run_id": self.run_id, "experiment_id": self.experiment_id}
            info.update(experiment=self.experiment_name, tracking_uri=str(self.tracking_uri))
            write_run_file(self.run_dir, info)
            self._log_config()
        except BaseException as err:
            self._restore_sigterm()
            self._close_run(type(err), err)
            raise
        return self

    def _start_run(
        self, client: MlflowClient, experiment_id: str, to_resume: tuple[Run, Path] | None
    ) -> None:
        """Create the run, or reopen ``to_resume``; tag it with this process."""
        tags = run_tags(self.cfg, run_dir=self.run_dir)
        tags.update(mlflow_context_tags())
        tags.update(sweep_tags(experiment_id))
        tags.update(process_tags())
        if to_resume is None:
            self.run_name = derive_run_name(self.cfg)
            run = store.retry(
                lambda: client.create_run(experiment_id, run_name=self.run_name, tags=tags),
                what="create run",
            )
            self.run_id = run.info.run_id
        else:
            self._resumed = reopen(client, *to_resume, tags)
            self.run_id, self.run_name = self._resumed.run_id, self._resumed.run_name
        self.in_sweep = naming.SWEEP_TAG in tags

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> bool:
        held: list[int] = []
        if self.enabled and self.run_id is not None and self.status is None:
            with sigterm_deferred() as held:  # a SIGTERM now must not leave the run RUNNING
                self._close_run(exc_type, exc)
        self._restore_sigterm()
        if held and exc_type is None:
            raise Terminated(held[0])  # arrived while the run was being ended: deliver it now
        return False  # never swallow the exception

    def _close_run(self, exc_type: type[BaseException] | None, exc: BaseException | None) -> None:
        """Await the queued writes, then end the run FINISHED, KILLED or FAILED after ``exc``."""
        assert self._client is not None and self.run_id is not None
        tags: dict[str, str] = {}
        if exc_type is None:
            status = "FINISHED"
        elif issubclass(exc_type, KeyboardInterrupt):
            status = "KILLED"
            tags[STOP_REASON_TAG] = str(exc) or "KeyboardInterrupt"
        else:
            status = "FAILED"
            tags[ERROR_TAG] = f"{exc_type.__name__}: {exc}".strip()
        try:
            self._flush()
        except Exception as error:  # a lost epoch metric must not leave the run RUNNING
            log.error("queued MLflow writes failed: %s", error)
            if status == "FINISHED":
                status = "FAILED"
                tags[ERROR_TAG] = f"queued MLflow writes failed: {error}"
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
        config_json = atomic_write_text(
            self.run_dir / naming.CONFIG_FILE, typed_config_json(self.cfg)
        )
        self.log_artifact(config_json, naming.CONFIG_DIR)
        hydra_dir = self.run_dir / ".hydra"
        if hydra_dir.is_dir():
            self.log_artifact(hydra_dir, naming.HYDRA_DIR)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log extra params (values become strings, truncated to MLflow's limit)."""
        if self._active() is None:
            return
        from mlflow.entities import Param

        limit = store.MAX_PARAM_VAL_LENGTH
        values = {
            store.clean_key(k): store.truncate(param_value(v), limit) for k, v in params.items()
        }
        if self._resumed is not None:
            # MLflow params cannot change: changed values go to the tag advlab.resumed_changes.
            values, changed = new_params(self._resumed, values)
            if changed:
                log.info(
                    "resumed run %s: params changed since it started: %s", self.run_id, changed
                )
                self.set_tags({RESUMED_CHANGES_TAG: json.dumps(changed, sort_keys=True)})
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

    def _log_batch(self, what: str, *, params=(), tags=(), metrics=()) -> None:
        """One ``log_batch`` call (none if ``params``, ``tags`` and ``metrics`` are all empty)
        that also refreshes the heartbeat; see :meth:`_new_steps` for the metrics."""
        client = self._active()
        metrics = self._new_steps(metrics)
        if client is not None and (params or tags or metrics):
            batch = {"params": list(params), "tags": [*tags, *heartbeat_tags()], "metrics": metrics}
            store.retry(lambda: client.log_batch(self.run_id, **batch), what=what)

    def _new_steps(self, metrics: Sequence[Any]) -> list:
        """``metrics`` less the (key, step) pairs a resumed run already holds: the epochs the fit
        loop replays after a resume, and what the killed segment logged, appear once."""
        if self._resumed is None:
            return list(metrics)
        return [m for m in metrics if (m.key, m.step) not in self._resumed.steps]

    def log_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """Per-epoch metrics with step = epoch (1-based); usable as the fit loop's EpochCallback.
        Written in the background, at most every few seconds (:mod:`.epoch_writer`)."""
        client = self._active()
        if client is not None:
            assert self.run_id is not None
            items = self._new_steps(_metric_list(metrics, int(epoch)))
            self._epochs.add(client, self.run_id, items)

    def _flush(self) -> None:
        """Write the epochs held back and wait for every queued write (raises the first error)."""
        if self._client is not None and self.run_id is not None:
            self._epochs.flush(self._client, self.run_id)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Log a file, or a directory's contents, under ``artifact_path`` (None: the root)."""
        client = self._active()
        if client is None:
            return
        assert self.run_id is not None
        store.upload(client, self.run_id, path, artifact_path)

    def log_datasets(self, data: Any, cfg_data: DictConfig, cache_dir: Path) -> None:
        """The train, validation and test splits as the run's dataset inputs (see
        :mod:`~advlab.tracking.datasets`); the evaluation's metrics then link to the test one."""
        client = self._active()
        if client is None:
            return
        from advlab.tracking.datasets import dataset_inputs

        inputs = dataset_inputs(data, cfg_data, cache_dir)
        test = inputs.get("test")
        self._test_dataset = None if test is None else test.dataset
        batch = list(inputs.values())
        store.retry(lambda: client.log_inputs(self.run_id, datasets=batch), what="log inputs")

    def log_model(self, model: Any, data: Any) -> None:
        """The trained model as the run's MLflow PyTorch model (a LoggedModel, see
        :mod:`~advlab.tracking.logged_model`); the evaluation's metrics then link to it."""
        client = self._active()
        if client is None:
            return
        from advlab.tracking.logged_model import log_pytorch_model

        assert self.run_id is not None
        self.model_id = log_pytorch_model(model, data, client=client, run_id=self.run_id)

    def log_evaluation(self, evaluation: Any, eps_grid: Sequence[float]) -> None:
        """The evaluation's metrics, its robustness table and the files it wrote.

        Metrics: :func:`advlab.attacks.evaluate.evaluation_metrics` (``clean_acc`` at step 0,
        ``robust_acc/<attack>/eps_<e>``, ``asr/...`` and ``escalation/...`` at step = index of
        eps in ``eps_grid``, so MLflow's chart draws the eps curve), linked to the run's logged
        model and test dataset when those were logged. Artifacts: an MLflow table
        ``results/robustness_table.json`` and ``evaluation.artifacts`` as they are on disk, PNGs
        under ``grids/``, the rest under ``results/``. The checks' tags are the pipeline's.
        """
        client = self._active()
        if client is None:
            return
        from advlab.attacks.evaluate import evaluation_metrics

        ds = self._test_dataset
        link = {"model_id": self.model_id, "dataset": None if ds is None else (ds.name, ds.digest)}
        metrics = [
            metric
            for key, value in evaluation_metrics(evaluation).items()
            for metric in _metric_list({key: value}, _eps_step(key, eps_grid), **link)
        ]
        self._log_batch("log robustness", metrics=metrics)
        table, table_path = evaluation.table, naming.ROBUSTNESS_TABLE
        store.retry(lambda: client.log_table(self.run_id, table, table_path), what="log table")
        for path in evaluation.artifacts:
            path = Path(path)
            is_grid = path.suffix.lower() == ".png"
            self.log_artifact(path, naming.GRIDS_DIR if is_grid else naming.RESULTS_DIR)

    def set_description(self, markdown: str) -> None:
        """The run's description in the MLflow UI (tag ``mlflow.note.content``), and its logged
        model's, so the model's page says what it was measured to do."""
        self.set_tags({naming.MLFLOW_NOTE_TAG: markdown})
        client = self._active()
        if client is not None and self.model_id is not None:
            note = {naming.MLFLOW_NOTE_TAG: markdown}
            store.retry(lambda: client.set_logged_model_tags(self.model_id, note), what="tag")

    def log_run_info(self, facts: Mapping[str, str]) -> None:
        """``results/run_info.json`` (facts :data:`advlab.naming.INFO_KEYS`), run dir + artifact."""
        path = atomic_write_text(self.run_dir / naming.RUN_INFO_JSON, json.dumps(dict(facts)))
        self.log_artifact(path, naming.RESULTS_DIR)


def _metric_list(
    metrics: Mapping[str, Any],
    step: int,
    *,
    model_id: str | None = None,
    dataset: tuple[str, str] | None = None,
) -> list:
    """MLflow metrics at ``step``, linked to a logged model and a (name, digest) dataset."""
    from mlflow.entities import Metric

    name, digest = dataset or (None, None)
    ts = int(time.time() * 1000)
    out = []
    for key, value in metrics.items():
        try:
            v = float(value)
        except (TypeError, ValueError):
            log.warning("metric %r=%r is not a number; not logged", key, value)
            continue
        out.append(
            Metric(
                store.clean_key(key),
                v,
                ts,
                int(step),
                model_id=model_id,
                dataset_name=name,
                dataset_digest=digest,
            )
        )
    return out


def _eps_step(key: str, eps_grid: Sequence[float]) -> int:
    """The step of metric ``key``: the index in ``eps_grid`` of its eps (0: no eps in its name)."""
    parsed = naming.parse_eps_metric(key)
    if parsed is not None:
        eps = parsed[2]
    else:
        by_key = {
            name(e): float(e)
            for e in eps_grid
            for name in (
                naming.escalation_points_key,
                naming.escalation_flips_key,
                naming.certified_acc_key,
            )
        }
        if key not in by_key:
            return 0
        eps = by_key[key]
    for i, e in enumerate(eps_grid):
        if math.isclose(float(e), eps, rel_tol=1e-9, abs_tol=1e-9):
            return i
    raise ConfigError(f"eps {format_eps(eps)} of metric {key} is not in eval.eps {list(eps_grid)}")
