"""One trial of a search: an ordinary advlab run per seed, composed and run in this process.

A seed's run config is ``conf/config.yaml`` composed with the search command's own overrides (the
user's: data, experiment, sizes), then the trial's values, then ``seed=<s>``: exactly the config
of ``python -m advlab <those overrides>``, which is also what the run records as its command.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import statistics
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from advlab import naming
from advlab.config import CONF_DIR, PROJECT_ROOT
from advlab.errors import ConfigError

FAIL = "fail"  # the verdict that makes a trial infeasible (advlab.verdict)


def compose_run(overrides: Sequence[str]) -> DictConfig:
    """The run config ``python -m advlab <overrides>`` gets (a bad override: one-line error)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from advlab.cli import COMPOSITION_ERRORS, one_line

    try:
        if GlobalHydra.instance().is_initialized():  # inside the search's Hydra app
            return compose("config", overrides=list(overrides))
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("config", overrides=list(overrides))
    except COMPOSITION_ERRORS as error:
        raise ConfigError(one_line(error)) from error


def check_run_config(overrides: Sequence[str]) -> DictConfig:
    """Compose and validate a run config as a run would, before anything slow; return it."""
    from advlab.validate import validate_config

    cfg = compose_run(overrides)
    validate_config(cfg)
    return cfg


def check_value(base: Sequence[str], base_cfg: DictConfig, item: str) -> None:
    """Check the run config of ``base`` plus one ``key=value``, as :func:`check_run_config`.

    A plain key is set on a copy of ``base_cfg`` (composed once), which the schema checks as
    composition would: composing again for every probed value costs about a second each. A
    group option (``model=lenet5``) is composed.
    """
    from advlab.validate import validate_config

    if _is_leaf(base_cfg, item):
        validate_config(_updated(base_cfg, item))
    else:
        check_run_config([*base, item])


def _is_leaf(cfg: DictConfig, item: str) -> bool:
    from omegaconf import OmegaConf

    key, eq, _ = item.partition("=")
    if not eq or key.startswith(("+", "~")) or "." not in key:
        return False  # a group option, or a new or deleted key: composition decides
    return not OmegaConf.is_dict(OmegaConf.select(cfg, key, default=None))


def _updated(cfg: DictConfig, item: str) -> DictConfig:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    parsed = OverridesParser.create().parse_override(item)
    copy = cfg.copy()
    try:
        OmegaConf.update(copy, parsed.key_or_group, parsed.value(), merge=True)
    except OmegaConfBaseException as error:
        first = str(error).splitlines()[0]
        raise ConfigError(f"Could not override '{parsed.key_or_group}': {first}") from error
    return copy


def objective_key(cfg: DictConfig, objective: str | None) -> str:
    """The metric a trial maximises: ``objective``, else the worst case at the headline eps
    (``eval.grid_eps`` when it is in the grid, else the largest eps), as the report quotes it."""
    if objective:
        return str(objective)
    grid = sorted(float(e) for e in cfg.eval.eps)
    grid_eps = cfg.eval.get("grid_eps")
    eps = float(grid_eps) if grid_eps is not None and float(grid_eps) in grid else grid[-1]
    return naming.robust_acc_key(naming.WORST_CASE, eps)


@dataclass
class Outcome:
    """What a trial's runs measured, one entry per seed."""

    objective: str = ""
    values: list[float] = field(default_factory=list)
    clean: list[float] = field(default_factory=list)
    constant: list[float] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return FAIL in self.verdicts

    def attrs(self) -> dict[str, Any]:
        """The trial's user attributes in the study: means, seed spreads, verdicts, run ids."""
        return {
            "objective": self.objective,
            "value_mean": statistics.fmean(self.values),
            "value_std": _std(self.values),
            "clean_mean": statistics.fmean(self.clean),
            "clean_std": _std(self.clean),
            naming.CONSTANT_ACC: statistics.fmean(self.constant) if self.constant else None,
            "verdicts": list(self.verdicts),
            "run_ids": list(self.run_ids),
        }


def _std(values: Sequence[float]) -> float | None:
    return statistics.stdev(values) if len(values) > 1 else None  # None: no spread to show


def run_trial(
    base: Sequence[str], values: Sequence[str], seeds: Sequence[int], run_root: Path, **kw: Any
) -> Outcome:
    """Run the trial's settings (``values``, overrides) once per seed; ``kw``: ``objective``
    (see :func:`objective_key`) and ``on_run`` (called with each run's MLflow id)."""
    from advlab.pipeline import run

    outcome = Outcome()
    for seed in seeds:
        overrides = [*base, *values, f"seed={seed}"]
        cfg = compose_run(overrides)
        outcome.objective = objective_key(cfg, kw.get("objective"))
        run_dir = run_root / f"seed-{seed}"
        with plain_run(overrides):
            metrics = run(cfg, run_dir=run_dir)
        if outcome.objective not in metrics:
            known = ", ".join(k for k in metrics if k.startswith(("clean", "robust")))
            raise ConfigError(f"search.objective={outcome.objective}: no such metric ({known})")
        outcome.values.append(float(metrics[outcome.objective]))
        outcome.clean.append(float(metrics[naming.CLEAN_ACC]))
        if naming.CONSTANT_ACC in metrics:
            outcome.constant.append(float(metrics[naming.CONSTANT_ACC]))
        outcome.verdicts.append(str(metrics[naming.VERDICT_KEY]))
        run_id = _run_id(run_dir)
        if run_id:
            outcome.run_ids.append(run_id)
            if kw.get("on_run") is not None:
                kw["on_run"](run_id)
    return outcome


def _run_id(run_dir: Path) -> str | None:
    path = run_dir / naming.MLFLOW_RUN_FILE
    return json.loads(path.read_text()).get("run_id") if path.is_file() else None


@contextlib.contextmanager
def plain_run(overrides: Sequence[str]) -> Iterator[None]:
    """Run as ``python -m advlab <overrides>`` would: the run records that command (not the
    search's), and reads no Hydra job of the search's."""
    from hydra.core.hydra_config import HydraConfig

    holder = HydraConfig.instance()
    saved_cfg, saved_argv = holder.cfg, sys.argv
    holder.cfg = None
    sys.argv = [str(PROJECT_ROOT / "advlab" / "__main__.py"), *overrides]
    try:
        yield
    finally:
        holder.cfg, sys.argv = saved_cfg, saved_argv


def command(base: Sequence[str], values: Sequence[str], seeds: Sequence[int]) -> str:
    """The command that reruns a trial's settings: one run, or a sweep over its seeds."""
    seeds = list(seeds)
    if len(seeds) == 1:
        tail = [] if seeds == [0] else [f"seed={seeds[0]}"]
        return shlex.join(["python", "-m", "advlab", *base, *values, *tail])
    swept = ",".join(str(s) for s in seeds)
    return shlex.join(["python", "-m", "advlab", "-m", *base, *values, f"seed={swept}"])
