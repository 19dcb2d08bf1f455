"""PGD that stops stepping a point once it is fooled (``attacks.pgd.stop_on_success``).

torchattacks' PGD takes every step on every point and returns the last iterate. A point already
misclassified at some iterate is an adversarial example found: stepping it further costs a
forward and backward pass per step and can even walk it back to the right class. Here a point
keeps the first iterate that fools it and leaves the batch; the others follow exactly the
trajectory of ``torchattacks.PGD`` (same random start, loss, step and projection, per point). So
every point torchattacks' PGD fools is fooled here too, the robust accuracy is never higher, and
the steps spent on a point fooled at step t are t instead of ``steps`` (APGD keeps the first
success the same way).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def first_success_forward(atk: Any, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``atk.forward`` for an untargeted ``torchattacks.PGD`` instance ``atk`` (its ``eps``,
    ``alpha``, ``steps``, ``random_start``, ``get_logits``): x float (N, C, H, W) in [0, 1],
    y int64 (N,); returns x_adv in the eps ball and [0, 1], the first fooling iterate per point
    (the last iterate where none fooled it)."""
    images = images.clone().detach().to(atk.device)
    labels = labels.clone().detach().to(atk.device)
    adv = images.clone()
    if atk.random_start:  # the same draw, in the same order, as torchattacks.PGD
        adv = torch.clamp(adv + torch.empty_like(adv).uniform_(-atk.eps, atk.eps), 0, 1)
    active = torch.arange(len(images), device=images.device)
    for _ in range(atk.steps):
        x, y, start = adv[active], labels[active], images[active]
        x.requires_grad_(True)
        logits = atk.get_logits(x)
        # mean over the active points: the sign of each point's gradient does not depend on it
        (grad,) = torch.autograd.grad(F.cross_entropy(logits, y), x)
        going = logits.detach().argmax(dim=1) == y  # not fooled at this iterate: step on
        x, grad, start = x.detach()[going], grad[going], start[going]
        stepped = x + atk.alpha * grad.sign()
        delta = torch.clamp(stepped - start, min=-atk.eps, max=atk.eps)
        active = active[going]
        adv[active] = torch.clamp(start + delta, min=0, max=1)
        if len(active) == 0:
            break
    return adv
