"""``python -m advlab``: compose the Hydra config and run the pipeline. Nothing else lives here."""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

import advlab.config  # noqa: F401  (registers the structured-config schemas)
from advlab.errors import AdvlabError

log = logging.getLogger("advlab")


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> dict[str, float]:
    from advlab.pipeline import run  # imported here so `--help` does not load torch and mlflow

    try:
        return run(cfg)
    except AdvlabError as error:
        # A user-fixable problem (bad value, missing file): one line, no traceback.
        log.error("%s", error)
        sys.exit(2)


if __name__ == "__main__":
    main()
