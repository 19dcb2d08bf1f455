"""Print the README's results table (Markdown) from what MLflow holds: nothing is recomputed.

    .venv/bin/python scripts/results_table.py [EXPERIMENT ...]

One row per finished run of each experiment (sweep parents left out): the settings that differ
between the experiment's runs, data sizes, clean accuracy, FGSM/PGD robust accuracy at 8/255,
best/stopped epoch and the run's wall time.
"""

from __future__ import annotations

import math
import sys

from advlab import naming, results
from advlab.errors import ConfigError

DEFAULT_EXPERIMENTS = [
    "quickstart",
    "gender_perceptron",
    "gender_cnn",
    "gender_cnn_dropout",
    "gender_fool",
    "gender_overfitting",
    "cifar10_fool",
    "cifar10_regularization_sweep",
    "cifar10_adversarial_training",
    "transfer",
]


# The knobs the sweeps turn; a column shows those that differ between an experiment's runs.
SETTINGS = {
    "data.limit_train": "n",
    "model.dropout": "dropout",
    "optimizer.weight_decay": "wd",
    "data.augment.hflip": "flip",
    "train.early_stopping.enabled": "early stop",
    "train.adversarial.method": "adv. training",
}


def _settings(row, varied: list[str]) -> str:
    def value(key: str) -> str:
        raw = row.get(f"params.{key}")
        return "all" if raw is None or raw != raw or raw == "None" else str(raw)  # None/NaN: unset

    return ", ".join(f"{SETTINGS[key]}={value(key)}" for key in varied) or "-"


def _pct(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.1%}"


def main(experiments: list[str]) -> None:
    print(
        "| experiment | settings | train / val / test | clean acc | FGSM 8/255 | PGD 8/255 "
        "| best / stopped epoch | wall time |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for experiment in experiments:
        try:
            frame = results.load(experiment=experiment)
        except ConfigError as error:  # an experiment not run yet: say so, keep going
            print(f"| {experiment} | not run ({error}) | | | | | | |", file=sys.stderr)
            continue
        frame = frame[frame["status"] == "FINISHED"]
        varied = [
            key
            for key in SETTINGS
            if f"params.{key}" in frame and frame[f"params.{key}"].astype(str).nunique() > 1
        ]
        for _, row in frame.sort_values("start_time").iterrows():

            def metric(key: str, row=row) -> float | None:
                value = row.get(f"metrics.{key}")
                return None if value is None or value != value else float(value)

            sizes = " / ".join(
                f"{float(row.get(f'params.facts.{k}', 'nan')):.0f}"
                for k in ("n_train", "n_val", "n_test")
            )
            best, stopped = metric(naming.BEST_EPOCH), metric(naming.STOPPED_EPOCH)
            epochs = f"{best:.0f} / {stopped:.0f}" if best is not None else "-"
            minutes = row["duration_s"] / 60 if row["duration_s"] == row["duration_s"] else None
            print(
                f"| {experiment} | {_settings(row, varied)} | {sizes} "
                f"| {_pct(metric(naming.CLEAN_ACC))} "
                f"| {_pct(metric(naming.robust_acc_key('fgsm', 8)))} "
                f"| {_pct(metric(naming.robust_acc_key('pgd', 8)))} "
                f"| {epochs} | {'-' if minutes is None else f'{minutes:.1f} min'} |"
            )


if __name__ == "__main__":
    main(sys.argv[1:] or DEFAULT_EXPERIMENTS)
