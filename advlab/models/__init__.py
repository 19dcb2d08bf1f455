"""Models: the zoo (one factory per ``model=`` option), building from config, summaries.

Every model's first layer is :class:`~advlab.models.layers.Normalize`; models take float
(N, C, H, W) pixels in [0, 1] and return logits (N, num_classes).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from advlab.errors import ConfigError
from advlab.models.layers import BasicBlock, Normalize
from advlab.models.zoo import InputSpec
from advlab.validate import check_model

if TYPE_CHECKING:
    from advlab.data.base import DataSplits

__all__ = [
    "InputSpec",
    "Normalize",
    "build_model",
    "build_model_from_spec",
    "count_params",
    "layer_table",
]


def build_model_from_spec(cfg_model: DictConfig | Mapping[str, Any], spec: InputSpec) -> nn.Module:
    """Instantiate the ``_partial_`` model config and call it with the data's ``spec``."""
    import hydra.utils

    node = cfg_model if isinstance(cfg_model, DictConfig) else OmegaConf.create(dict(cfg_model))
    target = node.get("_target_")
    if not target:
        raise ConfigError(
            "model: the config has no _target_ (pick an option, e.g. model=course_cnn)"
        )
    try:
        # _convert_="all": factories receive plain lists, never ListConfig.
        factory = hydra.utils.instantiate(node, _convert_="all")
    except Exception as exc:  # Hydra wraps import/argument errors in its own exception types
        raise ConfigError(f"model._target_={target}: cannot instantiate ({exc})") from exc
    if not callable(factory):
        raise ConfigError(f"model._target_={target}: expected _partial_: true (a model factory)")
    try:
        model = factory(spec)
    except TypeError as exc:  # e.g. a key the factory does not accept
        raise ConfigError(f"model._target_={target}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model._target_={target}: returned {type(model).__name__}, not a module")
    return model


def build_model(cfg_model: DictConfig, data: DataSplits) -> nn.Module:
    """Build the model chosen by ``cfg.model`` sized from ``data`` (channels, image size, classes)
    with the training split's per-channel mean/std in its first layer.

    ``cfg_model`` is checked with :func:`advlab.validate.check_model` first, so a Python-API
    caller gets the pipeline's one-line ConfigError for an out-of-range value.
    """
    check_model(cfg_model)
    spec = InputSpec(data.channels, data.image_size, data.num_classes, data.mean, data.std)
    return build_model_from_spec(cfg_model, spec)


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters (``requires_grad``), each shared tensor counted once."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def layer_table(model: nn.Module, input_shape: tuple[int, ...]) -> str:
    """A plain-text table of the model's leaf layers: name, type, output shape, parameters.

    ``input_shape`` is (C, H, W) (a batch of one is used) or (N, C, H, W). The model runs once on
    zeros in eval mode without gradients; its train/eval mode is restored afterwards.
    """
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 3:
        shape = (1, *shape)
    rows: list[tuple[str, str, str, str]] = []
    hooks = []

    def _hook(name: str):
        def fn(module: nn.Module, _inputs: Any, output: Any) -> None:
            out_shape = tuple(output.shape[1:]) if isinstance(output, torch.Tensor) else "?"
            n = sum(p.numel() for p in module.parameters() if p.requires_grad)
            rows.append((name, type(module).__name__, str(out_shape), f"{n:,}"))

        return fn

    blocks: list[str] = []
    for name, module in model.named_modules():
        if not name or any(name.startswith(b + ".") for b in blocks):
            continue
        if isinstance(module, BasicBlock):
            # A residual block is one row: its output includes the skip connection, which no
            # inner layer shows.
            blocks.append(name)
            hooks.append(module.register_forward_hook(_hook(name)))
        elif not any(True for _ in module.children()):
            hooks.append(module.register_forward_hook(_hook(name)))
    was_training = model.training
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        model.eval()
        with torch.no_grad():
            out = model(torch.zeros(shape, device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    header = ("layer", "type", "output shape", "params")
    total = count_params(model)
    footer = ("total", "", str(tuple(out.shape[1:])), f"{total:,} trainable")
    widths = [max(len(r[i]) for r in [header, *rows, footer]) for i in range(4)]

    def fmt(r: tuple[str, ...]) -> str:
        return "  ".join(
            c.rjust(widths[i]) if i == 3 else c.ljust(widths[i]) for i, c in enumerate(r)
        ).rstrip()

    rule = "-" * len(fmt(header))
    return "\n".join([fmt(header), rule, *(fmt(r) for r in rows), rule, fmt(footer)])
