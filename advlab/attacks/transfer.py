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
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig
from torch import nn

from advlab.attacks.runner import eval_mode, load_points
from advlab.attacks.tables import results_file
from advlab.attacks.zoo import build_factories
from advlab.errors import ConfigError
from advlab.fileio import atomic_write_text
from advlab.models.sources import resolve_checkpoint
from advlab.naming import TRANSFER_CSV, TRANSFER_JSON

log = logging.getLogger(__name__)

THIS_MODEL = "this_run"  # name of the evaluated model in the matrix
TRANSFER_COLUMNS = ["attack", "eps", "source", "target", "accuracy", "n"]


def load_sources(
    refs: list[str],
    data: Any,
    device: torch.device,
    checkpoints: Mapping[str, Path] | None = None,
) -> dict[str, nn.Module]:
    """Load every ``eval.transfer_from`` model and check it fits the evaluated data's shape.

    ``checkpoints`` maps each ref to its file (:func:`advlab.models.sources.resolve_sources`);
    without it refs must be paths.
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
    rows = []
    for name, factory in factories.items():
        if "stop_on_success" in getattr(factory, "keywords", {}):
            # an example stopped at its first success barely crosses the source's boundary and
            # transfers worse than PGD's last iterate: transfer crafts with every step
            factory = partial(factory, stop_on_success=False)
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
    indices: np.ndarray,
    seed: int,
    device: torch.device,
    out_dir: Path,
    checkpoints: Mapping[str, Path] | None = None,
) -> tuple[pd.DataFrame, list[Path]]:
    """Run :func:`transfer_matrix` for ``eval.transfer_from`` + the evaluated model on the test
    points ``indices`` (those of the robustness evaluation, ``Evaluation.indices``); write
    transfer.csv and transfer.json under ``out_dir`` and return the frame and those two paths.

    ``cfg_eval`` and ``attacks`` are as :func:`advlab.validate.check_eval` left them (eps
    sorted); ``checkpoints``: see :func:`load_sources`.
    """
    sources = load_sources([str(r) for r in cfg_eval.transfer_from], data, device, checkpoints)
    x, y = load_points(data, indices, device)
    frame = transfer_matrix(
        {THIS_MODEL: model, **sources},
        x,
        y,
        build_factories(attacks, int(data.num_classes)),
        list(cfg_eval.eps),
        seed=seed,
        batch_size=int(cfg_eval.batch_size),
        num_classes=int(data.num_classes),
    )
    out_dir = Path(out_dir)
    written = [
        atomic_write_text(results_file(out_dir, TRANSFER_CSV), frame.to_csv(index=False)),
        atomic_write_text(
            results_file(out_dir, TRANSFER_JSON),
            json.dumps(frame.to_dict(orient="records"), indent=2),
        ),
    ]
    for (attack, eps), _ in frame.groupby(["attack", "eps"]):
        log.info(
            "transfer %s eps %g/255 (rows: source, columns: target)\n%s",
            attack,
            eps,
            np.round(as_matrix(frame, attack, eps), 3).to_string(),
        )
    return frame, written
