"""``python -m advlab.report``: a PDF report of MLflow runs, from the same ``conf/`` as the runs.

    python -m advlab.report report.experiment=gender_fool
    python -m advlab.report report.experiment=sweep "report.runs='params.model.dropout = \"0.5\"'"
    python -m advlab.report "report.runs=[<run id>,<run id>]"

Keys: ``report.experiment`` (default: the experiment of the latest run in the store),
``report.runs`` (null = every run of the experiment, a list of run ids, or an MLflow filter
string), ``report.dir`` (absolute or relative to the project root), ``report.heatmap_eps``,
``report.per_run``; the store is ``tracking.uri`` resolved as for a run, and is only read.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

import advlab.config  # noqa: F401  (registers the structured-config schemas)
from advlab.cli import quiet_argv, run_hydra_app
from advlab.config import PROJECT_ROOT
from advlab.errors import AdvlabError

log = logging.getLogger("advlab.report")


def make_report(cfg: DictConfig) -> Path:
    """Build the report the composed config asks for and return the PDF's path."""
    from advlab.report import _as_runs, build_report
    from advlab.report.gather import latest_experiment
    from advlab.tracking import resolve_tracking_uri

    out_dir = Path(str(cfg.report.dir)).expanduser()
    if not out_dir.is_absolute():
        out_dir = PROJECT_ROOT / out_dir  # never Hydra's per-run working directory
    runs = _as_runs(cfg.report.runs)
    tracking_uri = resolve_tracking_uri(cfg.tracking, cfg.paths)
    # With explicit run ids the experiment comes from the runs; else, by default, the experiment
    # of the latest run in the store: what `make report` right after a run should show.
    experiment = cfg.report.experiment
    if experiment is None and (runs is None or isinstance(runs, str)):
        experiment = latest_experiment(tracking_uri)
    heatmap_eps = cfg.report.get("heatmap_eps")
    figures_dir = cfg.report.get("figures_dir")
    if figures_dir is not None:
        figures_dir = Path(str(figures_dir)).expanduser()
        figures_dir = figures_dir if figures_dir.is_absolute() else PROJECT_ROOT / figures_dir
    return build_report(
        tracking_uri=tracking_uri,
        experiment=None if experiment is None else str(experiment),
        runs=runs,
        out_dir=out_dir,
        heatmap_eps=None if heatmap_eps is None else float(heatmap_eps),
        per_run=str(cfg.report.get("per_run", "best_worst")),
        figures_dir=figures_dir,
    )


@hydra.main(config_path="../../conf", config_name="report_app", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        path = make_report(cfg)
    except AdvlabError as error:
        # A user-fixable problem (unknown experiment, no runs match): one line, no traceback.
        log.error("%s", error)
        sys.exit(2)
    log.info("PDF report: %s", path)


if __name__ == "__main__":
    sys.argv = quiet_argv(sys.argv)
    run_hydra_app(main)
