"""The sections of a report on many runs (a sweep, or any runs chosen together).

:func:`build` shows overviews across runs (summary, setup, learning curves, robustness, the sweep's
heatmaps, sanity) and the per-run details for a few highlighted runs (:func:`data.highlights`).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from advlab.report import data, figures, single
from advlab.report.blocks import Story
from advlab.report.data import Focus, RunData
from advlab.report.summary import (
    MISSING,
    attack_label,
    fmt_eps,
    fmt_num,
    fmt_pct,
    sweep_sanity_sentences,
    sweep_sentences,
)

CURVES_PER_FIGURE = 8  # runs per learning-curve small-multiples figure (one page)
# Relative widths of the setup columns that hold long text; the others get 0.8.
_SETUP_WIDTHS = {
    "status": 1.6,
    "early stopping": 2.2,
    "augmentation": 1.4,
    "model": 1.2,
    "adv. training": 1.2,
}


def build(story: Story, runs: Sequence[RunData], focus: Focus) -> None:
    """Every section of a report on ``runs`` (two or more)."""
    summary(story, runs, focus)
    setup(story, runs)
    learning_curves(story, runs)
    robustness(story, runs, focus)
    sweep(story, runs, focus)
    sanity(story, runs)
    run_details(story, runs, focus)


def summary(story: Story, runs: Sequence[RunData], focus: Focus) -> None:
    story.h1("Summary")
    lines = sweep_sentences(
        data.overview_table(runs, focus),
        params=[p for p in focus.swept if p != "seed"][:3],  # seeds are noise, not a knob
        attack=focus.attack,
        eps=focus.eps,
    )
    for run in runs:
        if run.status != "FINISHED":
            reason = f": {run.error}" if run.error else ""
            lines.append(f"Run {run.name} ended {run.status}{reason}.")
        elif run.robustness.empty:
            lines.append(f"Run {run.name} has no attack results.")
    with_sanity = [r for r in runs if r.sanity]
    lines += sweep_sanity_sentences(len(with_sanity), len(data.runs_with_warnings(with_sanity)))
    story.bullets(lines or ["No numbers to summarise."])


def setup(story: Story, runs: Sequence[RunData]) -> None:
    """What all runs share is said once; the table shows only what differs between runs."""
    story.h1("Setup")
    facts = [data.setup_facts(run) for run in runs]
    shared, differ = data.shared_and_differing(facts)
    if shared:
        story.para("Shared by all runs:")
        story.table([[k, facts[0][k]] for k in shared], [0.28, 0.72], header=False)
    if differ:
        story.para("Differences between runs:")
        total = sum(_SETUP_WIDTHS.get(k, 0.8) for k in differ)
        widths = [0.26] + [0.74 * _SETUP_WIDTHS.get(k, 0.8) / total for k in differ]
        rows: list[list[object]] = [["run", *differ]]
        rows += [[run.name, *(f[k] for k in differ)] for run, f in zip(runs, facts, strict=True)]
        story.table(rows, widths)


def learning_curves(story: Story, runs: Sequence[RunData]) -> None:
    story.h1("Learning curves")
    for start in range(0, len(runs), CURVES_PER_FIGURE):
        chunk = runs[start : start + CURVES_PER_FIGURE]
        story.figure(figures.learning_curves_grid(chunk), single.CURVES_CAPTION)
    _name_runs(story, "No per-epoch metrics", [r for r in runs if r.history.empty])


def robustness(story: Story, runs: Sequence[RunData], focus: Focus) -> None:
    story.h1("Robustness")
    attacked = [r for r in runs if not r.robustness.empty]
    if not attacked:
        story.para("No attack was evaluated in any of these runs.", "note")
        return
    if len(attacked) == 1:
        single.robustness_of_one(story, attacked[0])
    else:
        _robustness_of_many(story, attacked, focus)
    _name_runs(story, "No attack results", [r for r in runs if r.robustness.empty])


def _name_runs(story: Story, what: str, runs: Sequence[RunData]) -> None:
    """A note naming ``runs`` (with their status) that lack ``what`` the section shows."""
    if runs:
        story.para(f"{what}: " + ", ".join(f"{r.name} ({r.status})" for r in runs) + ".", "note")


def _robustness_of_many(story: Story, runs: Sequence[RunData], focus: Focus) -> None:
    """Curves of every run (colour and line style by the first two knobs) and a pivot table."""
    hue = focus.knobs[0] if focus.knobs else None
    style = focus.knobs[1] if len(focus.knobs) > 1 else None
    bands = len(runs) <= 4
    extra = " Bands: 95% confidence intervals." if bands else ""
    if hue:
        extra += f" Colour: {hue}." + (f" Line style: {style}." if style else "")
    story.figure(
        figures.robustness_curves(runs, hue_param=hue, style_param=style, bands=bands),
        single.ROBUSTNESS_CAPTION + extra,
    )
    grid = data.eps_union(runs)
    rows: list[list[object]] = [["run", "attack", "clean acc", *(fmt_eps(e) for e in grid)]]
    for run in runs:
        for attack in run.attacks:
            cells = []
            for eps in grid:
                row = run.robust(attack, eps)
                cells.append(
                    MISSING
                    if row is None
                    else f"{fmt_pct(row['robust_acc'])} / {fmt_pct(row['asr'])}"
                )
            rows.append([run.name, attack_label(attack), fmt_pct(run.clean_acc), *cells])
    rest = 1.0 - 0.28 - 0.1 - 0.08
    story.table(rows, [0.28, 0.1, 0.08, *([rest / len(grid)] * len(grid))])
    story.para("Cells: robust accuracy / attack success rate at each eps (1/255).", "caption")


def sweep(story: Story, runs: Sequence[RunData], focus: Focus) -> None:
    """What the swept parameters did: heatmaps (two knobs) or bars (one), scatter, table."""
    story.h1("Sweep")
    if not focus.swept:
        story.para("The runs share every parameter: nothing was swept.", "note")
        return
    table = data.overview_table(runs, focus)
    story.para(
        "Swept parameters: "
        + ", ".join(
            f"{p} ({', '.join(fmt_num(v) for v in data.swept_values(table[p]))})"
            for p in focus.swept
        )
        + "."
    )
    finished = table[table["clean_acc"].notna()]
    if len(finished) < 2:
        story.para("Fewer than two runs have results: nothing to compare.", "note")
        return
    robust_title = _robust_title(focus)
    _sweep_figures(story, finished, focus, _panels(table, robust_title), robust_title)
    shown = focus.swept[:4]
    rows: list[list[object]] = [
        [
            "run",
            *shown,
            "clean acc",
            f"robust ({robust_title})" if robust_title else "robust",
            "train − val acc",
        ]
    ]
    for _, row in table.iterrows():
        rows.append(
            [
                row["name"],
                *(fmt_num(row[p]) for p in shown),
                fmt_pct(row["clean_acc"]),
                fmt_pct(row["robust"]),
                fmt_pct(row["gen_gap"]),
            ]
        )
    rest = 1 - 0.3 - 0.1 - 0.15 - 0.1
    story.table(rows, [0.3, *([rest / len(shown)] * len(shown)), 0.1, 0.15, 0.1])


def _robust_title(focus: Focus) -> str | None:
    """'PGD at 8/255': the robust accuracy the sweep section quotes; None without attacks."""
    return f"{attack_label(focus.attack)} at {fmt_eps(focus.eps)}" if focus.attack else None


def _panels(table: pd.DataFrame, robust_title: str | None) -> list[tuple[str, str]]:
    """(column of the overview table, title) of each heatmap or bar panel."""
    panels = [("clean_acc", "clean accuracy")]
    if robust_title:
        panels.append(("robust", f"robust accuracy, {robust_title}"))
    if table["gen_gap"].notna().any():
        panels.append(("gen_gap", "train − val accuracy (best epoch)"))
    return panels


def _sweep_figures(
    story: Story,
    finished: pd.DataFrame,
    focus: Focus,
    panels: list[tuple[str, str]],
    robust_title: str | None,
) -> None:
    """Heatmaps over the first two knobs (bars for one), then clean vs robust per run."""
    axes = focus.knobs[:2]
    if len(axes) == 2:
        y, x = axes
        averaged = focus.swept[2:]
        story.figure(
            figures.sweep_heatmaps(finished, x=x, y=y, panels=panels),
            f"Mean over the runs with each pair of values of {y} (rows) and {x} (columns)"
            + (f", averaged over {', '.join(averaged)}" if averaged else "")
            + ".",
        )
    else:
        story.figure(
            figures.sweep_bars(finished, x=axes[0], panels=panels),
            f"Mean per value of {axes[0]}.",
        )
    if robust_title:
        story.figure(
            figures.clean_vs_robust(
                finished,
                hue=axes[0],
                style=axes[1] if len(axes) > 1 else None,
                robust_label=f"robust accuracy ({robust_title})",
            ),
            "One point per run: up and to the right is both accurate and robust.",
            width=0.8,
        )


def sanity(story: Story, runs: Sequence[RunData]) -> None:
    """How many runs passed each check; every check that did not pass, with its evidence."""
    story.h1("Sanity checks")
    if not any(r.sanity for r in runs):
        story.para("No sanity-check results (results/sanity.json) were logged.", "note")
        return
    rows: list[list[object]] = [["check", "pass", "warn", "fail"]]
    rows += [[name, c["pass"], c["warn"], c["fail"]] for name, c in data.sanity_counts(runs)]
    story.table(rows, [0.55, 0.15, 0.15, 0.15])
    bad = data.failed_checks(runs)
    if bad:
        story.h2("Checks that did not pass")
        rows = [["run", "check", "status", "evidence"]]
        rows += [[r.name, c["name"], c["status"], c["evidence"]] for r, c in bad]
        story.table(rows, [0.22, 0.2, 0.08, 0.5])
    missing = [r.name for r in runs if not r.sanity]
    if missing:
        story.para("No sanity results: " + ", ".join(missing) + ".", "note")


def run_details(story: Story, runs: Sequence[RunData], focus: Focus) -> None:
    """Grids (the headline attack's), per-class robustness and confusion of the highlights."""
    picks = data.highlights(runs, focus)
    if not picks:
        return
    story.h1("Run details")
    if len(picks) < len(runs):
        story.para(
            f"Shown for {len(picks)} of {len(runs)} runs: the highest clean "
            "accuracy, the most and the least robust. Every run's grids and tables "
            "are artifacts of its MLflow run.",
            "caption",
        )
    for run in picks:
        prefix = f"{run.name}: "
        single.grids(story, data.headline_grids(run, focus.attack), story.h2, prefix)
        single.per_class(story, run, story.h2, prefix)
        single.confusion(story, run, focus, story.h2, prefix)
