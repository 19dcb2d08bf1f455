"""Certified robustness: a lower bound on robust accuracy under an L-inf ball.

An attack finds *some* adversarial examples, so the accuracy it leaves is an upper bound on the
robust accuracy. A certificate proves that *no* input of the ball changes the prediction, so the
share of certified points is a lower bound; the truth lies between the two. A point an attack
breaks can never be certified (if it is, one of the two has a bug).

For a point ``x`` with label ``y`` and a budget ``eps`` (**1/255 units**, as in the config; the
ball is ``[clip(x - eps/255, 0, 1), clip(x + eps/255, 0, 1)]`` in pixels), the margins
``z_y - z_j`` of the logits are bounded from below over the whole ball; the point is certified
when every margin's lower bound is > 0. Two methods:

- ``"ibp"``, interval bound propagation (:mod:`advlab.certify.ibp`): one pass of boxes, about the
  cost of two forward passes; loose unless the model was trained for it;
- ``"crown"`` (default), backward linear bounds (:mod:`advlab.certify.crown`): about one backward
  pass per class; much tighter on normally trained networks; never looser than ``"ibp"`` (the
  larger of the two bounds is returned).

Example::

    from advlab.certify import certified, margin_lower_bounds

    model.eval()
    ok = certified(model, x, y, eps=2)             # bool (N,): robust at 2/255, proven
    print(f"certified accuracy {ok.float().mean():.1%}")
    bounds = margin_lower_bounds(model, x, y, 2)   # (N, K) lower bounds of z_y - z_j

Supported layers (any ``nn.Sequential`` nesting of them): Normalize, Linear, Conv2d (zero
padding), BatchNorm1d/2d (eval, running statistics), ReLU, Sigmoid, Tanh, MaxPool2d (no
ceil_mode), AvgPool2d, AdaptiveAvgPool2d, Flatten, Dropout, Identity and the ResNet BasicBlock:
every model of the zoo. Another layer, or a model in training mode, is refused with an
:class:`~advlab.errors.AttackError` naming the layer. The bounds hold exactly in real arithmetic;
in float32 they are exact up to rounding (about 1e-6 relative).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from advlab.certify.crown import crown_margins
from advlab.certify.graph import layers, walk
from advlab.certify.ibp import ibp_margins, input_box, propagate
from advlab.errors import ConfigError
from advlab.naming import to_pixels

__all__ = ["METHODS", "certified", "check_supported", "logit_bounds", "margin_lower_bounds"]

METHODS = ("crown", "ibp")


def check_supported(model: nn.Module) -> None:
    """Raise :class:`~advlab.errors.AttackError` naming the first layer of ``model`` the bounds
    cannot take (in train or eval mode): a check to run before training."""
    walk(model)


def _placed(model: nn.Module, x: Tensor) -> Tensor:
    """``x`` on the model's device, in its floating dtype."""
    ref = next(iter(model.parameters()), None)
    if ref is None:
        ref = next(iter(model.buffers()), x)
    return x.to(device=ref.device, dtype=ref.dtype)


def _pixels(eps: float) -> float:
    if float(eps) < 0:
        raise ConfigError(f"certify: eps={eps} must be >= 0 (1/255 units)")
    return to_pixels(eps)


@torch.no_grad()
def logit_bounds(model: nn.Module, x: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """IBP bounds ``(lo, hi)``, each (N, K), on the logits over the ball of radius ``eps``
    (1/255 units) around ``x`` (float (N, C, H, W) pixels in [0, 1])."""
    nodes = layers(model)
    lo, hi, _ = propagate(nodes, *input_box(_placed(model, x), _pixels(eps)))
    return lo, hi


@torch.no_grad()
def margin_lower_bounds(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    method: str = "crown",
    *,
    batch_size: int = 64,
) -> Tensor:
    """(N, K) lower bounds of the margins ``z_y - z_j`` over the ball of radius ``eps`` (1/255
    units) around each point; ``+inf`` at ``j == y``.

    ``x``: float (N, C, H, W) pixels in [0, 1]; ``y``: int64 (N,) labels. The model must be in
    eval mode; it is not changed. Computed on the model's device, ``batch_size`` points at a time.
    """
    if method not in METHODS:
        raise ConfigError(f"certify: method={method!r} is not one of {', '.join(METHODS)}")
    if x.shape[0] != y.shape[0]:
        raise ConfigError(f"certify: {x.shape[0]} points but {y.shape[0]} labels")
    nodes = layers(model)
    eps_px = _pixels(eps)
    x = _placed(model, x)
    y = y.to(device=x.device, dtype=torch.long)
    size, parts = max(int(batch_size), 1), []
    for start in range(0, x.shape[0], size):
        xb, yb = x[start : start + size], y[start : start + size]
        lo, hi = input_box(xb, eps_px)
        bound = ibp_margins(nodes, lo, hi, yb)
        if method == "crown":
            bound = torch.maximum(bound, crown_margins(nodes, lo, hi, yb))
        parts.append(bound.scatter(1, yb.view(-1, 1), float("inf")))
    if not parts:
        return x.new_zeros((0, 0))
    return torch.cat(parts)


def certified(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    method: str = "crown",
    *,
    batch_size: int = 64,
) -> Tensor:
    """Bool (N,): True where every margin's lower bound is > 0, i.e. no input of the ball of
    radius ``eps`` (1/255 units) around the point changes its prediction from ``y``."""
    bounds = margin_lower_bounds(model, x, y, eps, method, batch_size=batch_size)
    return (bounds > 0).all(dim=1)
