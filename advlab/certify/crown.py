"""CROWN-style backward linear bounds on the margins (Zhang et al. 2018, "Efficient Neural Network
Robustness Certification with General Activation Functions"), with interval (IBP) bounds on the
inputs of the nonlinear layers, as in CROWN-IBP (Zhang et al. 2020).

Start from the margins as a linear function of the logits, ``m = C z`` with rows ``e_y - e_j``,
and walk the layers backwards keeping ``m >= A h + a`` for the current layer's input ``h``
(``A``: (N, K, *shape of h), ``a``: (N, K)):

- an affine layer ``h' = f(h) = M h + f(0)`` is exact: ``A' = A M`` (a vector-Jacobian product,
  computed by autograd on the layer itself) and ``a' = a + A f(0)``;
- a nonlinear layer is bounded between two lines on the box ``[l, u]`` of its input (from IBP),
  ``lo_s h + lo_b <= f(h) <= up_s h + up_b``; the lower line is used where ``A >= 0``, the upper
  where ``A < 0``:

  * ReLU, unstable (``l < 0 < u``): upper ``u / (u - l) * (h - l)``, lower ``h`` if ``u > -l``
    else ``0`` (the adaptive lower slope); stable neurons are exact;
  * Sigmoid, Tanh: two parallel lines of the chord's slope ``k`` through the extremes of
    ``f(h) - k h`` on ``[l, u]`` (at the ends or where ``f'(h) = k``, found in closed form);
  * MaxPool2d: lower ``h_i`` for the window's element ``i`` with the largest ``l``; upper the same
    ``h_i`` when ``l_i >= u`` of every other element (then the max is ``h_i``), else ``max u``;

- a residual sum sends ``A`` down both branches and adds the results.

At the input, ``A x + a`` is minimised over the pixel box in closed form. The bound is exact in
real arithmetic (float32 rounding aside) but, with interval bounds inside, not always tighter than
IBP's: :func:`advlab.certify.margin_lower_bounds` returns the larger of the two.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advlab.certify.graph import PASS_THROUGH, Layer, Node, Residual
from advlab.certify.ibp import Trace, margin_matrix, propagate

Lines = tuple[
    Tensor, Tensor, Tensor, Tensor
]  # lower slope, lower offset, upper slope, upper offset


def crown_margins(nodes: tuple[Node, ...], lo: Tensor, hi: Tensor, y: Tensor) -> Tensor:
    """(N, K) CROWN lower bounds of ``z_y - z_j`` over the pixel box ``[lo, hi]`` (N, ...); the
    entry j == y is 0."""
    z_lo, _, trace = propagate(nodes, lo, hi)
    spec = margin_matrix(y, z_lo.shape[1], z_lo.dtype)
    offset = spec.new_zeros(spec.shape[:2])
    a, offset = _backward(nodes, trace, spec, offset)
    low, high = lo.unsqueeze(1), hi.unsqueeze(1)
    box_min = a.clamp(min=0) * low + a.clamp(max=0) * high
    return box_min.flatten(2).sum(2) + offset


def _backward(nodes: tuple[Node, ...], trace: Trace, a: Tensor, offset: Tensor):
    """``(A, a)`` on the input of ``nodes`` from ``(A, a)`` on their output."""
    for node, entry in zip(reversed(nodes), reversed(trace), strict=True):
        if isinstance(node, Residual):
            box, trace_main, trace_short = entry
            a_main, off_main = _backward(node.main, trace_main, a, offset)
            a_short, off_short = _backward(node.shortcut, trace_short, a, torch.zeros_like(offset))
            a, offset = a_main + a_short, off_main + off_short
        else:
            a, offset = _layer_back(node, entry, a, offset)
    return a, offset


def _layer_back(layer: Layer, box: tuple[Tensor, Tensor], a: Tensor, offset: Tensor):
    m, (lo, hi) = layer.module, box
    if isinstance(m, PASS_THROUGH):
        return a.reshape(*a.shape[:2], *lo.shape[1:]), offset
    if isinstance(m, nn.ReLU):
        return _through_lines(_relu_lines(lo, hi), a, offset)
    if isinstance(m, nn.Sigmoid | nn.Tanh):
        return _through_lines(_s_shaped_lines(m, lo, hi), a, offset)
    if isinstance(m, nn.MaxPool2d):
        return _maxpool_back(m, lo, hi, a, offset)
    return _affine_back(m, lo.shape[1:], a, offset)


def _affine_back(m: nn.Module, in_shape: torch.Size, a: Tensor, offset: Tensor):
    """Through an affine layer: ``A M`` by autograd (exact: M is constant), plus ``A f(0)``."""
    n, k = a.shape[:2]
    zeros = torch.zeros((n * k, *in_shape), dtype=a.dtype, device=a.device, requires_grad=True)
    with torch.enable_grad():
        out = m(zeros)
        (a_in,) = torch.autograd.grad(out, zeros, a.reshape(n * k, *out.shape[1:]))
    const = out[:1].detach().unsqueeze(0)  # f(0), broadcast over (N, K)
    offset = offset + (a * const).flatten(2).sum(2)
    return a_in.reshape(n, k, *in_shape), offset


def _through_lines(lines: Lines, a: Tensor, offset: Tensor):
    """Through an elementwise layer bounded by ``lines`` (each (N, ...), broadcast over K)."""
    lo_s, lo_b, up_s, up_b = (t.unsqueeze(1) for t in lines)
    pos, neg = a.clamp(min=0), a.clamp(max=0)
    offset = offset + (pos * lo_b + neg * up_b).flatten(2).sum(2)
    return pos * lo_s + neg * up_s, offset


def _relu_lines(lo: Tensor, hi: Tensor) -> Lines:
    active, unstable = lo >= 0, (lo < 0) & (hi > 0)
    ones = active.to(lo.dtype)
    up_s = torch.where(unstable, hi / (hi - lo).clamp_min(1e-12), ones)
    up_b = torch.where(unstable, -up_s * lo, torch.zeros_like(lo))
    lo_s = torch.where(unstable, (hi > -lo).to(lo.dtype), ones)
    return lo_s, torch.zeros_like(lo), up_s, up_b


def _s_shaped_lines(m: nn.Module, lo: Tensor, hi: Tensor) -> Lines:
    """Parallel lines of slope ``k`` through the min and max of ``f(h) - k h`` on ``[lo, hi]``."""
    f = torch.sigmoid if isinstance(m, nn.Sigmoid) else torch.tanh
    width = hi - lo
    chord = (f(hi) - f(lo)) / width.clamp_min(1e-12)
    mid = f((lo + hi) / 2)
    slope_mid = mid * (1 - mid) if isinstance(m, nn.Sigmoid) else 1 - mid * mid
    k = torch.where(width > 1e-3, chord, slope_mid)  # any k >= 0 is sound; the chord is tight
    # The h >= 0 where f'(h) = k: sigmoid s(1 - s) = k, tanh 1 - t^2 = k; -h is the other.
    if isinstance(m, nn.Sigmoid):
        s = (1 + torch.sqrt((1 - 4 * k).clamp_min(0))) / 2
        crit = torch.log(s) - torch.log1p(-s)
    else:
        crit = torch.atanh(torch.sqrt((1 - k).clamp(0, 1)))
    points = [lo, hi, torch.clamp(crit, lo, hi), torch.clamp(-crit, lo, hi)]
    gap = torch.stack([f(p) - k * p for p in points])
    return k, gap.amin(0), k, gap.amax(0)


def _windows(t: Tensor, m: nn.MaxPool2d, fill: float) -> Tensor:
    """The pooling windows of ``t`` (N, C, H, W) as (N, C, kernel elements, output positions)."""
    pad = m.padding if isinstance(m.padding, tuple) else (m.padding, m.padding)
    t = F.pad(t, (pad[1], pad[1], pad[0], pad[0]), value=fill)
    cols = F.unfold(t, m.kernel_size, dilation=m.dilation, stride=m.stride)
    return cols.view(t.shape[0], t.shape[1], -1, cols.shape[-1])


def _maxpool_back(m: nn.MaxPool2d, lo: Tensor, hi: Tensor, a: Tensor, offset: Tensor):
    n, c, h, w = lo.shape
    lo_w, hi_w = _windows(lo, m, float("-inf")), _windows(hi, m, float("-inf"))
    best = lo_w.argmax(2, keepdim=True)  # the element with the largest lower bound
    others = hi_w.scatter(2, best, float("-inf")).amax(2)
    exact = lo_w.gather(2, best).squeeze(2) >= others  # the max is that element
    hi_max = hi_w.amax(2)
    where = torch.arange(h * w, dtype=torch.float32, device=lo.device).view(1, 1, h, w)
    index = _windows(where, m, -1.0).expand(n, c, -1, -1).gather(2, best).squeeze(2).long()
    a = a.flatten(3)  # (N, K, C, output positions)
    pos, neg = a.clamp(min=0), a.clamp(max=0)
    exact, hi_max = exact.unsqueeze(1), hi_max.unsqueeze(1)
    coef = pos + neg * exact
    offset = offset + (neg * (~exact) * hi_max).flatten(2).sum(2)
    a_in = torch.zeros((*a.shape[:3], h * w), dtype=a.dtype, device=a.device)
    a_in.scatter_add_(3, index.unsqueeze(1).expand_as(coef), coef)
    return a_in.view(*a.shape[:3], h, w), offset
