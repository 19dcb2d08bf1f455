"""The report's figures, drawn with seaborn on matplotlib ``Figure`` objects (no pyplot state).

Each function takes data gathered from MLflow (:mod:`advlab.report.data`) and returns a
``matplotlib.figure.Figure`` sized for an A4 text column (7 inches wide), so fonts at 8 pt stay
readable at 100% zoom. Accuracies are fractions in [0, 1], drawn as percentages; eps in 1/255 units.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from advlab import naming
from advlab.report import data
from advlab.report.data import RunData
from advlab.report.format import attack_label, fmt_num, setting_sort_key
from advlab.report.seeds import SeedGroup

WIDTH = 7.0  # inches: the A4 text column at 100% zoom
_TRAIN, _VAL = "#1f77b4", "#d62728"
# (split, panel) -> the per-epoch metric drawn
_CURVES = {
    ("train", "loss"): naming.TRAIN_LOSS,
    ("val", "loss"): naming.VAL_LOSS,
    ("train", "acc"): naming.TRAIN_ACC,
    ("val", "acc"): naming.VAL_ACC,
}


@contextmanager
def plot_style() -> Iterator[None]:
    # Scoped so that building a report never changes the caller's matplotlib/seaborn defaults.
    with sns.axes_style("whitegrid"), sns.plotting_context("paper", font_scale=0.95):
        yield


def new_figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


# ------------------------------------------------------------------------------ learning curves
def _curve_panels(run: RunData, ax_loss, ax_acc, *, compact: bool) -> None:
    hist = run.history
    best = run.metric(naming.BEST_EPOCH)
    stopped = run.metric(naming.STOPPED_EPOCH)
    for ax, metric, title in ((ax_loss, "loss", "loss"), (ax_acc, "acc", "accuracy")):
        for split, color, style in (("train", _TRAIN, "-"), ("val", _VAL, "--")):
            column = _CURVES[(split, metric)]
            if column in hist and hist[column].notna().any():
                sns.lineplot(
                    x=hist["epoch"],
                    y=hist[column],
                    ax=ax,
                    color=color,
                    linestyle=style,
                    marker="o",
                    markersize=3 if compact else 4,
                    label=_split_label(split, metric, run),
                    legend=False,
                )
        if metric == "acc":
            _robust_validation(run, ax, compact=compact)
        if best is not None:
            ax.axvline(best, color="0.25", lw=1, ls=":")
            at_end = not hist.empty and best >= hist["epoch"].max()  # label inside the axes
            ax.annotate(
                f"best {int(best)}",
                xy=(best, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(-2 if at_end else 2, -2),
                textcoords="offset points",
                va="top",
                ha="right" if at_end else "left",
                fontsize=6.5 if compact else 7.5,
                color="0.25",
            )
        if stopped is not None and best is not None and stopped > best:
            ax.axvspan(best, stopped, color="0.5", alpha=0.08, lw=0)
        if metric == "acc":
            ax.yaxis.set_major_formatter(PercentFormatter(xmax=1))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch" if not compact else "")
        ax.set_ylabel("" if compact else title)
        ax.set_title(title, fontsize=7 if compact else 9)


def _split_label(split: str, metric: str, run: RunData) -> str:
    if split == "train":
        return "train"
    return (
        "validation (clean)"
        if metric == "acc" and data.has_robust_validation(run)
        else "validation"
    )


_FGSM, _PGD, _MARK = "#ff7f0e", "#2ca02c", "#111111"


def _robust_validation(run: RunData, ax, *, compact: bool) -> None:
    """PGD validation accuracy (and FGSM's, when logged) on the accuracy panel; the epochs of
    catastrophic overfitting marked on the PGD curve."""
    hist = run.history
    series = [(naming.VAL_FGSM_ACC, _FGSM, "^", "validation (FGSM)")]
    series.append((naming.VAL_PGD_ACC, _PGD, "s", "validation (PGD)"))
    for column, color, marker, label in series:
        if column in hist and hist[column].notna().any():
            sns.lineplot(
                x=hist["epoch"],
                y=hist[column],
                ax=ax,
                color=color,
                marker=marker,
                markersize=3,
                label=label,
                legend=False,
            )
    _mark_catastrophic(ax, run, compact=compact)


def _mark_catastrophic(ax, run: RunData, *, compact: bool) -> None:
    """A large × on the PGD validation curve at each catastrophic epoch, annotated."""
    epochs = data.catastrophic_epochs(run)
    if not epochs:
        return
    pgd = [run.history_at(naming.VAL_PGD_ACC, e) for e in epochs]
    ax.scatter(
        epochs,
        pgd,
        marker="X",
        s=40 if compact else 90,
        color=_MARK,
        edgecolors="white",
        linewidths=0.6,
        zorder=6,
        label="catastrophic overfitting",
    )
    middle = float(run.history["epoch"].min() + run.history["epoch"].max()) / 2
    for i, (epoch, value) in enumerate(zip(epochs, pgd, strict=True)):
        right_half = epoch > middle  # the text runs towards the middle: it stays in the axes
        ax.annotate(
            "catastrophic\noverfitting" if compact else "catastrophic overfitting",
            xy=(epoch, value),
            xytext=(-8 if right_half else 8, 16 + 9 * (i % 2)),  # alternate: neighbours legible
            textcoords="offset points",
            ha="right" if right_half else "left",
            fontsize=5.5 if compact else 7,
            color=_MARK,
            arrowprops={"arrowstyle": "-", "color": _MARK, "lw": 0.6},
            zorder=6,
        )


def learning_curves(run: RunData) -> Figure:
    """Train vs validation loss and accuracy per epoch; dotted line = best (restored) epoch, grey
    band = epochs run after it until early stopping."""
    with plot_style():
        fig = new_figure(WIDTH, 2.6)
        ax_loss, ax_acc = fig.subplots(1, 2)
        _curve_panels(run, ax_loss, ax_acc, compact=False)
        handles, labels = ax_acc.get_legend_handles_labels()
        if handles and data.has_robust_validation(run):
            # Below the panels: inside, five entries would hide the low PGD curve and its marks.
            fig.legend(handles, labels, fontsize=7, loc="outside lower center", ncol=len(labels))
        elif handles:
            ax_acc.legend(handles, labels, fontsize=7, loc="lower right", frameon=True)
    return fig


def learning_curves_grid(groups: Sequence[SeedGroup], per_row: int = 2) -> Figure:
    """Small multiples for many settings: each a titled (loss, accuracy) pair, ``per_row`` a row.

    A setting run once is drawn as :func:`learning_curves` draws a run; one run with several seeds
    as the mean per epoch with a band of ± one std over the seeds (seaborn ``errorbar="sd"``) and
    a dotted line at each seed's best epoch."""
    rows = math.ceil(len(groups) / per_row)
    with plot_style():
        fig = new_figure(WIDTH, 1.75 * rows + 0.35)
        subs = np.atleast_2d(fig.subfigures(rows, per_row, squeeze=False))
        legend_ax = None
        for i, sub in enumerate(subs.ravel()):
            if i >= len(groups):
                continue
            group = groups[i]
            seeds = f" ({group.n_seeds} seeds)" if group.n_seeds > 1 else ""
            sub.suptitle(short_text(group.name, 48 - len(seeds)) + seeds, fontsize=7)
            ax_loss, ax_acc = sub.subplots(1, 2)
            drawn = [r for r in group.runs if not r.history.empty]
            if not drawn:
                status = ", ".join(dict.fromkeys(r.status for r in group.runs))
                for ax in (ax_loss, ax_acc):
                    ax.text(
                        0.5,
                        0.5,
                        f"no epochs logged\n({status})",
                        ha="center",
                        va="center",
                        fontsize=6.5,
                        transform=ax.transAxes,
                    )
                    ax.set_xticks([])
                    ax.set_yticks([])
                continue
            if len(drawn) == 1:
                _curve_panels(drawn[0], ax_loss, ax_acc, compact=True)
            else:
                _seed_curve_panels(drawn, ax_loss, ax_acc)
            for ax, title in ((ax_loss, "loss"), (ax_acc, "accuracy")):
                ax.tick_params(labelsize=6)
                ax.set_title(title, fontsize=6.5)
            legend_ax = legend_ax or ax_acc
        if legend_ax is not None:
            handles, labels = legend_ax.get_legend_handles_labels()
            unique = dict(zip(labels, handles, strict=True))  # one entry per label (seeds repeat)
            fig.legend(
                unique.values(), unique.keys(), loc="outside lower center", ncol=3, fontsize=7
            )
    return fig


def _val_label(robust: bool) -> str:
    return "validation (clean)" if robust else "validation"


def _seed_curve_panels(runs: Sequence[RunData], ax_loss, ax_acc) -> None:
    """Mean ± std over ``runs`` (seeds) per epoch; a dotted line at each run's best epoch."""
    long = pd.concat([r.history.assign(run=r.run_id) for r in runs], ignore_index=True)
    for ax, metric in ((ax_loss, "loss"), (ax_acc, "acc")):
        robust = metric == "acc" and naming.VAL_FGSM_ACC in long and naming.VAL_PGD_ACC in long
        series = [
            (_CURVES[("train", metric)], _TRAIN, "-", "train"),
            (
                _CURVES[("val", metric)],
                _VAL,
                "--",
                "validation (clean)" if robust else "validation",
            ),
        ]
        if metric == "acc":
            series.append((naming.VAL_FGSM_ACC, _FGSM, ":", "validation (FGSM)"))
            series.append((naming.VAL_PGD_ACC, _PGD, ":", "validation (PGD)"))
        for column, color, style, label in series:
            if column in long and long[column].notna().any():
                sns.lineplot(
                    data=long,
                    x="epoch",
                    y=column,
                    ax=ax,
                    color=color,
                    linestyle=style,
                    errorbar="sd",
                    marker="o",
                    markersize=3,
                    label=f"{label} (mean ± std over seeds)",
                    legend=False,
                )
        for run in runs:
            best = run.metric(naming.BEST_EPOCH)
            if best is not None:
                ax.axvline(best, color="0.25", lw=0.7, ls=":")
            if metric == "acc":
                _mark_catastrophic(ax, run, compact=True)  # on that seed's own PGD curve
        if metric == "acc":
            ax.yaxis.set_major_formatter(PercentFormatter(xmax=1))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("")
        ax.set_ylabel("")


def short_text(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------------------------- robustness
def robustness_curves(
    groups: Sequence[SeedGroup],
    *,
    hue_param: str | None = None,
    style_param: str | None = None,
    bands: bool = True,
    constant: float | None = None,
) -> Figure:
    """Accuracy vs eps (1/255), one panel per attack, one line per setting (its mean over seeds).

    Colour by ``hue_param`` and line style by ``style_param`` (swept params) when given, else one
    colour per setting. With ``bands``: when no setting has several seeds, each line's 95%
    confidence band (its run's robustness table); otherwise a band of ± one std over the seeds
    (training-seed spread) and error bars of one run's 95% Wilson interval (test-sampling error,
    averaged over the seeds), so both uncertainties show side by side. ``constant``: the
    constant-answer baseline, drawn across every panel."""
    attacks = list(dict.fromkeys(a for g in groups for a in g.attacks))
    cols = min(3, len(attacks))
    rows = math.ceil(len(attacks) / cols)
    many = len(groups) > 1
    seeded = any(g.n_seeds > 1 for g in groups)
    palette = _palette(groups, hue_param)
    styles = _linestyles(groups, style_param)
    grid = sorted({e for g in groups for e in g.eps_grid})
    with plot_style():
        fig = new_figure(WIDTH, 2.5 * rows + (0.6 if many else 0))
        axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False).ravel())
        for ax, attack in zip(axes, attacks, strict=False):
            for group in groups:
                table = group.robustness
                part = table[table["attack"] == attack].sort_values("eps")
                if part.empty:
                    continue
                color = palette[group.run_id]
                ax.plot(
                    part["eps"],
                    part["robust_acc"],
                    marker="o",
                    ms=3,
                    lw=1.3,
                    color=color,
                    ls=styles[group.run_id],
                    label=_legend_label(group, hue_param, style_param),
                )
                if bands:
                    _uncertainty(ax, part, color, seeded=seeded)
            constant_line(ax, constant)
            ax.set_title(attack_label(attack), fontsize=9)
            ax.set_xlabel("eps (1/255)")
            ax.set_ylabel("accuracy")
            ax.set_xticks(grid, eps_tick_labels(grid), fontsize=7)
            ax.yaxis.set_major_formatter(PercentFormatter(xmax=1))
            ax.set_ylim(-0.02, 1.02)
        for ax in axes[len(attacks) :]:
            ax.set_visible(False)
        if many:
            _figure_legend(fig, axes[0], ", ".join(p for p in (hue_param, style_param) if p))
    return fig


CONSTANT_STYLE = {"color": "#2166ac", "lw": 1.0, "ls": "-."}


def constant_caption(constant: float | None) -> str:
    """The caption's words for :func:`constant_line` (with a leading space); "" without one."""
    if constant is None:
        return ""
    return (
        f" Dash-dot blue: {100 * constant:.1f}%, what a constant answer (always the most "
        "frequent class) keeps at every eps."
    )


def constant_line(ax, constant: float | None) -> None:
    """The constant-answer baseline across the panel: a defence is worth something at an eps
    only above it."""
    if constant is not None:
        ax.axhline(constant, **CONSTANT_STYLE, label="constant answer")


def _uncertainty(ax, part: pd.DataFrame, color, *, seeded: bool) -> None:
    """The bands of one robustness line (see :func:`robustness_curves`)."""
    if not seeded:
        if part["ci_low"].notna().any():
            ax.fill_between(
                part["eps"], part["ci_low"], part["ci_high"], color=color, alpha=0.18, lw=0
            )
        return
    if part["robust_std"].notna().any():
        ax.fill_between(
            part["eps"],
            part["robust_acc"] - part["robust_std"],
            part["robust_acc"] + part["robust_std"],
            color=color,
            alpha=0.2,
            lw=0,
        )
    if part["ci_low"].notna().any():
        ax.errorbar(
            part["eps"],
            part["robust_acc"],
            # clipped: at 0% or 100% the averaged Wilson bound equals the mean up to rounding
            yerr=[
                (part["robust_acc"] - part["ci_low"]).clip(lower=0),
                (part["ci_high"] - part["robust_acc"]).clip(lower=0),
            ],
            fmt="none",
            ecolor=color,
            elinewidth=0.8,
            capsize=2.5,
        )


def _figure_legend(fig: Figure, ax, title: str) -> None:
    """One legend under the panels (at most 16 entries; else the caption names the colours)."""
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=False))
    if not unique or len(unique) > 16:
        return
    longest = max(len(label) for label in unique)
    fig.legend(
        unique.values(),
        unique.keys(),
        loc="outside lower center",
        ncol=max(1, min(4, 90 // (longest + 6), len(unique))),
        fontsize=7,
        title=title or "run",
        title_fontsize=7,
    )


def eps_tick_labels(grid: Sequence[float]) -> list[str]:
    """Tick labels for the eps grid, blank where a label would collide with the previous one."""
    span = (max(grid) - min(grid)) or 1.0
    labels, last = [], None
    for eps in grid:
        if last is None or (eps - last) / span >= 0.07:
            labels.append(naming.format_eps(eps))
            last = eps
        else:
            labels.append("")
    return labels


def _linestyles(runs: Sequence[SeedGroup], style_param: str | None) -> dict[str, str]:
    if style_param is None:
        return {r.run_id: "-" for r in runs}
    values = sorted({r.params.get(style_param, "?") for r in runs}, key=setting_sort_key)
    cycle = ["-", "--", ":", "-."]
    by_value = {v: cycle[i % len(cycle)] for i, v in enumerate(values)}
    return {r.run_id: by_value[r.params.get(style_param, "?")] for r in runs}


def _legend_label(run: SeedGroup, hue_param: str | None, style_param: str | None) -> str:
    parts = [
        f"{p.rsplit('.', 1)[-1]}={fmt_num(run.params.get(p, '?'))}"
        for p in (hue_param, style_param)
        if p
    ]
    return ", ".join(parts) if parts else short_text(run.name, 40)


def _palette(runs: Sequence[SeedGroup], hue_param: str | None) -> dict[str, tuple]:
    if hue_param is None:
        colors = sns.color_palette("tab10" if len(runs) <= 10 else "husl", len(runs))
        return {r.run_id: c for r, c in zip(runs, colors, strict=True)}
    values = sorted({r.params.get(hue_param, "?") for r in runs}, key=setting_sort_key)
    colors = dict(zip(values, sns.color_palette("viridis", len(values)), strict=True))
    return {r.run_id: colors[r.params.get(hue_param, "?")] for r in runs}
