"""``python -m advlab.search``: an Optuna study over config keys, each trial advlab runs.

    python -m advlab.search                                      # the quickstart, 20 trials
    python -m advlab.search +experiment=gender_cnn search=faces data.root=DIR
    python -m advlab.search search.n_trials=40 search.seeds=[0,1,2]

The same command resumes a stopped search (``search.n_trials`` counts the trials the study
already holds); any override outside ``search.*`` applies to every trial. See
:mod:`advlab.search.run`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

import advlab.config  # noqa: F401  (registers the structured-config schemas)
from advlab.errors import AdvlabError

log = logging.getLogger("advlab.search")


@hydra.main(config_path="../../conf", config_name="search_app", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from advlab.__main__ import resolve_cli_paths
    from advlab.search.run import run_search

    hydra_cfg = HydraConfig.get()
    try:
        resolve_cli_paths(cfg)
        run_search(cfg, list(hydra_cfg.overrides.task), Path(hydra_cfg.runtime.output_dir))
    except AdvlabError as error:
        # A user-fixable problem (bad space, bad storage URL, ...): one line, no traceback.
        log.error("%s", error)
        sys.exit(2)


if __name__ == "__main__":
    from advlab.__main__ import cli

    cli(main, "python -m advlab.search")
