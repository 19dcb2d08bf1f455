"""The facts of runs in words, as the report's tables and banner show them.

:mod:`advlab.report.data` holds the numbers; this module turns a run's typed config, params, tags
and verdict into the short texts of the setup table, the data table, the runs table and the
verdict banner. Every recorded name comes from :mod:`advlab.naming`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import pandas as pd

from advlab import naming
from advlab.baseline import NAME as CONSTANT_BASELINE
from advlab.report.data import RunData
from advlab.report.format import MISSING, attack_label, fmt_eps, fmt_int, fmt_num, fmt_pct
from advlab.verdict import FAIL, PASS, WARN

# ------------------------------------------------------------------------------- one run's setup
SETUP_KEYS = (
    "status",
    "verdict",
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
)


def setup_facts(run: RunData) -> dict[str, str]:
    """The run's setup in words, one entry per :data:`SETUP_KEYS`, from its typed config."""
    model_target = run.setting("model._target_")
    model = run.tags.get(naming.MODEL_TAG) or (
        naming.option_name(model_target) if model_target else MISSING
    )
    optimizer_target = run.setting("optimizer._target_")
    seed = run.setting("seed")
    return {
        "status": run.status + (f": {run.error}" if run.error else ""),
        "verdict": verdict_text(run),
        "model": model,
        "params": fmt_int(run.metric(naming.NUM_PARAMS)),
        "optimizer": naming.option_name(optimizer_target) if optimizer_target else MISSING,
        "lr": fmt_num(run.setting("optimizer.lr")),
        "weight decay": fmt_num(run.setting("optimizer.weight_decay")),
        "dropout": fmt_num(run.setting("model.dropout")),
        "early stopping": _early_stopping(run),
        "augmentation": _augmentation(run),
        "adv. training": _adversarial_training(run),
        "seed": str(seed) if seed is not None else run.tags.get(naming.SEED_TAG) or MISSING,
    }


def _early_stopping(run: RunData) -> str:
    enabled = run.setting("train.early_stopping.enabled")
    if enabled is None:
        return MISSING
    best, stopped = run.metric(naming.BEST_EPOCH), run.metric(naming.STOPPED_EPOCH)
    epochs = run.setting("train.epochs")
    where = (
        f"best {int(best)} / stopped {int(stopped)} of {'?' if epochs is None else epochs}"
        if best is not None and stopped is not None
        else f"not reached ({run.status})"
    )
    if not enabled:
        return f"off; {where}"
    patience = run.setting("train.early_stopping.patience")
    monitor = run.setting("train.early_stopping.monitor")
    return (
        f"patience {'?' if patience is None else patience} on "
        f"{'?' if monitor is None else monitor}; {where}"
    )


def _augmentation(run: RunData) -> str:
    hflip = run.setting("data.augment.hflip")
    aug = ["hflip"] if hflip else []
    shift, rotation = run.setting("data.augment.shift"), run.setting("data.augment.rotation")
    if shift:
        aug.append(f"shift {fmt_num(shift)}px")
    if rotation:
        aug.append(f"rotation {fmt_num(rotation)}°")
    return ", ".join(aug) or ("none" if hflip is not None else MISSING)


def _adversarial_training(run: RunData) -> str:
    method = run.setting("train.adversarial.method")
    if not method:
        return MISSING
    if method == "none":
        return "none"
    eps = run.setting("train.adversarial.eps")
    return f"{method} eps {fmt_eps(math.nan if eps is None else float(eps))}"


def shared_and_differing(facts: Sequence[dict[str, str]]) -> tuple[list[str], list[str]]:
    """Setup keys with one value across all runs, and the keys whose values differ."""
    shared = [k for k in SETUP_KEYS if len({f[k] for f in facts}) == 1]
    return shared, [k for k in SETUP_KEYS if k not in shared]


# -------------------------------------------------------------------------------- the cover's facts
def status_text(runs: Sequence[RunData]) -> str:
    """Run statuses counted: '3 finished, 1 failed'."""
    statuses = pd.Series([run.status for run in runs]).value_counts()
    return ", ".join(f"{n} {s.lower()}" for s, n in statuses.items())


def distinct(values: Iterable[str | None]) -> str:
    """The distinct non-empty values, at most four named: 'a, b (+3 more)'."""
    unique = list(dict.fromkeys(v for v in values if v))
    if not unique:
        return MISSING
    return ", ".join(unique[:4]) + (f" (+{len(unique) - 4} more)" if len(unique) > 4 else "")


def command_groups(runs: Sequence[RunData]) -> dict[str, list[str]]:
    """Command line (tag advlab.command) -> names of the runs started with it, in run order."""
    commands: dict[str, list[str]] = {}
    for run in runs:
        commands.setdefault(run.info.get(naming.COMMAND_INFO) or MISSING, []).append(run.name)
    return commands


def data_table(runs: Sequence[RunData]) -> list[list[object]]:
    """The data the runs saw, one row per distinct dataset and split (header row first)."""
    groups: dict[tuple, int] = {}
    for run in runs:
        p = run.params  # dataset facts exist only as params (facts.*), not in the config
        key = (
            run.tags.get(naming.DATASET_TAG) or run.setting("data.name") or MISSING,
            p.get("facts.n_train"),
            p.get("facts.n_val"),
            p.get("facts.n_test"),
            p.get("facts.image_shape"),
            _balance(p),
        )
        groups[key] = groups.get(key, 0) + 1
    rows: list[list[object]] = [
        ["data", "train", "val", "test", "image", "class balance (train)", "runs"]
    ]
    for (name, n_train, n_val, n_test, shape, balance), count in groups.items():
        rows.append(
            [
                name,
                *(fmt_int(_float(n)) for n in (n_train, n_val, n_test)),
                shape or MISSING,
                balance or MISSING,
                count,
            ]
        )
    return rows


def _balance(params: dict[str, str]) -> str:
    shares = {k.split("/", 1)[1]: v for k, v in params.items() if k.startswith("facts.train_frac/")}
    return ", ".join(f"{name} {fmt_pct(_float(v))}" for name, v in shares.items())


def _float(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


# ----------------------------------------------------------------------------------------- verdicts
# Worst first: the order the cover shows verdict counts and reasons in.
VERDICT_ORDER = (FAIL, WARN, PASS)
NOT_RECORDED = "not recorded"  # runs made before verdicts existed; they count as not failed
REASONS_SHOWN = 5  # reasons of failed/warned runs named on the cover; the rest are counted


def verdict_text(run: RunData) -> str:
    """The run's verdict as shown: 'pass', 'warn', 'fail' or 'not recorded'."""
    return run.verdict or NOT_RECORDED


def verdict_counts(runs: Sequence[RunData]) -> dict[str, int]:
    """Runs per verdict, worst first, 'not recorded' last; verdicts no run has are left out."""
    counts: dict[str, int] = {}
    for run in runs:
        counts[verdict_text(run)] = counts.get(verdict_text(run), 0) + 1
    order = [*VERDICT_ORDER, *sorted(set(counts) - {*VERDICT_ORDER, NOT_RECORDED}), NOT_RECORDED]
    return {v: counts[v] for v in order if v in counts}


def verdict_reasons(
    runs: Sequence[RunData], shown: int = REASONS_SHOWN
) -> tuple[list[tuple[str, str]], int]:
    """(verdict, '<run>: <verdict>: <reason>') of the failed, then the warned runs (at most
    ``shown``), and how many more failed or warned runs there are."""
    flagged = [r for v in (FAIL, WARN) for r in runs if r.verdict == v]
    lines = [
        (str(r.verdict), f"{r.name}: {r.verdict}: {r.verdict_reason or 'no reason recorded'}")
        for r in flagged
    ]
    return lines[:shown], max(0, len(lines) - shown)


def left_out_sentence(runs: Sequence[RunData]) -> str | None:
    """How many runs the comparisons leave out (verdict fail) and why; None when none are."""
    failed = [r for r in runs if r.failed_verdict]
    if not failed:
        return None
    named = [f"{r.name} ({r.verdict_reason or 'no reason recorded'})" for r in failed]
    more = len(named) - REASONS_SHOWN
    listed = "; ".join(named[:REASONS_SHOWN]) + (f"; and {more} more" if more > 0 else "")
    return (
        f"{len(failed)} of {len(runs)} runs are left out of the comparisons (heatmaps, best "
        f"settings, seed-group means) because their verdict is fail: {listed}. They are still "
        "listed, marked fail."
    )


# Each verdict in plain words, for the first page; the technical reason goes beneath it.
PLAIN_VERDICT = {
    PASS: "Trustworthy: every check these figures rest on passed.",
    WARN: "Read with care: a check found that these figures may over-state robustness.",
    FAIL: "Not meaningful: a check failed, so these figures say nothing about robustness.",
}
NO_VERDICT = "No verdict recorded: this run was made before runs were judged."
# A warning that does not question the figures but what they are worth.
PLAIN_WARNING = {
    CONSTANT_BASELINE: "Read with care: at some budget this defence is not worth it; answering "
    "the most frequent class to every image is at least as robust.",
}


def plain_verdict(verdict: str | None, reason: str | None = None) -> str:
    """The verdict in plain words (:data:`PLAIN_VERDICT`); a warning whose first check
    (``reason``: ``<check>: <evidence>``) is in :data:`PLAIN_WARNING` is said its own way."""
    if verdict is None:
        return NO_VERDICT
    first = (reason or "").split(":", 1)[0]
    if verdict == WARN and first in PLAIN_WARNING:
        return PLAIN_WARNING[first]
    return PLAIN_VERDICT.get(verdict, f"Verdict {verdict!r}: not one advlab knows.")


def unfinished_sentence(left_out: dict[str, int]) -> str | None:
    """How many failed and killed runs the report leaves out, and how to see them; None if none."""
    if not left_out:
        return None
    parts = [f"{n} {status.lower()} run{'' if n == 1 else 's'}" for status, n in left_out.items()]
    total = sum(left_out.values())
    return (
        f"{' and '.join(parts)} {'is' if total == 1 else 'are'} left out of this report "
        "(report.runs selects them by id, or by a filter on attributes.status)."
    )


def constant_sentence(
    table: pd.DataFrame, constant: float | None, attack: str | None, eps: float | None
) -> str | None:
    """Which settings of a sweep (``table``: :func:`advlab.report.seeds.group_table`) keep more
    than the constant answer at the headline ``eps``, and which do not; None without a
    baseline or a headline."""
    if constant is None or eps is None or attack is None or table.empty or eps <= 0:
        return None
    rated = table.dropna(subset=["robust"])
    if rated.empty:
        return None
    above = [str(n) for n in rated.loc[rated["robust"] > constant, "name"]]
    below = [str(n) for n in rated.loc[rated["robust"] <= constant, "name"]]
    where = f"at eps {fmt_eps(eps)} ({attack_label(attack)})"
    start = (
        f"A constant answer (always the most frequent class) keeps {fmt_pct(constant)} at every "
        f"eps. "
    )
    if not above:
        return start + f"No setting keeps more {where}: none is worth its defence there."
    if not below:
        return start + f"Every setting keeps more {where}."
    return start + (f"Above it {where}: {', '.join(above)}. Not above it: {', '.join(below)}.")
