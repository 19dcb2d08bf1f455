"""The figures of one run's detail pages: robust accuracy per class, confusion matrices.

Seaborn heatmaps on matplotlib ``Figure`` objects, sized as in :mod:`advlab.report.figures`;
accuracies are fractions, written as percentages; eps in 1/255 units.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from advlab import naming
from advlab.report.figures import WIDTH, new_figure, plot_style
from advlab.report.format import attack_label, fmt_eps, fmt_pct


def per_class_heatmap(per_class: pd.DataFrame, attacks: Sequence[str]) -> Figure:
    """Robust accuracy per class (rows) and eps (columns), one panel per attack."""
    attacks = [a for a in attacks if a in set(per_class["attack"])]
    n_classes = per_class["class"].nunique()
    with plot_style():
        fig = new_figure(WIDTH, min(6.0, 0.9 + 0.22 * n_classes))
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
    with plot_style():
        fig = new_figure(WIDTH, size + 0.3)
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
