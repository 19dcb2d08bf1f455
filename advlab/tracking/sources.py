"""Saved models named by ``eval.transfer_from``: a path, a run directory, or an MLflow run id.

An MLflow run id is looked up in the tracking store: the model is taken from the run's directory
when that is on this machine, else its ``model/model.pt`` artifact is downloaded. The pipeline
resolves every entry before a run is opened, so a typo costs no training.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from advlab.config import PROJECT_ROOT
from advlab.errors import ConfigError
from advlab.naming import MODEL_ARTIFACT, MODEL_FILE, RUN_DIR_TAG
from advlab.tracking.store import read_client

RUN_ID = re.compile(r"[0-9a-f]{32}")  # how MLflow spells a run id


def resolve_checkpoint(
    ref: str, *, tracking_uri: str | None = None, download_dir: Path | None = None
) -> Path:
    """Path of the saved model named by an ``eval.transfer_from`` entry.

    A file is taken as is; a directory must hold ``model/model.pt`` (a run directory) or
    ``model.pt``. Relative paths resolve against the project root, not Hydra's run directory.
    Anything else that looks like an MLflow run id is looked up in ``tracking_uri`` (see
    :func:`_checkpoint_of_run`; downloads go under ``download_dir``).
    """
    path = Path(str(ref)).expanduser()
    if not path.is_absolute():
        path = PROJECT_ROOT / path
    if path.is_file():
        return path
    if path.is_dir():
        for candidate in (path / MODEL_ARTIFACT, path / MODEL_FILE):
            if candidate.is_file():
                return candidate
        raise ConfigError(
            f"eval.transfer_from: {ref!r} is a directory without model/model.pt or model.pt "
            "(give a run directory or a model file written by advlab)"
        )
    if tracking_uri is not None and RUN_ID.fullmatch(str(ref)):
        return _checkpoint_of_run(str(ref), tracking_uri, download_dir)
    raise ConfigError(
        f"eval.transfer_from: {ref!r} not found (resolved to {path}); give a run directory, a "
        "model.pt checkpoint or an MLflow run id"
    )


def _checkpoint_of_run(run_id: str, tracking_uri: str, download_dir: Path | None) -> Path:
    """The model of MLflow run ``run_id``: ``<advlab.run_dir>/model/model.pt`` when that run
    directory is on this machine, else its ``model/model.pt`` artifact, downloaded."""
    from mlflow.exceptions import MlflowException

    client = read_client(tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise ConfigError(
            f"eval.transfer_from: no MLflow run {run_id} in {tracking_uri} (tracking.uri)"
        ) from None
    run_dir = run.data.tags.get(RUN_DIR_TAG)
    if run_dir and (Path(run_dir) / MODEL_ARTIFACT).is_file():
        return Path(run_dir) / MODEL_ARTIFACT
    if download_dir is None:
        download_dir = Path(tempfile.mkdtemp(prefix="advlab-transfer-"))
    target = Path(download_dir) / run_id
    target.mkdir(parents=True, exist_ok=True)
    try:
        return Path(client.download_artifacts(run_id, MODEL_ARTIFACT, dst_path=str(target)))
    except (MlflowException, OSError):
        raise ConfigError(
            f"eval.transfer_from: run {run_id} has no {MODEL_ARTIFACT} artifact and its run "
            f"directory {run_dir} is not on this machine (was tracking.log_model false?)"
        ) from None


def resolve_sources(
    refs: list[str], *, tracking_uri: str | None = None, download_dir: Path | None = None
) -> dict[str, Path]:
    """``{ref: checkpoint}`` for every ``eval.transfer_from`` entry; a bad one is a
    :class:`ConfigError`. The pipeline calls this before training, so a typo costs no run."""
    return {
        ref: resolve_checkpoint(ref, tracking_uri=tracking_uri, download_dir=download_dir)
        for ref in refs
    }
