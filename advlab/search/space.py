"""The search space: ``search.space`` read into :class:`Param` s, checked, and sampled by Optuna.

A key maps to a range (``type: float | int`` with ``low``, ``high``, ``log``) or to choices
(``type: categorical``). A trial's values become ordinary command-line overrides
(``model.dropout=0.35``), so any config key can be searched, a group option included
(``model: {type: categorical, choices: [course_cnn, lenet5]}``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import OmegaConf

from advlab.config import ParamType
from advlab.errors import ConfigError

# Keys a search sets itself or that are not settings of a run.
_RESERVED = ("search", "hydra", "seed")


@dataclass(frozen=True)
class Param:
    """One searched key: a range ``[low, high]`` (float or int, maybe on a log scale) or choices."""

    key: str
    type: ParamType
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def probes(self) -> list[Any]:
        """The values that must compose into a valid run: both ends of a range, every choice."""
        if self.type == ParamType.categorical:
            return list(self.choices)
        if self.type == ParamType.int:
            return [int(self.low), int(self.high)]
        return [self.low, self.high]

    def suggest(self, trial: Any) -> Any:
        """This key's value for an Optuna trial (``trial.suggest_*``)."""
        if self.type == ParamType.categorical:
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.type == ParamType.int:
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.key, float(self.low), float(self.high), log=self.log)


def read_space(space: Any) -> list[Param]:
    """``search.space`` (key -> {type, low, high, log, choices}) as :class:`Param` s, in order.

    Raises :class:`ConfigError` (one line naming the key) for an empty space, a reserved key, a
    range without both ends or with low > high, a log range not above 0, or no choices.
    """
    plain = OmegaConf.to_container(space, enum_to_str=True) if OmegaConf.is_config(space) else space
    if not plain:
        raise ConfigError("search.space is empty: name at least one key to search")
    return [_param(str(key), spec or {}) for key, spec in dict(plain).items()]


def _param(key: str, spec: Mapping[str, Any]) -> Param:
    where = f"search.space.{key}"
    if key.split(".", 1)[0].split("/", 1)[0].lstrip("+~") in _RESERVED:
        raise ConfigError(f"{where}: {key} cannot be searched (search.seeds sets the seed)")
    kind = str(spec.get("type", ParamType.float))
    if kind not in tuple(ParamType):
        raise ConfigError(f"{where}.type={kind!r}: must be one of {', '.join(ParamType)}")
    if kind == ParamType.categorical:
        choices = tuple(spec.get("choices") or ())
        if not choices:
            raise ConfigError(f"{where}.choices: a categorical key needs at least one choice")
        bad = [c for c in choices if not isinstance(c, str | int | float | bool)]
        if bad:
            raise ConfigError(f"{where}.choices: {bad[0]!r} is not a number, string or boolean")
        return Param(key, ParamType.categorical, choices=choices)
    low, high, log = spec.get("low"), spec.get("high"), bool(spec.get("log", False))
    if low is None or high is None:
        raise ConfigError(f"{where}: a {kind} range needs both low and high")
    if not all(isinstance(v, int | float) and math.isfinite(v) for v in (low, high)):
        raise ConfigError(f"{where}: low={low!r} and high={high!r} must be numbers")
    if low > high:
        raise ConfigError(f"{where}: low={low:g} is above high={high:g}")
    if log and low <= 0:
        raise ConfigError(f"{where}: log=true needs low > 0, got low={low:g}")
    if kind == ParamType.int and not (float(low).is_integer() and float(high).is_integer()):
        raise ConfigError(f"{where}: an int range needs whole low and high, got {low:g}, {high:g}")
    return Param(key, ParamType(kind), low=float(low), high=float(high), log=log)


def override(key: str, value: Any) -> str:
    """``key=value`` as Hydra's command line reads it (booleans lower case, floats exact)."""
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, float):
        text = repr(value)
    else:
        text = str(value)
    return f"{key}={text}"


def overrides(values: Mapping[str, Any]) -> list[str]:
    """A trial's values as command-line overrides, in the space's order."""
    return [override(key, value) for key, value in values.items()]


def check_composes(params: Sequence[Param], check: Callable[[str], None]) -> None:
    """Call ``check`` (compose and validate a run config) with every probe of every key, alone,
    so that an unknown key or a value out of its bound is named before any training starts."""
    for param in params:
        for value in param.probes():
            try:
                check(override(param.key, value))
            except ConfigError as error:
                raise ConfigError(f"search.space.{param.key}: {error}") from error
