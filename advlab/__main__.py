"""``python -m advlab``: compose the Hydra config and run the pipeline. Nothing else lives here."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

import advlab.config  # noqa: F401  (registers the structured-config schemas)
from advlab.cli import run_hydra_app
from advlab.errors import AdvlabError, ConfigError

log = logging.getLogger("advlab")

# Hydra's flags (hydra/_internal/utils.py get_args_parser) by what follows them.
_VALUE_FLAGS = {
    "--cfg": ("job", "hydra", "all"),
    "-c": ("job", "hydra", "all"),
    "--package": None,
    "-p": None,
    "--config-path": None,
    "-cp": None,
    "--config-name": None,
    "-cn": None,
    "--config-dir": None,
    "-cd": None,
    "--experimental-rerun": None,
}
_INFO_FLAGS = {"--info", "-i"}
_INFO_CHOICES = ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")
_PLAIN_FLAGS = {"-h", "--help", "--hydra-help", "--version", "--resolve", "-sc"}
_PLAIN_FLAGS |= {"--shell-completion", "-r", "--run", "-m", "--multirun"}
# Hydra refuses more than one of these: "what to do" modes.
_MODES = {"-r": "--run", "--run": "--run", "-m": "-m", "--multirun": "-m", "-c": "--cfg"}
_MODES |= {"--cfg": "--cfg", "-i": "--info", "--info": "--info"}
_MODES |= {"-sc": "--shell-completion", "--shell-completion": "--shell-completion"}

# Inputs the user points at: a relative path given on the command line means the folder the
# command was started in. Defaults in conf/ and output folders (runs/, reports/) keep meaning the
# project, wherever the command starts.
CLI_PATH_KEYS = ("data.root", "train.resume")
# Keys holding run ids or paths: an entry is a path when it exists from the start folder.
CLI_PATH_OR_ID_KEYS = ("eval.transfer_from", "audit.run")


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> dict[str, float]:
    from advlab.pipeline import run  # imported here so `--help` does not load torch and mlflow

    try:
        _refuse_a_sweep_run_as_one_job()
        resolve_cli_paths(cfg)
        return run(cfg)
    except AdvlabError as error:
        # A user-fixable problem (bad value, missing file): one line, no traceback.
        log.error("%s", error)
        sys.exit(2)


def _refuse_a_sweep_run_as_one_job() -> None:
    """A sweep experiment started without -m would run one job that is no point of its sweep.

    Fixing every swept key on the command line (``+experiment=gender_overfitting`` with its five
    swept keys set) names a point of the sweep, so that one job runs.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.RUN:
        return
    given = {o.split("=", 1)[0].lstrip("+~") for o in hydra_cfg.overrides.task if "=" in o}
    open_keys = [key for key in (hydra_cfg.sweeper.get("params") or {}) if key not in given]
    if open_keys:
        experiment = hydra_cfg.runtime.choices.get("experiment", "this experiment")
        raise ConfigError(
            f"+experiment={experiment} is a sweep over {', '.join(open_keys)}: run it with -m "
            f"(python -m advlab -m +experiment={experiment} ...), or fix those keys on the "
            "command line for one point; without either, one job would run that is not a point "
            "of the sweep"
        )


def resolve_cli_paths(cfg: DictConfig, overrides: list[str] | None = None, cwd: str = "") -> None:
    """Make the relative paths typed on the command line absolute against the start folder.

    ``cd ~/work && python -m advlab data=gender data.root=DataBases`` means ``~/work/DataBases``,
    as for any command. Paths set in conf/ (and the Python API) keep resolving against the
    project. ``overrides`` and ``cwd`` default to the running Hydra job's.
    """
    if overrides is None:
        from hydra.core.hydra_config import HydraConfig

        hydra_cfg = HydraConfig.get()
        overrides, cwd = list(hydra_cfg.overrides.task), hydra_cfg.runtime.cwd
    start = Path(cwd)
    given = {o.split("=", 1)[0].lstrip("+"): o for o in overrides if "=" in o}
    for key in CLI_PATH_KEYS:
        value = OmegaConf.select(cfg, key) if key in given else None
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            OmegaConf.update(cfg, key, str((start / value).resolve()))
    for key in CLI_PATH_OR_ID_KEYS:
        value = OmegaConf.select(cfg, key) if key in given else None
        if isinstance(value, str):
            OmegaConf.update(cfg, key, _existing_from(start, value))
        elif OmegaConf.is_list(value):
            OmegaConf.update(cfg, key, [_existing_from(start, str(v)) for v in value])


def _existing_from(start: Path, value: str) -> str:
    path = Path(value).expanduser()
    if path.is_absolute() or not (start / path).exists():
        return value  # absolute, a run id, or a path of the project (resolved downstream)
    return str((start / path).resolve())


def hydra_argv(args: list[str], app: str = "python -m advlab") -> list[str]:
    """The command line with Hydra's flags first and the overrides after them, in their order.

    Hydra's parser takes flags only before or after all overrides (``seed=1 --cfg job
    model.dropout=0.5`` prints a usage block); advlab accepts them anywhere. Mistakes Hydra would
    answer with a usage block or a traceback raise :class:`ConfigError`, one line.
    """
    flags: list[str] = []
    overrides: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, inline = arg.partition("=")
        if not arg.startswith("-") or arg == "-":
            _refuse_a_group_override(arg, app)
            overrides.append(arg)
        elif name in _VALUE_FLAGS:
            value = inline if eq else (args[i + 1] if i + 1 < len(args) else None)
            _check_flag_value(name, value)
            flags += [name, value]
            i += 0 if eq else 1
        elif name in _INFO_FLAGS:
            flags.append(arg)
            if not eq and i + 1 < len(args) and args[i + 1] in _INFO_CHOICES:
                flags.append(args[i + 1])
                i += 1
        elif arg in _PLAIN_FLAGS:
            flags.append(arg)
        else:
            raise ConfigError(f"unknown option {arg}; see {app} --help (overrides: key=value)")
        i += 1
    modes = sorted({_MODES[f.partition("=")[0]] for f in flags if f.partition("=")[0] in _MODES})
    if len(modes) > 1:
        raise ConfigError(
            f"{' and '.join(modes)} cannot be combined: give one of them (--cfg job prints the "
            "composed config of one job; -m runs a sweep)"
        )
    return flags + overrides


def _check_flag_value(flag: str, value: str | None) -> None:
    choices = _VALUE_FLAGS[flag]
    if value is None or value.startswith("-") or (choices and value not in choices):
        wanted = f"one of {', '.join(choices)}" if choices else "a value"
        example = f" (e.g. {flag} {choices[0]})" if choices else ""
        raise ConfigError(f"{flag} needs {wanted}{example}, got {value or 'nothing'}")


def _refuse_a_group_override(arg: str, app: str) -> None:
    # experiment is kept out of the primary defaults list (so that `+experiment=` merges it
    # over everything): without the +, Hydra finds nothing to override.
    key, eq, value = arg.partition("=")
    if eq and key == "experiment":
        raise ConfigError(
            f"experiment={value}: an experiment is added to the config, write "
            f"+experiment={value} ({app} +experiment={value})"
        )


def cli(app_main: Callable[[], Any], app: str = "python -m advlab") -> None:
    """Run ``app_main`` on ``sys.argv`` put in Hydra's order; argument mistakes are one line."""
    try:
        sys.argv[1:] = hydra_argv(sys.argv[1:], app)
    except ConfigError as error:
        sys.stderr.write(f"advlab: error: {error}\n")
        sys.exit(2)
    run_hydra_app(app_main)


if __name__ == "__main__":
    cli(main)
