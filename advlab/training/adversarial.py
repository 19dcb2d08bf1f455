"""Adversarial training as a defence, written by hand (no torchattacks in the training loop).

All budgets are L-infinity. ``eps`` and ``alpha`` arguments are in **1/255 units** (as in the
config); they become pixel units (:func:`advlab.naming.to_pixels`) here, where the tensor is
perturbed. Inputs are float (N, C, H, W) pixels in [0, 1]; adversarial examples are detached,
clamped to [0, 1] and satisfy ``||x_adv - x||_inf <= eps / 255``, except N-FGSM's, which are
not projected (within ``(noise * eps + alpha) / 255``); eps = 0 returns the batch without
computing a gradient. The attacks leave the model's train/eval mode as they found it (TRADES
switches to eval mode inside and back). Random starts draw from the ``generator`` given (on the
inputs' device), so a seeded run is reproducible.

- ``fgsm_rs``: FGSM from a uniform random start with step ``alpha`` (Wong, Rice & Kolter 2020,
  "Fast is better than free"; they use alpha = 1.25 eps).
- ``nfgsm``: one signed-gradient step of size ``alpha`` (default eps) from a uniform random
  point of the larger ball of radius ``noise * eps`` (default 2 eps), with no projection back
  onto the eps-ball (de Jorge et al. 2022, "Make Some Noise", who found it free of catastrophic
  overfitting at FGSM's cost); its examples lie within ``noise * eps + alpha``, 3 eps by default.
- ``pgd``: ``steps`` signed-gradient steps of size ``alpha`` from a uniform random start, projected
  back onto the eps-ball each step (Madry et al. 2018).
- ``trades``: ``steps`` projected signed-gradient steps of size ``alpha`` (default Madry's
  2.5 eps / steps, as ``pgd``) that maximise the KL divergence between the predictions at ``x``
  and at ``x_adv``, from ``x + 0.001 * N(0, 1)`` (Zhang et al. 2019); the batch's loss is then
  :func:`advlab.training.losses.trades_loss` (:func:`training_objective`).
- ``ibp``: no adversarial example: certified training on interval bounds of the whole eps-ball
  (Gowal et al. 2018), :mod:`advlab.training.ibp`.
- ``fgsm``: one signed-gradient step of size eps from the clean point (Goodfellow et al. 2015); no
  random draw. Only for validation (``val_fgsm_acc``): next to PGD's accuracy it shows
  catastrophic overfitting (:mod:`advlab.training.diagnostics`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from advlab.config import AdversarialMethod
from advlab.naming import madry_step, to_pixels
from advlab.training.ibp import IbpSchedule, ibp_objective
from advlab.training.losses import trades_loss

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits, labels) -> scalar
# (model, x, y, generator=...) -> adversarial x: a training attack with its settings bound.
Perturbation = Callable[..., torch.Tensor]
# (model, x, y, generator=..., epochs_done=...) -> (the batch's loss, the logits its accuracy is
# counted on); epochs_done: training epochs completed before the batch, fractional (ibp's ramp).
Objective = Callable[..., tuple[torch.Tensor, torch.Tensor]]
TRADES_START_STD = 0.001  # pixel units: the reference implementation's random start


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


def nfgsm(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    alpha: float,
    noise: float,
    loss_fn: LossFn,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """N-FGSM: one signed-gradient step of size ``alpha`` from ``x`` plus uniform noise in
    ``[-noise * eps, noise * eps]`` (eps, alpha in 1/255 units; ``noise`` in multiples of eps),
    clamped to [0, 1] only: never projected onto the eps-ball, so ``||x_adv - x||_inf <=
    (noise * eps + alpha) / 255``. ``noise = 0`` draws nothing: FGSM with step ``alpha``."""
    if eps == 0:
        return x.detach()
    eps_px, alpha_px = _in_pixels(eps, alpha)
    x = x.detach()
    delta = _uniform_delta(x, noise * eps_px, generator) if noise > 0 else torch.zeros_like(x)
    grad = _input_grad(model, loss_fn, x + delta, y)
    return (x + delta + alpha_px * grad.sign()).clamp_(0, 1).detach()


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
    return _projected_steps(model, loss_fn, x, x_adv, y, eps_px, alpha_px, int(steps))


def _projected_steps(
    model: nn.Module,
    loss_fn: LossFn,
    x: torch.Tensor,
    x_adv: torch.Tensor,
    target: torch.Tensor,
    eps_px: float,
    alpha_px: float,
    steps: int,
) -> torch.Tensor:
    """``steps`` ascents of ``loss_fn(model(x_adv), target)`` from ``x_adv``, each a signed step
    of ``alpha_px`` projected onto the ``eps_px``-ball around ``x`` and onto [0, 1] (pixels)."""
    for _ in range(steps):
        grad = _input_grad(model, loss_fn, x_adv, target)
        x_adv = x_adv.detach() + alpha_px * grad.sign()
        # Project onto the eps-ball around x, then onto the valid pixel range.
        x_adv = torch.min(torch.max(x_adv, x - eps_px), x + eps_px).clamp_(0, 1)
    return x_adv.detach()


def _kl_from(logits: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
    """KL(p || softmax(logits)), summed over classes and examples (TRADES's inner loss)."""
    log_q = F.log_softmax(logits.float(), dim=1)
    return F.kl_div(log_q, log_p, reduction="sum", log_target=True)


def trades(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    alpha: float,
    steps: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """TRADES's adversarial example: ``steps`` signed-gradient steps of size ``alpha`` that
    maximise ``KL(f(x) || f(x_adv))`` (the labels ``y`` are not used), each projected onto the
    eps-ball and [0, 1] (eps, alpha in 1/255 units), from ``x + 0.001 * N(0, 1)``: at ``x``
    itself the KL's gradient is zero.

    The model runs in eval mode here, as in the reference implementation (dropout would make
    two passes at the same point disagree, and the passes do not move batch-norm statistics);
    each module's mode is put back before returning.
    """
    if eps == 0:
        return x.detach()
    eps_px, alpha_px = _in_pixels(eps, alpha)
    x = x.detach()
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            log_p = F.log_softmax(model(x).float(), dim=1)
        start = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x_adv = torch.clamp(x + TRADES_START_STD * start, x - eps_px, x + eps_px).clamp_(0, 1)
        return _projected_steps(model, _kl_from, x, x_adv, log_p, eps_px, alpha_px, int(steps))
    finally:
        for module, training in modes:
            module.training = training


# Published step-size rules (1/255 units) for a null train.adversarial.alpha, from (eps, steps).
_DEFAULT_ALPHA: dict[AdversarialMethod, Callable[[float, int], float]] = {
    AdversarialMethod.fgsm_rs: lambda eps, steps: 1.25 * eps,  # Wong et al. 2020
    AdversarialMethod.nfgsm: lambda eps, steps: eps,  # de Jorge et al. 2022
    AdversarialMethod.pgd: madry_step,  # Madry et al. 2018
    AdversarialMethod.trades: madry_step,  # as pgd; Zhang et al. use 0.007 for 10 steps at 8/255
}
_ATTACKS: dict[AdversarialMethod, Perturbation] = {
    AdversarialMethod.fgsm_rs: fgsm_rs,
    AdversarialMethod.nfgsm: nfgsm,
    AdversarialMethod.pgd: pgd,
    AdversarialMethod.trades: trades,
}


def train_alpha(cfg: DictConfig) -> float:
    """Step size (1/255 units): ``train.adversarial.alpha``, or when null the published default,
    1.25 eps for fgsm_rs (Wong et al. 2020), eps for nfgsm (de Jorge et al. 2022) and
    2.5 eps / steps for pgd (Madry et al. 2018) and trades (the same rule, for comparison)."""
    if cfg.alpha is not None:
        return float(cfg.alpha)
    return _DEFAULT_ALPHA[AdversarialMethod(cfg.method)](float(cfg.eps), int(cfg.steps))


def training_perturbation(cfg: DictConfig, *, loss_fn: LossFn) -> Perturbation | None:
    """The attack of ``train.adversarial.method`` with eps, alpha, steps, noise and ``loss_fn``
    bound (each where the method has it), called as ``perturb(model, x, y, generator=g)``; None
    for ``none`` and ``ibp`` (which crafts no example). trades's attack maximises its KL term,
    not ``loss_fn``.

    The settings are read here, once per run: DictConfig access is slow inside the batch loop.
    """
    method = AdversarialMethod(cfg.method)
    if method in (AdversarialMethod.none, AdversarialMethod.ibp):
        return None
    settings: dict[str, object] = {"eps": float(cfg.eps), "alpha": train_alpha(cfg)}
    if method != AdversarialMethod.trades:
        settings["loss_fn"] = loss_fn
    if method in (AdversarialMethod.pgd, AdversarialMethod.trades):
        settings["steps"] = int(cfg.steps)
    if method == AdversarialMethod.nfgsm:
        settings["noise"] = float(cfg.noise)
    return functools.partial(_ATTACKS[method], **settings)


def training_objective(cfg: DictConfig, *, loss_fn: LossFn) -> Objective:
    """The loss of one training batch under ``train.adversarial``, called as
    ``objective(model, x, y, generator=g, epochs_done=t) -> (loss, logits)`` with the model in
    train mode, ``t`` the training epochs done before the batch (fractional).

    ``none``: ``loss_fn`` on the clean batch. ``fgsm_rs``, ``nfgsm``, ``pgd``: ``loss_fn`` on
    the adversarial batch only. ``trades``: :func:`advlab.training.losses.trades_loss` with
    ``train.adversarial.beta``, ``loss_fn`` on the clean batch plus beta x KL(clean || adversarial
    predictions). ``ibp``: :func:`advlab.training.ibp.ibp_objective`, clean and worst-case
    loss mixed on the ramp of ``warmup_epochs``, ``ramp_epochs`` and ``kappa_end``. The logits
    returned, which the training accuracy counts, are those of the batch the model was trained
    on: the adversarial one under every method but ``none`` (and ``ibp``: the worst case).
    """
    if AdversarialMethod(cfg.method) == AdversarialMethod.ibp:
        schedule = IbpSchedule(
            eps=float(cfg.eps),
            warmup_epochs=float(cfg.warmup_epochs),
            ramp_epochs=float(cfg.ramp_epochs),
            kappa_end=float(cfg.kappa_end),
        )
        return functools.partial(ibp_objective, schedule=schedule, loss_fn=loss_fn)
    perturb = training_perturbation(cfg, loss_fn=loss_fn)
    if AdversarialMethod(cfg.method) == AdversarialMethod.trades:
        return functools.partial(
            _trades_objective, perturb=perturb, beta=float(cfg.beta), loss_fn=loss_fn
        )
    return functools.partial(_perturbed_objective, perturb=perturb, loss_fn=loss_fn)


def _perturbed_objective(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    perturb: Perturbation | None,
    loss_fn: LossFn,
    generator: torch.Generator | None = None,
    epochs_done: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    if perturb is not None:
        x = perturb(model, x, y, generator=generator)
    logits = model(x)
    return loss_fn(logits, y), logits


def _trades_objective(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    perturb: Perturbation,
    beta: float,
    loss_fn: LossFn,
    generator: torch.Generator | None = None,
    epochs_done: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    x_adv = perturb(model, x, y, generator=generator)
    logits_clean, logits_adv = model(x), model(x_adv)
    return trades_loss(logits_clean, logits_adv, y, beta=beta, loss_fn=loss_fn), logits_adv


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
