"""The leaderboard as a PDF page, on the report's building blocks (A4, fonts embedded).

The ranked table, then the runs listed apart with their reason; each run's name links to its page
in the MLflow UI. Rows whose verdict is ``warn`` are shaded as in the report.
"""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import escape

from reportlab.platypus import Paragraph

from advlab.leaderboard.render import (
    APART_HEADER,
    HEADER,
    apart_cells,
    cells,
    footnote,
    link,
    title,
)
from advlab.leaderboard.table import Board, Row
from advlab.report.blocks import FAILED_VERDICT, WARN, Doc, Story, register_fonts
from advlab.verdict import FAIL
from advlab.verdict import WARN as WARN_STATUS

# Column widths, fractions of the text width.
WIDTHS = (0.03, 0.21, 0.11, 0.11, 0.11, 0.16, 0.07, 0.14, 0.06)
APART_WIDTHS = (0.22, 0.08, 0.08, 0.16, 0.14, 0.32)


def _linked(story: Story, board: Board, row: Row) -> Paragraph:
    label = escape(row.label)
    href = escape(link(board, row), {'"': "&quot;"})
    return Paragraph(f'<link href="{href}" color="#1a4f8b">{label}</link>', story.s["cell"])


def write_pdf(board: Board, path: Path) -> Path:
    """Write the leaderboard page to ``path`` and return ``path``."""
    register_fonts()
    story = Story()
    story.para(f"Leaderboard: {', '.join(board.experiments)}", "title")
    story.para(title(board), "subtitle")
    ranked = [[cells(r)[0], _linked(story, board, r), *cells(r)[2:]] for r in board.ranked]
    if ranked:
        warned = {i: WARN for i, r in enumerate(board.ranked, 1) if r.verdict == WARN_STATUS}
        story.table([list(HEADER), *ranked], WIDTHS, highlight=warned)
    else:
        story.para("No run can be ranked: every run is listed apart below.")
    if board.hidden:
        story.para(f"{board.hidden} more ranked rows are not shown (leaderboard.top).", "caption")
    if board.apart:
        story.h2(f"Not ranked ({len(board.apart)})")
        apart = [[_linked(story, board, r), *apart_cells(r)[1:]] for r in board.apart]
        shade = {i: FAILED_VERDICT for i, r in enumerate(board.apart, 1) if r.verdict == FAIL}
        story.table([list(APART_HEADER), *apart], APART_WIDTHS, highlight=shade)
    story.para(footnote(board) + ".", "caption")
    Doc(path, title="advlab leaderboard", footer="advlab leaderboard").build(story.flowables)
    return path
