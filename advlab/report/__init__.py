"""PDF reports that tell the story of a run or of a sweep, built only from what MLflow holds.

``build_report`` reads the selected runs (params, tags, metrics, result artifacts, typed config)
(:mod:`~advlab.report.gather` into :mod:`~advlab.report.data`), draws seaborn
figures and lays them out with reportlab into ``<out_dir>/<experiment>-<timestamp>.pdf``. It never
trains or attacks: every number in the PDF is a number tracked in MLflow.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from advlab.report.data import ReportError

__all__ = ["ReportError", "build_report", "report_path"]

log = logging.getLogger(__name__)


def build_report(
    *,
    tracking_uri: str,
    experiment: str | None,
    runs: list[str] | str | None,
    out_dir: Path,
    heatmap_eps: float | None = None,
    per_run: str = "best_worst",
    figures_dir: Path | None = None,
) -> Path:
    """Build the PDF report of some MLflow runs and return its path.

    ``experiment``: MLflow experiment name (may be None when ``runs`` lists run ids).
    ``runs``: None (every run of the experiment), a list of run ids, or an MLflow filter string
    such as ``"params.model.dropout = '0.5'"``. A sweep's parent run stands for its children.
    ``heatmap_eps``: eps (1/255 units) quoted by the sweep heatmaps and summary; None = largest.
    ``per_run``: which runs of a many-run report get per-run pages (grids, per-class, confusion):
    ``best_worst`` (one run of the best and of the worst setting), ``all`` or ``none``.
    ``figures_dir``: also write every figure of the PDF there as a PNG, numbered in page order
    and named after its caption (``01-solid-training-dashed-validation.png``).
    Raises :class:`ReportError` (an ``AdvlabError``) when no runs match or ``per_run`` is not
    one of those.
    """
    from advlab.config import PerRun
    from advlab.report.gather import gather
    from advlab.report.layout import render

    try:
        pick = PerRun(per_run)  # the Python API takes plain strings; Hydra gives the enum
    except ValueError:
        options = ", ".join(PerRun)
        raise ReportError(f"report.per_run={per_run!r}: not one of {options}") from None
    started = time.perf_counter()
    report = gather(tracking_uri=tracking_uri, experiment=experiment, runs=runs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Render to a private temporary file, then claim the final name without overwriting anything:
    # parallel sweep jobs may finish their single-run reports within the same second.
    fd, tmp_name = tempfile.mkstemp(prefix=".report-", suffix=".pdf", dir=out_dir)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        render(report, tmp, heatmap_eps=heatmap_eps, per_run=pick, figures_dir=figures_dir)
        path = _claim(tmp, report_path(out_dir, report.experiment))
    finally:
        tmp.unlink(missing_ok=True)
    log.info(
        "report %s: %d run(s) in %.1f s", path, len(report.runs), time.perf_counter() - started
    )
    return path


def report_path(out_dir: Path, experiment: str, when: float | None = None) -> Path:
    """``<out_dir>/<experiment>-<YYYYmmdd-HHMMSS>.pdf`` with the name made file-system safe."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", experiment).strip("._") or "report"
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(when))
    return Path(out_dir) / f"{safe}-{stamp}.pdf"


def _claim(tmp: Path, wanted: Path) -> Path:
    """Hard-link ``tmp`` to ``wanted`` (or ``wanted-2``, ``-3``, ...): atomic and never clobbers."""
    for i in range(1, 1000):
        target = wanted if i == 1 else wanted.with_name(f"{wanted.stem}-{i}{wanted.suffix}")
        try:
            os.link(tmp, target)
            return target
        except FileExistsError:
            continue
        except OSError:
            # File systems without hard links: exclusive create, then copy the bytes in.
            try:
                with open(target, "xb") as out:
                    out.write(tmp.read_bytes())
                return target
            except FileExistsError:
                continue
    raise ReportError(
        f"report.dir={wanted.parent}: could not find a free file name for {wanted.name}"
    )


def _as_runs(runs: object) -> Sequence[str] | str | None:
    """Hydra gives lists as ListConfig; the report wants a list of str, a str or None."""
    if runs is None or isinstance(runs, str):
        return runs
    return [str(r) for r in runs]  # type: ignore[union-attr]
