"""Seed groups: runs that differ only in their seed, pooled into one row per setting.

``seed_group_key`` says what two runs must share (the typed config, bookkeeping left out);
``seed_groups`` turns a frame of :func:`advlab.results.load` into one row per setting with mean,
std, min and max over the seeds of every summarised metric (clean accuracy, best/stopped epoch,
every robust accuracy and attack success rate).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from advlab import naming
from advlab.results import quiet_downloads, read_json

log = logging.getLogger(__name__)

# Config nodes that say where and how a run was recorded, not what it trained or measured.
_BOOKKEEPING_NODES = ("paths", "tracking", "report", "audit", "leaderboard", "search")
_BOOKKEEPING_KEYS = (("seed",), ("train", "progress"), ("train", "checkpoint"), ("train", "resume"))


def seed_group_key(config: Mapping[str, Any]) -> str | None:
    """What two runs must share to count as seeds of one setting: the typed config, bookkeeping out.

    ``config`` is a run's ``config/config.json`` (the resolved config with its types). Left out,
    because they change where or how a run is recorded, not what it trained or measured:

    - ``seed``: what a seed sweep varies;
    - ``paths.*``: the project root, runs and cache folders (where files land);
    - ``tracking.*``: store URI, MLflow experiment, run name, artifact root, whether the model file
      is logged (runs of different MLflow experiments are kept apart by
      :func:`assign_seed_groups`, which compares the experiment the run is in);
    - ``report.*``: whether and where PDFs are written; ``audit.*``, ``leaderboard.*`` and
      ``search.*``: the settings of ``python -m advlab.audit``, ``python -m advlab.leaderboard``
      (later readers of the run) and ``python -m advlab.search`` (which started it), not part of
      what it trained or measured;
    - ``train.progress`` (progress bars), ``train.checkpoint`` (whether epoch checkpoints are
      saved) and ``train.resume`` (the checkpoint a killed run continued from: the same training).

    Everything else counts, ``device``, ``threads`` and ``data.root`` included: a different device
    or thread count may round differently and a different data folder may hold other data, so such
    runs are not pooled. Returns canonical JSON of what is left; None for a run that logged no
    config (such a run is never pooled).
    """
    if not config:
        return None
    kept = json.loads(json.dumps(dict(config), default=str))  # a copy: the caller's stays whole
    for node in _BOOKKEEPING_NODES:
        kept.pop(node, None)
    for *parents, key in _BOOKKEEPING_KEYS:
        node = kept
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(key, None)
    return json.dumps(kept, sort_keys=True)


def assign_seed_groups(runs: Iterable[tuple[str | None, str, Mapping[str, Any]]]) -> list[int]:
    """The seed group (0, 1, ... in first-seen order) of each run given as (experiment, status,
    typed config).

    Runs are pooled when they are in the same MLflow experiment, FINISHED, and have the same
    :func:`seed_group_key`. A run that did not finish, or logged no config, is a group of its own:
    a failed seed must not pass for a measured one.
    """
    numbers: dict[tuple[Any, ...], int] = {}
    out = []
    for i, (experiment, status, config) in enumerate(runs):
        key = seed_group_key(config)
        ident = (experiment, key) if key is not None and status == "FINISHED" else (None, i)
        out.append(numbers.setdefault(ident, len(numbers)))
    return out


SPREAD_STATS = ("mean", "std", "min", "max", "n_seeds")


def spread(values: Iterable[float | None]) -> dict[str, float]:
    """:data:`SPREAD_STATS` of the values that are not None/NaN: mean, sample std (ddof 1; NaN for
    a single value), min, max and their count ``n_seeds``."""
    kept = pd.Series([v for v in values if v is not None], dtype=float).dropna()
    return {
        "mean": float(kept.mean()) if len(kept) else float("nan"),
        "std": float(kept.std()) if len(kept) > 1 else float("nan"),
        "min": float(kept.min()) if len(kept) else float("nan"),
        "max": float(kept.max()) if len(kept) else float("nan"),
        "n_seeds": float(len(kept)),
    }


SUMMARISED_METRICS = (
    naming.CLEAN_ACC,
    naming.BEST_EPOCH,
    naming.STOPPED_EPOCH,
    naming.TRAIN_SECONDS,
    naming.CONSTANT_ACC,
)


def is_summarised_metric(key: str) -> bool:
    """Metrics a seed group summarises: clean accuracy, best/stopped epoch, training time, the
    constant answer's accuracy, and the robust accuracy and attack success rate of every attack
    at every eps."""
    return key in SUMMARISED_METRICS or naming.parse_eps_metric(key) is not None


def seed_groups(frame: pd.DataFrame, *, tracking_uri: str | None = None) -> pd.DataFrame:
    """One row per seed group of the runs in ``frame`` (from :func:`advlab.results.load`), in
    first-seen order.

    Runs are grouped by :func:`assign_seed_groups` on each run's ``config/config.json``. Columns:
    ``experiment, status, start_time`` (the group's first start), ``run_ids, seeds`` (lists, in
    ``frame`` order), ``n_seeds`` (runs in the group), ``duration_s`` (mean per run), every
    ``params.<key>`` whose value the group's runs share (``params.seed`` is thus absent from
    groups of several seeds), and for each summarised metric (:func:`is_summarised_metric`)
    ``metrics.<key>.<stat>`` for each of :data:`SPREAD_STATS` (:func:`spread` over the runs).
    """
    if frame.empty:
        return pd.DataFrame(columns=["experiment", "status", "start_time", "run_ids", "n_seeds"])
    with quiet_downloads():
        configs = [_run_config(run_id, tracking_uri) for run_id in frame["run_id"]]
    numbers = assign_seed_groups(zip(frame["experiment"], frame["status"], configs, strict=True))
    params = [c for c in frame.columns if c.startswith("params.")]
    metrics = [c for c in frame.columns if c.startswith("metrics.") and is_summarised_metric(c[8:])]
    rows = []
    for number in dict.fromkeys(numbers):
        members = [i for i, n in enumerate(numbers) if n == number]
        part = frame.iloc[members]
        row: dict[str, Any] = {
            "experiment": part["experiment"].iloc[0],
            "status": part["status"].iloc[0],
            "start_time": part["start_time"].min(),
            "run_ids": list(part["run_id"]),
            "seeds": [_seed(configs[i], frame.iloc[i]) for i in members],
            "n_seeds": len(members),
            "duration_s": float(part["duration_s"].mean()),
        }
        for column in params:
            if part[column].astype(str).nunique() == 1:
                row[column] = part[column].iloc[0]
        for column in metrics:
            for stat, value in spread(part[column]).items():
                row[f"{column}.{stat}"] = value
        rows.append(row)
    return pd.DataFrame(rows)


def _seed(config: Mapping[str, Any], row: pd.Series) -> Any:
    """The run's seed from its typed config, else from its params (runs without config.json)."""
    return config["seed"] if "seed" in config else row.get("params.seed")


def _run_config(run_id: str, tracking_uri: str | None) -> dict[str, Any]:
    """The run's typed config; {} when it logged none (the run then forms a group of its own)."""
    from mlflow.exceptions import MlflowException

    try:
        config = read_json(run_id, naming.CONFIG_ARTIFACT, tracking_uri=tracking_uri)
    except (MlflowException, OSError, ValueError) as error:
        log.warning(
            "run %s: no readable %s (%s): not pooled", run_id, naming.CONFIG_ARTIFACT, error
        )
        return {}
    return config if isinstance(config, dict) else {}
