"""torchattacks adapters: one factory per attack option in ``conf/attack/``, named as the option.

Each ``conf/attack/<name>.yaml`` is a Hydra ``_partial_`` node, so ``hydra.utils.instantiate(node)``
returns ``functools.partial(zoo.<name>, **hyperparameters)``; the evaluator then calls it with the
run-time arguments::

    attack = instantiate(cfg.attacks.pgd)(model, eps=8, seed=0, num_classes=10)
    x_adv = attack(x, y)          # x: float (N, C, H, W) in [0, 1], y: int64 (N,)

Conventions shared by every factory:

- ``eps`` is in **1/255 units** (the ``eval.eps`` grid); it becomes pixel units here, where the
  tensor is perturbed. ``pgd_l2`` maps the grid to an L2 radius ``eps * l2_per_unit`` (pixel units).
- The model takes [0, 1] images and normalises inside (``Normalize`` is its first layer), so
  torchattacks' ``set_normalization_used`` is never called.
- ``norm`` and ``white_box`` are metadata for the evaluator; factories accept them and check that
  ``norm`` matches what the attack really bounds (a wrong value would make the bound check lie).
- ``seed`` makes the attack's randomness (random starts, random targets, restarts) reproducible and
  independent of the global RNG: every call runs under a forked RNG seeded from ``seed`` and the
  call index, so the global generator is left exactly as it was.
- The returned ``torchattacks.Attack`` carries ``advlab_norm``, ``advlab_budget`` (the radius in
  pixel units in that norm, or ``None`` for minimum-norm attacks such as ``cw`` and ``deepfool``
  that take no budget) and ``advlab_white_box``.

torchattacks is imported lazily so that ``python -m advlab --help`` and config checks stay fast,
and so that a missing install gives one clear line instead of an ImportError trace.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from advlab.errors import AttackError, MissingDependencyError
from advlab.naming import option_name

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torchattacks

TORCHATTACKS_PIN = "torchattacks==3.5.1"
TARGETED_MODES = (None, "random", "least_likely")
# Metadata keys of an attack node that describe the attack to the evaluator (see AttackConf).
_METADATA_KEYS = frozenset({"norm", "white_box", "num_classes"})
# Attacks whose DLR-loss parts are undefined below this many classes (the DLR loss reads the
# 3rd (untargeted) / 4th (targeted) largest logit), by option name and AutoAttack version.
_AUTOATTACK_MIN_CLASSES = {"standard": 4, "plus": 4, "rand": 3}
_ALTERNATIVES = "apgd_ce, fab or square"


def import_torchattacks() -> Any:
    """Import torchattacks or raise :class:`MissingDependencyError` saying how to install it."""
    try:
        import torchattacks
    except ImportError as exc:
        raise MissingDependencyError(
            f"torchattacks is not installed: run `pip install --no-deps {TORCHATTACKS_PIN}` "
            "(--no-deps because its declared requests~=2.25.1 and torchvision pins are not needed "
            "by the attacks and make pip backtrack for many minutes against mlflow)"
        ) from exc
    return torchattacks


# ---------------------------------------------------------------------------------- support checks
def check_attack_support(name: str, cfg_attack: Mapping[str, Any], num_classes: int) -> None:
    """Raise :class:`AttackError` if attack option ``name`` cannot run on ``num_classes`` classes.

    Called before training (by the pipeline) and again by the factories, so that an undefined
    attack is refused with a message naming the alternatives rather than crashing inside it.
    """
    target = cfg_attack.get("_target_", name) if hasattr(cfg_attack, "get") else name
    option = option_name(str(target))
    if option == "autoattack":
        version = str(cfg_attack.get("version", "standard"))
        _check_autoattack(name, version, num_classes)
    targeted = cfg_attack.get("targeted") if hasattr(cfg_attack, "get") else None
    if targeted not in TARGETED_MODES:
        raise AttackError(
            f"attacks.{name}.targeted={targeted!r} is not one of null, random, least_likely"
        )


def _check_autoattack(name: str, version: str, num_classes: int) -> None:
    if version not in _AUTOATTACK_MIN_CLASSES:
        raise AttackError(
            f"attacks.{name}.version={version!r} is not one of {sorted(_AUTOATTACK_MIN_CLASSES)}"
        )
    needed = _AUTOATTACK_MIN_CLASSES[version]
    if num_classes < needed:
        raise AttackError(
            f"attacks.{name} (AutoAttack version={version}) needs at least {needed} classes "
            f"(its DLR-loss parts are undefined below that) but this task has {num_classes}: "
            f"use {_ALTERNATIVES} instead, e.g. eval.attacks=[pgd,apgd_ce,square]"
        )


# ---------------------------------------------------------------------------------------- helpers
def _check_metadata(name: str, common: dict[str, Any], expected_norm: str) -> bool:
    """Validate the metadata keys of attack ``name``; return its ``white_box`` flag."""
    unknown = set(common) - _METADATA_KEYS
    if unknown:
        raise AttackError(
            f"attacks.{name}: unexpected argument(s) {sorted(unknown)}; "
            f"only {sorted(_METADATA_KEYS)} are accepted besides the attack's own keys"
        )
    norm = common.get("norm", expected_norm)
    if norm != expected_norm:
        raise AttackError(
            f"attacks.{name}.norm={norm!r} does not describe this attack: it is {expected_norm!r}"
        )
    return bool(common.get("white_box", True))


def _check_eps(name: str, eps: float) -> float:
    if eps is None or float(eps) < 0:
        raise AttackError(f"attacks.{name}: eps={eps!r} must be >= 0 (1/255 units)")
    return float(eps)


def _set_targeted(atk: Any, name: str, targeted: str | None) -> None:
    """Switch a torchattacks attack to targeted mode ('random' or 'least_likely')."""
    if targeted is None:
        return
    if targeted not in TARGETED_MODES:
        raise AttackError(
            f"attacks.{name}.targeted={targeted!r} is not one of null, random, least_likely"
        )
    if "targeted" not in atk.supported_mode:
        raise AttackError(f"attacks.{name}: torchattacks {type(atk).__name__} has no targeted mode")
    if targeted == "random":
        atk.set_mode_targeted_random(quiet=True)
    else:
        atk.set_mode_targeted_least_likely(quiet=True)


def _finish(
    atk: Any, *, seed: int, norm: str, budget: float | None, white_box: bool
) -> torchattacks.Attack:
    """Attach the evaluator's metadata and make every call reproducible from ``seed``."""
    forward = atk.forward
    calls = itertools.count()

    def seeded_forward(images: torch.Tensor, labels: torch.Tensor, *args, **kwargs):
        # fork_rng restores the global CPU (and CUDA) generators afterwards, so neither the
        # attack's random start / random targets nor torchattacks' internal manual_seed calls
        # (APGD, Square) leak into, or depend on, the rest of the program.
        devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(int(seed) * 1_000_003 + next(calls))
            return forward(images, labels, *args, **kwargs)

    # torchattacks' __call__ dispatches to self.forward, so an instance attribute wraps it.
    atk.forward = seeded_forward
    atk.advlab_norm = norm
    atk.advlab_budget = budget
    atk.advlab_white_box = white_box
    atk.advlab_seed = int(seed)
    return atk


# -------------------------------------------------------------------------------------- factories
def fgsm(
    model: nn.Module,
    *,
    eps: float,
    targeted: str | None = None,
    seed: int = 0,
    **common: Any,
) -> torchattacks.Attack:
    """FGSM, L-inf: ``x_adv = clamp(x + eps/255 * sign(grad_x loss), 0, 1)`` (one step).

    ``eps`` in 1/255 units; ``targeted`` null | 'random' | 'least_likely' (steps towards the
    target, i.e. ``x - eps * sign(grad loss(target))``).
    """
    white_box = _check_metadata("fgsm", common, "linf")
    eps = _check_eps("fgsm", eps)
    atk = import_torchattacks().FGSM(model, eps=eps / 255)
    _set_targeted(atk, "fgsm", targeted)
    return _finish(atk, seed=seed, norm="linf", budget=eps / 255, white_box=white_box)


def pgd(
    model: nn.Module,
    *,
    eps: float,
    steps: int = 10,
    alpha: float | None = None,
    random_start: bool = True,
    targeted: str | None = None,
    seed: int = 0,
    **common: Any,
) -> torchattacks.Attack:
    """PGD, L-inf (Madry et al.): ``steps`` signed-gradient steps of ``alpha``, projected on the
    eps ball and [0, 1]. ``eps`` and ``alpha`` in 1/255 units; ``alpha=None`` is Madry et al.'s
    2.5 * eps / steps, which reaches the ball's boundary from any start at every eps of a grid.
    ``random_start`` draws a uniform start in the ball (from ``seed``)."""
    white_box = _check_metadata("pgd", common, "linf")
    eps = _check_eps("pgd", eps)
    if alpha is None:
        alpha = 2.5 * eps / max(int(steps), 1) if eps > 0 else 1.0  # eps 0: no step can move x
    if int(steps) < 1 or float(alpha) <= 0:
        raise AttackError(f"attacks.pgd: steps={steps} must be >= 1 and alpha={alpha} > 0")
    atk = import_torchattacks().PGD(
        model, eps=eps / 255, alpha=float(alpha) / 255, steps=int(steps), random_start=random_start
    )
    _set_targeted(atk, "pgd", targeted)
    return _finish(atk, seed=seed, norm="linf", budget=eps / 255, white_box=white_box)


def pgd_l2(
    model: nn.Module,
    *,
    eps: float,
    steps: int = 10,
    l2_per_unit: float = 0.1,
    alpha_fraction: float = 0.2,
    random_start: bool = True,
    seed: int = 0,
    **common: Any,
) -> torchattacks.Attack:
    """PGD under the L2 norm. The grid value ``eps`` (1/255 L-inf units) maps to the L2 radius
    ``eps * l2_per_unit`` in pixel units (eps 8 -> 0.8 with the default 0.1); the step size is
    ``alpha_fraction`` times that radius."""
    white_box = _check_metadata("pgd_l2", common, "l2")
    eps = _check_eps("pgd_l2", eps)
    if float(l2_per_unit) <= 0 or float(alpha_fraction) <= 0 or int(steps) < 1:
        raise AttackError(
            f"attacks.pgd_l2: l2_per_unit={l2_per_unit} and alpha_fraction={alpha_fraction} must "
            f"be > 0 and steps={steps} >= 1"
        )
    radius = eps * float(l2_per_unit)
    if radius == 0:
        # torchattacks' PGDL2 divides by the radius (NaN at 0); a zero ball admits only x itself.
        atk = import_torchattacks().VANILA(model)
        return _finish(atk, seed=seed, norm="l2", budget=0.0, white_box=white_box)
    atk = import_torchattacks().PGDL2(
        model,
        eps=radius,
        alpha=float(alpha_fraction) * radius,
        steps=int(steps),
        random_start=random_start,
    )
    return _finish(atk, seed=seed, norm="l2", budget=radius, white_box=white_box)


def apgd_ce(
    model: nn.Module,
    *,
    eps: float,
    steps: int = 10,
    restarts: int = 1,
    seed: int = 0,
    **common: Any,
) -> torchattacks.Attack:
    """APGD with cross-entropy loss (Croce & Hein 2020), L-inf, step size adapted; any number of
    classes. ``eps`` in 1/255 units."""
    white_box = _check_metadata("apgd_ce", common, "linf")
    eps = _check_eps("apgd_ce", eps)
    atk = import_torchattacks().APGD(
        model,
        norm="Linf",
        eps=eps / 255,
        steps=int(steps),
        n_restarts=int(restarts),
        seed=int(seed),
        loss="ce",
    )
    return _finish(atk, seed=seed, norm="linf", budget=eps / 255, white_box=white_box)


def square(
    model: nn.Module,
    *,
    eps: float,
    queries: int = 1000,
    restarts: int = 1,
    p_init: float = 0.8,
    seed: int = 0,
    **common: Any,
) -> torchattacks.Attack:
    """Square attack (Andriushchenko et al. 2020), L-inf, black-box: it only queries the model's
    outputs (``queries`` per example). ``eps`` in 1/255 units."""
    white_box = _check_metadata("square", common, "linf")
    eps = _check_eps("square", eps)
    atk = import_torchattacks().Square(
        model,
        norm="Linf",
        eps=eps / 255,
        n_queries=int(queries),
        n_restarts=int(restarts),
        p_init=float(p_init),
        seed=int(seed),
    )
    return _finish(atk, seed=seed, norm="linf", budget=eps / 255, white_box=white_box)


def fab(
    model: nn.Module,
    *,
    eps: float,
    steps: int = 10,
    restarts: int = 1,
    num_classes: int,
    seed: int = 0,
    **common: Any,
) -> torchattacks.Attack:
    """FAB (Croce & Hein 2020), untargeted, L-inf: a minimal-perturbation attack that works on two
    classes (the alternative to AutoAttack's FAB-T there). ``eps`` in 1/255 units."""
    white_box = _check_metadata("fab", common, "linf")
    eps = _check_eps("fab", eps)
    atk = import_torchattacks().FAB(
        model,
        norm="Linf",
        eps=eps / 255,
        steps=int(steps),
        n_restarts=int(restarts),
        seed=int(seed),
        multi_targeted=False,
        n_classes=int(num_classes),
    )
    return _finish(atk, seed=seed, norm="linf", budget=eps / 255, white_box=white_box)


def cw(
    model: nn.Module,
    *,
    eps: float | None = None,
    c: float = 1.0,
    kappa: float = 0.0,
    steps: int = 50,
    lr: float = 0.01,
    seed: int = 0,
    **common: Any,
) -> torchattacks.Attack:
    """Carlini-Wagner L2: minimises the perturbation, so it takes no budget (``eps`` is ignored;
    the evaluator counts an example at a grid eps only if its perturbation lies in that ball)."""
    white_box = _check_metadata("cw", common, "l2")
    atk = import_torchattacks().CW(
        model, c=float(c), kappa=float(kappa), steps=int(steps), lr=float(lr)
    )
    return _finish(atk, seed=seed, norm="l2", budget=None, white_box=white_box)


def deepfool(
    model: nn.Module,
    *,
    eps: float | None = None,
    steps: int = 50,
    overshoot: float = 0.02,
    seed: int = 0,
    **common: Any,
) -> torchattacks.Attack:
    """DeepFool: the minimal step to the nearest (linearised) decision boundary, unbounded, so
    ``eps`` is ignored (see :func:`cw`). Slow: torchattacks loops over examples and classes."""
    white_box = _check_metadata("deepfool", common, "none")
    atk = import_torchattacks().DeepFool(model, steps=int(steps), overshoot=float(overshoot))
    return _finish(atk, seed=seed, norm="none", budget=None, white_box=white_box)


def autoattack(
    model: nn.Module,
    *,
    eps: float,
    version: str = "standard",
    num_classes: int,
    seed: int = 0,
    **common: Any,
) -> torchattacks.Attack:
    """AutoAttack (Croce & Hein 2020), L-inf: APGD-CE, APGD-T, FAB-T, Square (``standard``).

    Refused with :class:`AttackError` below 4 classes (3 for ``rand``), before anything runs: its
    DLR-loss parts are undefined there. ``eps`` in 1/255 units.
    """
    white_box = _check_metadata("autoattack", common, "linf")
    _check_autoattack("autoattack", str(version), int(num_classes))
    eps = _check_eps("autoattack", eps)
    atk = import_torchattacks().AutoAttack(
        model,
        norm="Linf",
        eps=eps / 255,
        version=str(version),
        n_classes=int(num_classes),
        seed=int(seed),
    )
    return _finish(atk, seed=seed, norm="linf", budget=eps / 255, white_box=white_box)
