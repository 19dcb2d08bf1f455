"""``python -m advlab``: compose the Hydra config and run the pipeline. Nothing else lives here."""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

import advlab.config  # noqa: F401  (registers the structured-config schemas)
from advlab.cli import run_hydra_app
from advlab.errors import AdvlabError, ConfigError

log = logging.getLogger("advlab")


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> dict[str, float]:
    from advlab.pipeline import run  # imported here so `--help` does not load torch and mlflow

    try:
        _refuse_a_sweep_run_as_one_job()
        return run(cfg)
    except AdvlabError as error:
        # A user-fixable problem (bad value, missing file): one line, no traceback.
        log.error("%s", error)
        sys.exit(2)


def _refuse_a_sweep_run_as_one_job() -> None:
    """A sweep experiment started without -m would run one job that is no point of its sweep.

    Fixing every swept key on the command line (``+experiment=transfer seed=0``) names a point of
    the sweep, so that one job runs.
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


if __name__ == "__main__":
    run_hydra_app(main)
