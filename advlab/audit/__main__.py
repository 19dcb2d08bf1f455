"""``python -m advlab.audit``: the same FGSM and PGD from three libraries on a run's model.

    python -m advlab.audit audit.run=runs/hydra/2025-01-01/12-00-00-000000
    python -m advlab.audit audit.run=<run id>

Keys: ``audit.run`` (a run directory, absolute or relative to the folder the command starts in
or to the project root, or an MLflow run id looked up in ``tracking.uri`` resolved as for a run),
``audit.report`` (rebuild the run's PDF with the "Audit" section), ``report.dir``, ``device``,
``threads``. Everything else (data, points, eps grid, attack options, seed) is the audited run's
own. Needs the extra: ``pip install -e ".[audit]"``; without it, one line says so and the exit
status is 2. ``--help`` shows these keys (conf/audit_app.yaml).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

import advlab.config  # noqa: F401  (registers the structured-config schemas)
from advlab.__main__ import cli, resolve_cli_paths
from advlab.errors import AdvlabError

log = logging.getLogger("advlab.audit")


# audit_app.yaml is config.yaml with the audit's --help.
@hydra.main(config_path="../../conf", config_name="audit_app", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from advlab.audit import run_audit

    # ART logs every attack call at INFO ("Creating adversarial samples."): keep its warnings only.
    logging.getLogger("art").setLevel(logging.WARNING)
    try:
        resolve_cli_paths(cfg)
        run_audit(cfg, work_dir=Path(HydraConfig.get().runtime.output_dir))
    except AdvlabError as error:
        # A user-fixable problem (missing extra, unknown run): one line, no traceback.
        log.error("%s", error)
        sys.exit(2)


if __name__ == "__main__":
    cli(main, "python -m advlab.audit")
