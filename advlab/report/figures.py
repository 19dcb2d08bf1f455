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
from advlab.report.data import RunData
from advlab.report.summary import attack_label, fmt_eps, fmt_num, fmt_pct, setting_sort_key

WIDTH = 7.0  # inches: the A4 text column at 100% zoom
_TRAIN, _VAL = "#1f77b4", "#d62728"


@contextmanager
def _style() -> Iterator[None]:
    # Scoped so that building a report never changes the caller's matplotlib/seaborn defaults.
    with sns.axes_style("whitegrid"), sns.plotting_context("paper", font_scale=0.95):
        yield


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


# ------------------------------------------------------------------------------ learning curves
def _curve_panels(run: RunData, ax_loss, ax_acc, *, compact: bool) -> None:
    hist = run.history
    best = run.metric(naming.BEST_EPOCH)
    stopped = run.metric(naming.STOPPED_EPOCH)
    for ax, metric, title in ((ax_loss, "loss", "loss"), (ax_acc, "acc", "accuracy")):
        for split, color, style in (("train", _TRAIN, "-"), ("val", _VAL, "--")):
            column = f"{split}_{metric}"
            if column in hist and hist[column].notna().any():
                sns.lineplot(
                    x=hist["epoch"],
                    y=hist[column],
                    ax=ax,
                    color=color,
                    linestyle=style,
                    marker="o",
                    markersize=3 if compact else 4,
                    label="train" if split == "train" else "validation",
                    legend=False,
                )
        if metric == "acc" and "val_robust_acc" in hist and hist["val_robust_acc"].notna().any():
            sns.lineplot(
                x=hist["epoch"],
                y=hist["val_robust_acc"],
                ax=ax,
                color="#2ca02c",
                marker="s",
                markersize=3,
                label="validation (PGD)",
                legend=False,
            )
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


def learning_curves(run: RunData) -> Figure:
    """Train vs validation loss and accuracy per epoch; dotted line = best (restored) epoch, grey
    band = epochs run after it until early stopping."""
    with _style():
        fig = _figure(WIDTH, 2.6)
        ax_loss, ax_acc = fig.subplots(1, 2)
        _curve_panels(run, ax_loss, ax_acc, compact=False)
        handles, labels = ax_acc.get_legend_handles_labels()
        if handles:
            ax_acc.legend(handles, labels, fontsize=7, loc="lower right", frameon=True)
    return fig


def learning_curves_grid(runs: Sequence[RunData], per_row: int = 2) -> Figure:
    """Small multiples for many runs: each run a titled (loss, accuracy) pair, ``per_row`` a row."""
    rows = math.ceil(len(runs) / per_row)
    with _style():
        fig = _figure(WIDTH, 1.75 * rows + 0.35)
        subs = np.atleast_2d(fig.subfigures(rows, per_row, squeeze=False))
        legend_ax = None
        for i, sub in enumerate(subs.ravel()):
            if i >= len(runs):
                continue
            run = runs[i]
            sub.suptitle(_short(run.name, 48), fontsize=7)
            ax_loss, ax_acc = sub.subplots(1, 2)
            if run.history.empty:
                for ax in (ax_loss, ax_acc):
                    ax.text(
                        0.5,
                        0.5,
                        f"no epochs logged\n({run.status})",
                        ha="center",
                        va="center",
                        fontsize=6.5,
                        transform=ax.transAxes,
                    )
                    ax.set_xticks([])
                    ax.set_yticks([])
                continue
            _curve_panels(run, ax_loss, ax_acc, compact=True)
            for ax, title in ((ax_loss, "loss"), (ax_acc, "accuracy")):
                ax.tick_params(labelsize=6)
                ax.set_title(title, fontsize=6.5)
            legend_ax = legend_ax or ax_acc
        if legend_ax is not None:
            handles, labels = legend_ax.get_legend_handles_labels()
            fig.legend(handles, labels, loc="outside lower center", ncol=3, fontsize=7)
    return fig


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------------------------- robustness
def robustness_curves(
    runs: Sequence[RunData],
    *,
    hue_param: str | None = None,
    style_param: str | None = None,
    bands: bool = True,
) -> Figure:
    """Accuracy vs eps (1/255), one panel per attack, one line per run. Colour by ``hue_param``
    and line style by ``style_param`` (swept params) when given, else one colour per run; 95%
    confidence bands from the run's robustness table when ``bands``."""
    attacks = list(dict.fromkeys(a for r in runs for a in r.attacks))
    cols = min(3, len(attacks))
    rows = math.ceil(len(attacks) / cols)
    many = len(runs) > 1
    palette = _palette(runs, hue_param)
    styles = _linestyles(runs, style_param)
    grid = sorted({e for r in runs for e in r.eps_grid})
    with _style():
        fig = _figure(WIDTH, 2.5 * rows + (0.6 if many else 0))
        axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False).ravel())
        for ax, attack in zip(axes, attacks, strict=False):
            for run in runs:
                part = run.robustness[run.robustness["attack"] == attack].sort_values("eps")
                if part.empty:
                    continue
                color = palette[run.run_id]
                ax.plot(
                    part["eps"],
                    part["robust_acc"],
                    marker="o",
                    ms=3,
                    lw=1.3,
                    color=color,
                    ls=styles[run.run_id],
                    label=_legend_label(run, hue_param, style_param),
                )
                if bands and part["ci_low"].notna().any():
                    ax.fill_between(
                        part["eps"], part["ci_low"], part["ci_high"], color=color, alpha=0.18, lw=0
                    )
            ax.set_title(attack_label(attack), fontsize=9)
            ax.set_xlabel("eps (1/255)")
            ax.set_ylabel("accuracy")
            ax.set_xticks(grid, _eps_labels(grid), fontsize=7)
            ax.yaxis.set_major_formatter(PercentFormatter(xmax=1))
            ax.set_ylim(-0.02, 1.02)
        for ax in axes[len(attacks) :]:
            ax.set_visible(False)
        if many:
            handles, labels = axes[0].get_legend_handles_labels()
            unique = dict(zip(labels, handles, strict=False))
            if len(unique) <= 16:
                title = ", ".join(p for p in (hue_param, style_param) if p) or "run"
                longest = max(len(label) for label in unique)
                fig.legend(
                    unique.values(),
                    unique.keys(),
                    loc="outside lower center",
                    ncol=max(1, min(4, 90 // (longest + 6), len(unique))),
                    fontsize=7,
                    title=title,
                    title_fontsize=7,
                )
    return fig


def _eps_labels(grid: Sequence[float]) -> list[str]:
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


def _linestyles(runs: Sequence[RunData], style_param: str | None) -> dict[str, str]:
    if style_param is None:
        return {r.run_id: "-" for r in runs}
    values = sorted({r.params.get(style_param, "?") for r in runs}, key=setting_sort_key)
    cycle = ["-", "--", ":", "-."]
    by_value = {v: cycle[i % len(cycle)] for i, v in enumerate(values)}
    return {r.run_id: by_value[r.params.get(style_param, "?")] for r in runs}


def _legend_label(run: RunData, hue_param: str | None, style_param: str | None) -> str:
    parts = [
        f"{p.rsplit('.', 1)[-1]}={fmt_num(run.params.get(p, '?'))}"
        for p in (hue_param, style_param)
        if p
    ]
    return ", ".join(parts) if parts else _short(run.name, 40)


def _palette(runs: Sequence[RunData], hue_param: str | None) -> dict[str, tuple]:
    if hue_param is None:
        colors = sns.color_palette("tab10" if len(runs) <= 10 else "husl", len(runs))
        return {r.run_id: c for r, c in zip(runs, colors, strict=True)}
    values = sorted({r.params.get(hue_param, "?") for r in runs}, key=setting_sort_key)
    colors = dict(zip(values, sns.color_palette("viridis", len(values)), strict=True))
    return {r.run_id: colors[r.params.get(hue_param, "?")] for r in runs}


# --------------------------------------------------------------------------------------- sweeps
def sweep_heatmaps(
    table: pd.DataFrame, *, x: str, y: str, panels: Sequence[tuple[str, str]]
) -> Figure:
    """Heatmaps over two swept params (``x`` columns, ``y`` rows), one per (column, title) in
    ``panels``; a cell is the mean over the runs with those two values (count shown if > 1)."""
    with _style():
        fig = _figure(WIDTH, 2.7)
        axes = np.atleast_1d(fig.subplots(1, len(panels)))
        for ax, (column, title) in zip(axes, panels, strict=True):
            grid = table.pivot_table(index=y, columns=x, values=column, aggfunc="mean")
            count = table.pivot_table(index=y, columns=x, values=column, aggfunc="count")
            grid = grid.reindex(
                index=sorted(grid.index, key=setting_sort_key),
                columns=sorted(grid.columns, key=setting_sort_key),
            )
            count = count.reindex(index=grid.index, columns=grid.columns)
            annot = np.empty(grid.shape, dtype=object)
            for i in range(grid.shape[0]):
                for j in range(grid.shape[1]):
                    value, n = grid.iat[i, j], count.iat[i, j]
                    annot[i, j] = (
                        ""
                        if pd.isna(value)
                        else fmt_pct(value) + (f"\n(n={int(n)})" if n and n > 1 else "")
                    )
            values = grid.to_numpy(dtype=float)
            # Colour spans this panel's own range: the numbers are printed, the colour shows order.
            low = float(np.nanmin(values)) if np.isfinite(values).any() else 0.0
            high = float(np.nanmax(values)) if np.isfinite(values).any() else 1.0
            if high - low < 1e-9:
                low, high = low - 0.01, high + 0.01
            sns.heatmap(
                grid.astype(float),
                ax=ax,
                annot=annot,
                fmt="",
                cmap="viridis",
                vmin=low,
                vmax=high,
                cbar=False,
                annot_kws={"fontsize": 7},
                linewidths=0.5,
                linecolor="white",
            )
            ax.set_xticklabels([fmt_num(v) for v in grid.columns], fontsize=7)
            ax.set_yticklabels([fmt_num(v) for v in grid.index], fontsize=7, rotation=0)
            ax.set_xlabel(x, fontsize=7.5)
            ax.set_ylabel(y, fontsize=7.5)
            ax.set_title(title, fontsize=8)
    return fig


def sweep_bars(table: pd.DataFrame, *, x: str, panels: Sequence[tuple[str, str]]) -> Figure:
    """One swept parameter: the mean of each ``panels`` column per value of ``x``."""
    long = table.melt(id_vars=[x], value_vars=[c for c, _ in panels], var_name="metric")
    names = dict(panels)
    long["metric"] = long["metric"].map(names)
    order = sorted(long[x].dropna().unique(), key=setting_sort_key)
    with _style():
        fig = _figure(WIDTH, 2.6)
        ax = fig.subplots()
        sns.barplot(
            data=long,
            x=x,
            y="value",
            hue="metric",
            order=order,
            ax=ax,
            errorbar=None,
            palette="viridis",
        )
        ax.set_xticks(range(len(order)), [fmt_num(v) for v in order])
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1))
        ax.set_ylabel("accuracy")
        ax.legend(fontsize=7, title=None)
    return fig


def clean_vs_robust(
    table: pd.DataFrame, *, hue: str | None, style: str | None, robust_label: str
) -> Figure:
    """Clean vs robust accuracy, one point per run: the trade-off across a sweep."""
    data = table.dropna(subset=["clean_acc", "robust"]).copy()
    for column in (hue, style):
        if column is not None:
            data[column] = data[column].map(fmt_num)
    with _style():
        fig = _figure(WIDTH * 0.75, 3.0)
        ax = fig.subplots()
        hue_order = sorted(data[hue].unique(), key=setting_sort_key) if hue else None
        style_order = sorted(data[style].unique(), key=setting_sort_key) if style else None
        sns.scatterplot(
            data=data,
            x="clean_acc",
            y="robust",
            hue=hue,
            style=style,
            ax=ax,
            hue_order=hue_order,
            style_order=style_order,
            s=45,
            palette="viridis" if hue else None,
        )
        ax.xaxis.set_major_formatter(PercentFormatter(xmax=1))
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1))
        ax.set_xlabel("clean accuracy")
        ax.set_ylabel(robust_label)
        if ax.get_legend() is not None:
            sns.move_legend(
                ax,
                "center left",
                bbox_to_anchor=(1.02, 0.5),
                fontsize=7,
                title_fontsize=7,
                frameon=False,
            )
    return fig


# ----------------------------------------------------------------------------- per class, etc.
def per_class_heatmap(per_class: pd.DataFrame, attacks: Sequence[str]) -> Figure:
    """Robust accuracy per class (rows) and eps (columns), one panel per attack."""
    attacks = [a for a in attacks if a in set(per_class["attack"])]
    n_classes = per_class["class"].nunique()
    with _style():
        fig = _figure(WIDTH, min(6.0, 0.9 + 0.22 * n_classes))
        axes = np.atleast_1d(fig.subplots(1, len(attacks)))
        for ax, attack in zip(axes, attacks, strict=True):
            part = per_class[per_class["attack"] == attack]
            grid = part.pivot_table(
                index="class", columns="eps", values="robust_acc", aggfunc="mean", sort=False
            )
            grid = grid.reindex(columns=sorted(grid.columns))
            annot = grid.map(fmt_pct).to_numpy()
            sns.heatmap(
                grid,
                ax=ax,
                annot=annot,
                fmt="",
                cmap="viridis",
                vmin=0,
                vmax=1,
                cbar=False,
                annot_kws={"fontsize": 6},
                linewidths=0.4,
                linecolor="white",
            )
            ax.set_xticklabels([naming.format_eps(float(e)) for e in grid.columns], fontsize=7)
            ax.set_yticklabels(list(grid.index), fontsize=7, rotation=0)
            ax.set_xlabel("eps (1/255)", fontsize=7.5)
            ax.set_ylabel("class" if ax is axes[0] else "", fontsize=7.5)
            ax.set_title(attack_label(attack), fontsize=8)
    return fig


def confusion_pair(
    clean: Sequence[Sequence[int]],
    adversarial: Sequence[Sequence[int]],
    *,
    class_names: Sequence[str],
    adv_title: str,
) -> Figure:
    """Clean and adversarial confusion matrices (rows: true class, columns: predicted), counts."""
    n = len(class_names)
    size = min(3.4, 1.4 + 0.22 * n)
    with _style():
        fig = _figure(WIDTH, size + 0.3)
        axes = fig.subplots(1, 2)
        for ax, matrix, title in ((axes[0], clean, "clean"), (axes[1], adversarial, adv_title)):
            arr = np.asarray(matrix, dtype=float)
            sns.heatmap(
                arr,
                ax=ax,
                annot=n <= 12,
                fmt=".0f",
                cmap="Blues",
                cbar=False,
                square=True,
                annot_kws={"fontsize": 6 if n > 5 else 8},
                xticklabels=list(class_names),
                yticklabels=list(class_names),
                linewidths=0.3,
                linecolor="white",
            )
            ax.tick_params(labelsize=6.5)
            ax.tick_params(axis="y", labelrotation=0)
            ax.set_xlabel("predicted", fontsize=7.5)
            ax.set_ylabel("true", fontsize=7.5)
            ax.set_title(title, fontsize=8)
    return fig


def eps_title(attack: str, eps: float) -> str:
    """Title of an adversarial panel: 'PGD at 8/255'."""
    return f"{attack_label(attack)} at {fmt_eps(eps)}"
