"""``python -m advlab.leaderboard``: every run of a store ranked by its worst case at one eps.

:func:`build` reads the runs of the chosen experiments (every experiment by default) in one bulk
search, decides the eps they are ranked at and returns the :class:`~advlab.leaderboard.table.Board`
(:mod:`~advlab.leaderboard.table` says which runs are ranked and which are listed apart);
:func:`write` saves it as CSV, markdown and a PDF page; :func:`~advlab.leaderboard.render.terminal`
prints it. Nothing here writes to MLflow.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

from advlab.errors import AdvlabError
from advlab.leaderboard.entries import Entry, entries
from advlab.leaderboard.table import FINISHED, Board, ThreatModel, rank
from advlab.report.format import fmt_eps

__all__ = ["Board", "LeaderboardError", "build", "ranked_eps", "write"]

log = logging.getLogger(__name__)


class LeaderboardError(AdvlabError, LookupError):
    """The leaderboard cannot be built: no runs, or an eps no run was attacked at."""


def build(
    tracking_uri: str,
    experiments: Sequence[str] | None = None,
    *,
    eps: float | None = None,
    escalation: bool = True,
    min_clean: float = 0.0,
    top: int | None = None,
) -> Board:
    """The leaderboard of the runs of ``experiments`` (None: every experiment) in the store.

    ``eps`` (1/255): the budget ranked at; None = the headline eps of the report
    (:func:`ranked_eps`). Raises :class:`~advlab.errors.AdvlabError` (one line) for a missing
    store, an unknown experiment, a store without runs or an eps no run was attacked at.
    """
    from advlab.results import load

    frame = load(None if experiments is None else list(experiments), tracking_uri=tracking_uri)
    runs = entries(frame)
    where = ", ".join(experiments) if experiments else "any experiment"
    if not runs:
        raise LeaderboardError(f"no runs in {where} at {tracking_uri}: nothing to rank")
    threat = ThreatModel(ranked_eps(runs, eps), bool(escalation), float(min_clean))
    return rank(runs, threat, tracking_uri=tracking_uri, top=top)


def ranked_eps(runs: Sequence[Entry], asked: float | None) -> float:
    """``asked`` when some finished run was attacked at it, else (``asked`` None) the report's
    headline eps over the finished runs (:func:`advlab.report.data.pick_headline_eps`)."""
    from advlab.report.data import pick_headline_eps

    finished = [r for r in runs if r.status == FINISHED]
    grid = sorted({e for r in finished for e in r.grid})
    if not grid:
        raise LeaderboardError(
            f"none of the {len(runs)} runs finished with a robust accuracy: nothing to rank"
        )
    if asked is not None and float(asked) not in grid:
        raise LeaderboardError(
            f"leaderboard.eps={asked:g}: no run was attacked at {fmt_eps(float(asked))}; "
            f"evaluated: {', '.join(f'{e:g}' for e in grid)}"
        )
    picked = pick_headline_eps(grid, [r.grid_eps for r in finished], asked)
    assert picked is not None  # the grid is not empty
    return picked


def output_stem(experiments: Sequence[str] | None) -> str:
    """``leaderboard-<experiments>`` (``leaderboard-all`` for the whole store), file-system safe."""
    label = "-".join(experiments) if experiments else "all"
    return "leaderboard-" + (re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("._") or "all")


def write(board: Board, out_dir: Path, stem: str) -> dict[str, Path]:
    """``<out_dir>/<stem>.csv``, ``.md`` and ``.pdf`` (each replaced whole: a page that serves the
    markdown file never sees half of it); returns suffix -> path."""
    from advlab.fileio import atomic_path, atomic_write_text
    from advlab.leaderboard.pdf import write_pdf
    from advlab.leaderboard.render import csv_text, markdown

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "csv": atomic_write_text(out_dir / f"{stem}.csv", csv_text(board)),
        "md": atomic_write_text(out_dir / f"{stem}.md", markdown(board)),
    }
    pdf = out_dir / f"{stem}.pdf"
    with atomic_path(pdf, suffix=".pdf") as tmp:
        write_pdf(board, tmp)
    paths["pdf"] = pdf
    return paths
