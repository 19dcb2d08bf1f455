"""Transfer attacks: craft adversarial examples on one model, measure accuracy on another.

``eval.transfer_from`` lists saved models: a ``model.pt`` written by
:func:`advlab.models.io.save_model`, a run directory holding ``model/model.pt``, or the MLflow
run id of an advlab run (its run directory when it is on this machine, else its
``model/model.pt`` artifact, downloaded from the tracking store). Together
with the evaluated model they form the set M; for every attack in ``eval.attacks`` that has a budget
and every eps > 0 in ``eval.eps``, each model in M crafts adversarial examples on *all* evaluated
points and every model in M is scored on them: a source x target accuracy matrix (diagonal =
white-box).
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from advlab.config import PROJECT_ROOT
from advlab.errors import ConfigError

log = logging.getLogger(__name__)

THIS_MODEL = "this_run"  # name of the evaluated model in the matrix
TRANSFER_COLUMNS = ["attack", "eps", "source", "target", "accuracy", "n"]


RUN_ID = re.compile(r"[0-9a-f]{32}")  # how MLflow spells a run id
MODEL_ARTIFACT = "model/model.pt"  # where advlab logs the trained model of a run


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
        for candidate in (path / MODEL_ARTIFACT, path / "model.pt"):
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

    from advlab.tracking import RUN_DIR_TAG, open_client

    client = open_client(tracking_uri)
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


def load_sources(
    refs: list[str],
    data: Any,
    device: torch.device,
    checkpoints: Mapping[str, Path] | None = None,
) -> dict[str, nn.Module]:
    """Load every ``eval.transfer_from`` model and check it fits the evaluated data's shape.

    ``checkpoints`` maps each ref to its file (:func:`resolve_sources`); without it refs must be
    paths.
    """
    from advlab.models.io import load_model

    checkpoints = checkpoints or {}
    models: dict[str, nn.Module] = {}
    expected = {
        "in_channels": int(data.channels),
        "image_size": [int(s) for s in data.image_size],
        "num_classes": int(data.num_classes),
    }
    for ref in refs:
        path = checkpoints.get(ref) or resolve_checkpoint(ref)
        model, info = load_model(path, map_location="cpu")
        spec = dict(info.get("data_spec", info))
        for key, want in expected.items():
            got = spec.get(key)
            got = [int(s) for s in got] if isinstance(got, list | tuple) else got
            if got is not None and got != want:
                raise ConfigError(
                    f"eval.transfer_from: {ref!r} was trained with {key}={got}, but the evaluated "
                    f"data has {key}={want}"
                )
        models[str(ref)] = model.to(device).eval()
    return models


def transfer_matrix(
    models: Mapping[str, nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    factories: Mapping[str, Any],
    eps_list: list[float],
    *,
    seed: int,
    batch_size: int,
    num_classes: int,
) -> pd.DataFrame:
    """Accuracy of every target on adversarial examples crafted on every source.

    ``x``: float (N, C, H, W) in [0, 1] on the models' device; ``y``: int64 (N,). ``factories``:
    attack partials (``instantiate(cfg.attacks[name])``); eps in 1/255 units. Returns a tidy
    frame with TRANSFER_COLUMNS (``eps`` 0 and minimum-norm attacks are skipped).
    """
    from advlab.attacks.evaluate import eval_mode

    rows = []
    for name, factory in factories.items():
        for eps in eps_list:
            if eps <= 0:
                continue
            for source_name, source in models.items():
                with eval_mode(source):
                    atk = factory(source, eps=eps, seed=seed, num_classes=num_classes)
                    if atk.advlab_budget is None:
                        log.info("transfer: %s has no budget (minimum-norm); skipped", name)
                        break
                    x_adv = torch.cat(
                        [
                            atk(x[s : s + batch_size], y[s : s + batch_size]).detach()
                            for s in range(0, len(x), batch_size)
                        ]
                    )
                for target_name, target in models.items():
                    with eval_mode(target), torch.no_grad():
                        pred = torch.cat(
                            [
                                target(x_adv[s : s + batch_size]).argmax(dim=1)
                                for s in range(0, len(x), batch_size)
                            ]
                        )
                    rows.append(
                        {
                            "attack": name,
                            "eps": float(eps),
                            "source": source_name,
                            "target": target_name,
                            "accuracy": float((pred == y).float().mean()),
                            "n": len(y),
                        }
                    )
    return pd.DataFrame(rows, columns=TRANSFER_COLUMNS)


def as_matrix(frame: pd.DataFrame, attack: str, eps: float) -> pd.DataFrame:
    """The source (rows) x target (columns) accuracy matrix of one attack at one eps."""
    part = frame[(frame["attack"] == attack) & (frame["eps"] == float(eps))]
    return part.pivot(index="source", columns="target", values="accuracy")


def evaluate_transfer(
    model: nn.Module,
    data: Any,
    cfg_eval: DictConfig,
    attacks: DictConfig,
    *,
    x: torch.Tensor,
    y: torch.Tensor,
    seed: int,
    device: torch.device,
    out_dir: Path,
    checkpoints: Mapping[str, Path] | None = None,
) -> tuple[pd.DataFrame, list[Path]]:
    """Run :func:`transfer_matrix` for ``eval.transfer_from`` + the evaluated model; write
    transfer.csv and transfer.json under ``out_dir``. ``checkpoints``: see :func:`load_sources`."""
    sources = load_sources([str(r) for r in cfg_eval.transfer_from], data, device, checkpoints)
    models = {THIS_MODEL: model, **sources}
    factories = {name: instantiate(attacks[name]) for name in attacks}
    frame = transfer_matrix(
        models,
        x,
        y,
        factories,
        sorted({float(e) for e in cfg_eval.eps}),
        seed=seed,
        batch_size=int(cfg_eval.batch_size),
        num_classes=int(data.num_classes),
    )
    written = []
    for name, text in (
        ("transfer.csv", frame.to_csv(index=False)),
        ("transfer.json", json.dumps(frame.to_dict(orient="records"), indent=2)),
    ):
        path = Path(out_dir) / name
        tmp = path.with_name(name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
        written.append(path)
    for (attack, eps), _ in frame.groupby(["attack", "eps"]):
        log.info(
            "transfer %s eps %g/255 (rows: source, columns: target)\n%s",
            attack,
            eps,
            np.round(as_matrix(frame, attack, eps), 3).to_string(),
        )
    return frame, written
