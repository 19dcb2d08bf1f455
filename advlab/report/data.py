"""What the report knows about runs, and the numbers it derives from them run by run.

:class:`RunData` and :class:`ReportData` are filled from MLflow by :mod:`advlab.report.gather`.
The functions below are the report's calculations (swept parameters, the quoted attack and eps,
the setup facts, data groups, sanity counts, ...); the tables across runs and settings and their
statistics over seeds are in :mod:`~advlab.report.seeds`. The section modules only lay out what
these return.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from advlab import naming
from advlab.errors import AdvlabError
from advlab.report.summary import MISSING, fmt_eps, fmt_int, fmt_num, fmt_pct, setting_sort_key
from advlab.verdict import FAIL, PASS, WARN

# Per-epoch metrics the learning curves use (step = epoch, 1-based).
HISTORY_METRICS = (
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "lr",
    "gen_gap",
    naming.VAL_PGD_ACC,
    naming.VAL_FGSM_ACC,
)
ROBUSTNESS_COLUMNS = ("attack", "eps", "robust_acc", "ci_low", "ci_high", "asr", "n")


class ReportError(AdvlabError, LookupError):
    """The report cannot be built: no runs match, unknown experiment or run id, bad filter."""


@dataclass
class RunData:
    """One MLflow run as the report sees it. Fractions are in [0, 1]; eps in 1/255 units."""

    run_id: str
    name: str  # display label, unique within a report
    experiment: str
    status: str  # FINISHED | FAILED | KILLED | RUNNING | SCHEDULED
    start_time: datetime | None
    params: dict[str, str]  # MLflow params: strings; they name what a sweep varied
    tags: dict[str, str]
    config: dict[str, Any]  # the resolved config, typed (config/config.json); {} if not logged
    metrics: dict[str, float]  # latest value of every metric
    history: pd.DataFrame  # one row per epoch: epoch + HISTORY_METRICS present; may be empty
    robustness: pd.DataFrame  # ROBUSTNESS_COLUMNS, one row per attack x eps; empty: no attacks
    per_class: pd.DataFrame | None = None  # attack, eps, class, robust_acc, n
    confusion: dict[str, list[list[int]]] | None = None  # "clean", "<attack>/eps_<e>"
    sanity: list[dict[str, str]] | None = None  # name, status, evidence
    verdict_file: dict[str, Any] | None = None  # results/verdict.json: verdict, reason, checks
    audit: dict[str, Any] | None = None  # results/audit.json (python -m advlab.audit)
    grids: list[tuple[str, bytes]] = field(default_factory=list)  # (artifact path, PNG bytes)

    # -------------------------------------------------------------------- convenience views
    def metric(self, key: str) -> float | None:
        """The latest value of a metric, or None when the run did not log it."""
        value = self.metrics.get(key)
        return None if value is None or math.isnan(value) else float(value)

    def setting(self, key: str) -> Any:
        """The run's config value at a dotted key (``'train.epochs'`` -> 12), typed as the run
        saw it; None when the key is absent or the run logged no config."""
        node: Any = self.config
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    @property
    def clean_acc(self) -> float | None:
        return self.metric(naming.CLEAN_ACC)

    @property
    def error(self) -> str | None:
        # a run ended KILLED by the reaper or a sweep's end says why in advlab.killed_reason
        return self.tags.get("advlab.error") or self.tags.get("advlab.killed_reason")

    @property
    def verdict(self) -> str | None:
        """pass | warn | fail from tag advlab.verdict (else results/verdict.json); None for runs
        made before verdicts existed."""
        tagged = self.tags.get(naming.VERDICT_TAG)
        return tagged or (self.verdict_file or {}).get("verdict") or None

    @property
    def verdict_reason(self) -> str | None:
        """The one line naming the run's first problem; None when it has none or no verdict."""
        tagged = self.tags.get(naming.VERDICT_REASON_TAG)
        return tagged or (self.verdict_file or {}).get("reason") or None

    @property
    def failed_verdict(self) -> bool:
        """True only for a run whose verdict is fail (a run without a verdict is not failed)."""
        return self.verdict == FAIL

    @property
    def checks(self) -> list[dict[str, str]] | None:
        """The run's checks: those of results/verdict.json (training checks, then the
        evaluation's sanity checks) when it was logged, else results/sanity.json's."""
        from_verdict = (self.verdict_file or {}).get("checks")
        return from_verdict if from_verdict else self.sanity

    @property
    def attacks(self) -> list[str]:
        """Attacks with robustness numbers, in tag order (worst case last)."""
        found = list(dict.fromkeys(self.robustness["attack"])) if len(self.robustness) else []
        tagged = [a for a in self.tags.get("advlab.attacks", "").split(",") if a]
        ordered = [a for a in tagged if a in found] + [a for a in found if a not in tagged]
        return sorted(ordered, key=lambda a: a == naming.WORST_CASE)

    @property
    def eps_grid(self) -> list[float]:
        return sorted({float(e) for e in self.robustness["eps"]}) if len(self.robustness) else []

    def robust(self, attack: str, eps: float) -> pd.Series | None:
        """The robustness row of ``attack`` at ``eps``, or None."""
        if self.robustness.empty:
            return None
        rows = self.robustness[
            (self.robustness["attack"] == attack) & (self.robustness["eps"] == float(eps))
        ]
        return None if rows.empty else rows.iloc[0]

    def history_at(self, metric: str, epoch: float | None) -> float | None:
        """Value of an epoch metric at ``epoch`` (1-based), or None."""
        if epoch is None or self.history.empty or metric not in self.history:
            return None
        rows = self.history[self.history["epoch"] == int(epoch)]
        if rows.empty or pd.isna(rows.iloc[0][metric]):
            return None
        return float(rows.iloc[0][metric])


@dataclass
class ReportData:
    """The runs of one report, in start order, and where they came from."""

    tracking_uri: str
    experiment: str  # experiment name(s) shown on the cover
    selection: str  # how the runs were chosen, in words
    runs: list[RunData]
    omitted_parents: int = 0  # sweep parent runs left out (they hold no results of their own)


# ------------------------------------------------------------------------------- across runs
# Parameters that never describe a difference between runs worth plotting.
_IGNORED_PREFIXES = ("facts.", "tracking.", "report.", "paths.", "hydra.")
_IGNORED_KEYS = {"train.progress", "train.resume", "train.checkpoint", "device", "eval.batch_size"}
# Regularisation parameters first: they are what sweeps vary and what heatmaps should show.
_PREFERRED = (
    "model.dropout",
    "optimizer.weight_decay",
    "data.limit_train",
    "train.adversarial.method",
    "train.adversarial.eps",
    "train.early_stopping.enabled",
    "train.early_stopping.patience",
    "data.augment.hflip",
    "data.augment.shift",
    "data.augment.rotation",
    "optimizer.lr",
)


def swept_params(runs: Sequence[RunData]) -> list[str]:
    """Params whose value differs between runs, regularisation parameters first, seed last."""
    if len(runs) < 2:
        return []
    keys = sorted({k for r in runs for k in r.params})
    varying = []
    for key in keys:
        if key.startswith(_IGNORED_PREFIXES) or key in _IGNORED_KEYS:
            continue
        if len({r.params.get(key) for r in runs}) > 1:
            varying.append(key)

    def rank(key: str) -> tuple[int, int, str]:
        if key in _PREFERRED:
            return (0, _PREFERRED.index(key), key)
        return (2 if key == "seed" else 1, 0, key)

    return sorted(varying, key=rank)


def headline(runs: Sequence[RunData], eps: float | None) -> tuple[str | None, float | None]:
    """The attack and eps the overview quotes: PGD if run (else the first attack), at ``eps`` if
    evaluated (else the largest eps evaluated)."""
    attacks = [a for r in runs for a in r.attacks if a != naming.WORST_CASE]
    if not attacks:
        return None, None
    attack = "pgd" if "pgd" in attacks else attacks[0]
    grid = sorted({e for r in runs if attack in r.attacks for e in r.eps_grid})
    if eps is not None and float(eps) in grid:
        return attack, float(eps)
    return attack, grid[-1]


@dataclass(frozen=True)
class Focus:
    """What every section of one report quotes: the headline attack and eps, the swept params."""

    attack: str | None
    eps: float | None
    swept: list[str]

    @property
    def knobs(self) -> list[str]:
        """Swept params that are settings (a seed is noise, not a knob); the seed if alone."""
        return [p for p in self.swept if p != "seed"] or self.swept


def focus(runs: Sequence[RunData], heatmap_eps: float | None) -> Focus:
    """The :class:`Focus` of a report on ``runs``; ``heatmap_eps`` as in :func:`headline`."""
    attack, eps = headline(runs, heatmap_eps)
    return Focus(attack=attack, eps=eps, swept=swept_params(runs))


def best_epoch_gap(run: RunData) -> float | None:
    """Train minus validation accuracy at the best (restored) epoch, or None."""
    return run.history_at("gen_gap", run.metric(naming.BEST_EPOCH))


def swept_values(column: pd.Series) -> list[str]:
    """The distinct values of a swept param's column, numbers by value, then the rest."""
    return sorted(column.dropna().unique(), key=setting_sort_key)


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
    model = run.tags.get("advlab.model") or (
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
        "seed": str(seed) if seed is not None else run.tags.get("advlab.seed") or MISSING,
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
        commands.setdefault(run.tags.get("advlab.command") or MISSING, []).append(run.name)
    return commands


def data_table(runs: Sequence[RunData]) -> list[list[object]]:
    """The data the runs saw, one row per distinct dataset and split (header row first)."""
    groups: dict[tuple, int] = {}
    for run in runs:
        p = run.params  # dataset facts exist only as params (facts.*), not in the config
        key = (
            run.tags.get("advlab.dataset") or run.setting("data.name") or MISSING,
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


# ------------------------------------------------------------------------------------ sanity checks
def sanity_counts(runs: Sequence[RunData]) -> list[tuple[str, dict[str, int]]]:
    """Each check (in first-seen order) with how many runs it passed, warned or failed."""
    checks = [c for r in runs for c in r.checks or []]
    out = []
    for name in dict.fromkeys(c["name"] for c in checks):
        counts = {"pass": 0, "warn": 0, "fail": 0}
        for check in checks:
            if check["name"] == name:
                counts[check["status"]] = counts.get(check["status"], 0) + 1
        out.append((name, counts))
    return out


def failed_checks(runs: Sequence[RunData]) -> list[tuple[RunData, dict[str, str]]]:
    """(run, check) for every check that did not pass."""
    return [(r, c) for r in runs for c in r.checks or [] if c["status"] != "pass"]


def runs_with_warnings(runs: Sequence[RunData]) -> list[RunData]:
    """Runs with at least one check that did not pass."""
    return [r for r in runs if any(c["status"] != "pass" for c in r.checks or [])]


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


def compared_runs(runs: Sequence[RunData]) -> list[RunData]:
    """The runs comparisons are drawn over: all but those whose verdict is fail."""
    return [r for r in runs if not r.failed_verdict]


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


# ------------------------------------------------------------------------------- one run's details
def eps_union(runs: Sequence[RunData]) -> list[float]:
    """Every eps (1/255) any of ``runs`` was evaluated at, ascending."""
    return sorted({e for r in runs for e in r.eps_grid})


def headline_grids(run: RunData, attack: str | None) -> list[tuple[str, bytes]]:
    """The run's grids of ``attack`` (all of them when it logged none for that attack)."""
    return [g for g in run.grids if Path(g[0]).stem.startswith(f"{attack}_")] or run.grids


def confusion_key(run: RunData, focus: Focus) -> tuple[str, str, float] | None:
    """The adversarial confusion matrix to show, as (key, attack, eps): the focus attack at the
    focus eps, else the largest eps of any attack logged."""
    options = []
    for key in run.confusion or {}:
        if key == "clean" or "/eps_" not in key:
            continue
        attack, eps = key.rsplit("/eps_", 1)
        try:
            options.append((key, attack, float(eps)))
        except ValueError:
            continue
    if not options:
        return None
    for key, attack, eps in options:
        if attack == focus.attack and eps == focus.eps:
            return key, attack, eps
    return sorted(options, key=lambda o: (o[1] != focus.attack, -o[2]))[0]


def class_names(run: RunData, n: int) -> list[str]:
    """Class names in label order: from the data config, else from per_class.csv (written in
    label order), else label indices."""
    names = run.setting("data.class_names")
    if names and len(names) == n:
        return [str(name) for name in names]
    if run.per_class is not None and not run.per_class.empty:
        names = list(dict.fromkeys(run.per_class["class"].astype(str)))
        if len(names) == n:
            return names
    return [str(i) for i in range(n)]
