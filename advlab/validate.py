"""Range and consistency checks that types alone cannot express.

The schemas in :mod:`advlab.config` already refuse typo'd keys, unknown options and wrong types at
compose time. This module refuses values that are well-typed but wrong (a negative eps,
dropout >= 1, an early-stopping monitor that is never recorded, ...). It reads nothing but the
config, so it runs in milliseconds, first thing in the pipeline, before any data is read. Each
failure is one line that names the key, the value and what is wrong.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from advlab.errors import ConfigError

LOSSES = ("cross_entropy", "mse")
SCHEDULERS = ("none", "staircase", "cosine", "onecycle")
PRECISIONS = ("fp32", "bf16", "auto")
ADVERSARIAL_METHODS = ("none", "fgsm_rs", "pgd")
MONITORS = ("val_loss", "val_acc", "val_robust_acc")
DEVICES = ("auto", "cpu", "cuda")
TARGETED_MODES = (None, "random", "least_likely")


def _fail(key: str, value: Any, why: str) -> None:
    raise ConfigError(f"{key}={value!r}: {why}")


def _at_least(key: str, value: float | None, low: float, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or value < low:
        _fail(key, value, f"must be >= {low:g}")


def _positive(key: str, value: float) -> None:
    if not value > 0:
        _fail(key, value, "must be > 0")


def _fraction(key: str, value: float, *, closed_low: bool = True) -> None:
    ok = (0 <= value < 1) if closed_low else (0 < value < 1)
    if not ok:
        _fail(key, value, "must be in [0, 1)" if closed_low else "must be in (0, 1)")


def _one_of(key: str, value: Any, choices: Iterable[Any]) -> None:
    choices = tuple(choices)
    if value not in choices:
        names = ", ".join("null" if c is None else str(c) for c in choices)
        _fail(key, value, f"must be one of {names}")


def _check_data(data: DictConfig) -> None:
    if OmegaConf.is_missing(data, "root"):
        raise ConfigError(
            f"data.root is required for data={data.name}: pass the folder holding the data, "
            f"e.g. python -m advlab data={data.name} data.root=/path/to/DataBases"
        )
    _fraction("data.val_fraction", data.val_fraction)
    _at_least("data.limit_train", data.limit_train, 1, allow_none=True)
    _at_least("data.limit_test", data.limit_test, 1, allow_none=True)
    if "test_fraction" in data:
        _fraction("data.test_fraction", data.test_fraction, closed_low=False)
    if "image_size" in data:
        _at_least("data.image_size", data.image_size, 4)
    if "channels" in data:
        _one_of("data.channels", data.channels, (1, 3))
    _at_least("data.augment.shift", data.augment.shift, 0)
    _at_least("data.augment.rotation", data.augment.rotation, 0)


def _check_model(model: DictConfig) -> None:
    for key in ("dropout", "conv_dropout"):
        if key in model:
            _fraction(f"model.{key}", model[key])
    for key in ("hidden", "convs_per_stage", "blocks_per_stage", "width"):
        if key in model:
            _at_least(f"model.{key}", model[key], 1)
    for key in ("filters", "widths"):
        if key in model and (not model[key] or min(model[key]) < 1):
            _fail(f"model.{key}", list(model[key]), "needs at least one value, each >= 1")


def _check_optimizer(opt: DictConfig) -> None:
    _positive("optimizer.lr", opt.lr)
    _at_least("optimizer.weight_decay", opt.weight_decay, 0)
    if "momentum" in opt:
        _fraction("optimizer.momentum", opt.momentum)


def _check_train(train: DictConfig) -> None:
    _at_least("train.epochs", train.epochs, 1)
    _at_least("train.batch_size", train.batch_size, 1)
    _one_of("train.loss", train.loss, LOSSES)
    _one_of("train.precision", train.precision, PRECISIONS)

    sched = train.scheduler
    _one_of("train.scheduler.name", sched.name, SCHEDULERS)
    _fraction("train.scheduler.decay_rate", sched.decay_rate, closed_low=False)
    _at_least("train.scheduler.decay_steps", sched.decay_steps, 1)
    if sched.max_lr is not None:
        _positive("train.scheduler.max_lr", sched.max_lr)

    adv = train.adversarial
    _one_of("train.adversarial.method", adv.method, ADVERSARIAL_METHODS)
    _at_least("train.adversarial.eps", adv.eps, 0)
    if adv.alpha is not None:
        _positive("train.adversarial.alpha", adv.alpha)
    _at_least("train.adversarial.steps", adv.steps, 1)
    _at_least("train.adversarial.val_robust_n", adv.val_robust_n, 1)
    _at_least("train.adversarial.val_robust_steps", adv.val_robust_steps, 1)

    es = train.early_stopping
    _one_of("train.early_stopping.monitor", es.monitor, MONITORS)
    _one_of("train.early_stopping.mode", es.mode, ("min", "max"))
    _at_least("train.early_stopping.patience", es.patience, 0)
    _at_least("train.early_stopping.min_delta", es.min_delta, 0)
    if es.enabled and es.monitor == "val_robust_acc" and not adv.val_robust:
        _fail(
            "train.early_stopping.monitor",
            es.monitor,
            "is only recorded with train.adversarial.val_robust=true",
        )
    if es.enabled:
        wanted = "min" if es.monitor == "val_loss" else "max"
        if es.mode != wanted:
            _fail(
                "train.early_stopping.mode",
                es.mode,
                f"monitor {es.monitor} improves when it goes {'down' if wanted == 'min' else 'up'}"
                f"; use mode={wanted}",
            )


def _check_eval(cfg: DictConfig) -> None:
    ev = cfg.eval
    if not ev.eps:
        _fail("eval.eps", list(ev.eps), "needs at least one budget (1/255 units), e.g. [0, 8]")
    for eps in ev.eps:
        if eps < 0:
            _fail("eval.eps", list(ev.eps), f"budget {eps:g} is negative (units of 1/255)")
    if len(set(ev.eps)) != len(ev.eps):
        _fail("eval.eps", list(ev.eps), "contains a budget twice")
    known = list(cfg.attacks.keys())
    for name in ev.attacks:
        if name not in known:
            _fail("eval.attacks", list(ev.attacks), f"unknown attack {name!r}; options: {known}")
        attack = cfg.attacks[name]
        if "targeted" in attack:
            _one_of(f"attacks.{name}.targeted", attack.targeted, TARGETED_MODES)
        for key in ("steps", "queries", "restarts"):
            if key in attack:
                _at_least(f"attacks.{name}.{key}", attack[key], 1)
        for key in ("alpha", "l2_per_unit"):
            if key in attack and attack[key] is not None:
                _positive(f"attacks.{name}.{key}", attack[key])
    if len(set(ev.attacks)) != len(ev.attacks):
        _fail("eval.attacks", list(ev.attacks), "names an attack twice")
    _at_least("eval.n_examples", ev.n_examples, 1, allow_none=True)
    _at_least("eval.batch_size", ev.batch_size, 1)
    _at_least("eval.grid_eps", ev.grid_eps, 0, allow_none=True)
    _at_least("eval.grid_n", ev.grid_n, 1)
    _at_least("eval.sanity.convergence_n", ev.sanity.convergence_n, 1)
    _at_least("eval.sanity.convergence_eps", ev.sanity.convergence_eps, 0)
    _at_least("eval.sanity.tolerance", ev.sanity.tolerance, 0)
    _at_least("eval.sanity.chance_margin", ev.sanity.chance_margin, 0)


def validate_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` (one line: key, value, why) for the first out-of-range value."""
    _one_of("device", cfg.device, DEVICES)
    _at_least("seed", cfg.seed, 0)
    _at_least("threads", cfg.threads, 1, allow_none=True)
    _check_data(cfg.data)
    _check_model(cfg.model)
    _check_optimizer(cfg.optimizer)
    _check_train(cfg.train)
    _check_eval(cfg)
    if cfg.tracking.enabled and not str(cfg.tracking.experiment).strip():
        _fail("tracking.experiment", cfg.tracking.experiment, "must name an MLflow experiment")
