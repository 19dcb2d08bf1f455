"""The results tables of one evaluation: built row by row, written once.

``robustness.csv`` / ``robustness.json`` (one row per attack x eps, :data:`TABLE_COLUMNS`),
``per_class.csv`` (:data:`PER_CLASS_COLUMNS`), ``confusion.json`` (``[true][predicted]`` counts
per ``clean`` and ``<attack>/eps_<e>``) and ``checks.json`` (the evaluation's checks), under the
names of :mod:`advlab.naming`. Every row and count is over the evaluated points (``robust_n``);
the ``clean`` per-class rows and confusion matrix too, so they compare with the attacks' rows.
The definitions are in :mod:`advlab.attacks.evaluate`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from advlab import naming
from advlab.attacks import metrics
from advlab.attacks.outcome import Clean, Outcome
from advlab.fileio import atomic_write_text
from advlab.naming import PIXEL_LEVELS
from advlab.verdict import Check

# Perturbation norms over the attacked points, in 1/255 units like ``eps`` (a pixel step of 1/255
# is 1): ``linf_max_255 <= eps`` inside the ball; L2 on the same scale (255 x the pixel-unit L2).
NORM_COLUMNS = ["linf_mean_255", "linf_max_255", "l2_mean_255", "l2_max_255"]
TABLE_COLUMNS = [
    "attack",
    "eps",
    "robust_acc",
    "ci_low",
    "ci_high",
    "asr",
    "n",
    "n_clean_correct",
    *NORM_COLUMNS,
    "conf_true_clean",
    "conf_true_adv",
    "seconds",
]
PER_CLASS_COLUMNS = ["attack", "eps", "class", "robust_acc", "n"]


def table_row(attack: str, eps: float, out: Outcome, clean: Clean) -> dict[str, Any]:
    """One row of the robustness table (:data:`TABLE_COLUMNS`); norms (1/255 units,
    :data:`NORM_COLUMNS`) and confidences are averaged over the attacked points (those correct
    before the attack); ``n`` is the number of evaluated points (``robust_n``)."""
    n = len(out.correct)
    k = int(out.correct.sum())
    low, high = metrics.wilson_interval(k, n)
    attacked = clean.correct
    linf, l2 = out.linf[attacked] * PIXEL_LEVELS, out.l2[attacked] * PIXEL_LEVELS
    return {
        "attack": attack,
        "eps": float(eps),
        "robust_acc": k / n if n else math.nan,
        "ci_low": low,
        "ci_high": high,
        "asr": metrics.success_rate(clean.correct, out.correct),
        "n": n,
        "n_clean_correct": int(attacked.sum()),
        "linf_mean_255": metrics.mean_or_nan(linf),
        "linf_max_255": metrics.max_or_nan(linf),
        "l2_mean_255": metrics.mean_or_nan(l2),
        "l2_max_255": metrics.max_or_nan(l2),
        "conf_true_clean": metrics.mean_or_nan(clean.conf_true[attacked]),
        "conf_true_adv": metrics.mean_or_nan(out.conf_true[attacked]),
        "seconds": out.seconds,
    }


def per_class_rows(
    attack: str, eps: float, correct: np.ndarray, labels: np.ndarray, class_names: list[str]
) -> list[dict[str, Any]]:
    """Robust accuracy per class (:data:`PER_CLASS_COLUMNS`) of one attack at one eps."""
    rows = []
    for k, name in enumerate(class_names):
        mask = labels == k
        count = int(mask.sum())
        rows.append(
            {
                "attack": attack,
                "eps": float(eps),
                "class": name,
                "robust_acc": float(correct[mask].mean()) if count else math.nan,
                "n": count,
            }
        )
    return rows


class Tables:
    """Accumulates the table rows, per-class rows and confusion matrices of one evaluation,
    starting with the clean pass."""

    def __init__(self, clean: Clean, labels: np.ndarray, class_names: list[str]) -> None:
        self.clean, self.labels, self.class_names = clean, labels, class_names
        self.num_classes = len(class_names)
        self.rows: list[dict[str, Any]] = []
        self.per_class = per_class_rows("clean", 0.0, clean.correct, labels, class_names)
        self.confusion = {"clean": self._confusion(clean.pred)}

    def _confusion(self, pred: np.ndarray) -> list[list[int]]:
        return metrics.confusion_matrix(self.labels, pred, self.num_classes)

    def add(self, attack: str, eps: float, out: Outcome) -> dict[str, Any]:
        """Record ``out`` as attack ``attack`` at ``eps``; return its table row."""
        row = table_row(attack, eps, out, self.clean)
        self.rows.append(row)
        self.per_class += per_class_rows(attack, eps, out.correct, self.labels, self.class_names)
        self.confusion[f"{attack}/eps_{naming.format_eps(eps)}"] = self._confusion(out.pred)
        return row

    def frames(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The robustness table and the per-class table as data frames."""
        return (
            pd.DataFrame(self.rows, columns=TABLE_COLUMNS),
            pd.DataFrame(self.per_class, columns=PER_CLASS_COLUMNS),
        )


def results_file(out_dir: Path, artifact: str) -> Path:
    """Where ``artifact`` (a run-directory path under ``results/``, from :mod:`advlab.naming`)
    lies in ``out_dir``, the evaluation's results directory."""
    return Path(out_dir) / PurePosixPath(artifact).relative_to(naming.RESULTS_DIR)


def write_tables(
    out_dir: Path,
    table: pd.DataFrame,
    per_class: pd.DataFrame,
    confusion: dict[str, list[list[int]]],
    checks: list[Check],
) -> list[Path]:
    """Write the five results files under ``out_dir`` (atomically); return their paths."""
    files = {
        naming.ROBUSTNESS_CSV: table.to_csv(index=False),
        naming.ROBUSTNESS_JSON: table.to_json(orient="records", indent=2),
        naming.PER_CLASS_CSV: per_class.to_csv(index=False),
        naming.CONFUSION_JSON: json.dumps(confusion, indent=2),
        naming.CHECKS_JSON: json.dumps([c.to_dict() for c in checks], indent=2),
    }
    return [atomic_write_text(results_file(out_dir, name), text) for name, text in files.items()]
