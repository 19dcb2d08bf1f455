"""Save a trained model with everything needed to rebuild it; load it back safely.

The file is a plain ``torch.save`` dict of tensors and built-in types, so it loads with
``torch.load(weights_only=True)`` (no pickled code runs on load)::

    {"format": 1, "state_dict": ..., "model_cfg": {"_target_": ..., ...}, "data_spec": {...}}

``data_spec`` holds ``in_channels``, ``image_size`` (H, W), ``num_classes``, ``mean``, ``std``
(per channel, pixel units in [0, 1]) and ``class_names``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from advlab.errors import DataError
from advlab.fileio import atomic_path

FORMAT_VERSION = 1
SPEC_KEYS = ("in_channels", "image_size", "num_classes", "mean", "std")


def _plain(value: Any) -> Any:
    """Config values as built-in types only (weights_only loading refuses anything else)."""
    if isinstance(value, DictConfig):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    return value


def save_model(path: Path, model: nn.Module, cfg_model: DictConfig | dict, data_spec: dict) -> None:
    """Write ``model``'s weights plus its config and data spec to ``path`` atomically.

    ``data_spec`` must hold ``in_channels``, ``image_size``, ``num_classes``, ``mean`` and ``std``
    (``class_names`` recommended); weights are stored on the CPU.
    """
    missing = [k for k in SPEC_KEYS if k not in data_spec]
    if missing:
        raise ValueError(f"save_model: data_spec lacks {missing} (needed to rebuild the model)")
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    payload = {
        "format": FORMAT_VERSION,
        "state_dict": state,
        "model_cfg": _plain(cfg_model),
        "data_spec": _plain(dict(data_spec)),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_model(path: Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model saved by :func:`save_model`; returns ``(model in eval mode, spec)``.

    ``spec`` is the saved data spec (``in_channels``, ``image_size`` as an (H, W) tuple,
    ``num_classes``, ``mean``, ``std``, ``class_names``, any extra keys) plus ``model_cfg`` (the
    model config as a dict). Loads with ``weights_only=True``.
    """
    from advlab.models import InputSpec, build_model_from_spec

    path = Path(path)
    if not path.is_file():
        raise DataError(f"model file {path}: not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # corrupt file, or one holding objects weights_only refuses
        raise DataError(f"model file {path}: cannot be read ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        raise DataError(f"model file {path}: not an advlab model file (format {FORMAT_VERSION})")
    spec = dict(payload["data_spec"])
    spec["image_size"] = tuple(int(s) for s in spec["image_size"])
    input_spec = InputSpec(**{key: spec[key] for key in SPEC_KEYS})
    model = build_model_from_spec(payload["model_cfg"], input_spec)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise DataError(f"model file {path}: weights do not match its config ({exc})") from exc
    model.to(map_location).eval()
    return model, {**spec, "model_cfg": payload["model_cfg"]}
