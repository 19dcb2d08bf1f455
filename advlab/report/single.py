"""The sections of a one-run report, and the per-run blocks a many-run report reuses.

:func:`build` tells one run's story: summary, setup, learning curves, robustness, sanity checks,
the cross-library audit (when ``python -m advlab.audit`` ran on it), then its details
(adversarial-example grids, per-class robustness, confusion matrices).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from advlab import naming
from advlab.report import audit, data, detail_figures, facts, figures
from advlab.report.blocks import WARN, Story
from advlab.report.data import Focus, RunData
from advlab.report.format import MISSING, attack_label, fmt_eps, fmt_int, fmt_pct
from advlab.report.seeds import SeedGroup
from advlab.report.summary import run_sentences
from advlab.verdict import PASS

CURVES_CAPTION = (
    "Solid: training, dashed: validation. Dotted line: the best epoch (its weights "
    "are the model's); grey band: epochs run after it until training stopped. "
    "Validation loss rising while training loss falls is overfitting."
)
ROBUSTNESS_CAPTION = (
    "Accuracy on the attacked test subset vs perturbation budget eps (L-inf, in "
    "1/255). At eps 0 it is the clean accuracy."
)


def build(story: Story, run: RunData, focus: Focus) -> None:
    """Every section of a report on ``run`` alone."""
    story.h1("Summary")
    story.bullets(run_story(run, focus) or ["No numbers to summarise."])
    story.h1("Setup")
    story.table([[k, v] for k, v in facts.setup_facts(run).items()], [0.28, 0.72], header=False)
    story.h1("Learning curves")
    if run.history.empty:
        story.para(f"No per-epoch metrics were logged (run {run.status}).", "note")
    else:
        story.figure(figures.learning_curves(run), curves_caption([run]))
    story.h1("Robustness")
    if run.robustness.empty:
        story.para("No attack was evaluated in this run.", "note")
    else:
        robustness_of_one(story, run)
    story.h1("Sanity checks")
    if run.checks:
        sanity_table(story, run)
    else:
        story.para(f"No check results ({naming.CHECKS_JSON}) were logged.", "note")
    if run.audit:  # results/audit.json, written by python -m advlab.audit
        audit.section(story, run.audit)
    if run.grids:
        grids(story, run.grids, story.h1)
    else:
        story.h1("Adversarial examples")
        story.para("No adversarial-example grids were logged.", "note")
    per_class(story, run, story.h1)
    confusion(story, run, focus, story.h1)


def run_story(run: RunData, focus: Focus) -> list[str]:
    """The written summary of one run, quoting ``focus.eps``."""
    best = run.metric(naming.BEST_EPOCH)
    return run_sentences(
        name=run.name,
        clean_acc=run.clean_acc,
        robustness=run.robustness,
        eps=focus.eps,
        best_epoch=best,
        stopped_epoch=run.metric(naming.STOPPED_EPOCH),
        max_epochs=run.setting("train.epochs"),
        gen_gap=data.best_epoch_gap(run),
        last_gap=run.history_at(naming.GEN_GAP, run.metric(naming.STOPPED_EPOCH)),
        sanity=run.checks,
        status=run.status,
        error=run.error,
    )


def robustness_of_one(story: Story, run: RunData) -> None:
    """Accuracy-vs-eps curves with confidence bands and the table of one attacked run."""
    story.figure(
        figures.robustness_curves(
            [SeedGroup(run.name, [run])], bands=True, constant=run.constant_acc
        ),
        ROBUSTNESS_CAPTION
        + " Band: 95% confidence interval."
        + figures.constant_caption(run.constant_acc),
    )
    rows: list[list[object]] = [
        ["attack", "eps", "clean acc", "robust acc", "95% CI", "attack success rate", "n"]
    ]
    for attack in run.attacks:
        for eps in run.eps_grid:
            row = run.robust(attack, eps)
            if row is None:
                continue
            ci = (
                MISSING
                if pd.isna(row["ci_low"])
                else f"{fmt_pct(row['ci_low'])} – {fmt_pct(row['ci_high'])}"
            )
            rows.append(
                [
                    attack_label(attack),
                    fmt_eps(eps),
                    fmt_pct(run.clean_acc),
                    fmt_pct(row["robust_acc"]),
                    ci,
                    fmt_pct(row["asr"]),
                    fmt_int(row["n"]),
                ]
            )
    story.table(rows, [0.13, 0.09, 0.12, 0.13, 0.22, 0.2, 0.11])
    story.para(
        "Robust accuracy is over all evaluated points; the attack success rate is over "
        "the points classified correctly before the attack. Worst case: per example, "
        "the strongest of the attacks run.",
        "caption",
    )


def sanity_table(story: Story, run: RunData) -> None:
    """Every check of one run with its evidence; those that did not pass highlighted. The checks
    of the verdict file (training checks first) when the run has one, else of the checks file."""
    rows: list[list[object]] = [["check", "status", "evidence"]]
    highlight = {}
    for i, check in enumerate(run.checks or [], 1):
        rows.append([check["name"], check["status"], check["evidence"]])
        if check["status"] != PASS:
            highlight[i] = WARN
    story.table(rows, [0.25, 0.08, 0.67], highlight=highlight)
    source = (
        f"The checks the run's verdict rests on ({naming.VERDICT_JSON}): training checks, then "
        "the evaluation's sanity checks."
        if (run.verdict_file or {}).get("checks")
        else f"The evaluation's sanity checks ({naming.CHECKS_JSON})."
    )
    story.para(source, "caption")


def curves_caption(runs: Sequence[RunData]) -> str:
    """:data:`CURVES_CAPTION`, plus what the robust validation curves and the catastrophic-
    overfitting marks mean when any of ``runs`` has both FGSM and PGD validation accuracy."""
    robust = [r for r in runs if data.has_robust_validation(r)]
    if not robust:
        return CURVES_CAPTION
    marked = sum(len(data.catastrophic_epochs(r)) for r in robust)
    found = (
        f"{marked} such epoch(s) marked."
        if marked
        else "No epoch shows it in these runs, so none is marked."
    )
    return (
        f"{CURVES_CAPTION} Accuracy panel: clean, FGSM and PGD validation accuracy (the attacks "
        'on a fixed validation subset, train.adversarial.val_robust). A black × with "catastrophic '
        "overfitting\" marks an epoch where PGD validation accuracy collapsed while FGSM's rose: "
        f"the model learnt to defeat the single-step attack only. {found}"
    )


# ------------------------------------------------------------------- one run's details (any level)
Heading = Callable[[str], None]  # Story.h1 for a one-run report, Story.h2 under "Run details"


def grids(story: Story, pngs: list[tuple[str, bytes]], head: Heading, prefix: str = "") -> None:
    """The adversarial-example grids ``pngs`` ((artifact path, PNG bytes)) under one heading."""
    if not pngs:
        return
    head(f"{prefix}Adversarial examples")
    for path, png in pngs:
        story.png(
            png,
            f"{Path(path).stem}: clean image, perturbation (amplified, scale "
            "in the grid) and adversarial image, with true/predicted labels "
            "and confidences, as logged by the run.",
        )


def per_class(story: Story, run: RunData, head: Heading, prefix: str = "") -> None:
    """Robust accuracy per true class and eps, when the run logged it for few enough classes."""
    if run.per_class is None or run.per_class.empty:
        return
    n_classes = run.per_class["class"].nunique()
    if n_classes > 30:
        story.para(f"{n_classes} classes: too many for a readable per-class figure.", "note")
        return
    head(f"{prefix}Per-class robustness")
    story.figure(
        detail_figures.per_class_heatmap(run.per_class, run.attacks),
        "Robust accuracy per true class and eps (1/255); eps 0 = clean.",
    )


def confusion(story: Story, run: RunData, focus: Focus, head: Heading, prefix: str = "") -> None:
    """Clean and adversarial confusion matrices (which adversarial: ``data.confusion_key``)."""
    if not run.confusion or "clean" not in run.confusion:
        return
    key = data.confusion_key(run, focus)
    matrix = run.confusion["clean"]
    n = len(matrix)
    if key is None or n > 20:
        return
    name, attack, eps = key
    head(f"{prefix}Confusion matrices")
    story.figure(
        detail_figures.confusion_pair(
            matrix,
            run.confusion[name],
            class_names=data.class_names(run, n),
            adv_title=detail_figures.eps_title(attack, eps),
        ),
        "Counts of test examples; rows: true class, columns: predicted class.",
    )
