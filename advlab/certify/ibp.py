"""Interval bound propagation (IBP; Gowal et al. 2018, "On the Effectiveness of Interval Bound
Propagation for Training Verifiably Robust Models").

A box ``[lo, hi]`` (elementwise bounds, shape (N, ...)) is pushed through the model layer by
layer, each layer mapping it to a box that contains every output of every input in the box:

- affine layers ``W x + b`` (Linear, Conv2d) through centre ``c = (hi + lo) / 2`` and radius
  ``r = (hi - lo) / 2``: the new box is ``W c + b -/+ |W| r``;
- BatchNorm (eval) is the per-channel affine map ``scale * x + shift`` with
  ``scale = weight / sqrt(running_var + eps)``: same rule, ``|scale|`` handles negative weights;
- Normalize ``(x - mean) / std`` has ``std > 0``: ``[f(lo), f(hi)]``;
- non-decreasing layers (ReLU, Sigmoid, Tanh, max and average pooling) and pass-through layers
  (Flatten, Dropout and Identity in eval mode): ``[f(lo), f(hi)]``;
- a residual block: both branches from the same box, boxes added, then the ReLU.

The bound on the margin ``z_y - z_j`` folds the last Linear layer into the margin first (Gowal et
al.'s "elision"): ``(W_y - W_j) h + (b_y - b_j)`` bounded over the box of ``h``, which is never
looser than ``lo_y - hi_j``. The bounds are exact in real arithmetic and hold in float32 up to
rounding (about 1e-6 relative).

Nothing here runs under ``torch.no_grad``: the bounds are differentiable in the parameters, which
certified training (:mod:`advlab.training.ibp`) needs; the public API of :mod:`advlab.certify`
wraps them in ``no_grad``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advlab.certify.graph import Layer, Node, Residual

Box = tuple[Tensor, Tensor]
# One entry per node: the box entering it; a Residual's entry also holds its branches' traces.
Trace = list[object]


def input_box(x: Tensor, eps_px: float) -> Box:
    """The L-inf ball of radius ``eps_px`` (pixel units) around ``x``, clipped to [0, 1]."""
    return (x - eps_px).clamp(0.0, 1.0), (x + eps_px).clamp(0.0, 1.0)


def batchnorm_affine(bn: nn.BatchNorm1d | nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Eval-mode batch norm as ``scale * x + shift`` per channel: (scale, shift), each (C,)."""
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale, shift


def _centre_radius(m: nn.Module, c: Tensor, r: Tensor) -> Box:
    """The box ``f(c) -/+ |M| r`` of an affine layer ``f(x) = M x + f(0)``."""
    if isinstance(m, nn.Linear):
        c, r = F.linear(c, m.weight, m.bias), F.linear(r, m.weight.abs())
    elif isinstance(m, nn.Conv2d):
        args = (m.stride, m.padding, m.dilation, m.groups)
        c, r = F.conv2d(c, m.weight, m.bias, *args), F.conv2d(r, m.weight.abs(), None, *args)
    else:  # batch norm
        scale, shift = batchnorm_affine(m)
        shape = (1, -1) + (1,) * (c.dim() - 2)
        c = c * scale.view(shape) + shift.view(shape)
        r = r * scale.abs().view(shape)
    return c - r, c + r


def layer_box(m: nn.Module, lo: Tensor, hi: Tensor) -> Box:
    """The box of the outputs of one supported layer over the input box ``[lo, hi]``."""
    if isinstance(m, nn.Linear | nn.Conv2d | nn.BatchNorm1d | nn.BatchNorm2d):
        return _centre_radius(m, (hi + lo) / 2, (hi - lo) / 2)
    # Normalize (std > 0), pools, activations, Flatten, Dropout/Identity (eval): non-decreasing.
    return m(lo), m(hi)


def propagate(nodes: tuple[Node, ...], lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor, Trace]:
    """Push the box ``[lo, hi]`` through ``nodes``; the output box and the trace (the box entering
    each node, which CROWN's relaxations need)."""
    trace: Trace = []
    for node in nodes:
        if isinstance(node, Residual):
            lo_m, hi_m, trace_m = propagate(node.main, lo, hi)
            lo_s, hi_s, trace_s = propagate(node.shortcut, lo, hi)
            trace.append(((lo, hi), trace_m, trace_s))
            lo, hi = lo_m + lo_s, hi_m + hi_s
        else:
            trace.append((lo, hi))
            lo, hi = layer_box(node.module, lo, hi)
    return lo, hi, trace


def margin_matrix(y: Tensor, num_classes: int, dtype: torch.dtype) -> Tensor:
    """The (N, K, K) rows ``e_y - e_j``: row j maps logits z to the margin ``z_y - z_j``."""
    eye = torch.eye(num_classes, dtype=dtype, device=y.device)
    return eye[y].unsqueeze(1) - eye.unsqueeze(0)


def ibp_margins(nodes: tuple[Node, ...], lo: Tensor, hi: Tensor, y: Tensor) -> Tensor:
    """(N, K) lower bounds of ``z_y - z_j`` over the box, the last Linear elided; the entry
    j == y is no bound (the caller masks it)."""
    last = nodes[-1] if nodes else None
    if isinstance(last, Layer) and isinstance(last.module, nn.Linear):
        h_lo, h_hi, _ = propagate(nodes[:-1], lo, hi)
        w, b = last.module.weight, last.module.bias
        spec = margin_matrix(y, w.shape[0], w.dtype)  # (N, K, K)
        cw = spec @ w  # (N, K, in)
        c, r = ((h_hi + h_lo) / 2).unsqueeze(2), ((h_hi - h_lo) / 2).unsqueeze(2)
        bound = (cw @ c - cw.abs() @ r).squeeze(2)
        return bound + (spec @ b if b is not None else 0.0)
    z_lo, z_hi, _ = propagate(nodes, lo, hi)
    return z_lo.gather(1, y.view(-1, 1)) - z_hi


def worst_case_logits(nodes: tuple[Node, ...], lo: Tensor, hi: Tensor, y: Tensor) -> Tensor:
    """(N, K) Gowal et al.'s worst-case logits over the box: ``-`` the lower bound of
    ``z_y - z_j`` (:func:`ibp_margins`) at ``j != y`` and 0 at ``j == y``. Cross-entropy on them
    bounds the cross-entropy of every input of the box from above; differentiable."""
    bound = ibp_margins(nodes, lo, hi, y)
    return (-bound).scatter(1, y.view(-1, 1), 0.0)
