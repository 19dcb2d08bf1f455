"""The escalation's attacks (``eval.escalation``): a margin-loss attack and restarted PGD.

Same calling convention and contract as the zoo's factories (:mod:`advlab.attacks.zoo`):
``factory(model, eps=<1/255 units>, seed=..., num_classes=K, **options)`` returns an attack
``atk(x, y) -> x_adv`` with ``||x_adv - x||_inf <= eps/255`` and ``0 <= x_adv <= 1``, carrying the
evaluator's metadata (``advlab_norm``, ``advlab_budget``, ``advlab_white_box``) and seeded from
``seed``.

Why a margin loss: cross-entropy saturates on confidently classified points and can point away
from the nearest wrong class, so PGD-CE with more steps converges to the same over-estimate. A loss
on logit differences does not (Croce & Hein 2020): on 4+ classes the targeted DLR loss of APGD-T,
on 3 the untargeted DLR loss of APGD, on 2 (no DLR: it reads the 3rd largest logit) the logit
margin ``max_{j != y} z_j - z_y`` with PGD (:class:`LossPGD`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from advlab.attacks.zoo import adapt, autoattack, import_torchattacks, square
from advlab.config import MarginAttack, Norm
from advlab.naming import madry_step, to_pixels


def margin_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed logit margin ``max_{j != y} z_j - z_y`` over the batch: positive once fooled."""
    true = logits.gather(1, labels.view(-1, 1)).squeeze(1)
    other = logits.scatter(1, labels.view(-1, 1), float("-inf")).amax(dim=1)
    return (other - true).sum()


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, labels, reduction="sum")


_LOSSES = {"ce": _cross_entropy, "margin": margin_loss}


class LossPGD:
    """L-inf PGD on ``loss`` ('ce' or 'margin') from ``restarts`` uniform random starts.

    ``steps`` signed-gradient steps of Madry et al.'s 2.5 * eps / steps, projected on the eps ball
    and [0, 1] after every step; ``eps`` is in pixel units here (the factories convert). A point
    keeps the first adversarial example any step of any start finds; a restart attacks only the
    points still robust. Called like a torchattacks attack: ``atk(x, y)``, x float (N, C, H, W)
    in [0, 1], y int64 (N,).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        eps: float,
        steps: int,
        restarts: int,
        loss: str,
        alpha: float | None = None,
    ):
        self.model, self.eps, self.steps, self.restarts = model, eps, steps, restarts
        # pixel units, as eps; None: Madry et al.'s 2.5 * eps / steps
        self.alpha = madry_step(eps, steps) if alpha is None else alpha
        self.loss = _LOSSES[loss]

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # Through the attribute, so that zoo.adapt's seeded wrapper of forward is the one run.
        return self.forward(images, labels)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        images = images.detach()
        best = images.clone()
        robust = torch.ones(len(images), dtype=torch.bool, device=images.device)
        for _ in range(self.restarts):
            idx = robust.nonzero().squeeze(1)
            if len(idx) == 0:
                break
            found, fooled = self._one_start(images[idx], labels[idx])
            best[idx[fooled]] = found[fooled]
            robust[idx[fooled]] = False
        return best

    def _one_start(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        start = (x + torch.empty_like(x).uniform_(-self.eps, self.eps)).clamp(0, 1)
        return self.continue_from(x, y, start)

    def continue_from(
        self, x: torch.Tensor, y: torch.Tensor, start: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``steps`` steps from ``start`` (a point of x's eps ball, e.g. another PGD run's last
        iterate): ``(found, fooled)``, the first adversarial example per point (x where none)."""
        adv = start.detach().clone()
        found, fooled = x.clone(), torch.zeros(len(x), dtype=torch.bool, device=x.device)
        active = torch.arange(len(x), device=x.device)  # points not fooled yet: only they step
        for step in range(self.steps + 1):  # the last pass only scores the last step
            here = adv[active].requires_grad_(True)
            with torch.enable_grad():
                logits = self.model(here).float()
                grad = (
                    None
                    if step == self.steps
                    else torch.autograd.grad(self.loss(logits, y[active]), here)[0]
                )
            here = here.detach()
            new = logits.argmax(dim=1) != y[active]
            found[active[new]], fooled[active[new]] = here[new], True
            going = ~new
            active, here = active[going], here[going]
            if grad is None or len(active) == 0:
                break
            centre = x[active]
            here = here + self.alpha * grad[going].sign()
            adv[active] = torch.min(torch.max(here, centre - self.eps), centre + self.eps).clamp(
                0, 1
            )
        return found, fooled


def _adapted(atk: Any, eps: float, seed: int, *, white_box: bool = True) -> Any:
    return adapt(atk, seed=seed, norm=Norm.linf, budget=to_pixels(eps), white_box=white_box)


def margin_attack(
    model: nn.Module,
    *,
    eps: float,
    seed: int = 0,
    num_classes: int,
    steps: int,
    targets: int,
    version: str = MarginAttack.auto,
) -> Any:
    """The margin-loss attack for ``num_classes`` classes at ``eps`` (1/255 units).

    4+ classes: APGD-T (targeted DLR, ``steps`` per target, the ``targets`` most likely wrong
    classes first) or, with ``version='autoattack'``, torchattacks AutoAttack standard; 3 classes:
    APGD with the DLR loss; 2 classes: :class:`LossPGD` on the logit margin.
    """
    ta = import_torchattacks()
    if num_classes >= 4 and version == MarginAttack.autoattack:
        return autoattack(model, eps=eps, seed=seed, num_classes=num_classes)
    if num_classes >= 4:
        atk = ta.APGDT(
            model, norm="Linf", eps=to_pixels(eps), steps=steps, seed=seed, n_classes=num_classes
        )
        atk.n_target_classes = min(targets, num_classes - 1)
    elif num_classes == 3:
        atk = ta.APGD(model, norm="Linf", eps=to_pixels(eps), steps=steps, seed=seed, loss="dlr")
    else:
        atk = LossPGD(model, eps=to_pixels(eps), steps=steps, restarts=1, loss="margin")
    return _adapted(atk, eps, seed)


def pgd_restarts(
    model: nn.Module, *, eps: float, seed: int = 0, steps: int, restarts: int, **_: Any
) -> Any:
    """Cross-entropy PGD from ``restarts`` random starts (``steps`` each) at ``eps`` (1/255)."""
    atk = LossPGD(model, eps=to_pixels(eps), steps=steps, restarts=restarts, loss="ce")
    return _adapted(atk, eps, seed)


def square_queries(model: nn.Module, *, eps: float, seed: int = 0, queries: int, **_: Any) -> Any:
    """torchattacks Square (black-box) with ``queries`` queries per point at ``eps`` (1/255)."""
    return square(model, eps=eps, seed=seed, queries=queries)
