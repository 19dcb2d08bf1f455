"""The figures of a sweep: heatmaps over two swept params, bars over one, clean vs robust.

Seaborn on matplotlib ``Figure`` objects (no pyplot state), sized for the A4 text column as in
:mod:`advlab.report.figures`. ``table`` arguments hold one row per setting
(:func:`~advlab.report.seeds.group_table`); accuracies are fractions, drawn as percentages.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from advlab import naming
from advlab.report.figures import WIDTH, new_figure, plot_style
from advlab.report.format import fmt_num, fmt_pct, setting_sort_key
from advlab.report.seeds import within_spread


def sweep_heatmaps(
    table: pd.DataFrame, *, x: str, y: str, panels: Sequence[tuple[str, str]]
) -> Figure:
    """Heatmaps over two swept params (``x`` columns, ``y`` rows), one per (column, title) in
    ``panels``; ``table`` has one row per setting (:func:`~advlab.report.seeds.group_table`).

    A cell is the mean over the settings with those two values (count shown if > 1). When a
    setting has several seeds, a cell also shows ± its seed spread (root mean square of its
    settings' stds over seeds) and ≈ marks a cell within the seed spread of the panel's highest
    (:func:`~advlab.report.summary.within_spread`)."""
    seeded = bool((table["n_seeds"] > 1).any())
    with plot_style():
        fig = new_figure(WIDTH, 2.9 if seeded else 2.7)
        axes = np.atleast_1d(fig.subplots(1, len(panels)))
        for ax, (column, title) in zip(axes, panels, strict=True):
            grid, annot = _heatmap_cells(table, x=x, y=y, column=column, seeded=seeded)
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
                annot_kws={"fontsize": 6.5 if seeded else 7},
                linewidths=0.5,
                linecolor="white",
            )
            ax.set_xticklabels([fmt_num(v) for v in grid.columns], fontsize=7)
            ax.set_yticklabels([fmt_num(v) for v in grid.index], fontsize=7, rotation=0)
            ax.set_xlabel(x, fontsize=7.5)
            ax.set_ylabel(y, fontsize=7.5)
            ax.set_title(title, fontsize=8)
    return fig


def _heatmap_cells(
    table: pd.DataFrame, *, x: str, y: str, column: str, seeded: bool
) -> tuple[pd.DataFrame, np.ndarray]:
    """The (y, x) grid of means of ``column`` and the text of each cell."""
    order = {"index": y, "columns": x}
    grid = table.pivot_table(**order, values=column, aggfunc="mean")
    grid = grid.reindex(
        index=sorted(grid.index, key=setting_sort_key),
        columns=sorted(grid.columns, key=setting_sort_key),
    )
    count = table.pivot_table(**order, values=column, aggfunc="count")
    count = count.reindex(index=grid.index, columns=grid.columns)
    spread = pd.DataFrame(np.nan, index=grid.index, columns=grid.columns)
    if seeded and table[f"{column}_std"].notna().any():
        squares = table.assign(_sq=table[f"{column}_std"] ** 2)
        spread = np.sqrt(squares.pivot_table(**order, values="_sq", aggfunc="mean"))
        spread = spread.reindex(index=grid.index, columns=grid.columns)
    values = grid.to_numpy(dtype=float)
    top = np.unravel_index(np.nanargmax(values), grid.shape) if np.isfinite(values).any() else None
    annot = np.empty(grid.shape, dtype=object)
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            value, n, std = grid.iat[i, j], count.iat[i, j], spread.iat[i, j]
            if pd.isna(value):
                annot[i, j] = ""
                continue
            text = fmt_pct(value) if pd.isna(std) else f"{fmt_pct(value)}\n± {fmt_pct(std)}"
            if top is not None and (i, j) != top:
                if within_spread(value, std, grid.iat[top], spread.iat[top]):
                    text += " ≈"
            annot[i, j] = text + (f"\n(n={int(n)})" if n and n > 1 else "")
    return grid, annot


def sweep_bars(table: pd.DataFrame, *, x: str, panels: Sequence[tuple[str, str]]) -> Figure:
    """One swept parameter: the mean of each ``panels`` column per value of ``x``; ``table`` has
    one row per run, and when a value has several runs (its seeds) the error bars are ± one std
    over them (seaborn ``errorbar="sd"``)."""
    long = table.melt(id_vars=[x], value_vars=[c for c, _ in panels], var_name="metric")
    names = dict(panels)
    long["metric"] = long["metric"].map(names)
    order = sorted(long[x].dropna().unique(), key=setting_sort_key)
    seeded = bool(table.groupby(x)[panels[0][0]].count().gt(1).any())
    with plot_style():
        fig = new_figure(WIDTH, 2.6)
        ax = fig.subplots()
        sns.barplot(
            data=long,
            x=x,
            y="value",
            hue="metric",
            order=order,
            ax=ax,
            errorbar="sd" if seeded else None,
            capsize=0.15 if seeded else 0,
            err_kws={"linewidth": 0.9},
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
    """Clean vs robust accuracy, one point per setting (``table``: one row per setting, see
    :func:`~advlab.report.seeds.group_table`): the trade-off across a sweep. A setting with
    several seeds is its mean, with ± one std over the seeds as grey error bars."""
    data = table.dropna(subset=[naming.CLEAN_ACC, "robust"]).copy()
    for column in (hue, style):
        if column is not None:
            data[column] = data[column].map(fmt_num)
    with plot_style():
        fig = new_figure(WIDTH * 0.75, 3.0)
        ax = fig.subplots()
        if data["robust_std"].notna().any():
            ax.errorbar(
                data[naming.CLEAN_ACC],
                data["robust"],
                xerr=data["clean_acc_std"].fillna(0),
                yerr=data["robust_std"].fillna(0),
                fmt="none",
                ecolor="0.6",
                elinewidth=0.8,
                zorder=1,
            )
        hue_order = sorted(data[hue].unique(), key=setting_sort_key) if hue else None
        style_order = sorted(data[style].unique(), key=setting_sort_key) if style else None
        sns.scatterplot(
            data=data,
            x=naming.CLEAN_ACC,
            y="robust",
            hue=hue,
            style=style,
            ax=ax,
            hue_order=hue_order,
            style_order=style_order,
            s=45,
            palette="viridis" if hue else None,
            zorder=2,
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
