"""PDF layout with reportlab platypus: A4, DejaVu fonts embedded, tables as text, figures as PNG.

:func:`render` turns a :class:`~advlab.report.data.ReportData` into a PDF. Every number printed
comes from the gathered MLflow data and is formatted by :mod:`advlab.report.summary`
(percentages with one decimal). A one-run report tells that run's story section by section; a
report on many runs shows overviews across runs (setup, curves, robustness, sweep heatmaps, sanity)
and the per-run details (grids, per-class, confusion) for a few highlighted runs.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from xml.sax.saxutils import escape

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
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

from advlab import naming
from advlab.report import figures
from advlab.report.data import ReportData, RunData, headline, swept_params
from advlab.report.summary import (
    MISSING,
    attack_label,
    fmt_eps,
    fmt_int,
    fmt_num,
    fmt_pct,
    run_sentences,
    sweep_sentences,
)

log = logging.getLogger(__name__)

PAGE_W, PAGE_H = A4
MARGIN = 16 * mm
TEXT_W = PAGE_W - 2 * MARGIN
DPI = 200  # figure resolution: sharp at 100% and when printed
DETAIL_RUNS = 6  # up to this many runs, every run gets its detail pages; above, a few highlights
CURVES_PER_FIGURE = 8  # runs per learning-curve small-multiples figure (one page)
FONT, FONT_BOLD, FONT_ITALIC, FONT_MONO = (
    "DejaVuSans",
    "DejaVuSans-Bold",
    "DejaVuSans-Oblique",
    ("DejaVuSansMono"),
)


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
        # keepWithNext: a heading never ends a page without what it introduces.
        "h1": ParagraphStyle(
            "h1",
            parent=base,
            fontName=FONT_BOLD,
            fontSize=14,
            leading=18,
            spaceBefore=10,
            spaceAfter=6,
            keepWithNext=1,
        ),
        "h2": ParagraphStyle(
            "h2",
            parent=base,
            fontName=FONT_BOLD,
            fontSize=11,
            leading=14,
            spaceBefore=8,
            spaceAfter=4,
            keepWithNext=1,
        ),
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
        "mono": ParagraphStyle("mono", parent=base, fontName=FONT_MONO, fontSize=7, leading=9),
        "note": ParagraphStyle(
            "note", parent=base, fontSize=8.5, leading=11, textColor=colors.HexColor("#8a4b00")
        ),
    }


class _Doc(BaseDocTemplate):
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


# --------------------------------------------------------------------------------------- helpers
class _Builder:
    """Accumulates flowables; one method per report section."""

    def __init__(self, report: ReportData, heatmap_eps: float | None) -> None:
        self.report = report
        self.runs = report.runs
        self.s = _styles()
        self.story: list[Flowable] = []
        self.attack, self.eps = headline(self.runs, heatmap_eps)
        self.swept = swept_params(self.runs)

    # ---- primitives
    def h1(self, text: str) -> None:
        self.story.append(CondPageBreak(60 * mm))
        self.story.append(Paragraph(escape(text), self.s["h1"]))

    def h2(self, text: str) -> None:
        self.story.append(CondPageBreak(40 * mm))
        self.story.append(Paragraph(escape(text), self.s["h2"]))

    def para(self, text: str, style: str = "body") -> None:
        self.story.append(Paragraph(escape(text), self.s[style]))

    def bullets(self, lines: Sequence[str]) -> None:
        for line in lines:
            self.story.append(Paragraph(escape(line), self.s["bullet"], bulletText="•"))

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
        self.story.append(table)
        self.story.append(Spacer(1, 6))

    def _keep(self, items: list[Flowable]) -> None:
        """Keep ``items`` on one page, with the heading just before them (reportlab's
        keepWithNext does not join a heading to a KeepTogether)."""
        last = self.story[-1] if self.story else None
        if isinstance(last, Paragraph) and last.style.name in ("h1", "h2"):
            items = [self.story.pop(), *items]
        self.story.append(KeepTogether(items))

    def figure(self, fig: Figure, caption: str, width: float = 1.0) -> None:
        """Embed a matplotlib figure as a PNG scaled to ``width`` x text width, with a caption."""
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI)
        w_in, h_in = fig.get_size_inches()
        buf.seek(0)
        w = min(width * TEXT_W, w_in * 72)  # never upscale: a 7-inch figure shows at 100%
        image = Image(buf, width=w, height=w * h_in / w_in)
        image.hAlign = "LEFT"
        self._keep([image, Paragraph(escape(caption), self.s["caption"])])

    def png(self, data: bytes, caption: str) -> None:
        """Embed a PNG artifact (an adversarial-example grid) near its natural size.

        A tall grid (one row per example) is cut between example rows, at blank pixel rows, into
        page-high slices, so its labels stay readable at 100% zoom instead of shrinking it to fit.
        """
        from PIL import Image as PILImage

        with PILImage.open(io.BytesIO(data)) as img:
            dpi = float((img.info.get("dpi") or (100, 100))[0]) or 100.0
            rgb = img.convert("L")
            pixels = np.asarray(rgb)
        h_px, w_px = pixels.shape
        w = min(0.8 * TEXT_W, w_px * 72 / dpi)
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
            self.story.append(piece)
        self._keep([pieces[-1], Paragraph(escape(caption), self.s["caption"])])

    # ---- sections
    def cover(self) -> None:
        r = self.report
        when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        self.story.append(Paragraph(escape(f"advlab report: {r.experiment}"), self.s["title"]))
        self.story.append(
            Paragraph(
                escape(f"Generated {when} from the MLflow store {r.tracking_uri}"),
                self.s["subtitle"],
            )
        )
        statuses = pd.Series([run.status for run in self.runs]).value_counts()
        status_text = ", ".join(f"{n} {s.lower()}" for s, n in statuses.items())
        rows = [
            ["Experiment", r.experiment],
            ["Date", when],
            ["Runs included", f"{len(self.runs)} ({status_text}); {r.selection}"],
        ]
        if r.omitted_parents:
            rows.append(
                [
                    "Left out",
                    f"{r.omitted_parents} sweep parent run(s): they hold no results of their own",
                ]
            )
        for label, tag in (
            ("advlab", "advlab.version"),
            ("torch", "advlab.torch_version"),
            ("torchattacks", "advlab.torchattacks_version"),
            ("git commit", "advlab.git_commit"),
            ("device", "advlab.device"),
        ):
            rows.append([label, _distinct(run.tags.get(tag) for run in self.runs)])
        self.table(rows, [0.2, 0.8], header=False)

        self.h2("Runs")
        rows = [["#", "run", "status", "started (UTC)", "run id", "clean acc"]]
        highlight = {}
        for i, run in enumerate(self.runs, 1):
            started = run.start_time.strftime("%Y-%m-%d %H:%M") if run.start_time else MISSING
            rows.append([i, run.name, run.status, started, run.run_id, fmt_pct(run.clean_acc)])
            if run.status != "FINISHED":
                highlight[i] = colors.HexColor("#fbe9e7")
        self.table(rows, [0.04, 0.29, 0.1, 0.15, 0.32, 0.1], highlight=highlight)

        self.h2("Data")
        self.table(self._data_rows(), [0.13, 0.1, 0.09, 0.09, 0.1, 0.39, 0.1])

        self.h2("Command lines")
        commands: dict[str, list[str]] = {}
        for run in self.runs:
            commands.setdefault(run.tags.get("advlab.command") or MISSING, []).append(run.name)
        shown = list(commands.items())[:12]
        for command, names in shown:
            who = names[0] if len(names) == 1 else f"{len(names)} runs"
            self.story.append(Paragraph(f"<b>{escape(who)}</b>", self.s["cell"]))
            self.story.append(Paragraph(escape(command), self.s["mono"]))
            self.story.append(Spacer(1, 3))
        if len(commands) > len(shown):
            self.para(
                f"... and {len(commands) - len(shown)} more distinct command lines "
                "(MLflow tag advlab.command of each run).",
                "caption",
            )

    def _data_rows(self) -> list[list[object]]:
        groups: dict[tuple, list[RunData]] = {}
        for run in self.runs:
            p = run.params
            key = (
                run.tags.get("advlab.dataset") or p.get("data.name") or MISSING,
                p.get("facts.n_train"),
                p.get("facts.n_val"),
                p.get("facts.n_test"),
                p.get("facts.image_shape"),
                _balance(p),
            )
            groups.setdefault(key, []).append(run)
        rows: list[list[object]] = [
            ["data", "train", "val", "test", "image", "class balance (train)", "runs"]
        ]
        for (name, n_train, n_val, n_test, shape, balance), members in groups.items():
            rows.append(
                [
                    name,
                    fmt_int(_float(n_train)),
                    fmt_int(_float(n_val)),
                    fmt_int(_float(n_test)),
                    shape or MISSING,
                    balance or MISSING,
                    len(members),
                ]
            )
        return rows

    def summary(self) -> None:
        self.h1("Summary")
        lines: list[str] = []
        if len(self.runs) == 1:
            lines += self._run_story(self.runs[0])
        else:
            lines += sweep_sentences(
                self._overview_table(),
                params=[p for p in self.swept if p != "seed"][:3],  # seeds are noise, not a knob
                attack=self.attack,
                eps=self.eps,
            )
            for run in self.runs:
                if run.status != "FINISHED":
                    reason = f": {run.error}" if run.error else ""
                    lines.append(f"Run {run.name} ended {run.status}{reason}.")
                elif run.robustness.empty:
                    lines.append(f"Run {run.name} has no attack results.")
            lines += self._sanity_sentences()
        self.bullets(lines or ["No numbers to summarise."])

    def _run_story(self, run: RunData) -> list[str]:
        best = run.metric(naming.BEST_EPOCH)
        return run_sentences(
            name=run.name,
            clean_acc=run.clean_acc,
            robustness=run.robustness,
            eps=self.eps,
            best_epoch=best,
            stopped_epoch=run.metric(naming.STOPPED_EPOCH),
            max_epochs=_int(run.params.get("train.epochs")),
            gen_gap=run.history_at("gen_gap", best) if best is not None else None,
            last_gap=run.history_at("gen_gap", run.metric(naming.STOPPED_EPOCH)),
            sanity=run.sanity,
            status=run.status,
            error=run.error,
        )

    def _sanity_sentences(self) -> list[str]:
        with_sanity = [r for r in self.runs if r.sanity]
        if not with_sanity:
            return []
        bad = [r for r in with_sanity if any(c["status"] != "pass" for c in r.sanity or [])]
        if not bad:
            return [f"All sanity checks passed on all {len(with_sanity)} runs that report them."]
        return [
            f"Sanity checks raised warnings on {len(bad)} of {len(with_sanity)} runs "
            "(see the sanity section)."
        ]

    def setup(self) -> None:
        self.h1("Setup")
        if len(self.runs) == 1:
            run = self.runs[0]
            rows = [[k, v] for k, v in _setup(run).items()]
            self.table(rows, [0.28, 0.72], header=False)
            return
        facts = {run.run_id: _setup(run) for run in self.runs}
        keys = [
            "status",
            "model",
            "params",
            "optimizer",
            "lr",
            "weight decay",
            "dropout",
            "early stopping",
            "augmentation",
            "adv. training",
            "seed",
        ]
        # What all runs share is said once; the table shows only what differs between runs.
        shared = [k for k in keys if len({f[k] for f in facts.values()}) == 1]
        differ = [k for k in keys if k not in shared]
        if shared:
            rows = [[k, next(iter(facts.values()))[k]] for k in shared]
            self.para("Shared by all runs:")
            self.table(rows, [0.28, 0.72], header=False)
        if differ:
            self.para("Differences between runs:")
            weights = {
                "status": 1.6,
                "early stopping": 2.2,
                "augmentation": 1.4,
                "model": 1.2,
                "adv. training": 1.2,
            }
            total = sum(weights.get(k, 0.8) for k in differ)
            widths = [0.26] + [0.74 * weights.get(k, 0.8) / total for k in differ]
            rows = [["run", *differ]]
            rows += [[run.name, *(facts[run.run_id][k] for k in differ)] for run in self.runs]
            self.table(rows, widths)

    def learning_curves(self) -> None:
        self.h1("Learning curves")
        caption = (
            "Solid: training, dashed: validation. Dotted line: the best epoch (its weights "
            "are the model's); grey band: epochs run after it until training stopped. "
            "Validation loss rising while training loss falls is overfitting."
        )
        with_history = [r for r in self.runs if not r.history.empty]
        without = [r for r in self.runs if r.history.empty]
        if len(self.runs) == 1:
            if with_history:
                self.figure(figures.learning_curves(self.runs[0]), caption)
            else:
                self.para(f"No per-epoch metrics were logged (run {self.runs[0].status}).", "note")
            return
        for start in range(0, len(self.runs), CURVES_PER_FIGURE):
            chunk = self.runs[start : start + CURVES_PER_FIGURE]
            self.figure(figures.learning_curves_grid(chunk), caption)
        if without:
            self.para(
                "No per-epoch metrics: "
                + ", ".join(f"{r.name} ({r.status})" for r in without)
                + ".",
                "note",
            )

    def robustness(self) -> None:
        self.h1("Robustness")
        attacked = [r for r in self.runs if not r.robustness.empty]
        if not attacked:
            self.para(
                "No attack was evaluated in "
                + ("this run." if len(self.runs) == 1 else "any of these runs."),
                "note",
            )
            return
        caption = (
            "Accuracy on the attacked test subset vs perturbation budget eps (L-inf, in "
            "1/255). At eps 0 it is the clean accuracy."
        )
        if len(attacked) == 1:
            self.figure(
                figures.robustness_curves(attacked, bands=True),
                caption + " Band: 95% confidence interval.",
            )
            self._robustness_table(attacked[0])
        else:
            params = [p for p in self.swept if p != "seed"] or self.swept
            hue = params[0] if params else None
            style = params[1] if len(params) > 1 else None
            bands = len(attacked) <= 4
            extra = " Bands: 95% confidence intervals." if bands else ""
            if hue:
                extra += f" Colour: {hue}." + (f" Line style: {style}." if style else "")
            self.figure(
                figures.robustness_curves(attacked, hue_param=hue, style_param=style, bands=bands),
                caption + extra,
            )
            self._robustness_pivot(attacked)
        missing = [r for r in self.runs if r.robustness.empty]
        if missing:
            self.para(
                "No attack results: " + ", ".join(f"{r.name} ({r.status})" for r in missing) + ".",
                "note",
            )

    def _robustness_table(self, run: RunData) -> None:
        rows: list[list[object]] = [
            ["attack", "eps", "clean acc", "robust acc", "95% CI", "attack success rate", "n"]
        ]
        for attack in run.attacks:
            for eps in run.eps_grid:
                row = run.robust(attack, eps)
                if row is None:
                    continue
                ci = (
                    MISSING
                    if pd.isna(row["ci_low"])
                    else f"{fmt_pct(row['ci_low'])} – {fmt_pct(row['ci_high'])}"
                )
                rows.append(
                    [
                        attack_label(attack),
                        fmt_eps(eps),
                        fmt_pct(run.clean_acc),
                        fmt_pct(row["robust_acc"]),
                        ci,
                        fmt_pct(row["asr"]),
                        fmt_int(row["n"]),
                    ]
                )
        self.table(rows, [0.13, 0.09, 0.12, 0.13, 0.22, 0.2, 0.11])
        self.para(
            "Robust accuracy is over all evaluated points; the attack success rate is over "
            "the points classified correctly before the attack. Worst case: per example, "
            "the strongest of the attacks run.",
            "caption",
        )

    def _robustness_pivot(self, runs: Sequence[RunData]) -> None:
        grid = sorted({e for r in runs for e in r.eps_grid})
        head: list[object] = ["run", "attack", "clean acc", *(fmt_eps(e) for e in grid)]
        rows: list[list[object]] = [head]
        for run in runs:
            for attack in run.attacks:
                cells = []
                for eps in grid:
                    row = run.robust(attack, eps)
                    cells.append(
                        MISSING
                        if row is None
                        else f"{fmt_pct(row['robust_acc'])} / {fmt_pct(row['asr'])}"
                    )
                rows.append([run.name, attack_label(attack), fmt_pct(run.clean_acc), *cells])
        rest = 1.0 - 0.28 - 0.1 - 0.08
        self.table(rows, [0.28, 0.1, 0.08, *([rest / len(grid)] * len(grid))])
        self.para("Cells: robust accuracy / attack success rate at each eps (1/255).", "caption")

    def _overview_table(self) -> pd.DataFrame:
        rows = []
        for run in self.runs:
            row = {
                "name": run.name,
                "run_id": run.run_id,
                "clean_acc": run.clean_acc,
                "robust": None,
                "gen_gap": None,
            }
            if self.attack is not None and self.eps is not None:
                hit = run.robust(self.attack, self.eps)
                row["robust"] = None if hit is None else float(hit["robust_acc"])
            best = run.metric(naming.BEST_EPOCH)
            row["gen_gap"] = run.history_at("gen_gap", best)
            for key in self.swept:
                row[key] = run.params.get(key, MISSING)
            rows.append(row)
        frame = pd.DataFrame(rows)
        for column in ("clean_acc", "robust", "gen_gap"):
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
        return frame

    def sweep(self) -> None:
        if len(self.runs) < 2:
            return
        self.h1("Sweep")
        if not self.swept:
            self.para("The runs share every parameter: nothing was swept.", "note")
            return
        table = self._overview_table()
        self.para(
            "Swept parameters: "
            + ", ".join(
                f"{p} ({', '.join(fmt_num(v) for v in _sorted_values(table[p]))})"
                for p in self.swept
            )
            + "."
        )
        robust_title = (
            f"{attack_label(self.attack)} at {fmt_eps(self.eps)}" if self.attack else None
        )
        panels = [("clean_acc", "clean accuracy")]
        if robust_title:
            panels.append(("robust", f"robust accuracy, {robust_title}"))
        if table["gen_gap"].notna().any():
            panels.append(("gen_gap", "train − val accuracy (best epoch)"))
        grid_params = [p for p in self.swept if p != "seed"][:2] or self.swept[:1]
        finished = table[table["clean_acc"].notna()]
        if len(finished) < 2:
            self.para("Fewer than two runs have results: nothing to compare.", "note")
            return
        if len(grid_params) == 2:
            y, x = grid_params
            self.figure(
                figures.sweep_heatmaps(finished, x=x, y=y, panels=panels),
                f"Mean over the runs with each pair of values of {y} (rows) and {x} "
                "(columns)"
                + (f", averaged over {', '.join(self.swept[2:])}" if len(self.swept) > 2 else "")
                + ".",
            )
        else:
            self.figure(
                figures.sweep_bars(finished, x=grid_params[0], panels=panels),
                f"Mean per value of {grid_params[0]}.",
            )
        if robust_title:
            hue = grid_params[0]
            style = grid_params[1] if len(grid_params) > 1 else None
            self.figure(
                figures.clean_vs_robust(
                    finished, hue=hue, style=style, robust_label=f"robust accuracy ({robust_title})"
                ),
                "One point per run: up and to the right is both accurate and robust.",
                width=0.8,
            )
        rows: list[list[object]] = [
            [
                "run",
                *self.swept[:4],
                "clean acc",
                f"robust ({robust_title})" if robust_title else "robust",
                "train − val acc",
            ]
        ]
        for _, row in table.iterrows():
            rows.append(
                [
                    row["name"],
                    *(fmt_num(row[p]) for p in self.swept[:4]),
                    fmt_pct(row["clean_acc"]),
                    fmt_pct(row["robust"]),
                    fmt_pct(row["gen_gap"]),
                ]
            )
        n_params = len(self.swept[:4])
        rest = 1 - 0.3 - 0.1 - 0.15 - 0.1
        self.table(rows, [0.3, *([rest / n_params] * n_params), 0.1, 0.15, 0.1])

    def sanity(self) -> None:
        self.h1("Sanity checks")
        with_sanity = [r for r in self.runs if r.sanity]
        if not with_sanity:
            self.para("No sanity-check results (results/sanity.json) were logged.", "note")
            return
        if len(self.runs) == 1:
            self._sanity_table(self.runs[0])
            return
        names = list(dict.fromkeys(c["name"] for r in with_sanity for c in r.sanity or []))
        rows: list[list[object]] = [["check", "pass", "warn", "fail"]]
        for name in names:
            counts = {"pass": 0, "warn": 0, "fail": 0}
            for run in with_sanity:
                for check in run.sanity or []:
                    if check["name"] == name:
                        counts[check["status"]] = counts.get(check["status"], 0) + 1
            rows.append([name, counts["pass"], counts["warn"], counts["fail"]])
        self.table(rows, [0.55, 0.15, 0.15, 0.15])
        bad = [(r, c) for r in with_sanity for c in r.sanity or [] if c["status"] != "pass"]
        if bad:
            self.h2("Checks that did not pass")
            rows = [["run", "check", "status", "evidence"]]
            rows += [[r.name, c["name"], c["status"], c["evidence"]] for r, c in bad]
            self.table(rows, [0.22, 0.2, 0.08, 0.5], highlight=None)
        missing = [r.name for r in self.runs if not r.sanity]
        if missing:
            self.para("No sanity results: " + ", ".join(missing) + ".", "note")

    def _sanity_table(self, run: RunData) -> None:
        rows: list[list[object]] = [["check", "status", "evidence"]]
        highlight = {}
        for i, check in enumerate(run.sanity or [], 1):
            rows.append([check["name"], check["status"], check["evidence"]])
            if check["status"] != "pass":
                highlight[i] = colors.HexColor("#fff3cd")
        self.table(rows, [0.25, 0.08, 0.67], highlight=highlight)

    def details(self, run: RunData, *, level: str) -> None:
        """Adversarial-example grids, per-class robustness and confusion matrices of one run."""
        head = self.h1 if level == "h1" else self.h2
        prefix = "" if level == "h1" else f"{run.name}: "
        grids = run.grids
        if level == "h2":  # many runs: the headline attack's grids only, to keep the report short
            grids = [g for g in grids if Path(g[0]).stem.startswith(f"{self.attack}_")] or grids
        if grids:
            head(f"{prefix}Adversarial examples")
            for path, data in grids:
                self.png(
                    data,
                    f"{Path(path).stem}: clean image, perturbation (amplified, scale "
                    "in the grid) and adversarial image, with true/predicted labels "
                    "and confidences, as logged by the run.",
                )
        elif level == "h1":
            head("Adversarial examples")
            self.para("No adversarial-example grids were logged.", "note")
        if run.per_class is not None and not run.per_class.empty:
            n_classes = run.per_class["class"].nunique()
            if n_classes <= 30:
                head(f"{prefix}Per-class robustness")
                self.figure(
                    figures.per_class_heatmap(run.per_class, run.attacks),
                    "Robust accuracy per true class and eps (1/255); eps 0 = clean.",
                )
            else:
                self.para(f"{n_classes} classes: too many for a readable per-class figure.", "note")
        if run.confusion and "clean" in run.confusion:
            adv_key = self._confusion_key(run)
            matrix = run.confusion["clean"]
            n = len(matrix)
            if adv_key is not None and n <= 20:
                attack, eps = adv_key[1], adv_key[2]
                head(f"{prefix}Confusion matrices")
                self.figure(
                    figures.confusion_pair(
                        matrix,
                        run.confusion[adv_key[0]],
                        class_names=_class_names(run, n),
                        adv_title=figures.eps_title(attack, eps),
                    ),
                    "Counts of test examples; rows: true class, columns: predicted class.",
                )

    def _confusion_key(self, run: RunData) -> tuple[str, str, float] | None:
        """The adversarial confusion matrix to show: the headline attack at the headline eps,
        else the largest eps of any attack logged."""
        options = []
        for key in run.confusion or {}:
            if key == "clean" or "/eps_" not in key:
                continue
            attack, eps = key.rsplit("/eps_", 1)
            try:
                options.append((key, attack, float(eps)))
            except ValueError:
                continue
        if not options:
            return None
        for key, attack, eps in options:
            if attack == self.attack and eps == self.eps:
                return key, attack, eps
        return sorted(options, key=lambda o: (o[1] != self.attack, -o[2]))[0]

    def highlights(self) -> list[RunData]:
        """Runs that get detail pages: all when few, else best clean / most and least robust."""
        if len(self.runs) <= DETAIL_RUNS:
            return list(self.runs)
        table = self._overview_table().set_index("run_id")
        picks: list[str] = []
        for column, ascending in (("clean_acc", False), ("robust", False), ("robust", True)):
            values = table[column].dropna()
            if not values.empty:
                ordered = values.sort_values(ascending=ascending)
                picks.append(str(ordered.index[0]))
        by_id = {r.run_id: r for r in self.runs}
        return [by_id[i] for i in dict.fromkeys(picks)]


# ------------------------------------------------------------------------------------- rendering
def render(report: ReportData, path: Path, *, heatmap_eps: float | None = None) -> Path:
    """Write the PDF for ``report`` to ``path`` (A4, fonts embedded) and return ``path``.

    ``heatmap_eps``: eps (1/255) quoted by the sweep heatmaps, scatter and summary; None = the
    largest evaluated.
    """
    register_fonts()
    b = _Builder(report, heatmap_eps)
    b.cover()
    b.story.append(PageBreak())
    b.summary()
    b.setup()
    b.learning_curves()
    b.robustness()
    if len(report.runs) == 1:
        b.sanity()
        b.details(report.runs[0], level="h1")
    else:
        b.sweep()
        b.sanity()
        picks = b.highlights()
        if picks:
            b.h1("Run details")
            if len(picks) < len(report.runs):
                b.para(
                    f"Shown for {len(picks)} of {len(report.runs)} runs: the highest clean "
                    "accuracy, the most and the least robust. Every run's grids and tables "
                    "are artifacts of its MLflow run.",
                    "caption",
                )
            for run in picks:
                b.details(run, level="h2")
    doc = _Doc(
        path,
        title=f"advlab report: {report.experiment}",
        footer=f"advlab report · {report.experiment}",
    )
    doc.build(b.story)
    return path


# ------------------------------------------------------------------------------- small helpers
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


def _setup(run: RunData) -> dict[str, str]:
    p = run.params
    target = p.get("model._target_")
    model = run.tags.get("advlab.model") or (naming.option_name(target) if target else MISSING)
    opt_target = p.get("optimizer._target_")
    optimizer = naming.option_name(opt_target) if opt_target else MISSING
    es = MISSING
    if p.get("train.early_stopping.enabled") is not None:
        best, stopped = run.metric(naming.BEST_EPOCH), run.metric(naming.STOPPED_EPOCH)
        epochs = p.get("train.epochs", "?")
        where = (
            f"best {int(best)} / stopped {int(stopped)} of {epochs}"
            if best is not None and stopped is not None
            else f"not reached ({run.status})"
        )
        if p.get("train.early_stopping.enabled") == "True":
            es = (
                f"patience {p.get('train.early_stopping.patience', '?')} on "
                f"{p.get('train.early_stopping.monitor', '?')}; {where}"
            )
        else:
            es = f"off; {where}"
    aug = [name for name, key in (("hflip", "data.augment.hflip"),) if p.get(key) == "True"]
    if _float(p.get("data.augment.shift")):
        aug.append(f"shift {fmt_num(p['data.augment.shift'])}px")
    if _float(p.get("data.augment.rotation")):
        aug.append(f"rotation {fmt_num(p['data.augment.rotation'])}°")
    adv = p.get("train.adversarial.method")
    if adv and adv != "none":
        adv = f"{adv} eps {fmt_eps(float(p.get('train.adversarial.eps', 'nan')))}"
    return {
        "status": run.status + (f": {run.error}" if run.error else ""),
        "model": model,
        "params": fmt_int(run.metric(naming.NUM_PARAMS)),
        "optimizer": optimizer,
        "lr": fmt_num(p.get("optimizer.lr")),
        "weight decay": fmt_num(p.get("optimizer.weight_decay")),
        "dropout": fmt_num(p.get("model.dropout")),
        "early stopping": es,
        "augmentation": ", ".join(aug) or ("none" if "data.augment.hflip" in p else MISSING),
        "adv. training": adv or MISSING,
        "seed": p.get("seed") or run.tags.get("advlab.seed") or MISSING,
    }


def _balance(params: dict[str, str]) -> str:
    shares = {k.split("/", 1)[1]: v for k, v in params.items() if k.startswith("facts.train_frac/")}
    return ", ".join(f"{name} {fmt_pct(_float(v))}" for name, v in shares.items())


def _class_names(run: RunData, n: int) -> list[str]:
    """Class names in label order: from the data config, else from per_class.csv (written in
    label order), else label indices."""
    raw = run.params.get("data.class_names")
    if raw:
        names = [s.strip().strip("'\"") for s in raw.strip("[]").split(",") if s.strip()]
        if len(names) == n:
            return names
    if run.per_class is not None and not run.per_class.empty:
        names = list(dict.fromkeys(run.per_class["class"].astype(str)))
        if len(names) == n:
            return names
    return [str(i) for i in range(n)]


def _distinct(values) -> str:
    unique = list(dict.fromkeys(v for v in values if v))
    if not unique:
        return MISSING
    return ", ".join(unique[:4]) + (f" (+{len(unique) - 4} more)" if len(unique) > 4 else "")


def _float(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _int(value: object) -> int | None:
    number = _float(value)
    return None if number is None else int(number)


def _sorted_values(column: pd.Series) -> list[str]:
    def key(v: object) -> tuple[int, float | str]:
        number = _float(v)
        return (0, number) if number is not None else (1, str(v))

    return sorted(column.dropna().unique(), key=key)
