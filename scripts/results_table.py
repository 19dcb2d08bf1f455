#!/usr/bin/env python3
"""Print a results table (Markdown) from what MLflow holds: nothing is recomputed.

    .venv/bin/python scripts/results_table.py [--eps EPS] [--markdown] [EXPERIMENT ...]

``--markdown`` prints a page section for docs/results.md: a header with the date, the machine
(CPU model and cores from /proc/cpuinfo), the commit of the working copy and the command that
printed it, then per experiment the commands, commits, devices and dates its runs recorded
(``naming.run_info``: results/run_info.json, or the tags of older runs) and its table.

One row per setting of each experiment (finished runs; sweep parents left out): the settings that
differ between the experiment's runs, data sizes, clean accuracy, FGSM, PGD and worst-case robust
accuracy at EPS/255 (default 8; the worst case is the reported figure: per point, every attack and
the escalation), best/stopped epoch and the wall time of a run. Runs that differ only in their
seed are one setting (``advlab.seed_groups.seed_groups``); when some setting ran with several seeds
the table gains an "n seeds" column and quotes mean ± std over the seeds, epochs as their range
and the mean wall time per run. The verdict column holds each setting's run verdicts (tag
advlab.verdict; "not recorded" for runs made before verdicts existed). A run whose verdict is
fail gets a row of its own, marked **fail**, and is left out of the seed groups' mean ± std; a
line under the table says how many runs were left out and why.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

import advlab.config
from advlab import naming, results, seed_groups
from advlab.config import CONF_DIR, PROJECT_ROOT
from advlab.errors import ConfigError
from advlab.training.diagnostics import CATASTROPHIC_OVERFITTING
from advlab.verdict import FAIL


def default_experiments() -> list[str]:
    """Every experiment of conf/experiment/: the config's own list when it provides one."""
    listed = getattr(advlab.config, "experiment_names", None)  # the one list, once it exists
    if listed is not None:
        return list(listed())
    return sorted(path.stem for path in (CONF_DIR / "experiment").glob("*.yaml"))


ADVERSARIAL_METHOD = "train.adversarial.method"
VERDICT = f"tags.{naming.VERDICT_TAG}"
VERDICT_REASON = f"tags.{naming.VERDICT_REASON_TAG}"
NOT_RECORDED = "not recorded"  # runs made before verdicts existed: not failed


# The knobs the sweeps turn; a column shows those that differ between an experiment's runs.
SETTINGS = {
    "data.limit_train": "n",
    "model.dropout": "dropout",
    "optimizer.weight_decay": "wd",
    "data.augment.hflip": "flip",
    "train.early_stopping.enabled": "early stop",
    ADVERSARIAL_METHOD: "adv. training",
}


def _settings(row, varied: list[str]) -> str:
    def value(key: str) -> str:
        raw = row.get(f"params.{key}")
        return "all" if raw is None or raw != raw or raw == "None" else str(raw)  # None/NaN: unset

    return ", ".join(f"{SETTINGS[key]}={value(key)}" for key in varied) or "-"


def _stat(row, key: str, stat: str) -> float | None:
    value = row.get(f"metrics.{key}.{stat}")
    return None if value is None or math.isnan(value) else float(value)


def _pct(row, key: str) -> str:
    """'72.2%', or '72.2% ± 1.1%' for a setting with several seeds."""
    mean, std = _stat(row, key, "mean"), _stat(row, key, "std")
    if mean is None:
        return "-"
    return f"{mean:.1%}" if std is None else f"{mean:.1%} ± {std:.1%}"


def _epoch(row, key: str) -> str:
    """The epoch, or its range over the seeds ('21-23') when they differ."""
    low, high = _stat(row, key, "min"), _stat(row, key, "max")
    if low is None or high is None:
        return "-"
    return f"{low:.0f}" if low == high else f"{low:.0f}-{high:.0f}"


def _size(by_id: pd.DataFrame, run_ids: list[str], split: str) -> str:
    """A split's size in a setting's runs; its range ('270-271') when the seeds split it apart."""
    column = f"params.facts.{split}"
    values = by_id.loc[run_ids, column] if column in by_id else pd.Series([math.nan])
    low, high = float(values.min()), float(values.max())
    return f"{low:.0f}" if low == high or math.isnan(low) else f"{low:.0f}-{high:.0f}"


def _evaluated(by_id: pd.DataFrame, run_ids: list[str]) -> str:
    """How many test points the robust accuracies are over: eval.n_examples, capped by the test
    split (null = all of it); the split itself is the train / val / test column."""
    counts = set()
    for run_id in run_ids:
        run = by_id.loc[run_id]
        recorded = run.get(f"metrics.{naming.ROBUST_N}", math.nan)  # runs that record their n
        if recorded == recorded:
            counts.add(float(recorded))
            continue
        n_test = float(run.get("params.facts.n_test", math.nan))
        asked = str(run.get("params.eval.n_examples", "None"))
        counts.add(n_test if asked in ("None", "null") else min(float(asked), n_test))
    low, high = min(counts), max(counts)
    return f"{low:.0f}" if low == high or math.isnan(low) else f"{low:.0f}-{high:.0f}"


def _verdicts(frame: pd.DataFrame) -> pd.Series:
    """Each run's verdict (pass | warn | fail), 'not recorded' for runs without the tag."""
    if VERDICT not in frame:
        return pd.Series(NOT_RECORDED, index=frame.index)
    return frame[VERDICT].fillna(NOT_RECORDED).replace("", NOT_RECORDED)


def _verdict_cell(by_id: pd.DataFrame, run_ids: list[str], left_out: bool) -> str:
    """'pass', or the count of each verdict over a setting's seeds ('2 pass, 1 warn')."""
    if left_out:
        return "**fail**"
    counts = _verdicts(by_id.loc[run_ids]).value_counts(sort=False)
    if len(counts) == 1:
        return str(counts.index[0])
    return ", ".join(f"{n} {verdict}" for verdict, n in counts.items())


def _load(experiment: str) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """(finished runs, one row per setting) of an experiment; None (said on stderr) if not run.

    The settings' rows are the seed groups of the runs whose verdict is not fail, then one row
    per verdict-fail run (``left_out`` True): its numbers must not move a setting's mean.
    """
    try:
        frame = results.load(experiment=experiment)
    except ConfigError as error:  # an experiment not run yet: say so, keep going
        print(f"| {experiment} | not run ({error}) | | | | | | | |", file=sys.stderr)
        return None
    frame = frame[frame["status"] == "FINISHED"]
    failed = _verdicts(frame) == FAIL
    kept = seed_groups.seed_groups(frame[~failed]).assign(left_out=False)
    alone = [seed_groups.seed_groups(frame[failed].iloc[[i]]) for i in range(int(failed.sum()))]
    parts = [part for part in (kept, *(a.assign(left_out=True) for a in alone)) if not part.empty]
    rows = pd.concat(parts, ignore_index=True) if parts else kept
    return frame, rows


def _left_out_line(frames: list[pd.DataFrame]) -> str | None:
    """How many runs (verdict fail) the seed groups leave out and why; None when none are."""
    named = []
    for frame in frames:
        for _, run in frame[_verdicts(frame) == FAIL].iterrows():
            reason = run.get(VERDICT_REASON)
            reason = reason if isinstance(reason, str) and reason else "no reason recorded"
            named.append(f"{run['experiment']}/{run['run_name']} ({reason})")
    if not named:
        return None
    return (
        f"Left out of the mean ± std groups: {len(named)} run(s) whose verdict is fail, each "
        f"shown on its own row marked **fail**: {'; '.join(named)}."
    )


def _adversarial(frame: pd.DataFrame) -> bool:
    """True when some run of ``frame`` trained on attacks or bounds (train.adversarial.method)."""
    column = f"params.{ADVERSARIAL_METHOD}"
    return column in frame and bool((frame[column].fillna("none") != "none").any())


def table(loaded: dict[str, tuple[pd.DataFrame, pd.DataFrame]], eps: float) -> list[str]:
    """The Markdown lines of one table over the experiments ``loaded`` (see :func:`_load`).
    Where a run trained adversarially, the defence columns follow the worst case: the constant
    answer's accuracy, the training time and the catastrophic-overfitting events."""
    seeded = any((groups["n_seeds"] > 1).any() for _, groups in loaded.values())
    defences = any(_adversarial(frame) for frame, _ in loaded.values())
    seeds_head = " n seeds |" if seeded else ""
    at = f"{naming.format_eps(eps)}/255"
    defence_head = " constant answer | train time | CO events |" if defences else ""
    lines = [
        f"| experiment | settings |{seeds_head} train / val / test | evaluated | clean acc "
        f"| FGSM {at} | PGD {at} | worst case {at} |{defence_head} best / stopped epoch "
        "| wall time | verdict |",
        "|---|---|"
        + ("---|" if seeded else "")
        + ("---|---|---|" if defences else "")
        + "---|---|---|---|---|---|---|---|---|",
    ]
    for experiment, (frame, groups) in loaded.items():
        varied = [
            key
            for key in SETTINGS
            if f"params.{key}" in frame and frame[f"params.{key}"].astype(str).nunique() > 1
        ]
        by_id = frame.set_index("run_id")
        for _, row in groups.sort_values("start_time").iterrows():
            extra = _defence_cells(row, by_id) if defences else []
            lines.append(_row(experiment, row, by_id, varied, eps, seeded, extra))
    left_out = _left_out_line([frame for frame, _ in loaded.values()])
    if left_out:
        lines += ["", left_out]  # a blank line ends the Markdown table
    return lines


def _row(
    experiment: str,
    row,
    by_id: pd.DataFrame,
    varied: list[str],
    eps: float,
    seeded: bool,
    extra: list[str],
) -> str:
    """One setting's Markdown row; ``extra``: cells after the worst case (defence columns)."""
    sizes = " / ".join(_size(by_id, row["run_ids"], k) for k in ("n_train", "n_val", "n_test"))
    epochs = f"{_epoch(row, naming.BEST_EPOCH)} / {_epoch(row, naming.STOPPED_EPOCH)}"
    seconds = row["duration_s"]
    minutes = "-" if seconds != seconds else f"{seconds / 60:.1f} min"
    return (
        f"| {experiment} | {_settings(row, varied)} |"
        + (f" {row['n_seeds']} |" if seeded else "")
        + f" {sizes} | {_evaluated(by_id, row['run_ids'])} | {_pct(row, naming.CLEAN_ACC)} "
        f"| {_pct(row, naming.robust_acc_key('fgsm', eps))} "
        f"| {_pct(row, naming.robust_acc_key('pgd', eps))} "
        f"| {_pct(row, naming.robust_acc_key(naming.WORST_CASE, eps))} "
        + "".join(f"| {cell} " for cell in extra)
        + f"| {epochs if epochs != '- / -' else '-'} | {minutes} "
        f"| {_verdict_cell(by_id, row['run_ids'], bool(row['left_out']))} |"
    )


def _defence_cells(row, by_id: pd.DataFrame) -> list[str]:
    """Constant answer (its accuracy at every eps), mean training time, and how many of the
    setting's runs have a catastrophic_overfitting check that did not pass."""
    seconds = _stat(row, naming.TRAIN_SECONDS, "mean")
    flagged = f"tags.{naming.check_tag(CATASTROPHIC_OVERFITTING)}"
    runs = by_id.loc[row["run_ids"]]
    events = int(runs[flagged].notna().sum()) if flagged in runs else 0
    return [
        _pct(row, naming.CONSTANT_ACC),
        "-" if seconds is None else f"{seconds / 60:.1f} min",
        f"{events} of {len(runs)}",
    ]


# ------------------------------------------------------------------------ --markdown header
def machine() -> str:
    """'AMD EPYC, 2 cores': the CPU model of /proc/cpuinfo and the cores this process may use."""
    model = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model}, {cores} cores"


def commit() -> str:
    """The working copy's short commit, '+ local changes' when it differs from it."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return (
        f"{head} + local changes" if git("status", "--porcelain", "--untracked-files=no") else head
    )


def _run_facts(run) -> dict[str, str]:
    """A run's descriptive facts: results/run_info.json in its run directory when it is on this
    machine, else what older runs kept as tags (``naming.run_info`` reads both)."""
    tags = {k.removeprefix("tags."): v for k, v in run.items() if k.startswith("tags.")}
    tags = {k: str(v) for k, v in tags.items() if isinstance(v, str)}
    info = None
    run_dir = tags.get(naming.RUN_DIR_TAG)
    if run_dir and (Path(run_dir) / naming.RUN_INFO_JSON).is_file():
        info = json.loads((Path(run_dir) / naming.RUN_INFO_JSON).read_text())
    return naming.run_info(tags, info)


def provenance(frame: pd.DataFrame) -> list[str]:
    """What an experiment's runs recorded: their commands, commits, devices and dates."""
    facts = [_run_facts(run) for _, run in frame.iterrows()]

    def distinct(key: str) -> list[str]:
        return sorted({f[key] for f in facts if f.get(key)})

    start, end = frame["start_time"].min(), frame["end_time"].max()
    commits = [c[:7] for c in distinct(naming.GIT_COMMIT_INFO)]
    lines = [
        f"Runs: {len(frame)} finished, {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC; "
        f"commit {', '.join(commits) or 'not recorded'}; "
        f"device {', '.join(distinct(naming.DEVICE_INFO)) or 'not recorded'}; "
        f"torch {', '.join(distinct(naming.TORCH_VERSION_INFO)) or 'not recorded'}."
    ]
    commands = distinct(naming.COMMAND_INFO)
    if commands:
        lines += ["", "```bash", *commands[:3], "```"]
        if len(commands) > 3:
            lines.append(f"(and {len(commands) - 3} other commands)")
    return lines


def markdown(loaded: dict[str, tuple[pd.DataFrame, pd.DataFrame]], eps: float) -> list[str]:
    """The docs/results.md section: header (date, machine, commit, command), then per experiment
    what its runs recorded and its table."""
    command = shlex.join(["scripts/results_table.py", *sys.argv[1:]])
    lines = [
        f"Read back from MLflow on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()}, "
        f"commit {commit()}, by `.venv/bin/python {command}`.",
    ]
    for experiment, (frame, groups) in loaded.items():
        lines += ["", f"#### {experiment}", "", *provenance(frame), ""]
        lines += table({experiment: (frame, groups)}, eps)
    return lines


def main(experiments: list[str], eps: float = 8.0, as_markdown: bool = False) -> None:
    loaded = {name: tables for name in experiments if (tables := _load(name)) is not None}
    lines = markdown(loaded, eps) if as_markdown else table(loaded, eps)
    print("\n".join(lines))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eps", type=float, default=8.0, help="eps of the columns, 1/255 units")
    parser.add_argument(
        "--markdown", action="store_true", help="docs/results.md section: header, provenance"
    )
    parser.add_argument("experiments", nargs="*", help="default: every conf/experiment/ file")
    args = parser.parse_args()
    main(args.experiments or default_experiments(), args.eps, args.markdown)
