"""The constant-answer baseline: what a model that ignores its input keeps under any attack.

A classifier that answers the most frequent class for every image is correct on that class's
share of the evaluated points, at eps 0 and at every eps: no perturbation changes a constant.
So a defence is worth something at a budget only if its worst case there is *above* that share.
On balanced data the share is 1/K (10% on MNIST or CIFAR-10); on the course's faces it is the
share of the larger gender among the evaluated faces (about 55%), which an adversarially trained
face model can fall below while still looking "robust".

The check ``constant_baseline`` judges an adversarially trained model at every eps > 0 of the
grid (its training budget and the larger ones it is attacked at: a defence that falls below a
constant answer at twice its budget is worth less there than ignoring the input). A model trained
without attacks claims no robustness, so for it the check only says from which eps on its worst
case is below the constant answer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from advlab.naming import WORST_CASE, format_eps
from advlab.verdict import PASS, WARN, Check

NAME = "constant_baseline"
OTHER_THREAT_MODELS = ("pgd_l2",)  # an L2 ball is not the L-inf ball the other rows share


def constant_answer(labels: np.ndarray, class_names: Sequence[str]) -> tuple[float, str]:
    """The share of the most frequent class among ``labels`` (int, the evaluated points) and
    that class's name: the accuracy of always answering it, at every eps. (0, "") for none."""
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size == 0:
        return 0.0, ""
    counts = np.bincount(labels)
    top = int(counts.argmax())
    name = str(class_names[top]) if top < len(class_names) else str(top)
    return float(counts[top]) / labels.size, name


def worst_curve(table: pd.DataFrame) -> pd.Series:
    """eps -> the worst-case robust accuracy: the per-example worst case when the table has it,
    else the lowest L-inf attack row at each eps."""
    if table.empty:
        return pd.Series(dtype=float)
    rows = table[table["attack"] == WORST_CASE]
    if rows.empty:
        rows = table[~table["attack"].isin(OTHER_THREAT_MODELS)]
    return rows.groupby("eps")["robust_acc"].min().sort_index()


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def check_constant_baseline(
    table: pd.DataFrame, share: float, answer: str, trained_eps: float | None
) -> Check:
    """``warn`` when, at an eps > 0 of the grid, an adversarially trained model (trained at
    ``trained_eps``, 1/255; None: trained without attacks, not judged) keeps a worst case not above
    ``share``, the accuracy of always answering ``answer``; the evidence quotes both figures."""
    curve = worst_curve(table)
    curve = curve[curve.index > 0]
    constant = f"answering {answer!r} to every image keeps {_pct(share)} at every eps"
    below = curve[curve <= share]
    if curve.empty:
        return Check(NAME, PASS, f"not applicable: no eps > 0 evaluated; {constant}")
    falls = (
        f"the worst case is above it up to {format_eps(float(curve.index[-1]))}/255"
        if below.empty
        else f"the worst case falls to {_pct(float(below.iloc[0]))}, not above it, from eps "
        f"{format_eps(float(below.index[0]))}/255 on"
    )
    if trained_eps is None:
        return Check(NAME, PASS, f"{constant}; {falls} (not judged: trained without attacks)")
    if below.empty:
        eps = float(curve.index[-1])
        return Check(
            NAME,
            PASS,
            f"up to eps {format_eps(eps)}/255 (trained for {format_eps(trained_eps)}) the worst "
            f"case ({_pct(float(curve.iloc[-1]))} there) is above the constant answer's "
            f"{_pct(share)}",
        )
    eps, failing = float(below.index[0]), below
    return Check(
        NAME,
        WARN,
        f"at eps {format_eps(eps)}/255 (trained for {format_eps(trained_eps)}) the worst case "
        f"{_pct(float(failing.iloc[0]))} is not above {_pct(share)}, the accuracy of answering "
        f"{answer!r} to every image at every eps: that constant answer is at least as robust as "
        "this model",
    )
