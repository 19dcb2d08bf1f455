"""Range and consistency checks that types alone cannot express: the one home of every bound.

The schemas in :mod:`advlab.config` refuse typo'd keys, unknown options (enum fields) and wrong
types at compose time. This module refuses values that are well-typed but wrong (a negative eps,
dropout >= 1, an early-stopping monitor that is never recorded, ...). It reads nothing but the
config, so it runs in milliseconds, first thing in the pipeline, before any data is read. Each
failure is one line that names the key, the value and what is wrong.

Runtime modules trust a validated config. Python-API entry points that can run without the
pipeline (``fit``, ``evaluate_robustness``) call the matching ``check_*`` function here, never a
copy of it. Closed choices are checked against the enums of :mod:`advlab.config` too, because a
config built with ``OmegaConf.create`` (not from the schemas) holds plain strings.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum
from typing import Any

from omegaconf import DictConfig, OmegaConf

from advlab.config import (
    AdversarialMethod,
    Device,
    EscalationAttack,
    Loss,
    MarginAttack,
    Mode,
    Monitor,
    Norm,
    Precision,
    Scheduler,
    Targeted,
)
from advlab.errors import ConfigError

# The direction in which each early-stopping monitor improves.
MONITOR_MODE = {
    Monitor.val_loss: Mode.min,
    Monitor.val_acc: Mode.max,
    Monitor.val_pgd_acc: Mode.max,
}
MIN_IMAGE_SIZE = 4  # pixels: the zoo's conv/pool stacks need at least this much to downsample


def _fail(key: str, value: Any, why: str) -> None:
    raise ConfigError(f"{key}={_shown(value)!r}: {why}")


def _shown(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if OmegaConf.is_config(value):
        return OmegaConf.to_container(value, enum_to_str=True)
    return value


def _at_least(key: str, value: float | None, low: float, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or value < low:
        _fail(key, value, f"must be >= {low:g}")


def _positive(key: str, value: float | None, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or not value > 0:
        _fail(key, value, "must be > 0")


def _fraction(key: str, value: float, *, low_open: bool = False, high_closed: bool = False) -> None:
    low_ok = value > 0 if low_open else value >= 0
    high_ok = value <= 1 if high_closed else value < 1
    if not (low_ok and high_ok):
        interval = f"{'(' if low_open else '['}0, 1{']' if high_closed else ')'}"
        _fail(key, value, f"must be in {interval}")


def _one_of(key: str, value: Any, choices: Iterable[Any], *, allow_none: bool = False) -> None:
    choices = tuple(choices)
    if value is None and allow_none:
        return
    if value not in choices:
        names = ", ".join(str(c) for c in choices) + (", null" if allow_none else "")
        _fail(key, value, f"must be one of {names}")


def check_data(data: DictConfig) -> None:
    """``data.*``: the root is given where required, fractions and limits are in range."""
    if OmegaConf.is_missing(data, "root"):
        raise ConfigError(
            f"data.root is required for data={data.name}: pass the folder holding the data, "
            f"e.g. python -m advlab data={data.name} data.root=/path/to/DataBases"
        )
    if not data.get("loader"):
        _fail("data.loader", data.get("loader"), "must name the dataset's load function")
    _fraction("data.val_fraction", data.val_fraction)
    _at_least("data.limit_train", data.limit_train, 1, allow_none=True)
    _at_least("data.limit_test", data.limit_test, 1, allow_none=True)
    if "test_fraction" in data:
        _fraction("data.test_fraction", data.test_fraction, low_open=True)
    if "image_size" in data:
        _at_least("data.image_size", data.image_size, MIN_IMAGE_SIZE)
    if "channels" in data:
        _one_of("data.channels", data.channels, (1, 3))
    _at_least("data.augment.shift", data.augment.shift, 0)
    _at_least("data.augment.rotation", data.augment.rotation, 0)


def check_model(model: DictConfig) -> None:
    """``model.*``: dropout rates in [0, 1), sizes >= 1."""
    for key in ("dropout", "conv_dropout"):
        if key in model:
            _fraction(f"model.{key}", model[key])
    for key in ("hidden", "convs_per_stage", "blocks_per_stage", "width"):
        if key in model:
            _at_least(f"model.{key}", model[key], 1)
    for key in ("filters", "widths"):
        if key in model and (not model[key] or min(model[key]) < 1):
            _fail(f"model.{key}", model[key], "needs at least one value, each >= 1")


def check_optimizer(opt: DictConfig) -> None:
    """``optimizer.*``: lr > 0, weight decay >= 0, momentum in [0, 1) (1 or more diverges)."""
    _positive("optimizer.lr", opt.lr)
    _at_least("optimizer.weight_decay", opt.get("weight_decay", 0.0), 0)
    if "momentum" in opt:
        _fraction("optimizer.momentum", opt.momentum)


def check_train(train: DictConfig) -> None:
    """``train.*``: loop sizes, loss, precision, schedule, adversarial training, early stopping."""
    _at_least("train.epochs", train.epochs, 1)
    _at_least("train.batch_size", train.batch_size, 1)
    _one_of("train.loss", train.loss, Loss)
    _one_of("train.precision", train.precision, Precision)
    _check_scheduler(train.scheduler)
    _check_adversarial_training(train.adversarial)
    if train.adversarial.method == AdversarialMethod.ibp and train.loss != Loss.cross_entropy:
        _fail(
            "train.loss",
            train.loss,
            "train.adversarial.method=ibp needs cross_entropy (its bound term is the "
            "cross-entropy of the worst-case logits)",
        )
    resolve_adversarial_defaults(train)
    _check_early_stopping(train.early_stopping, val_robust=bool(train.adversarial.val_robust))


def resolve_adversarial_defaults(train: DictConfig) -> None:
    """Apply what ``train.adversarial.method`` implies, in place, where the user left ``auto``.

    So ``train.adversarial.method=pgd`` alone is a complete adversarial-training run: robust
    validation on (``val_robust: null``), early stopping on robust validation accuracy
    (``monitor: auto``), maximised (``mode: auto``). Values set explicitly are kept (and then
    checked); with ``method: none`` the defaults are validation loss, minimised, no robust pass.
    """
    adv, es = train.adversarial, train.early_stopping
    adversarial = adv.method != AdversarialMethod.none
    if adv.val_robust is None:
        adv.val_robust = adversarial
    if es.monitor == Monitor.auto:
        es.monitor = Monitor.val_pgd_acc if adversarial else Monitor.val_loss
    if es.mode == Mode.auto and es.monitor in MONITOR_MODE:
        es.mode = MONITOR_MODE[Monitor(es.monitor)]


def _check_scheduler(sched: DictConfig) -> None:
    _one_of("train.scheduler.name", sched.name, Scheduler)
    # decay_rate = 1 is a constant rate: allowed, so a sweep can include "no decay".
    _fraction("train.scheduler.decay_rate", sched.decay_rate, low_open=True, high_closed=True)
    _at_least("train.scheduler.decay_steps", sched.decay_steps, 1)
    _positive("train.scheduler.max_lr", sched.max_lr, allow_none=True)


def _check_adversarial_training(adv: DictConfig) -> None:
    _one_of("train.adversarial.method", adv.method, AdversarialMethod)
    _at_least("train.adversarial.eps", adv.eps, 0)
    _positive("train.adversarial.alpha", adv.alpha, allow_none=True)
    _at_least("train.adversarial.steps", adv.steps, 1)
    _at_least("train.adversarial.noise", adv.noise, 0)
    _at_least("train.adversarial.beta", adv.beta, 0)
    _at_least("train.adversarial.val_robust_n", adv.val_robust_n, 1)
    _at_least("train.adversarial.val_robust_steps", adv.val_robust_steps, 1)
    _at_least("train.adversarial.warmup_epochs", adv.warmup_epochs, 0)
    _at_least("train.adversarial.ramp_epochs", adv.ramp_epochs, 0)
    _fraction("train.adversarial.kappa_end", adv.kappa_end, high_closed=True)


def _check_early_stopping(es: DictConfig, *, val_robust: bool) -> None:
    _one_of("train.early_stopping.monitor", es.monitor, Monitor)
    _one_of("train.early_stopping.mode", es.mode, Mode)
    _at_least("train.early_stopping.patience", es.patience, 0)
    _at_least("train.early_stopping.min_delta", es.min_delta, 0)
    if not es.enabled:
        return  # nothing stops the run, so only names and ranges matter
    if es.monitor == Monitor.val_pgd_acc and not val_robust:
        _fail(
            "train.early_stopping.monitor",
            es.monitor,
            "is only recorded with train.adversarial.val_robust=true",
        )
    wanted = MONITOR_MODE[Monitor(es.monitor)]
    if es.mode != wanted:
        _fail(
            "train.early_stopping.mode",
            es.mode,
            f"monitor {_shown(es.monitor)} improves when it goes "
            f"{'down' if wanted == Mode.min else 'up'}; use mode={wanted}",
        )


def check_eval(ev: DictConfig, attacks: DictConfig) -> None:
    """``eval.*`` and the attacks it names; normalises ``ev.eps`` in place.

    After this, ``ev.eps`` is sorted ascending without duplicates, so every consumer (the attack
    loop, MLflow steps, reports) sees the same eps order whatever order the user typed.
    """
    if ev.get("transfer_required") and not list(ev.transfer_from):
        # a transfer experiment without sources would run, and transfer nothing
        raise ConfigError(
            "eval.transfer_from is required (eval.transfer_required=true, as in "
            "+experiment=transfer): the models to craft "
            "the adversarial examples on, as MLflow run ids, run directories or model.pt files, "
            "e.g. 'eval.transfer_from=[<run id>]'"
        )
    ev.eps = normalised_eps(ev.eps)
    known = list(attacks.keys())
    if len(set(ev.attacks)) != len(ev.attacks):
        _fail("eval.attacks", ev.attacks, "names an attack twice")
    for name in ev.attacks:
        if name not in known:
            _fail("eval.attacks", ev.attacks, f"unknown attack {name!r}; options: {known}")
        _check_attack(name, attacks[name])
    _at_least("eval.n_examples", ev.n_examples, 1, allow_none=True)
    _at_least("eval.batch_size", ev.batch_size, 1)
    _at_least("eval.grid_eps", ev.grid_eps, 0, allow_none=True)
    _at_least("eval.grid_n", ev.grid_n, 1)
    _at_least("eval.sanity.convergence_n", ev.sanity.convergence_n, 1)
    _at_least("eval.sanity.convergence_eps", ev.sanity.convergence_eps, 0)
    _at_least("eval.sanity.tolerance", ev.sanity.tolerance, 0)
    _at_least("eval.sanity.chance_margin", ev.sanity.chance_margin, 0)
    if "escalation" in ev:
        _check_escalation(ev.escalation, ev.eps)


def _check_escalation(esc: DictConfig, eps_grid: list[float]) -> None:
    for name in esc.attacks:
        _one_of("eval.escalation.attacks", name, EscalationAttack)
    _one_of("eval.escalation.margin", esc.margin, MarginAttack)
    for key in ("queries", "restarts", "steps", "max_points", "margin_steps", "margin_targets"):
        _at_least(f"eval.escalation.{key}", esc[key], 1)
    for eps in esc.margin_eps or []:
        if float(eps) not in eps_grid:
            _fail("eval.escalation.margin_eps", esc.margin_eps, f"{eps:g} is not in eval.eps")


def normalised_eps(eps: Iterable[float]) -> list[float]:
    """The eps grid (1/255 units), sorted and deduplicated; refused when empty or negative."""
    values = [float(e) for e in eps]
    if not values:
        _fail("eval.eps", values, "needs at least one budget (1/255 units), e.g. [0, 8]")
    for value in values:
        if value < 0:
            _fail("eval.eps", values, f"budget {value:g} is negative (units of 1/255)")
    return sorted(set(values))


def _check_attack(name: str, attack: DictConfig) -> None:
    if "norm" in attack:
        _one_of(f"attacks.{name}.norm", attack.norm, Norm)
    if "targeted" in attack:
        _one_of(f"attacks.{name}.targeted", attack.targeted, Targeted, allow_none=True)
    for key in ("steps", "queries", "restarts"):
        if key in attack:
            _at_least(f"attacks.{name}.{key}", attack[key], 1)
    for key in ("alpha", "l2_per_unit", "alpha_fraction", "c", "lr"):
        if key in attack:
            _positive(f"attacks.{name}.{key}", attack[key], allow_none=True)
    for key in ("kappa", "overshoot"):
        if key in attack:
            _at_least(f"attacks.{name}.{key}", attack[key], 0)
    if "p_init" in attack:
        _fraction(f"attacks.{name}.p_init", attack.p_init, low_open=True, high_closed=True)


def check_search(search: DictConfig) -> None:
    """``python -m advlab.search``'s own keys (the space is read by :mod:`advlab.search.space`)."""
    _at_least("search.n_trials", search.n_trials, 1)
    _at_least("search.workers", search.workers, 1)
    _fraction("search.min_clean", search.min_clean, high_closed=True)
    if not list(search.seeds):
        _fail("search.seeds", search.seeds, "needs at least one seed")
    for seed in search.seeds:
        _at_least("search.seeds", seed, 0)
    if search.study is not None and not str(search.study).strip():
        _fail("search.study", search.study, "must name the study (or null: tracking.experiment)")


def check_leaderboard(board: DictConfig) -> None:
    """The keys of ``python -m advlab.leaderboard`` (its only checks: it trains nothing)."""
    _at_least("leaderboard.eps", board.eps, 0, allow_none=True)
    _fraction("leaderboard.min_clean", board.min_clean, high_closed=True)
    _at_least("leaderboard.top", board.top, 1, allow_none=True)
    experiments = board.experiments
    if experiments is None or isinstance(experiments, str):
        return
    names = list(experiments) if OmegaConf.is_list(experiments) else None
    if not names or not all(isinstance(n, str) for n in names):
        _fail("leaderboard.experiments", experiments, "must be an experiment name or a list")


def validate_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` (one line: key, value, why) for the first out-of-range value."""
    _one_of("device", cfg.device, Device)
    _at_least("seed", cfg.seed, 0)
    _at_least("threads", cfg.threads, 1, allow_none=True)
    check_data(cfg.data)
    check_model(cfg.model)
    check_optimizer(cfg.optimizer)
    check_train(cfg.train)
    check_eval(cfg.eval, cfg.attacks)
    if cfg.tracking.enabled and not str(cfg.tracking.experiment).strip():
        _fail("tracking.experiment", cfg.tracking.experiment, "must name an MLflow experiment")
    # 0 or less would end every other machine's RUNNING runs at once; null turns the rule off
    _positive("tracking.stale_after_s", cfg.tracking.get("stale_after_s"), allow_none=True)
