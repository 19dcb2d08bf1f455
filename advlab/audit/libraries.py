"""FGSM and PGD, L-inf, untargeted, from three libraries on one model: torchattacks, ART, Foolbox.

Contract shared by the three adapters: ``model`` takes float (N, C, H, W) in [0, 1] and returns
logits (N, K) (``Normalize`` is its first layer, so no library is told about normalisation);
``x`` is such a batch and ``y`` int64 (N,); ``spec`` gives the budget and steps in pixel units; the
result is ``x_adv`` float (N, C, H, W) in [0, 1] on ``x``'s device. ART gets
``PyTorchClassifier(clip_values=(0, 1))`` and one-hot labels (its index-label path special-cases
two classes), Foolbox ``PyTorchModel(bounds=(0, 1))``. The random start of each library is drawn
from ``seed`` under a forked (torch) or saved (NumPy, ART's generator) RNG state, so the audit
leaves the global generators as it found them.

ART and Foolbox are an optional extra: :func:`import_extras` imports them or raises
:class:`~advlab.errors.MissingDependencyError` with the one-line install hint. Nothing else in
advlab imports this module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import numpy as np
import torch
from torch import nn

from advlab.attacks import zoo
from advlab.errors import MissingDependencyError

LIBRARIES = ("torchattacks", "art", "foolbox")
INSTALL_HINT = 'pip install -e ".[audit]"'
_EXTRAS = {"art": "adversarial-robustness-toolbox", "foolbox": "foolbox"}  # module -> distribution
_DISTRIBUTIONS = {"torchattacks": "torchattacks", **_EXTRAS}


@dataclass(frozen=True)
class AttackSpec:
    """One attack at one budget, in pixel units: ``steps`` of ``alpha`` inside the ``eps`` ball
    (FGSM: one step of ``eps`` from x, no random start)."""

    name: str  # fgsm | pgd
    eps: float  # L-inf radius, pixel units
    alpha: float
    steps: int
    random_start: bool


def import_extras() -> dict[str, Any]:
    """``{"art": module, "foolbox": module}``, or :class:`MissingDependencyError` naming the
    missing ones and the install command."""
    modules, missing = {}, []
    for module in _EXTRAS:
        try:
            modules[module] = __import__(module)
        except ImportError:
            missing.append(f"{module} ({_EXTRAS[module]})")
    if missing:
        raise MissingDependencyError(
            f"the audit compares torchattacks with IBM ART and Foolbox, and {', '.join(missing)} "
            f"is not installed: run `{INSTALL_HINT}` in the project"
        )
    return modules


def versions() -> dict[str, str]:
    """Installed version of each library, by library name."""
    return {name: metadata.version(dist) for name, dist in _DISTRIBUTIONS.items()}


def torchattacks_spec(
    model: nn.Module, name: str, eps: float, seed: int, options: dict
) -> tuple[AttackSpec, Callable]:
    """advlab's own torchattacks attack ``name`` at ``eps`` (1/255 units) with the run's
    ``options`` (:mod:`advlab.attacks.zoo`, so the audit's reference is advlab's attack), and the
    :class:`AttackSpec` read back from it: the step-size rule lives in the zoo alone."""
    atk = getattr(zoo, name)(model, eps=eps, seed=seed, **options)
    if name == "fgsm":
        spec = AttackSpec(name, float(atk.eps), float(atk.eps), 1, False)
    else:
        spec = AttackSpec(name, float(atk.eps), float(atk.alpha), int(atk.steps), atk.random_start)
    return spec, atk


def art_attack(art: Any, model: nn.Module, spec: AttackSpec, x, y, *, seed: int, batch_size: int):
    """ART's ``FastGradientMethod`` / ``ProjectedGradientDescent`` (L-inf) on ``(x, y)``."""
    from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    with torch.no_grad():
        num_classes = int(model(x[:1]).shape[1])
    classifier = PyTorchClassifier(
        model=model,
        loss=nn.CrossEntropyLoss(),
        input_shape=tuple(x.shape[1:]),
        nb_classes=num_classes,
        clip_values=(0.0, 1.0),
        device_type="gpu" if x.device.type == "cuda" else "cpu",
    )
    common = dict(norm=np.inf, eps=spec.eps, batch_size=batch_size, targeted=False)
    if spec.name == "fgsm":
        attack = FastGradientMethod(classifier, eps_step=spec.eps, num_random_init=0, **common)
    else:
        attack = ProjectedGradientDescent(
            classifier,
            eps_step=spec.alpha,
            max_iter=spec.steps,
            num_random_init=int(spec.random_start),
            verbose=False,
            **common,
        )
    one_hot = np.eye(num_classes, dtype=np.float32)[y.cpu().numpy()]
    state = np.random.get_state()  # ART draws its random start from NumPy's global generator
    np.random.seed(seed % 2**32)
    try:
        adv = attack.generate(x.detach().cpu().numpy(), y=one_hot)
    finally:
        np.random.set_state(state)
    return torch.from_numpy(adv).to(x.device)


def foolbox_attack(fb: Any, model: nn.Module, spec: AttackSpec, x, y, *, seed: int):
    """Foolbox's ``FGSM`` / ``LinfPGD`` on ``(x, y)`` (whole batch; the caller batches)."""
    fmodel = fb.PyTorchModel(model, bounds=(0.0, 1.0), device=x.device)
    if spec.name == "fgsm":
        attack = fb.attacks.FGSM()
    else:
        attack = fb.attacks.LinfPGD(
            abs_stepsize=spec.alpha, steps=spec.steps, random_start=spec.random_start
        )
    devices = [x.device.index or 0] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # Foolbox's random start uses torch's generator
        torch.manual_seed(seed)
        _, clipped, _ = attack(fmodel, x, y, epsilons=spec.eps)
    return clipped.detach()
