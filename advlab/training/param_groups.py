"""Optimizer parameter groups: weight decay on conv/linear weights only.

Biases, batch-norm/layer-norm scales and shifts, and every other parameter get no decay: shrinking
them toward zero does not regularise the function the network computes, it only distorts it
(the convention of karpathy/nanoGPT ``configure_optimizers``).
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from advlab.errors import ConfigError

# Layers whose ``weight`` is a multiplicative kernel that weight decay should shrink.
DECAYED_LAYERS: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Split ``model``'s trainable parameters into a ``decay`` and a ``no_decay`` group.

    Returns ``[{"name": "decay", "params": [...], "weight_decay": weight_decay},
    {"name": "no_decay", "params": [...], "weight_decay": 0.0}]`` without empty groups. Each
    parameter appears once even if shared between modules.
    """
    decay_ids: set[int] = set()
    for module in model.modules():
        if isinstance(module, DECAYED_LAYERS):
            weight = getattr(module, "weight", None)
            if isinstance(weight, nn.Parameter):
                decay_ids.add(id(weight))
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (decay if id(p) in decay_ids else no_decay).append(p)
    groups = [
        {"name": "decay", "params": decay, "weight_decay": float(weight_decay)},
        {"name": "no_decay", "params": no_decay, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, cfg_optimizer: DictConfig) -> torch.optim.Optimizer:
    """``hydra.utils.instantiate(cfg_optimizer)(param_groups(model, weight_decay))``.

    ``cfg_optimizer`` is a ``_partial_: true`` node (``optimizer=sgd|adam|adamw``); its
    ``weight_decay`` goes to the decay group only. The values are trusted:
    :func:`advlab.validate.check_optimizer` has checked them.
    """
    import hydra.utils

    groups = param_groups(model, float(cfg_optimizer.get("weight_decay", 0.0)))
    if not groups:
        raise ConfigError("optimizer: the model has no trainable parameters")
    target = cfg_optimizer.get("_target_")
    try:
        # _convert_="all": betas etc. become plain lists, so optimizer.state_dict() stays loadable
        # with torch.load(weights_only=True).
        factory = hydra.utils.instantiate(cfg_optimizer, _convert_="all")
        return factory(groups)
    except Exception as exc:  # Hydra wraps bad targets / arguments in its own error types
        cfg = OmegaConf.to_container(cfg_optimizer) if isinstance(cfg_optimizer, DictConfig) else {}
        raise ConfigError(
            f"optimizer._target_={target}: cannot build it from {cfg} ({exc})"
        ) from exc
