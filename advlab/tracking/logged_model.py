"""The trained model as an MLflow PyTorch model: a LoggedModel of the run (the "Logged models" tab).

``mlflow.pytorch.log_model(..., name="model")`` with a signature inferred from a few real test
images (float32 in [0, 1], shape (N, C, H, W): the model normalises them itself, as its first
layer) and the logits they give, and those images as the input example. It is saved in MLflow's
``pt2`` format (a ``torch.export`` graph, batch size free): ``mlflow.pytorch.load_model(
"models:/<model_id>")`` loads it without advlab installed and runs no pickled code. The first
export in a process costs about 5 s on a CPU (importing ``torch.export``), later ones under 1 s.
The evaluation's metrics are linked to it and to the test dataset
(:meth:`advlab.tracking.Tracker.log_evaluation`).

``model/model.pt`` (:data:`advlab.naming.MODEL_ARTIFACT`) stays beside it: the audit and the
transfer attacks read that file.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from advlab import naming

log = logging.getLogger(__name__)

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"  # MLflow's variable; read by resolve_tracking_uri too
EXAMPLE_IMAGES = 4  # test images in the input example (and behind the inferred signature)


def input_example(data: Any, n: int = EXAMPLE_IMAGES) -> np.ndarray:
    """The first ``n`` test images as the model takes them: float32 in [0, 1], (N, C, H, W)."""
    images = data.test.images[:n]
    return (images.astype(np.float32) / naming.PIXEL_LEVELS).astype(np.float32)


@contextlib.contextmanager
def _tracking_uri(uri: str) -> Iterator[None]:
    """``mlflow.pytorch.log_model`` writes to the process's tracking URI: point it at the run's
    store for the call only. MLflow's ``set_tracking_uri`` also writes $MLFLOW_TRACKING_URI, which
    the next job of a sweep in this process would take as its store, so both the URI MLflow holds
    and that variable are put back exactly as they were (unset stays unset)."""
    import mlflow
    from mlflow.tracking._tracking_service import utils as tracking_utils

    held, env = tracking_utils._tracking_uri, os.environ.get(TRACKING_URI_ENV)
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(held)  # None: MLflow unsets the variable
        if env is not None:
            os.environ[TRACKING_URI_ENV] = env
        else:
            os.environ.pop(TRACKING_URI_ENV, None)


def log_pytorch_model(model: Any, data: Any, *, client: Any, run_id: str) -> str:
    """Log ``model`` (in eval mode, on the CPU) as the run's MLflow PyTorch model; its model id.

    The LoggedModel is created in the run's experiment first (``mlflow.pytorch.log_model`` alone
    would put it in the process's active experiment, with no run active: ``Default``)."""
    import mlflow.pytorch
    import torch
    from mlflow.models import infer_signature

    run = client.get_run(run_id)
    created = client.create_logged_model(
        run.info.experiment_id,
        name=naming.LOGGED_MODEL_NAME,
        source_run_id=run_id,
        params=dict(run.data.params),  # as log_model does: the config that trained it
    )

    example = input_example(data)
    cpu = next(model.parameters()).device.type == "cpu"
    logged = model if cpu else _cpu_copy(model)
    was_training = logged.training
    logged.eval()
    try:
        with torch.no_grad():
            logits = logged(torch.from_numpy(example)).numpy()
        signature = infer_signature(example, logits)
        with _tracking_uri(client.tracking_uri):
            info = mlflow.pytorch.log_model(
                logged,
                name=naming.LOGGED_MODEL_NAME,
                model_id=created.model_id,
                # torch.export's graph: loads without advlab's code and runs none on load.
                serialization_format="pt2",
                signature=signature,
                input_example=example,
                run_id=run_id,
                # Stated, not inferred (inference re-imports the model in a subprocess); the
                # exported graph needs torch only.
                pip_requirements=[f"torch=={torch.__version__}"],
            )
    finally:
        logged.train(was_training)
    log.info("MLflow model %s logged (models:/%s)", naming.LOGGED_MODEL_NAME, info.model_id)
    return str(info.model_id)


def _cpu_copy(model: Any) -> Any:
    import copy

    return copy.deepcopy(model).cpu()
