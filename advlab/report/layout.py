"""PDF layout with reportlab platypus: A4, DejaVu fonts embedded, tables as text, figures as PNG.

:func:`render` turns a :class:`~advlab.report.data.ReportData` into a PDF: the first page that
tells the story (:mod:`~advlab.report.front`), the sections of a one-run report
(:mod:`~advlab.report.single`) or of a many-run report (:mod:`~advlab.report.sweep`), and last the
provenance (:mod:`~advlab.report.cover`). Every number printed comes from the gathered MLflow data
and is formatted by :mod:`advlab.report.format` (percentages with one decimal).
"""

from __future__ import annotations

from pathlib import Path

from advlab.config import PerRun
from advlab.report import data, front, single, sweep
from advlab.report.blocks import Doc, Story, register_fonts
from advlab.report.cover import cover
from advlab.report.data import ReportData


def render(
    report: ReportData,
    path: Path,
    *,
    heatmap_eps: float | None = None,
    per_run: PerRun = PerRun.best_worst,
    figures_dir: Path | None = None,
) -> Path:
    """Write the PDF for ``report`` to ``path`` (A4, fonts embedded) and return ``path``.

    ``heatmap_eps``: eps (1/255) quoted by the sweep heatmaps, scatter and summary; None = the
    largest evaluated. ``per_run``: which runs of a many-run report get per-run pages.
    ``figures_dir``: where each figure is also written as a PNG (None: nowhere).
    """
    register_fonts()
    story = Story(figures_dir=figures_dir)
    focus = data.focus(report.runs, heatmap_eps)
    if len(report.runs) == 1:
        front.single_run(story, report, focus)
        story.page_break()
        single.build(story, report.runs[0], focus)
    else:
        front.sweep_runs(story, report, focus)
        story.page_break()
        sweep.build(story, report.runs, focus, per_run)
    cover(story, report)
    doc = Doc(
        path,
        title=f"advlab report: {report.experiment}",
        footer=f"advlab report · {report.experiment}",
    )
    doc.build(story.flowables)
    return path
