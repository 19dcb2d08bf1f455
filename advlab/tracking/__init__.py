"""MLflow tracking: where advlab's runs are recorded and how they are started, logged and ended.

- :mod:`~advlab.tracking.store`: the tracking URI and artifact root, opening the store safely
  (SQLite file lock, retries), experiments, ending runs, attaching files to ended runs.
- :mod:`~advlab.tracking.metadata`: what a run says about itself (params, run name, ``advlab.*``
  tags, the facts of ``results/run_info.json``, the sweep it belongs to); writes nothing.
- :mod:`~advlab.tracking.datasets`: the train/val/test splits as MLflow dataset inputs.
- :mod:`~advlab.tracking.logged_model`: the trained model as an MLflow PyTorch model (LoggedModel).
- :mod:`~advlab.tracking.summary`: the run's description (markdown) in the MLflow UI.
- :mod:`~advlab.tracking.tracker`: :class:`Tracker`, one run from start to its terminal status.
- :mod:`~advlab.tracking.signals`: SIGTERM raised as :class:`Terminated`, so runs end KILLED.
- :mod:`~advlab.tracking.sources`: ``eval.transfer_from`` entries (paths or run ids) -> model files.
- :mod:`~advlab.tracking.liveness`: host, pid and heartbeat tags; ending runs whose process is gone.
- :mod:`~advlab.tracking.resume`: ``train.resume`` continues the same MLflow run.
- :mod:`~advlab.tracking.ui`: links that open the MLflow UI on a run or an experiment's runs.

Every MLflow write goes through this package: a run's by :class:`Tracker` (and
:func:`attach_artifact` once it has ended, for the PDF report), a sweep's parent run by
:mod:`advlab.sweep_callback` with the store functions here. mlflow is imported inside functions,
so importing this package stays cheap. Every recorded name (tag, metric, artifact path) comes
from :mod:`advlab.naming`.
"""

from advlab.tracking.liveness import process_tags, reap_dead_runs
from advlab.tracking.metadata import (
    ENV_PARENT_RUN_ID,
    ENV_SWEEP_ID,
    command_line,
    derive_run_name,
    flatten_config,
    git_state,
    run_tags,
    sweep_id_from_dir,
)
from advlab.tracking.signals import Terminated, restore_sigterm, sigterm_raises
from advlab.tracking.sources import resolve_checkpoint, resolve_sources
from advlab.tracking.store import (
    MAX_PARAM_VAL_LENGTH,
    MAX_TAG_VAL_LENGTH,
    attach_artifact,
    end_run,
    ensure_experiment,
    open_client,
    resolve_artifact_root,
    resolve_tracking_uri,
    retry,
)
from advlab.tracking.tracker import Tracker
from advlab.tracking.ui import serve_command, ui_link

__all__ = [
    "ENV_PARENT_RUN_ID",
    "ENV_SWEEP_ID",
    "MAX_PARAM_VAL_LENGTH",
    "MAX_TAG_VAL_LENGTH",
    "Terminated",
    "Tracker",
    "attach_artifact",
    "command_line",
    "derive_run_name",
    "end_run",
    "ensure_experiment",
    "flatten_config",
    "git_state",
    "open_client",
    "process_tags",
    "reap_dead_runs",
    "resolve_artifact_root",
    "resolve_checkpoint",
    "resolve_sources",
    "resolve_tracking_uri",
    "restore_sigterm",
    "retry",
    "run_tags",
    "serve_command",
    "sigterm_raises",
    "sweep_id_from_dir",
    "ui_link",
]
