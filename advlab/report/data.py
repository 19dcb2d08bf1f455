"""What the report knows about runs, and the numbers it derives from them: data, not text.

:class:`RunData` and :class:`ReportData` are filled from MLflow by :mod:`advlab.report.gather`.
The functions below are the report's calculations (swept parameters, the headline, the eps where
accuracy halves, the epochs of catastrophic overfitting, sanity counts, ...); they return numbers
and frames. The tables across settings and their statistics over seeds are in
:mod:`~advlab.report.seeds`; the words in :mod:`~advlab.report.facts` and
:mod:`~advlab.report.summary`; the section modules only lay out what these return.

The *headline* of a run is one thing everywhere: the worst case over every attack it ran (per
example, :data:`advlab.naming.WORST_CASE`) at the headline eps (:func:`headline_eps`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from advlab import naming
from advlab.errors import AdvlabError
from advlab.report.format import setting_sort_key
from advlab.verdict import FAIL, PASS, STATUSES

ROBUSTNESS_COLUMNS = ("attack", "eps", "robust_acc", "ci_low", "ci_high", "asr", "n")
CHECK_FIELDS = ("name", "status", "evidence")
# Run statuses a report leaves out unless they were asked for (run ids, a filter on the status).
UNFINISHED = ("FAILED", "KILLED")
FINISHED = "FINISHED"


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
    history: pd.DataFrame  # one row per epoch: epoch + naming.EPOCH_METRICS present; may be empty
    robustness: pd.DataFrame  # ROBUSTNESS_COLUMNS, one row per attack x eps; empty: no attacks
    per_class: pd.DataFrame | None = None  # attack, eps, class, robust_acc, n
    confusion: dict[str, list[list[int]]] | None = None  # "clean", "<attack>/eps_<e>"
    sanity: list[dict[str, str]] | None = None  # the evaluation's checks file: name, status, ...
    verdict_file: dict[str, Any] | None = None  # results/verdict.json: verdict, reason, checks
    audit: dict[str, Any] | None = None  # results/audit.json (python -m advlab.audit)
    grids: list[tuple[str, bytes]] = field(default_factory=list)  # (artifact path, PNG bytes)
    info: dict[str, str] = field(default_factory=dict)  # naming.run_info: versions, command, ...
    results: dict[str, Any] = field(default_factory=dict)  # results/results.json ({} if absent)

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
    def clean_n(self) -> float | None:
        """How many test points the clean accuracy is over: results.json's ``clean_n``, else
        the test split's size (param ``facts.n_test``); None when neither was logged."""
        return _number(self.results.get(naming.CLEAN_N)) or _number(self.params.get("facts.n_test"))

    @property
    def robust_n(self) -> float | None:
        """How many points every robust figure is over: results.json's ``robust_n``, else the n
        of the robustness table (robustness.json); None when neither was logged."""
        found = _number(self.results.get(naming.ROBUST_N))
        if found is None and not self.robustness.empty:
            found = _number(self.robustness["n"].max())
        return found

    @property
    def error(self) -> str | None:
        """Why a run did not finish: its exception, or what stopped or reaped it."""
        for tag in (naming.ERROR_TAG, naming.STOP_REASON_TAG, naming.KILLED_REASON_TAG):
            if self.tags.get(tag):
                return self.tags[tag]
        return None

    @property
    def constant_acc(self) -> float | None:
        """What always answering the most frequent class of the evaluated points keeps at every
        eps (:mod:`advlab.baseline`); None for runs that did not log it."""
        return self.metric(naming.CONSTANT_ACC)

    @property
    def certified(self) -> dict[float, float]:
        """eps -> certified accuracy (``certified_acc/eps_<e>``), ascending; {} when the run did
        not certify (eval.certify=none, or a release before certificates)."""
        found = {
            eps: value
            for key, value in self.metrics.items()
            if (eps := naming.parse_certified_metric(key)) is not None and not math.isnan(value)
        }
        return dict(sorted(found.items()))

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
        evaluation's) when it was logged, else the evaluation's checks file, else the statuses
        of the run's check tags (no evidence: tags record only the checks that did not pass)."""
        from_verdict = (self.verdict_file or {}).get("checks")
        if from_verdict:
            return from_verdict
        if self.sanity:
            return self.sanity
        tagged = naming.checks_from_tags(self.tags)
        return [{"name": k, "status": v, "evidence": ""} for k, v in tagged.items()] or None

    def check_status(self, name: str) -> str:
        """pass | warn | fail of check ``name``; pass when the run did not record it otherwise
        (check tags record only the checks that did not pass)."""
        found = [c["status"] for c in self.checks or [] if c.get("name") == name]
        return found[0] if found else PASS

    @property
    def adversarially_trained(self) -> bool:
        """True when the model was trained on attacks or bounds (train.adversarial.method)."""
        return self.setting("train.adversarial.method") not in (None, "none")

    @property
    def attacks(self) -> list[str]:
        """Attacks with robustness numbers, in the order the run lists them (worst case last)."""
        found = list(dict.fromkeys(self.robustness["attack"])) if len(self.robustness) else []
        tagged = [a for a in self.info.get(naming.ATTACKS_INFO, "").split(",") if a]
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


def _number(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


@dataclass
class ReportData:
    """The runs of one report, in start order, and where they came from."""

    tracking_uri: str
    experiment: str  # experiment name(s) shown on the cover
    selection: str  # how the runs were chosen, in words
    runs: list[RunData]
    omitted_parents: int = 0  # sweep parent runs left out (they hold no results of their own)
    left_out: dict[str, int] = field(default_factory=dict)  # FAILED/KILLED runs not reported


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


def user_keys(run: RunData) -> set[str] | None:
    """The config keys the user set on the run's command line (its Hydra overrides, ``+``/``~``
    stripped); None when the run recorded no overrides (not started by Hydra, or older)."""
    recorded = run.info.get(naming.OVERRIDES_INFO)
    if recorded is None:
        return None
    import shlex

    try:
        words = shlex.split(recorded)
    except ValueError:
        words = recorded.split()
    keys: set[str] = set()
    for word in words:
        key, is_set, option = word.lstrip("+~").partition("=")
        if not is_set:
            continue
        keys.add(key)
        group, _, package = key.partition("@")
        if package == "_global_":  # a global config-group choice sets its option file's keys
            keys |= _option_keys(group, option)
    return keys


def _option_keys(group: str, option: str) -> set[str]:
    """The dotted keys ``conf/<group>/<option>.yaml`` sets (``adversarial@_global_=nfgsm``:
    ``train.adversarial.method``); none when the file is not there."""
    from omegaconf import OmegaConf

    from advlab.config import CONF_DIR

    path = CONF_DIR / group / f"{option}.yaml"
    if not path.is_file():
        return set()
    node = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    keys: set[str] = set()

    def walk(value: Any, prefix: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if k != "defaults":
                    walk(v, f"{prefix}{k}.")
        elif prefix:
            keys.add(prefix[:-1])

    walk(node, "")
    return keys


def _internal(key: str) -> bool:
    """A key no user sets: instantiation internals (``_target_``, ``_partial_``)."""
    return key.rsplit(".", 1)[-1].startswith("_")


def swept_params(runs: Sequence[RunData]) -> list[str]:
    """Params a user set that differ between runs, regularisation parameters first, seed last.

    Set by the user: a key of the runs' Hydra overrides when they recorded them; otherwise a key
    every run has (a key only some runs have, such as ``attacks.cw.norm``, comes with a choice of
    options, not a value the user set). Instantiation internals (``_target_``, ``_partial_``)
    never count."""
    if len(runs) < 2:
        return []
    keys = sorted({k for r in runs for k in r.params})
    set_by_user = [user_keys(r) for r in runs]
    overridden = set().union(*set_by_user) if all(k is not None for k in set_by_user) else None
    varying = []
    for key in keys:
        if key.startswith(_IGNORED_PREFIXES) or key in _IGNORED_KEYS or _internal(key):
            continue
        if overridden is not None and key not in overridden:
            continue
        if overridden is None and any(key not in r.params for r in runs):
            continue
        if len({r.params.get(key) for r in runs}) > 1:
            varying.append(key)

    def rank(key: str) -> tuple[int, int, str]:
        if key in _PREFERRED:
            return (0, _PREFERRED.index(key), key)
        return (2 if key == "seed" else 1, 0, key)

    return sorted(varying, key=rank)


def headline_eps(runs: Sequence[RunData], asked: float | None = None) -> float | None:
    """The eps the headline is quoted at: ``asked`` (report.heatmap_eps) if evaluated, else the
    runs' ``eval.grid_eps`` (the budget their example grids show) if evaluated, else the largest
    eps evaluated; None when no run was attacked."""
    return pick_headline_eps(eps_union(runs), [r.setting("eval.grid_eps") for r in runs], asked)


def pick_headline_eps(
    grid: Sequence[float], grid_eps: Sequence[float | None], asked: float | None = None
) -> float | None:
    """:func:`headline_eps` on plain values (the leaderboard has no :class:`RunData`): ``asked``
    if in ``grid`` (every eps evaluated), else the first of the runs' ``grid_eps`` in it, else
    the largest eps of ``grid``; None for an empty grid."""
    if not grid:
        return None
    for candidate in (asked, *grid_eps):
        if candidate is not None and float(candidate) in grid:
            return float(candidate)
    return max(grid)


def constant_acc(runs: Sequence[RunData]) -> float | None:
    """The constant-answer baseline of ``runs``: the mean of the runs that logged it (their
    evaluated points differ by seed, so the share can differ by a fraction of a point)."""
    found = [r.constant_acc for r in runs if r.constant_acc is not None]
    return sum(found) / len(found) if found else None


def quoted_attack(runs: Sequence[RunData]) -> str | None:
    """The single attack the per-attack tables and sentences quote: PGD if run, else the first."""
    attacks = [a for r in runs for a in r.attacks if a != naming.WORST_CASE]
    if not attacks:
        return None
    return "pgd" if "pgd" in attacks else attacks[0]


@dataclass(frozen=True)
class Headline:
    """A run's headline: clean accuracy and the worst case at the headline eps, with their n,
    and the smallest eps at which the worst case falls below half the clean accuracy."""

    clean_acc: float | None
    clean_n: float | None
    eps: float | None
    worst: float | None  # worst-case robust accuracy at ``eps``
    robust_n: float | None
    attacks: list[str]  # the attacks the worst case is over (one: that attack alone)
    halving_eps: float | None  # None: accuracy never halves on the eps grid
    largest_eps: float | None


def headline_attack(runs: Sequence[RunData]) -> str | None:
    """The worst case when the runs logged it; else (runs of a release that did not) the attack
    :func:`quoted_attack` picks."""
    if any(naming.WORST_CASE in r.attacks for r in runs):
        return naming.WORST_CASE
    return quoted_attack(runs)


def headline(run: RunData, eps: float | None) -> Headline:
    """The :class:`Headline` of ``run`` at ``eps`` (see :func:`headline_eps`)."""
    attack = headline_attack([run])
    row = run.robust(attack, eps) if eps is not None and attack is not None else None
    worst = None if row is None else _number(row["robust_acc"])
    n = None if row is None else _number(row["n"])
    attacks = [a for a in run.attacks if a != naming.WORST_CASE]
    return Headline(
        clean_acc=run.clean_acc,
        clean_n=run.clean_n,
        eps=eps,
        worst=worst,
        robust_n=n if n is not None else run.robust_n,
        attacks=attacks if attack == naming.WORST_CASE else [str(attack)],
        halving_eps=halving_eps(run, attack),
        largest_eps=run.eps_grid[-1] if run.eps_grid else None,
    )


def halving_eps(run: RunData, attack: str | None = naming.WORST_CASE) -> float | None:
    """Smallest eps > 0 at which ``attack`` (the worst case) leaves under half the clean
    accuracy."""
    clean = run.clean_acc
    table = run.robustness
    if clean is None or table.empty:
        return None
    worst = table[(table["attack"] == attack) & (table["eps"] > 0)]
    hits = worst[worst["robust_acc"] < 0.5 * clean]
    return None if hits.empty else float(hits["eps"].min())


@dataclass(frozen=True)
class Focus:
    """What every section of one report quotes: the per-attack tables' attack, the headline eps,
    the swept params."""

    attack: str | None
    eps: float | None
    swept: list[str]

    @property
    def knobs(self) -> list[str]:
        """Swept params that are settings (a seed is noise, not a knob); the seed if alone."""
        return [p for p in self.swept if p != "seed"] or self.swept


def focus(runs: Sequence[RunData], heatmap_eps: float | None) -> Focus:
    """The :class:`Focus` of a report on ``runs``; ``heatmap_eps`` as in :func:`headline_eps`."""
    attack = quoted_attack(runs)
    eps = headline_eps(runs, heatmap_eps) if attack is not None else None
    return Focus(attack=attack, eps=eps, swept=swept_params(runs))


def best_epoch_gap(run: RunData) -> float | None:
    """Train minus validation accuracy at the best (restored) epoch, or None."""
    return run.history_at(naming.GEN_GAP, run.metric(naming.BEST_EPOCH))


def swept_values(column: pd.Series) -> list[str]:
    """The distinct values of a swept param's column, numbers by value, then the rest."""
    return sorted(column.dropna().unique(), key=setting_sort_key)


# -------------------------------------------------------------------------- training diagnostics
def has_robust_validation(run: RunData) -> bool:
    """Whether the run logged both FGSM and PGD validation accuracy per epoch (adversarial
    training with robust validation)."""
    hist = run.history
    columns = (naming.VAL_FGSM_ACC, naming.VAL_PGD_ACC)
    return all(c in hist and hist[c].notna().any() for c in columns)


def catastrophic_epochs(run: RunData) -> list[int]:
    """The epochs :func:`advlab.training.diagnostics.catastrophic_epochs` finds in the run's
    history (training's own rule, applied to the logged curves); [] without both curves."""
    if not has_robust_validation(run):
        return []
    # Imported here: the report needs training code only for runs that have these curves.
    from advlab.training.diagnostics import catastrophic_epochs as training_rule

    hist = run.history.sort_values("epoch", ignore_index=True)
    rows = [
        {k: float(v) for k, v in row.items() if k != "epoch" and pd.notna(v)}
        for row in hist.to_dict("records")
    ]
    # The rule counts list positions from 1; the history's epochs may not start at 1.
    return [int(hist["epoch"].iloc[i - 1]) for i in training_rule(rows) if 0 < i <= len(hist)]


# ------------------------------------------------------------------------------------ sanity checks
def sanity_counts(runs: Sequence[RunData]) -> list[tuple[str, dict[str, int]]]:
    """Each check (in first-seen order) with how many runs it passed, warned or failed."""
    checks = [c for r in runs for c in r.checks or []]
    out = []
    for name in dict.fromkeys(c["name"] for c in checks):
        counts = dict.fromkeys(STATUSES, 0)
        for check in checks:
            if check["name"] == name:
                counts[check["status"]] = counts.get(check["status"], 0) + 1
        out.append((name, counts))
    return out


def failed_checks(runs: Sequence[RunData]) -> list[tuple[RunData, dict[str, str]]]:
    """(run, check) for every check that did not pass."""
    return [(r, c) for r in runs for c in r.checks or [] if c["status"] != PASS]


def runs_with_warnings(runs: Sequence[RunData]) -> list[RunData]:
    """Runs with at least one check that did not pass."""
    return [r for r in runs if any(c["status"] != PASS for c in r.checks or [])]


# ------------------------------------------------------------------------------- comparisons
def compared_runs(runs: Sequence[RunData]) -> list[RunData]:
    """The runs comparisons are drawn over: all but those whose verdict is fail."""
    return [r for r in runs if not r.failed_verdict]


# ------------------------------------------------------------------------------- one run's details
def eps_union(runs: Sequence[RunData]) -> list[float]:
    """Every eps (1/255) any of ``runs`` was evaluated at, ascending."""
    return sorted({e for r in runs for e in r.eps_grid})


def grids_of(run: RunData, attack: str | None) -> list[tuple[str, bytes]]:
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
