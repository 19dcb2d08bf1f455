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
- An option's hyperparameters and their defaults are the fields of its schema in
  :mod:`advlab.config` (``PgdConf`` for ``pgd``, ...); a factory reads them from there, so a
  Python caller gets the same defaults as the YAML.
- ``norm`` and ``white_box`` are metadata for the evaluator; factories accept them and check that
  ``norm`` matches what the attack really bounds (a wrong value would make the bound check lie).
- Ranges and option lists (eps >= 0, steps >= 1, ``targeted``) are checked once, by
  :func:`advlab.validate.check_eval`; the factories trust the values they are given.
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
from collections.abc import Callable, Mapping
from dataclasses import fields
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from hydra.utils import instantiate
from torch import nn

from advlab.attacks.first_success import first_success_forward
from advlab.config import (
    ApgdCeConf,
    AttackConf,
    AutoattackConf,
    CwConf,
    DeepfoolConf,
    FabConf,
    FgsmConf,
    Norm,
    PgdConf,
    PgdL2Conf,
    SquareConf,
    Targeted,
)
from advlab.errors import AttackError, MissingDependencyError
from advlab.naming import madry_step, option_name, to_pixels

if TYPE_CHECKING:  # pragma: no cover - typing only
    from torchattacks import Attack

TORCHATTACKS_PIN = "torchattacks==3.5.1"
# Attacks whose DLR-loss parts are undefined below this many classes (the DLR loss reads the
# 3rd (untargeted) / 4th (targeted) largest logit), by option name and AutoAttack version.
_AUTOATTACK_MIN_CLASSES = {"standard": 4, "plus": 4, "rand": 3}
_ALTERNATIVES = "apgd_ce, fab or square"
# torchattacks classes of the AutoAttack family: they take their norm by name and a seed of
# their own.
_CROCE_HEIN = frozenset({"APGD", "FAB", "Square", "AutoAttack"})
# torchattacks' switch to each targeted mode.
_TARGETED_MODES = {
    Targeted.random: "set_mode_targeted_random",
    Targeted.least_likely: "set_mode_targeted_least_likely",
}


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
    option = option_name(str(cfg_attack.get("_target_", name)))
    if option == "autoattack":
        version = str(cfg_attack.get("version", AutoattackConf.version))
        _check_autoattack(name, version, num_classes)


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


def build_factories(attacks: Mapping[str, Any], num_classes: int) -> dict[str, Callable[..., Any]]:
    """``{name: instantiate(node)}`` for each attack node, in order, after refusing any that
    cannot run on ``num_classes`` classes (:func:`check_attack_support`)."""
    for name in attacks:
        check_attack_support(name, attacks[name], num_classes)
    return {name: instantiate(attacks[name]) for name in attacks}


# ---------------------------------------------------------------------------------------- helpers
def _options(name: str, schema: type[AttackConf], given: dict[str, Any]) -> AttackConf:
    """The options of attack ``name``: its schema's defaults (:mod:`advlab.config`, the one
    source of them) updated with ``given``.

    Refuses a key the schema does not have and a ``norm`` that does not describe the attack (a
    wrong value would make the bound check lie). ``num_classes``, which the evaluator passes to
    every factory, is a run-time argument, not an option: it is left out here (``fab`` and
    ``autoattack`` read it from their own keyword arguments).
    """
    given = {key: value for key, value in given.items() if key != "num_classes"}
    known = sorted({f.name for f in fields(schema)} - {"_target_", "_partial_"})
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise AttackError(f"attacks.{name}: unexpected argument(s) {unknown}; its options: {known}")
    options = schema(**given)
    if options.norm != schema.norm:
        raise AttackError(
            f"attacks.{name}.norm={str(options.norm)!r} does not describe this attack: it is "
            f"{str(schema.norm)!r}"
        )
    return options


def adapt(atk: Any, *, seed: int, norm: Norm, budget: float | None, white_box: bool) -> Attack:
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


def linf_attack(
    model: nn.Module,
    eps: float,
    seed: int,
    options: AttackConf,
    attack_class: str,
    forward: Callable[..., torch.Tensor] | None = None,
    **kwargs: Any,
) -> Attack:
    """``torchattacks.<attack_class>(model, eps=eps/255, **kwargs)``: an L-inf attack of budget
    ``eps`` (1/255 units), switched to ``options.targeted`` where the options have it, adapted.
    ``forward(atk, images, labels)``, when given, replaces the attack's own loop."""
    if attack_class in _CROCE_HEIN:
        kwargs.update(norm="Linf", seed=int(seed))
    atk = getattr(import_torchattacks(), attack_class)(model, eps=to_pixels(eps), **kwargs)
    if forward is not None:
        atk.forward = partial(forward, atk)
    targeted = getattr(options, "targeted", None)
    if targeted is not None:
        getattr(atk, _TARGETED_MODES[Targeted(targeted)])(quiet=True)
    return adapt(atk, seed=seed, norm=Norm.linf, budget=to_pixels(eps), white_box=options.white_box)


def _unbounded(atk: Any, seed: int, options: AttackConf) -> Attack:
    """A minimum-norm attack (no budget) adapted."""
    return adapt(atk, seed=seed, norm=options.norm, budget=None, white_box=options.white_box)


# -------------------------------------------------------------------------------------- factories
# Each factory takes the model and the run-time ``eps`` (1/255 units) and ``seed``; its options
# and their defaults are the fields of the schema named in its docstring.
def fgsm(model: nn.Module, *, eps: float, seed: int = 0, **options: Any) -> Attack:
    """FGSM, L-inf: ``x_adv = clamp(x + eps/255 * sign(grad_x loss), 0, 1)`` (one step).

    Options :class:`~advlab.config.FgsmConf`; ``targeted`` random | least_likely steps towards
    the target, i.e. ``x - eps * sign(grad loss(target))``.
    """
    return linf_attack(model, eps, seed, _options("fgsm", FgsmConf, options), "FGSM")


def pgd(model: nn.Module, *, eps: float, seed: int = 0, **options: Any) -> Attack:
    """PGD, L-inf (Madry et al.): ``steps`` signed-gradient steps of ``alpha``, projected on the
    eps ball and [0, 1]. Options :class:`~advlab.config.PgdConf`: ``alpha`` in 1/255 units;
    ``alpha=None`` is Madry et al.'s 2.5 * eps / steps, which reaches the ball's boundary from
    any start at every eps of a grid. ``random_start`` draws a uniform start in the ball (from
    ``seed``). ``stop_on_success`` (untargeted only) keeps each point's first fooling iterate
    (:mod:`advlab.attacks.first_success`)."""
    o = _options("pgd", PgdConf, options)
    alpha = o.alpha
    if alpha is None:
        alpha = madry_step(eps, o.steps) if eps > 0 else 1.0  # eps 0: no step can move x
    steps, start = int(o.steps), bool(o.random_start)
    forward = first_success_forward if o.stop_on_success and o.targeted is None else None
    return linf_attack(
        model,
        eps,
        seed,
        o,
        "PGD",
        forward=forward,
        alpha=to_pixels(alpha),
        steps=steps,
        random_start=start,
    )


def pgd_l2(model: nn.Module, *, eps: float, seed: int = 0, **options: Any) -> Attack:
    """PGD under the L2 norm. The grid value ``eps`` (1/255 L-inf units) maps to the L2 radius
    ``eps * l2_per_unit`` in pixel units (eps 8 -> 0.8 with the default 0.1); the step size is
    ``alpha_fraction`` times that radius. Options :class:`~advlab.config.PgdL2Conf`."""
    o = _options("pgd_l2", PgdL2Conf, options)
    radius = float(eps) * float(o.l2_per_unit)
    if radius == 0:
        # torchattacks' PGDL2 divides by the radius (NaN at 0); a zero ball admits only x itself.
        atk = import_torchattacks().VANILA(model)
    else:
        atk = import_torchattacks().PGDL2(
            model,
            eps=radius,
            alpha=float(o.alpha_fraction) * radius,
            steps=int(o.steps),
            random_start=bool(o.random_start),
        )
    return adapt(atk, seed=seed, norm=Norm.l2, budget=radius, white_box=o.white_box)


def apgd_ce(model: nn.Module, *, eps: float, seed: int = 0, **options: Any) -> Attack:
    """APGD with cross-entropy loss (Croce & Hein 2020), L-inf, step size adapted; any number of
    classes. Options :class:`~advlab.config.ApgdCeConf`."""
    o = _options("apgd_ce", ApgdCeConf, options)
    kwargs = dict(steps=int(o.steps), n_restarts=int(o.restarts), loss="ce")
    return linf_attack(model, eps, seed, o, "APGD", **kwargs)


def square(model: nn.Module, *, eps: float, seed: int = 0, **options: Any) -> Attack:
    """Square attack (Andriushchenko et al. 2020), L-inf, black-box: it only queries the model's
    outputs (``queries`` per example). Options :class:`~advlab.config.SquareConf`."""
    o = _options("square", SquareConf, options)
    kwargs = dict(n_queries=int(o.queries), n_restarts=int(o.restarts), p_init=float(o.p_init))
    return linf_attack(model, eps, seed, o, "Square", **kwargs)


def fab(model: nn.Module, *, eps: float, seed: int = 0, **options: Any) -> Attack:
    """FAB (Croce & Hein 2020), untargeted, L-inf: a minimal-perturbation attack that works on two
    classes (the alternative to AutoAttack's FAB-T there). Options :class:`~advlab.config.FabConf`
    plus the run-time ``num_classes``."""
    o = _options("fab", FabConf, options)
    classes = int(options["num_classes"])
    kwargs = dict(steps=int(o.steps), n_restarts=int(o.restarts), n_classes=classes)
    return linf_attack(model, eps, seed, o, "FAB", multi_targeted=False, **kwargs)


def cw(model: nn.Module, *, eps: float | None = None, seed: int = 0, **options: Any) -> Attack:
    """Carlini-Wagner L2: minimises the perturbation, so it takes no budget (``eps`` is ignored;
    the evaluator counts an example at a grid eps only if its perturbation lies in that ball).
    Options :class:`~advlab.config.CwConf`."""
    o = _options("cw", CwConf, options)
    kwargs = {"c": float(o.c), "kappa": float(o.kappa), "steps": int(o.steps), "lr": float(o.lr)}
    return _unbounded(import_torchattacks().CW(model, **kwargs), seed, o)


def deepfool(
    model: nn.Module, *, eps: float | None = None, seed: int = 0, **options: Any
) -> Attack:
    """DeepFool: the minimal step to the nearest (linearised) decision boundary, unbounded, so
    ``eps`` is ignored (see :func:`cw`). Slow: torchattacks loops over examples and classes.
    Options :class:`~advlab.config.DeepfoolConf`."""
    o = _options("deepfool", DeepfoolConf, options)
    atk = import_torchattacks().DeepFool(model, steps=int(o.steps), overshoot=float(o.overshoot))
    return _unbounded(atk, seed, o)


def autoattack(model: nn.Module, *, eps: float, seed: int = 0, **options: Any) -> Attack:
    """AutoAttack (Croce & Hein 2020), L-inf: APGD-CE, APGD-T, FAB-T, Square (``standard``).

    Options :class:`~advlab.config.AutoattackConf` plus the run-time ``num_classes``. Refused
    with :class:`AttackError` below 4 classes (3 for ``rand``), before anything runs: its
    DLR-loss parts are undefined there.
    """
    o = _options("autoattack", AutoattackConf, options)
    classes, version = int(options["num_classes"]), str(o.version)
    _check_autoattack("autoattack", version, classes)
    return linf_attack(model, eps, seed, o, "AutoAttack", version=version, n_classes=classes)
