"""The report's first page: the story in one sentence, one curve, one example and the verdict.

One run: the headline sentence (:func:`~advlab.report.summary.headline_sentence`), the verdict in
plain words with its technical reason beneath, the worst-case robustness curve, and one row of
clean image / amplified perturbation / adversarial image cut from an example grid the run logged.
A sweep: the verdict counts, the comparison of settings by the worst case at the headline eps
(mean ± std over seeds) as a sentence, a table and a curve per setting. Metadata (versions,
command lines, the data) comes on later pages (:mod:`~advlab.report.cover`).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from advlab import naming
from advlab.report import data, facts, figures, seeds
from advlab.report.blocks import Story
from advlab.report.cover import verdict_banner
from advlab.report.data import Focus, ReportData, RunData
from advlab.report.format import attack_label, fmt_eps, fmt_spread
from advlab.report.seeds import SeedGroup
from advlab.report.summary import bracket_sentence, headline_sentence, sweep_sentences
from advlab.training.diagnostics import CATASTROPHIC_OVERFITTING
from advlab.verdict import PASS

WORST_CAPTION = (
    "Accuracy under the worst case (per example, the strongest of the attacks run) vs the "
    "perturbation budget eps (L-inf, in 1/255); at eps 0 it is the clean accuracy. "
)
SETTINGS_SHOWN = 12  # rows of the first page's comparison table; the sweep section has all
LINES_SHOWN = 8  # settings drawn on the first page's curve: more lines are unreadable


def title(story: Story, report: ReportData) -> None:
    """The report's title and where its numbers come from."""
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    story.para(f"advlab report: {report.experiment}", "title")
    story.para(f"Generated {when} from the MLflow store {report.tracking_uri}", "subtitle")


def single_run(story: Story, report: ReportData, focus: Focus) -> None:
    """The first page of a one-run report."""
    run = report.runs[0]
    title(story, report)
    head = data.headline(run, focus.eps)
    story.para(headline_sentence(head), "lead")
    bracket = bracket_sentence(run, focus.eps)
    if bracket:
        story.para(bracket, "note")
    story.banner(_verdict_lines(run))
    if not run.robustness.empty:
        story.figure(
            worst_case_figure(
                [SeedGroup(run.name, [run])],
                clean=run.clean_acc,
                eps=focus.eps,
                constant=run.constant_acc,
            ),
            WORST_CAPTION + "Band: 95% confidence interval; grey: each attack alone; dotted: "
            "half the clean accuracy."
            + certified_caption(run)
            + figures.constant_caption(run.constant_acc),
            width=0.8,
        )
    row = example_row(run, focus)
    if row is not None:
        path, png = row
        story.png(
            png,
            f"One example from {path} as the run logged it: the clean image, the perturbation "
            "(amplified to be visible) and the adversarial image, each with the true label and "
            "the model's prediction (red: fooled). Every grid is on a later page.",
            width=0.62,
        )
    _unfinished(story, report)


def _verdict_lines(run: RunData) -> list[tuple[str, str | None, bool]]:
    lines: list[tuple[str, str | None, bool]] = [
        (facts.plain_verdict(run.verdict, run.verdict_reason), run.verdict, True)
    ]
    if run.verdict_reason:
        lines.append((run.verdict_reason, run.verdict, False))
    return lines


def sweep_runs(story: Story, report: ReportData, focus: Focus) -> None:
    """The first page of a many-run report: the comparison by the worst case."""
    title(story, report)
    story.banner(verdict_banner(report.runs))
    worst = Focus(data.headline_attack(report.runs), focus.eps, focus.swept)
    groups = seeds.compared(seeds.group_runs(report.runs, worst))
    table = seeds.group_table(groups, worst)
    knobs = [p for p in focus.swept if p != "seed"]
    lines = sweep_sentences(table, params=knobs[:2], attack=worst.attack, eps=focus.eps)
    story.bullets(lines[:4])
    _comparison_table(story, table, groups, worst)
    constant = data.constant_acc([r for g in groups for r in g.runs])
    beats = facts.constant_sentence(table, constant, worst.attack, focus.eps)
    if beats:
        story.para(beats, "note")
    attacked = [g for g in groups if not g.robustness.empty]
    if attacked:
        story.figure(
            worst_case_figure(attacked[:LINES_SHOWN], clean=None, eps=focus.eps, constant=constant),
            WORST_CAPTION
            + "One line per setting (mean over its seeds; band: ± one std)."
            + figures.constant_caption(constant),
            width=0.8,
        )
    _unfinished(story, report)
    left_out = facts.left_out_sentence(report.runs)
    if left_out:
        story.para(left_out, "note")


def _comparison_table(
    story: Story, table: pd.DataFrame, groups: Sequence[SeedGroup], focus: Focus
) -> None:
    """The settings (``table``: :func:`seeds.group_table`) ranked by the headline; with the
    certified figure where runs certified, and where a setting trained adversarially the
    training time and the runs whose check flagged catastrophic overfitting."""
    if table.empty or focus.eps is None or focus.attack is None:
        return
    pooled = seeds.pooled(groups)
    ranked = table.sort_values("robust", ascending=False, na_position="last")
    quoted = f"{attack_label(focus.attack)} at {fmt_eps(focus.eps)}"
    by_name = {g.name: g for g in groups}
    extra = _extra_columns(groups, focus.eps)
    head = ["setting" if pooled else "run", "seeds", "clean acc", quoted, *extra]
    rows: list[list[object]] = [head]
    for _, row in ranked.head(SETTINGS_SHOWN).iterrows():
        group = by_name.get(row["name"])
        line = [
            row["name"],
            row["n_seeds"],
            fmt_spread(row[naming.CLEAN_ACC], row["clean_acc_std"]),
            fmt_spread(row["robust"], row["robust_std"]),
        ]
        rows.append(line + [cell(group) if group else "-" for cell in extra.values()])
    # the setting's name keeps what the fixed columns leave (it wraps inside its cell)
    story.table(rows, [0.6 - 0.11 * len(extra), 0.07, 0.16, 0.17, *[0.11] * len(extra)])
    more = len(ranked) - SETTINGS_SHOWN
    tail = f" {more} more in the Sweep section." if more > 0 else ""
    spread = " mean ± std over seeds;" if pooled else ""
    flagged = (
        " CO: runs whose catastrophic_overfitting check did not pass." if extra.get("CO") else ""
    )
    story.para(
        f"Settings ranked by {quoted} robust accuracy;{spread} runs "
        f"whose verdict is fail are not compared.{flagged}{tail}",
        "caption",
    )


def _extra_columns(groups: Sequence[SeedGroup], eps: float) -> dict[str, Callable]:
    """Column head -> cell of a group, for the columns that apply to these groups."""
    columns: dict[str, Callable] = {}
    if any(g.certified_any for g in groups):

        def certified(g: SeedGroup) -> str:
            found = g.spread(lambda r: r.certified.get(eps))
            return "-" if not g.certified_any else fmt_spread(found["mean"], found["std"])

        columns[f"certified at {fmt_eps(eps)}"] = certified
    if any(r.adversarially_trained for g in groups for r in g.runs):

        def minutes(g: SeedGroup) -> str:
            found = g.spread(lambda r: r.metric(naming.TRAIN_SECONDS))
            if found["mean"] != found["mean"]:
                return "-"
            return f"{found['mean'] / 60:.1f} min"

        def overfitted(g: SeedGroup) -> str:
            hit = sum(r.check_status(CATASTROPHIC_OVERFITTING) != PASS for r in g.runs)
            return f"{hit} of {g.n_seeds}"

        columns["train time"] = minutes
        columns["CO"] = overfitted
    return columns


def _unfinished(story: Story, report: ReportData) -> None:
    sentence = facts.unfinished_sentence(report.left_out)
    if sentence:
        story.para(sentence, "note")


# ----------------------------------------------------------------------------------- the figure
def worst_case_figure(
    groups: Sequence[SeedGroup],
    *,
    clean: float | None,
    eps: float | None,
    constant: float | None = None,
) -> Figure:
    """The worst-case curve of each group (one run: with its 95% CI band and each attack alone in
    grey; many: the mean over seeds ± one std), a dotted line at half ``clean``, the
    ``constant``-answer baseline and a mark at the headline ``eps``."""
    one = len(groups) == 1
    grid = sorted({e for g in groups for e in g.eps_grid})
    with figures.plot_style():
        fig = figures.new_figure(5.6, 2.6)
        ax = fig.subplots()
        for i, group in enumerate(groups):
            table = group.robustness
            if one:
                for attack in group.attacks:
                    if attack == naming.WORST_CASE:
                        continue
                    part = table[table["attack"] == attack].sort_values("eps")
                    ax.plot(part["eps"], part["robust_acc"], color="0.7", lw=0.9, ls="--")
            part = table[table["attack"] == naming.WORST_CASE].sort_values("eps")
            if part.empty:
                continue
            color = "#b2182b" if one else f"C{i % 10}"
            label = "worst case" if one else figures.short_text(group.name, 40)
            ax.plot(
                part["eps"],
                part["robust_acc"],
                marker="o",
                ms=3.5,
                lw=1.8,
                color=color,
                label=label,
            )
            low, high = _band(part, one)
            if low is not None:
                ax.fill_between(part["eps"], low, high, color=color, alpha=0.15, lw=0)
            if one:
                _certified(ax, group.runs[0], part)
        if clean is not None:
            ax.axhline(clean / 2, color="0.35", lw=0.8, ls=":")
        figures.constant_line(ax, constant)
        if eps is not None:
            ax.axvline(eps, color="0.35", lw=0.6, ls="-", alpha=0.4)
        ax.set_xlabel("eps (1/255)")
        ax.set_ylabel("accuracy")
        if grid:
            ax.set_xticks(grid, figures.eps_tick_labels(grid), fontsize=7)
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1))
        ax.set_ylim(-0.02, 1.02)
        if not one:
            ax.legend(fontsize=6.5, loc="upper right", frameon=True)
    return fig


CERTIFIED_COLOR = "#1b7837"


def _certified(ax, run: RunData, worst: pd.DataFrame) -> None:
    """The certified curve of one run and the bracket between it and the worst case, hatched."""
    certified = run.certified
    shared = worst[worst["eps"].isin(list(certified))]
    if shared.empty:
        return
    eps = shared["eps"].to_numpy()
    low = np.array([certified[e] for e in eps])
    ax.plot(eps, low, marker="s", ms=3, lw=1.4, color=CERTIFIED_COLOR, label="certified")
    ax.fill_between(
        eps, low, shared["robust_acc"].to_numpy(), color=CERTIFIED_COLOR, alpha=0.08, lw=0
    )


def certified_caption(run: RunData) -> str:
    """The caption's words for :func:`_certified` (leading space); "" for a run without it."""
    if not run.certified:
        return ""
    method = str(run.setting("eval.certify") or "bounds").upper()
    return (
        f" Green squares: certified accuracy ({method}), a proven lower bound; the shaded band "
        "between it and the worst case is the bracket the true robust accuracy lies in."
    )


def _band(part, one: bool):
    """(low, high) of a worst-case line: its CI for one run, ± one std over seeds for many."""
    if one:
        return (part["ci_low"], part["ci_high"]) if part["ci_low"].notna().any() else (None, None)
    if "robust_std" in part and part["robust_std"].notna().any():
        std = part["robust_std"].fillna(0)
        return part["robust_acc"] - std, part["robust_acc"] + std
    return None, None


# ------------------------------------------------------------------------------ one example row
def example_row(run: RunData, focus: Focus) -> tuple[str, bytes] | None:
    """(artifact path, PNG) of one example row cut from the run's logged grid of the quoted
    attack at the headline eps (else any grid): the grid's title and its first fooled example
    (else its first example). None when the run logged no grid."""
    if not run.grids:
        return None
    stem = f"{focus.attack}_eps_{naming.format_eps(focus.eps)}" if focus.eps is not None else ""
    path, png = next(((p, b) for p, b in run.grids if Path(p).stem == stem), run.grids[0])
    return path, cut_example(png)


def cut_example(png: bytes) -> bytes:
    """The title band and one example row of an example-grid PNG (rows of clean, perturbation
    and adversarial panels, separated by white bands); the first row whose labels are red (the
    grid marks a fooled example so) is preferred. A PNG with no such structure comes back whole.
    Pixels are only cut, never drawn: the example is the run's own."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as img:
        rgb = np.asarray(img.convert("RGB"))
    segments = _segments(rgb)
    rows = [s for s in segments if s[1] - s[0] > 0.5 * max(b - a for a, b in segments)]
    if len(rows) < 2:
        return png
    header = [s for s in segments if s[1] <= rows[0][0]]
    red = (rgb[..., 0] > 180) & (rgb[..., 1] < 90) & (rgb[..., 2] < 110)
    fooled = [r for r in rows if red[r[0] : r[1]].any()]
    top, bottom = fooled[0] if fooled else rows[0]
    pieces = [rgb[max(0, a - 3) : b + 3] for a, b in header] + [rgb[max(0, top - 3) : bottom + 4]]
    out = io.BytesIO()
    Image.fromarray(np.concatenate(pieces, axis=0)).save(out, format="PNG")
    return out.getvalue()


def _segments(rgb: np.ndarray) -> list[tuple[int, int]]:
    """(top, bottom) pixel rows of the content between the wide white bands of an image."""
    blank = rgb.min(axis=(1, 2)) > 245
    bands: list[tuple[int, int]] = []
    for y in np.flatnonzero(blank):
        if bands and bands[-1][1] == y:
            bands[-1] = (bands[-1][0], int(y) + 1)
        else:
            bands.append((int(y), int(y) + 1))
    if not bands:
        return [(0, rgb.shape[0])]
    widest = max(b - a for a, b in bands)
    gaps = [(a, b) for a, b in bands if b - a >= 0.6 * widest]
    edges = [0, *[v for gap in gaps for v in gap], rgb.shape[0]]
    pairs = zip(edges[::2], edges[1::2], strict=True)
    return [(a, b) for a, b in pairs if b > a]
