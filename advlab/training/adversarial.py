"""Adversarial training as a defence, written by hand (no torchattacks in the training loop).

All budgets are L-infinity. ``eps`` and ``alpha`` arguments are in **1/255 units** (as in the
config); they become pixel units (:func:`advlab.naming.to_pixels`) here, where the tensor is
perturbed. Inputs are float (N, C, H, W) pixels in [0, 1]; adversarial examples are detached,
clamped to [0, 1] and satisfy ``||x_adv - x||_inf <= eps / 255``; eps = 0 returns the batch
without computing a gradient. The attacks leave the model's train/eval mode as it is. Random
starts draw from the ``generator`` given (on the inputs' device), so a seeded run is reproducible.

- ``fgsm_rs``: FGSM from a uniform random start with step ``alpha`` (Wong, Rice & Kolter 2020,
  "Fast is better than free"; they use alpha = 1.25 eps).
- ``pgd``: ``steps`` signed-gradient steps of size ``alpha`` from a uniform random start, projected
  back onto the eps-ball each step (Madry et al. 2018).
- ``fgsm``: one signed-gradient step of size eps from the clean point (Goodfellow et al. 2015); no
  random draw. Only for validation (``val_fgsm_acc``): next to PGD's accuracy it shows
  catastrophic overfitting (:mod:`advlab.training.diagnostics`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from omegaconf import DictConfig
from torch import nn

from advlab.config import AdversarialMethod
from advlab.naming import madry_step, to_pixels

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits, labels) -> scalar
# (model, x, y, generator=...) -> adversarial x: a training attack with its settings bound.
Perturbation = Callable[..., torch.Tensor]


def _in_pixels(eps: float, alpha: float) -> tuple[float, float]:
    return to_pixels(eps), to_pixels(alpha)


def _uniform_delta(x: torch.Tensor, eps: float, generator: torch.Generator | None) -> torch.Tensor:
    """Uniform noise in [-eps, eps] (pixel units), shaped like x, kept inside [0, 1] - x."""
    noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    delta = (noise * 2 - 1) * eps
    return (x + delta).clamp_(0, 1) - x


def _input_grad(model: nn.Module, loss_fn: LossFn, x_adv: torch.Tensor, y: torch.Tensor):
    x_adv = x_adv.detach().requires_grad_(True)
    loss = loss_fn(model(x_adv), y)
    # Gradient w.r.t. the input only: the parameters' .grad is left untouched.
    (grad,) = torch.autograd.grad(loss, x_adv)
    return grad


def fgsm_rs(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    alpha: float,
    loss_fn: LossFn,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One signed-gradient step of size ``alpha`` from a uniform random point of the eps-ball,
    clipped back onto the ball (eps, alpha in 1/255 units)."""
    if eps == 0:
        return x.detach()
    eps_px, alpha_px = _in_pixels(eps, alpha)
    delta = _uniform_delta(x, eps_px, generator)
    grad = _input_grad(model, loss_fn, x + delta, y)
    delta = (delta + alpha_px * grad.sign()).clamp_(-eps_px, eps_px)
    return (x + delta).clamp_(0, 1).detach()


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    alpha: float,
    steps: int,
    loss_fn: LossFn,
    random_start: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """L-inf PGD: ``steps`` signed-gradient steps of size ``alpha``, each projected onto the
    eps-ball around ``x`` (eps, alpha in 1/255 units); from a uniform random start by default."""
    if eps == 0:
        return x.detach()
    eps_px, alpha_px = _in_pixels(eps, alpha)
    x = x.detach()
    x_adv = x + _uniform_delta(x, eps_px, generator) if random_start else x.clone()
    for _ in range(int(steps)):
        grad = _input_grad(model, loss_fn, x_adv, y)
        x_adv = x_adv.detach() + alpha_px * grad.sign()
        # Project onto the eps-ball around x, then onto the valid pixel range.
        x_adv = torch.min(torch.max(x_adv, x - eps_px), x + eps_px).clamp_(0, 1)
    return x_adv.detach()


# Published step-size rules (1/255 units) for a null train.adversarial.alpha, from (eps, steps).
_DEFAULT_ALPHA: dict[AdversarialMethod, Callable[[float, int], float]] = {
    AdversarialMethod.fgsm_rs: lambda eps, steps: 1.25 * eps,  # Wong et al. 2020
    AdversarialMethod.pgd: madry_step,  # Madry et al. 2018
}
_ATTACKS: dict[AdversarialMethod, Perturbation] = {
    AdversarialMethod.fgsm_rs: fgsm_rs,
    AdversarialMethod.pgd: pgd,
}


def train_alpha(cfg: DictConfig) -> float:
    """Step size (1/255 units): ``train.adversarial.alpha``, or when null the published default,
    1.25 eps for fgsm_rs (Wong et al. 2020) and 2.5 eps / steps for pgd (Madry et al. 2018)."""
    if cfg.alpha is not None:
        return float(cfg.alpha)
    return _DEFAULT_ALPHA[AdversarialMethod(cfg.method)](float(cfg.eps), int(cfg.steps))


def training_perturbation(cfg: DictConfig, *, loss_fn: LossFn) -> Perturbation | None:
    """The attack of ``train.adversarial.method`` with eps, alpha, steps and ``loss_fn`` bound,
    called as ``perturb(model, x, y, generator=g)``; None for ``none``.

    The settings are read here, once per run: DictConfig access is slow inside the batch loop.
    """
    method = AdversarialMethod(cfg.method)
    if method == AdversarialMethod.none:
        return None
    settings = {"eps": float(cfg.eps), "alpha": train_alpha(cfg), "loss_fn": loss_fn}
    if method == AdversarialMethod.pgd:
        settings["steps"] = int(cfg.steps)
    return functools.partial(_ATTACKS[method], **settings)


def fgsm(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, loss_fn: LossFn
) -> torch.Tensor:
    """FGSM: one signed-gradient step of size ``eps`` (1/255 units) from ``x`` itself (no random
    start), clamped to [0, 1]; it draws no random numbers."""
    return pgd(model, x, y, eps=eps, alpha=eps, steps=1, loss_fn=loss_fn, random_start=False)


def accuracy_under(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    batch_size: int,
) -> float:
    """Accuracy in [0, 1] of ``model`` (its train/eval mode as the caller set it) on
    ``attack(xb, yb)``, batch by batch; x float (N, C, H, W) in [0, 1], y int64 (N,)."""
    correct = torch.zeros((), dtype=torch.long, device=x.device)
    for start in range(0, x.shape[0], batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        x_adv = attack(xb, yb)
        with torch.no_grad():
            correct += (model(x_adv).argmax(1) == yb).sum()
    return correct.item() / max(x.shape[0], 1)
