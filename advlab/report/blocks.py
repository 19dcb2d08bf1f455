"""The report's building blocks on reportlab platypus: fonts, styles, the A4 page, the story.

:class:`Story` collects flowables (headings, paragraphs, bullets, text tables, matplotlib figures,
PNG artifacts); :class:`Doc` is the A4 page template (footer, PDF outline) it is built into.
Fonts are matplotlib's DejaVu TTFs, embedded; tables are text; figures are PNGs at :data:`DPI`.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape

import matplotlib
import numpy as np
from reportlab.lib import colors
from reportlab.lib.enums import TA_LEFT
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.platypus import (
    BaseDocTemplate,
    CondPageBreak,
    Flowable,
    Frame,
    Image,
    KeepTogether,
    PageBreak,
    PageTemplate,
    Paragraph,
    Spacer,
    Table,
    TableStyle,
)

from advlab.verdict import FAIL, PASS
from advlab.verdict import WARN as WARN_STATUS

if TYPE_CHECKING:  # a page of tables only (the leaderboard) need not import matplotlib's figures
    from matplotlib.figure import Figure

PAGE_W, PAGE_H = A4
MARGIN = 16 * mm
TEXT_W = PAGE_W - 2 * MARGIN
DPI = 200  # figure resolution: sharp at 100% and when printed
FONT, FONT_BOLD, FONT_ITALIC, FONT_MONO = (
    "DejaVuSans",
    "DejaVuSans-Bold",
    "DejaVuSans-Oblique",
    "DejaVuSansMono",
)
WARN = colors.HexColor("#fff3cd")  # row background: a sanity check that did not pass
NOT_FINISHED = colors.HexColor("#fbe9e7")  # row background: a run that did not finish
FAILED_VERDICT = colors.HexColor("#f5c6cb")  # row background: a run whose verdict is fail
# Banner (background, text) per verdict: red fail, amber warn, green pass; grey when not recorded.
VERDICT_COLOURS = {
    FAIL: (colors.HexColor("#c62828"), colors.white),
    WARN_STATUS: (colors.HexColor("#f2a900"), colors.HexColor("#1a1a1a")),
    PASS: (colors.HexColor("#2e7d32"), colors.white),
}
UNKNOWN_VERDICT_COLOURS = (colors.HexColor("#6b6b6b"), colors.white)


# ----------------------------------------------------------------------------------------- fonts
def register_fonts() -> None:
    """Register matplotlib's bundled DejaVu TTFs with reportlab (embedded, subsetted, Unicode)."""
    if FONT in pdfmetrics.getRegisteredFontNames():
        return
    ttf = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    for name in (FONT, FONT_BOLD, FONT_ITALIC, FONT_MONO):
        pdfmetrics.registerFont(TTFont(name, str(ttf / f"{name}.ttf")))
    pdfmetrics.registerFontFamily(
        FONT, normal=FONT, bold=FONT_BOLD, italic=FONT_ITALIC, boldItalic=FONT_BOLD
    )


def _styles() -> dict[str, ParagraphStyle]:
    base = ParagraphStyle("body", fontName=FONT, fontSize=9, leading=12, alignment=TA_LEFT)
    return {
        "title": ParagraphStyle(
            "title", parent=base, fontName=FONT_BOLD, fontSize=20, leading=25, spaceAfter=4
        ),
        "subtitle": ParagraphStyle(
            "subtitle",
            parent=base,
            fontSize=10,
            leading=14,
            textColor=colors.HexColor("#555555"),
            spaceAfter=10,
        ),
        "lead": ParagraphStyle("lead", parent=base, fontSize=12.5, leading=17, spaceAfter=8),
        "h1": _heading("h1", base, 14, 18, (10, 6)),
        "h2": _heading("h2", base, 11, 14, (8, 4)),
        "body": base,
        "bullet": ParagraphStyle(
            "bullet", parent=base, leftIndent=12, bulletIndent=2, spaceAfter=2
        ),
        "caption": ParagraphStyle(
            "caption",
            parent=base,
            fontName=FONT_ITALIC,
            fontSize=7.5,
            leading=10,
            textColor=colors.HexColor("#444444"),
            spaceAfter=8,
        ),
        "cell": ParagraphStyle("cell", parent=base, fontSize=7.5, leading=9.5),
        "cellb": ParagraphStyle(
            "cellb", parent=base, fontName=FONT_BOLD, fontSize=7.5, leading=9.5
        ),
        "banner": ParagraphStyle(
            "banner", parent=base, fontName=FONT_BOLD, fontSize=14, leading=18
        ),
        "bannerline": ParagraphStyle("bannerline", parent=base, fontSize=8.5, leading=11),
        "mono": ParagraphStyle("mono", parent=base, fontName=FONT_MONO, fontSize=7, leading=9),
        "note": ParagraphStyle(
            "note", parent=base, fontSize=8.5, leading=11, textColor=colors.HexColor("#8a4b00")
        ),
    }


def _heading(
    name: str, base: ParagraphStyle, size: float, leading: float, space: tuple
) -> ParagraphStyle:
    """A bold heading style; ``space``: points (before, after)."""
    # keepWithNext: a heading never ends a page without what it introduces.
    style = ParagraphStyle(name, parent=base, fontName=FONT_BOLD, keepWithNext=1)
    style.fontSize, style.leading = size, leading
    style.spaceBefore, style.spaceAfter = space
    return style


class Doc(BaseDocTemplate):
    """A4 document with a footer and PDF outline entries for h1/h2 headings."""

    def __init__(self, path: Path, *, title: str, footer: str) -> None:
        super().__init__(
            str(path),
            pagesize=A4,
            leftMargin=MARGIN,
            rightMargin=MARGIN,
            topMargin=MARGIN,
            bottomMargin=MARGIN + 4 * mm,
            title=title,
            author="advlab",
            subject="advlab robustness report",
            creator="advlab",
        )
        frame = Frame(
            MARGIN,
            MARGIN + 4 * mm,
            TEXT_W,
            PAGE_H - 2 * MARGIN - 4 * mm,
            id="body",
            leftPadding=0,
            rightPadding=0,
            topPadding=0,
            bottomPadding=0,
        )
        self.addPageTemplates([PageTemplate(id="page", frames=[frame], onPage=self._footer)])
        self._footer_text = footer
        self._n = 0
        self._seen_h1 = False

    def _footer(self, canvas, doc) -> None:
        canvas.saveState()
        canvas.setFont(FONT, 7.5)
        canvas.setFillColor(colors.HexColor("#666666"))
        canvas.drawString(MARGIN, MARGIN - 2 * mm, self._footer_text)
        canvas.drawRightString(PAGE_W - MARGIN, MARGIN - 2 * mm, f"page {doc.page}")
        canvas.restoreState()

    def afterFlowable(self, flowable: Flowable) -> None:  # noqa: N802 (reportlab's hook name)
        if isinstance(flowable, Paragraph) and flowable.style.name in ("h1", "h2"):
            self._n += 1
            key = f"h{self._n}"
            self.canv.bookmarkPage(key)
            # h2 under an h1 nests; the cover's h2s (before any h1) are top level.
            if flowable.style.name == "h1":
                self._seen_h1, level = True, 0
            else:
                level = 1 if self._seen_h1 else 0
            self.canv.addOutlineEntry(flowable.getPlainText(), key, level=level, closed=False)


class Story:
    """The report's flowables in order, with one method per kind of block."""

    def __init__(self, figures_dir: Path | None = None) -> None:
        self.s = _styles()
        self.flowables: list[Flowable] = []
        self.figures_dir = figures_dir
        self.figures_written: list[Path] = []

    def mono(self, label: str, text: str) -> None:
        """A bold label over a line of monospaced text (a command line)."""
        self.flowables.append(Paragraph(f"<b>{escape(label)}</b>", self.s["cell"]))
        self.flowables.append(Paragraph(escape(text), self.s["mono"]))
        self.flowables.append(Spacer(1, 3))

    def page_break(self) -> None:
        self.flowables.append(PageBreak())

    def h1(self, text: str) -> None:
        self.flowables.append(CondPageBreak(60 * mm))
        self.flowables.append(Paragraph(escape(text), self.s["h1"]))

    def h2(self, text: str) -> None:
        self.flowables.append(CondPageBreak(40 * mm))
        self.flowables.append(Paragraph(escape(text), self.s["h2"]))

    def para(self, text: str, style: str = "body") -> None:
        self.flowables.append(Paragraph(escape(text), self.s[style]))

    def bullets(self, lines: Sequence[str]) -> None:
        for line in lines:
            self.flowables.append(Paragraph(escape(line), self.s["bullet"], bulletText="•"))

    def banner(self, lines: Sequence[tuple[str, str | None, bool]]) -> None:
        """A full-width box of ``lines`` (text, verdict, big): each line on its verdict's colour
        (:data:`VERDICT_COLOURS`, grey for None or an unknown verdict), big ones in large bold."""
        rows, style = (
            [],
            [
                ("LEFTPADDING", (0, 0), (-1, -1), 8),
                ("RIGHTPADDING", (0, 0), (-1, -1), 8),
                ("TOPPADDING", (0, 0), (-1, -1), 3),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 3),
            ],
        )
        for i, (text, verdict, big) in enumerate(lines):
            background, ink = VERDICT_COLOURS.get(verdict or "", UNKNOWN_VERDICT_COLOURS)
            look = ParagraphStyle(f"banner{i}", parent=self.s["banner" if big else "bannerline"])
            look.textColor = ink
            rows.append([Paragraph(escape(text), look)])
            style.append(("BACKGROUND", (0, i), (0, i), background))
        table = Table(rows, colWidths=[TEXT_W], hAlign="LEFT")
        table.setStyle(TableStyle(style))
        self.flowables.append(table)
        self.flowables.append(Spacer(1, 8))

    def cell(self, text: object, style: str = "cell") -> Paragraph:
        return Paragraph(escape(str(text)), self.s[style])

    def table(
        self,
        rows: list[list[object]],
        widths: Sequence[float],
        *,
        header: bool = True,
        highlight: dict[int, colors.Color] | None = None,
    ) -> None:
        """A table of text; ``widths`` are fractions of the text width."""
        data = [
            [
                c
                if isinstance(c, Flowable)
                else self.cell(c, "cellb" if header and i == 0 else "cell")
                for c in row
            ]
            for i, row in enumerate(rows)
        ]
        table = Table(
            data,
            colWidths=[w * TEXT_W for w in widths],
            repeatRows=1 if header else 0,
            hAlign="LEFT",
        )
        style = [
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ("LINEBELOW", (0, 0), (-1, -1), 0.25, colors.HexColor("#cccccc")),
            ("TOPPADDING", (0, 0), (-1, -1), 2),
            ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
            ("LEFTPADDING", (0, 0), (-1, -1), 3),
            ("RIGHTPADDING", (0, 0), (-1, -1), 3),
        ]
        if header:
            style += [
                ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8edf3")),
                ("LINEBELOW", (0, 0), (-1, 0), 0.8, colors.HexColor("#7a8ba0")),
            ]
        for row, color in (highlight or {}).items():
            style.append(("BACKGROUND", (0, row), (-1, row), color))
        table.setStyle(TableStyle(style))
        self.flowables.append(table)
        self.flowables.append(Spacer(1, 6))

    def keep(self, items: list[Flowable]) -> None:
        """Keep ``items`` on one page, with the heading just before them (reportlab's
        keepWithNext does not join a heading to a KeepTogether)."""
        last = self.flowables[-1] if self.flowables else None
        if isinstance(last, Paragraph) and last.style.name in ("h1", "h2"):
            items = [self.flowables.pop(), *items]
        self.flowables.append(KeepTogether(items))

    def figure(self, fig: Figure, caption: str, width: float = 1.0) -> None:
        """Embed a matplotlib figure as a PNG scaled to ``width`` x text width, with a caption."""
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI)
        if self.figures_dir is not None:
            self._write_png(buf.getvalue(), caption)
        w_in, h_in = fig.get_size_inches()
        buf.seek(0)
        w = min(width * TEXT_W, w_in * 72)  # never upscale: a 7-inch figure shows at 100%
        image = Image(buf, width=w, height=w * h_in / w_in)
        image.hAlign = "LEFT"
        self.keep([image, Paragraph(escape(caption), self.s["caption"])])

    def _write_png(self, png: bytes, caption: str) -> None:
        """``<figures_dir>/<nn>-<first words of the caption>.png``, written whole (atomic)."""
        from advlab.fileio import atomic_write_bytes

        words = re.findall(r"[a-z0-9]+", caption.lower())[:5]
        name = f"{len(self.figures_written) + 1:02d}-{'-'.join(words) or 'figure'}.png"
        self.figures_written.append(atomic_write_bytes(Path(self.figures_dir) / name, png))

    def png(self, data: bytes, caption: str, width: float = 0.8) -> None:
        """Embed a PNG artifact (an adversarial-example grid) near its natural size, at most
        ``width`` x the text width.

        A tall grid (one row per example) is cut between example rows, at blank pixel rows, into
        page-high slices, so its labels stay readable at 100% zoom instead of shrinking it to fit.
        """
        from PIL import Image as PILImage

        with PILImage.open(io.BytesIO(data)) as img:
            dpi = float((img.info.get("dpi") or (100, 100))[0]) or 100.0
            rgb = img.convert("L")
            pixels = np.asarray(rgb)
        h_px, w_px = pixels.shape
        w = min(width * TEXT_W, w_px * 72 / dpi)
        scale = w / w_px  # points per pixel
        # Slices of about half a page fill pages well; a slice never splits an example row.
        max_px = int(0.45 * (PAGE_H - 2 * MARGIN) / scale)
        gaps = _blank_bands(pixels)
        pieces: list[Flowable] = []
        top = 0
        while top < h_px:
            cut = h_px
            if h_px - top > max_px:
                # The widest blank band in reach is the gap between two example rows (narrower
                # bands separate a row's title from its images); cut through its middle.
                window = [g for g in gaps if top + max_px // 3 < g[0] + g[1] // 2 <= top + max_px]
                if window:
                    widest = max(g[1] for g in window)
                    start, length = [g for g in window if g[1] >= widest - 1][-1]
                    cut = start + length // 2
                else:
                    cut = top + max_px
            buf = io.BytesIO()
            PILImage.open(io.BytesIO(data)).crop((0, top, w_px, cut)).save(buf, format="PNG")
            buf.seek(0)
            piece = Image(buf, width=w, height=(cut - top) * scale)
            piece.hAlign = "LEFT"
            pieces.append(piece)
            top = cut
        for piece in pieces[:-1]:
            self.flowables.append(piece)
        self.keep([pieces[-1], Paragraph(escape(caption), self.s["caption"])])


def _blank_bands(pixels: np.ndarray) -> list[tuple[int, int]]:
    """(first row, height) of each band of white pixel rows in a greyscale image (H, W)."""
    blank = np.flatnonzero(pixels.min(axis=1) > 245)
    bands: list[tuple[int, int]] = []
    for row in blank:
        if bands and bands[-1][0] + bands[-1][1] == row:
            bands[-1] = (bands[-1][0], bands[-1][1] + 1)
        else:
            bands.append((int(row), 1))
    return bands
