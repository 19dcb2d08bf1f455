"""Run FGSM and PGD from every library at every eps of the run's grid, on the run's points.

As in advlab's evaluation, only the points classified correctly before the attack are attacked
(a misclassified point is not robust whatever an attack does), eps 0 runs no attack (a zero
budget admits only x), every adversarial example is checked to lie in its eps ball and in
[0, 1] (:func:`advlab.attacks.sanity.check_bounds`), and the model is in eval mode with frozen
parameters. Each eps is attacked from x independently (no cascade).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from advlab.attacks.sanity import check_bounds
from advlab.audit.libraries import (
    LIBRARIES,
    AttackSpec,
    art_attack,
    foolbox_attack,
    torchattacks_spec,
)

ATTACKS = ("fgsm", "pgd")


@dataclass
class Measured:
    """Per-point robustness flags (bool (N,)) and wall time of every library."""

    robust: dict[tuple[str, float], dict[str, np.ndarray]] = field(default_factory=dict)
    seconds: dict[str, dict[str, float]] = field(default_factory=dict)  # library -> attack -> s
    specs: dict[tuple[str, float], AttackSpec] = field(default_factory=dict)


def measure(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    correct: np.ndarray,
    *,
    eps_grid: list[float],
    options: dict[str, dict],
    seed: int,
    batch_size: int,
    extras: dict[str, Any],
) -> Measured:
    """Attack the ``correct`` points of ``(x, y)`` with every attack of :data:`ATTACKS` (options:
    the run's ``attacks.<name>`` node) at every eps of ``eps_grid`` (1/255 units) from every
    library of :data:`~advlab.audit.libraries.LIBRARIES`. ``extras``: the modules of
    :func:`~advlab.audit.libraries.import_extras`."""
    out = Measured(seconds={name: dict.fromkeys(ATTACKS, 0.0) for name in LIBRARIES})
    idx = torch.from_numpy(np.flatnonzero(correct)).to(x.device)
    for attack in ATTACKS:
        for k, eps in enumerate(eps_grid):
            if eps == 0:
                out.robust[(attack, eps)] = dict.fromkeys(LIBRARIES, correct.copy())
                continue
            spec, reference = torchattacks_spec(model, attack, eps, seed, options[attack])
            out.specs[(attack, eps)] = spec
            runs = _runners(reference, model, spec, extras, seed * 1_000_003 + k, batch_size)
            flags = {}
            for name, craft in runs.items():
                x_adv, seconds = _timed(craft, x[idx], y[idx], batch_size)
                check_bounds(f"{name} {attack}", eps, x_adv, x[idx], norm="linf", budget=spec.eps)
                flags[name] = _robust_flags(model, x_adv, y[idx], idx, len(x), batch_size)
                out.seconds[name][attack] += seconds
            out.robust[(attack, eps)] = flags
    return out


def _runners(
    reference: Callable, model: nn.Module, spec: AttackSpec, extras: dict, seed: int, batch: int
) -> dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
    """``{library: craft(x, y) -> x_adv}`` for one attack at one eps."""
    art, fb = extras["art"], extras["foolbox"]
    return {
        "torchattacks": lambda xb, yb: _batched(reference, xb, yb, batch),
        # ART batches internally; it is given every point at once.
        "art": lambda xb, yb: art_attack(art, model, spec, xb, yb, seed=seed, batch_size=batch),
        "foolbox": lambda xb, yb: _batched(
            lambda xs, ys: foolbox_attack(fb, model, spec, xs, ys, seed=seed),
            xb,
            yb,
            batch,
        ),
    }


def _batched(craft: Callable, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> torch.Tensor:
    parts = [
        craft(x[i : i + batch_size], y[i : i + batch_size]).detach()
        for i in range(0, len(x), batch_size)
    ]
    return torch.cat(parts)


def _timed(craft: Callable, x: torch.Tensor, y: torch.Tensor, batch_size: int):
    """``(craft(x, y), wall seconds)``, the device synchronised at both ends."""
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    x_adv = craft(x, y) if len(x) else x.clone()
    sync()
    return x_adv, time.perf_counter() - start


def _robust_flags(model, x_adv, y, idx, n: int, batch_size: int) -> np.ndarray:
    """bool (n,): True where the attacked point ``idx[i]`` is still classified as ``y[i]``."""
    flags = np.zeros(n, dtype=bool)
    with torch.no_grad():
        for i in range(0, len(x_adv), batch_size):
            pred = model(x_adv[i : i + batch_size]).argmax(dim=1)
            flags[idx[i : i + batch_size].cpu().numpy()] = (pred == y[i : i + batch_size]).cpu()
    return flags
