"""The report's written summary: sentences generated from the tracked numbers.

Numbers are written by :mod:`advlab.report.format` (``fmt_pct`` and friends, re-exported here for
callers that imported them from this module); nothing is recomputed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from advlab import naming
from advlab.report.data import Headline, RunData
from advlab.report.format import (  # noqa: F401  (fmt_pct, fmt_spread: re-exported)
    MISSING,
    attack_label,
    attack_list,
    fmt_eps,
    fmt_int,
    fmt_num,
    fmt_pct,
    fmt_pp,
    fmt_spread,
    over_seeds,
    setting_sort_key,
)
from advlab.report.seeds import within_spread
from advlab.verdict import PASS


# ------------------------------------------------------------------------------------ headline
def headline_sentence(head: Headline) -> str:
    """The first page's sentence: clean accuracy with its n, the worst case at the headline eps
    with its n, and the eps where accuracy halves (:class:`~advlab.report.data.Headline`)."""
    if head.clean_acc is None:
        return "The run logged no clean test accuracy: there is no headline."
    clean_n = f" of {fmt_int(head.clean_n)} test images" if head.clean_n is not None else ""
    text = f"The model classifies {fmt_pct(head.clean_acc)}{clean_n} correctly"
    if head.worst is None or head.eps is None:
        return text + "; no attack was evaluated."
    robust_n = f" of {fmt_int(head.robust_n)} attacked images" if head.robust_n is not None else ""
    if len(head.attacks) == 1:
        over = attack_label(head.attacks[0])
    else:
        over = f"the worst case of {attack_list(head.attacks)}" if head.attacks else "attack"
    text += f"; under {over} at eps {fmt_eps(head.eps)} it keeps {fmt_pct(head.worst)}{robust_n}"
    if head.halving_eps is not None:
        return text + f", and its accuracy halves at eps {fmt_eps(head.halving_eps)}."
    if head.largest_eps:
        return text + f", and its accuracy stays above half up to eps {fmt_eps(head.largest_eps)}."
    return text + "."


def bracket_sentence(run: RunData, eps: float | None) -> str | None:
    """The robustness bracket at ``eps``: certified (a proof: at least) and the worst case (the
    attacks: at most), and how wide it is; None when the run certified nothing there."""
    certified = run.certified
    if eps is None or eps <= 0 or eps not in certified:
        return None
    row = run.robust(naming.WORST_CASE, eps)
    if row is None or row["robust_acc"] is None:
        return None
    low, high = certified[eps], float(row["robust_acc"])
    method = str(run.setting("eval.certify") or "bounds").upper()
    return (
        f"The bracket at eps {fmt_eps(eps)}: at least {fmt_pct(low)} of the attacked images are "
        f"certified robust ({method}: no input of the eps-ball changes the answer), at most "
        f"{fmt_pct(high)} survive the attacks; the true robust accuracy lies between, a bracket "
        f"{100 * (high - low):.1f} points wide."
    )


# ------------------------------------------------------------------------------ written summary
def run_sentences(
    *,
    name: str,
    clean_acc: float | None,
    robustness: pd.DataFrame,
    eps: float | None,
    best_epoch: float | None,
    stopped_epoch: float | None,
    max_epochs: int | None,
    gen_gap: float | None,
    last_gap: float | None = None,
    sanity: Sequence[dict] | None,
    status: str,
    error: str | None,
) -> list[str]:
    """Sentences that tell one run's story from its tracked numbers.

    ``robustness`` has columns attack, eps (1/255), robust_acc, asr (fractions); ``eps`` is the
    budget the sentences quote (the largest evaluated when None); ``gen_gap`` is train acc - val
    acc at the best epoch and ``last_gap`` at the last epoch run (fractions).
    """
    out: list[str] = []
    if status == "FAILED":
        reason = f": {error}" if error else ""
        out.append(f"Run {name} failed{reason}.")
    if clean_acc is None:
        out.append(f"Run {name} has no clean test accuracy in MLflow.")
        return out
    out += _robustness_sentences(name, clean_acc, robustness, eps)
    out += _epoch_sentences(best_epoch, stopped_epoch, max_epochs)
    out += _gap_sentences(gen_gap, last_gap)
    out += _sanity_sentences(sanity)
    return out


def _robustness_sentences(
    name: str, clean_acc: float, robustness: pd.DataFrame, eps: float | None
) -> list[str]:
    if robustness.empty:
        return [
            f"{name}: clean test accuracy {fmt_pct(clean_acc)}; no attack was evaluated, "
            "so there is no robustness number."
        ]
    out = []
    quoted = _quoted_eps(robustness, eps)
    for attack in _attack_order(robustness["attack"].unique()):
        if attack == naming.WORST_CASE:
            continue
        row = _row(robustness, attack, quoted)
        if row is None:
            continue
        out.append(
            f"{attack_label(attack)} at {fmt_eps(quoted)} lowers accuracy from "
            f"{fmt_pct(clean_acc)} to {fmt_pct(row['robust_acc'])} "
            f"(attack success rate {fmt_pct(row['asr'])})."
        )
    halving = _halving_eps(robustness, clean_acc)
    if halving is not None:
        attack, at = halving
        out.append(
            f"Accuracy falls below half of the clean accuracy already at {fmt_eps(at)} "
            f"under {attack_label(attack)}."
        )
    return out


def _epoch_sentences(
    best_epoch: float | None, stopped_epoch: float | None, max_epochs: int | None
) -> list[str]:
    if best_epoch is None or stopped_epoch is None:
        return []
    if max_epochs is not None and stopped_epoch < max_epochs:
        return [
            f"Early stopping ended training at epoch {int(stopped_epoch)} of {max_epochs}; "
            f"the weights are those of epoch {int(best_epoch)}."
        ]
    return [
        f"Training ran all {int(stopped_epoch)} epochs; "
        f"the weights are those of epoch {int(best_epoch)}."
    ]


def _gap_sentences(gen_gap: float | None, last_gap: float | None) -> list[str]:
    if gen_gap is None or math.isnan(gen_gap):
        return []
    # 5 points: a gap a student would call overfitting on these small tasks.
    if gen_gap >= 0:
        verdict = "a sign of overfitting" if gen_gap > 0.05 else "little overfitting"
        text = f"training accuracy exceeds validation accuracy by {fmt_pp(gen_gap)}"
    else:
        verdict = "no sign of overfitting"
        text = f"validation accuracy exceeds training accuracy by {fmt_pp(-gen_gap)}"
    sentence = f"At that epoch {text} ({verdict})"
    if last_gap is not None and not math.isnan(last_gap) and last_gap - gen_gap > 0.02:
        sentence += f"; by the last epoch run the gap had grown to {fmt_pp(last_gap)}"
    return [sentence + "."]


def _sanity_sentences(sanity: Sequence[dict] | None) -> list[str]:
    if not sanity:
        return []
    warns = [c for c in sanity if str(c.get("status")) != PASS]
    if not warns:
        return [f"All {len(sanity)} sanity checks passed."]
    names = ", ".join(f"{c.get('name')} ({c.get('status')})" for c in warns)
    return [f"{len(warns)} of {len(sanity)} sanity checks did not pass: {names}."]


def sweep_sanity_sentences(with_sanity: int, with_warnings: int) -> list[str]:
    """What the sanity checks of many runs say: ``with_sanity`` runs report them, of which
    ``with_warnings`` have a check that did not pass."""
    if not with_sanity:
        return []
    if not with_warnings:
        return [f"All sanity checks passed on all {with_sanity} runs that report them."]
    return [
        f"Sanity checks raised warnings on {with_warnings} of {with_sanity} runs "
        "(see the sanity section)."
    ]


def sweep_sentences(
    table: pd.DataFrame, *, params: Sequence[str], attack: str | None, eps: float | None
) -> list[str]:
    """Sentences comparing settings: the best ones and the effect of each swept parameter.

    ``table`` has one row per setting (a seed group; a run when each setting ran once) with
    columns name, n_seeds, clean_acc, robust (robust accuracy of ``attack`` at ``eps``), their
    means over seeds, ``clean_acc_std``/``robust_std`` (NaN for one seed) and one column per swept
    parameter (MLflow param strings).
    """
    done = table.dropna(subset=[naming.CLEAN_ACC])
    if done.empty:
        return ["No run has a clean test accuracy in MLflow."]
    out: list[str] = []
    seeds = over_seeds(list(done["n_seeds"])) if (done["n_seeds"] > 1).any() else None
    if seeds:
        out.append(f"Numbers are mean ± std {seeds} (runs that differ only in seed pooled).")
    label = f"{attack_label(attack)} robust accuracy at {fmt_eps(eps)}" if attack else None
    if seeds and len(done) == 1:  # one setting over several seeds: nothing to rank
        only = done.iloc[0]
        text = f"{only['name']}: clean accuracy "
        text += fmt_spread(only[naming.CLEAN_ACC], only["clean_acc_std"])
        if label and eps is not None and not pd.isna(only["robust"]):
            text += f", {label} {fmt_spread(only['robust'], only['robust_std'])}"
        return [*out, text + "."]
    best_clean = done.loc[done[naming.CLEAN_ACC].idxmax()]
    out.append(
        f"Highest clean accuracy: {best_clean['name']} with "
        f"{fmt_spread(best_clean[naming.CLEAN_ACC], best_clean['clean_acc_std'])}."
    )
    if label is None or eps is None or done["robust"].isna().all():
        return out
    robust = done.dropna(subset=["robust"])
    best = robust.loc[robust["robust"].idxmax()]
    worst = robust.loc[robust["robust"].idxmin()]
    out.append(
        f"Highest {label}: {best['name']} with {fmt_spread(best['robust'], best['robust_std'])} "
        f"(clean {fmt_spread(best[naming.CLEAN_ACC], best['clean_acc_std'])}); lowest: "
        f"{worst['name']} with {fmt_spread(worst['robust'], worst['robust_std'])}."
    )
    for param in params:
        if param in robust:
            out += _effect_sentence(robust, param, label, seeds)
    return out


def _effect_sentence(robust: pd.DataFrame, param: str, label: str, seeds: str | None) -> list[str]:
    """What changing ``param`` from its lowest to its highest value did to the mean ``robust``
    (over the settings with each value); with seeds, whether that is within the seed spread."""
    means = robust.groupby(param, sort=False).agg(
        mean=("robust", "mean"),
        count=("robust", "count"),
        # The seed spread of a value: the root mean square of its settings' stds.
        spread=("robust_std", lambda s: math.sqrt((s**2).mean())),
    )
    if len(means) < 2:
        return []
    means = means.loc[sorted(means.index, key=setting_sort_key)]
    low, high = means.iloc[0], means.iloc[-1]
    change = "raised" if high["mean"] > low["mean"] else "lowered"
    if high["mean"] == low["mean"]:
        change = "left unchanged"
    counts = sorted({int(c) for c in means["count"]})
    what = ("setting" if counts == [1] else "settings") if seeds else "runs"
    per = f"mean of {counts[0]} {what} each" if len(counts) == 1 else f"means over {what}"
    if seeds:
        per += f", {seeds}"
        within = within_spread(low["mean"], low["spread"], high["mean"], high["spread"])
        if within is not None:
            per += "; within the seed spread" if within else "; more than the seed spread"
    return [
        f"{param} = {fmt_num(means.index[-1])} instead of {fmt_num(means.index[0])} {change} the "
        f"{label} from {fmt_pct(low['mean'])} to {fmt_pct(high['mean'])} ({per})."
    ]


def _attack_order(attacks: Sequence[str]) -> list[str]:
    return sorted(attacks, key=lambda a: (a == naming.WORST_CASE, a))


def _quoted_eps(robustness: pd.DataFrame, eps: float | None) -> float:
    available = sorted(float(e) for e in robustness["eps"].unique())
    if eps is not None and float(eps) in available:
        return float(eps)
    return available[-1]


def _row(robustness: pd.DataFrame, attack: str, eps: float) -> pd.Series | None:
    rows = robustness[(robustness["attack"] == attack) & (robustness["eps"] == eps)]
    return None if rows.empty else rows.iloc[0]


def _halving_eps(robustness: pd.DataFrame, clean_acc: float) -> tuple[str, float] | None:
    """Smallest eps > 0 at which some attack brings accuracy below half the clean accuracy."""
    attacks = robustness[robustness["attack"] != naming.WORST_CASE]
    hits = attacks[(attacks["eps"] > 0) & (attacks["robust_acc"] < 0.5 * clean_acc)]
    if hits.empty:
        return None
    row = hits.sort_values(["eps", "robust_acc"]).iloc[0]
    return str(row["attack"]), float(row["eps"])
