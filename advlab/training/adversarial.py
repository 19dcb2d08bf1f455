"""Adversarial training as a defence, written by hand (no torchattacks in the training loop).

All budgets are L-infinity. ``eps`` and ``alpha`` arguments are in **1/255 units** (as in the
config); they become pixel units (``/ 255``) here, where the tensor is perturbed. Inputs are float
(N, C, H, W) pixels in [0, 1]; adversarial examples are clamped to [0, 1] and satisfy
``||x_adv - x||_inf <= eps / 255``. Random starts draw from the ``generator`` given (on the
inputs' device), so a seeded run is reproducible.

- ``fgsm_rs``: FGSM from a uniform random start with step ``alpha`` (Wong, Rice & Kolter 2020,
  "Fast is better than free"; they use alpha = 1.25 eps).
- ``pgd``: ``steps`` signed-gradient steps of size ``alpha`` from a uniform random start, projected
  back onto the eps-ball each step (Madry et al. 2018).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from omegaconf import DictConfig
from torch import nn

from advlab.errors import ConfigError

METHODS = ("none", "fgsm_rs", "pgd")

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits, labels) -> scalar


def check_adversarial_config(cfg: DictConfig) -> None:
    """ConfigError for an unknown method or a negative/zero budget, step or subset size."""
    if cfg.method not in METHODS:
        raise ConfigError(f"train.adversarial.method={cfg.method}: must be one of {METHODS}")
    if float(cfg.eps) < 0:
        raise ConfigError(f"train.adversarial.eps={cfg.eps}: must be >= 0 (1/255 units)")
    if cfg.method != "none" and cfg.alpha is not None and not float(cfg.alpha) > 0:
        raise ConfigError(f"train.adversarial.alpha={cfg.alpha}: must be > 0 (1/255 units)")
    if cfg.method == "pgd" and int(cfg.steps) < 1:
        raise ConfigError(f"train.adversarial.steps={cfg.steps}: must be >= 1")
    if cfg.val_robust:
        if int(cfg.val_robust_n) < 1:
            raise ConfigError(f"train.adversarial.val_robust_n={cfg.val_robust_n}: must be >= 1")
        if int(cfg.val_robust_steps) < 1:
            raise ConfigError(
                f"train.adversarial.val_robust_steps={cfg.val_robust_steps}: must be >= 1"
            )


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
    """FGSM with a random start. eps, alpha in 1/255 units; x float (N, C, H, W) in [0, 1].

    Returns the detached adversarial batch. The model's train/eval mode is not changed.
    """
    eps_px, alpha_px = eps / 255.0, alpha / 255.0
    if eps_px == 0:
        return x.detach()
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
    """L-inf PGD. eps, alpha in 1/255 units; x float (N, C, H, W) in [0, 1].

    Returns the detached adversarial batch. The model's train/eval mode is not changed.
    """
    eps_px, alpha_px = eps / 255.0, alpha / 255.0
    if eps_px == 0:
        return x.detach()
    x = x.detach()
    x_adv = x + _uniform_delta(x, eps_px, generator) if random_start else x.clone()
    for _ in range(int(steps)):
        grad = _input_grad(model, loss_fn, x_adv, y)
        x_adv = x_adv.detach() + alpha_px * grad.sign()
        # Project onto the eps-ball around x, then onto the valid pixel range.
        x_adv = torch.min(torch.max(x_adv, x - eps_px), x + eps_px).clamp_(0, 1)
    return x_adv.detach()


def train_alpha(cfg: DictConfig) -> float:
    """Step size (1/255 units): ``train.adversarial.alpha``, or when null the published default,
    1.25 eps for fgsm_rs (Wong et al. 2020) and 2.5 eps / steps for pgd (Madry et al. 2018)."""
    if cfg.alpha is not None:
        return float(cfg.alpha)
    if cfg.method == "fgsm_rs":
        return 1.25 * float(cfg.eps)
    return val_pgd_alpha(cfg.eps, cfg.steps)


def perturb(
    cfg: DictConfig,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    loss_fn: LossFn,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """The training batch for ``train.adversarial.method`` (``x`` itself for ``none``)."""
    if cfg.method == "fgsm_rs":
        return fgsm_rs(
            model, x, y, eps=cfg.eps, alpha=train_alpha(cfg), loss_fn=loss_fn, generator=generator
        )
    if cfg.method == "pgd":
        return pgd(
            model,
            x,
            y,
            eps=cfg.eps,
            alpha=train_alpha(cfg),
            steps=cfg.steps,
            loss_fn=loss_fn,
            generator=generator,
        )
    return x


def val_pgd_alpha(eps: float, steps: int) -> float:
    """Step size (1/255 units) of the robust-validation PGD: 2.5 eps / steps (Madry et al.)."""
    return 2.5 * float(eps) / max(int(steps), 1)


def robust_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    steps: int,
    batch_size: int,
    loss_fn: LossFn,
    generator: torch.Generator | None,
) -> float:
    """Accuracy in [0, 1] of ``model`` (put in eval mode by the caller) under L-inf PGD with
    ``steps`` steps of size 2.5 eps / steps and a random start. eps in 1/255 units."""
    alpha = val_pgd_alpha(eps, steps)
    correct = torch.zeros((), dtype=torch.long, device=x.device)
    for start in range(0, x.shape[0], batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        x_adv = pgd(
            model,
            xb,
            yb,
            eps=eps,
            alpha=alpha,
            steps=steps,
            loss_fn=loss_fn,
            generator=generator,
        )
        with torch.no_grad():
            correct += (model(x_adv).argmax(1) == yb).sum()
    return correct.item() / max(x.shape[0], 1)
