"""A model as the list of layers the bounds walk through, or a clear refusal.

:func:`layers` flattens ``nn.Sequential`` nesting into a list of :class:`Layer` (a supported module
and its dotted name in the model, for error messages) and :class:`Residual` (a ResNet
:class:`~advlab.models.layers.BasicBlock`: two branches whose outputs are added; the ReLU after
the sum is a layer of its own). Anything else is refused with an :class:`~advlab.errors.AttackError`
naming the layer, and so is a model with any module in training mode.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from advlab.errors import AttackError
from advlab.models.layers import BasicBlock, Normalize

# Maps that are linear plus a constant; the bounds treat them exactly.
AFFINE: tuple[type[nn.Module], ...] = (
    Normalize,
    nn.Linear,
    nn.Conv2d,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
)
# Shape changes and eval-mode no-ops: the bounds pass through unchanged.
PASS_THROUGH: tuple[type[nn.Module], ...] = (
    nn.Flatten,
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
)
# Non-decreasing nonlinear maps: an interval goes to [f(lo), f(hi)].
MONOTONE: tuple[type[nn.Module], ...] = (nn.ReLU, nn.Sigmoid, nn.Tanh, nn.MaxPool2d)
SUPPORTED = AFFINE + PASS_THROUGH + MONOTONE


@dataclass(frozen=True)
class Layer:
    """One supported module and its dotted name in the model (``"stage1.0.conv1"``)."""

    name: str
    module: nn.Module


@dataclass(frozen=True)
class Residual:
    """``main(x) + shortcut(x)``: the sum inside a BasicBlock, before its final ReLU."""

    name: str
    main: tuple[Node, ...]
    shortcut: tuple[Node, ...]


Node = Layer | Residual


def supported_names() -> str:
    """The supported layer types, comma-separated, for messages and docs."""
    return ", ".join([t.__name__ for t in SUPPORTED] + ["Sequential", "BasicBlock"])


def layers(model: nn.Module) -> tuple[Node, ...]:
    """``model`` as a flat tuple of nodes (eval mode required); AttackError for anything else."""
    if any(m.training for m in model.modules()):
        raise AttackError(
            "certify: the model is in training mode (call model.eval(): dropout and batch norm "
            "must use their inference behaviour)"
        )
    return walk(model)


def walk(model: nn.Module) -> tuple[Node, ...]:
    """``model`` as a flat tuple of nodes, whatever its mode; AttackError naming a layer it
    cannot bound."""
    return _walk(model, "")


def _walk(module: nn.Module, name: str) -> tuple[Node, ...]:
    if type(module) is nn.Sequential:
        out: list[Node] = []
        for child_name, child in module.named_children():
            out.extend(_walk(child, f"{name}.{child_name}" if name else child_name))
        return tuple(out)
    if type(module) is BasicBlock:
        # BasicBlock.forward: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)).
        m = module
        main = (
            *_walk(m.conv1, f"{name}.conv1"),
            *_walk(m.bn1, f"{name}.bn1"),
            Layer(f"{name}.relu1", nn.ReLU()),
            *_walk(m.conv2, f"{name}.conv2"),
            *_walk(m.bn2, f"{name}.bn2"),
        )
        shortcut = _walk(m.shortcut, f"{name}.shortcut")
        return (Residual(name, main, shortcut), Layer(f"{name}.relu", nn.ReLU()))
    _check_layer(module, name or type(module).__name__)
    return (Layer(name, module),)


def _check_layer(module: nn.Module, name: str) -> None:
    """Refuse a module the bounds cannot treat exactly, naming it."""
    kind = type(module).__name__
    if type(module) not in SUPPORTED:
        raise AttackError(
            f"certify: cannot bound layer '{name}' ({kind}); supported: {supported_names()}"
        )
    if isinstance(module, nn.Conv2d) and module.padding_mode != "zeros":
        raise AttackError(
            f"certify: cannot bound layer '{name}' ({kind} with padding_mode="
            f"'{module.padding_mode}'); only zero padding is supported"
        )
    if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d) and module.running_mean is None:
        raise AttackError(
            f"certify: cannot bound layer '{name}' ({kind} without running statistics: it "
            "normalises with the batch's own statistics even in eval mode)"
        )
    if isinstance(module, nn.MaxPool2d) and (module.ceil_mode or module.return_indices):
        raise AttackError(
            f"certify: cannot bound layer '{name}' ({kind} with ceil_mode or return_indices)"
        )
