"""The sections of a report on many runs (a sweep, or any runs chosen together).

:func:`build` shows overviews across settings first (summary, setup, learning curves, robustness,
the sweep's heatmaps, sanity), then per-run details for the runs ``report.per_run`` picks
(:func:`seeds.detail_runs`). Runs that differ only in their seed are pooled into one setting
(:mod:`~advlab.report.seeds`) and quoted as mean ± std over its seeds; when every setting ran once
the report reads as one about single runs. Runs whose verdict is fail are listed (marked) but left
out of every comparison: heatmaps, bars, scatter, best settings, seed-group means, the robustness
curves and the best/worst picks; the summary and the sweep section say which and why.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from advlab import naming
from advlab.config import PerRun
from advlab.report import data, facts, figures, seeds, single, sweep_figures
from advlab.report.blocks import FAILED_VERDICT, Story
from advlab.report.data import Focus, RunData
from advlab.report.format import MISSING, attack_label, fmt_eps, fmt_num, fmt_spread, over_seeds
from advlab.report.seeds import SeedGroup, within_spread
from advlab.report.summary import sweep_sanity_sentences, sweep_sentences
from advlab.verdict import STATUSES

CURVES_PER_FIGURE = 8  # settings per learning-curve small-multiples figure (one page)
BAND_LINES = 4  # robustness figures draw uncertainty bands up to this many lines (readability)
SEED_BAND_LINES = 6  # ... and up to this many when the bands are the seed spread
# Relative widths of the setup columns that hold long text; the others get 0.8.
_SETUP_WIDTHS = {
    "status": 1.6,
    "early stopping": 2.2,
    "augmentation": 1.4,
    "model": 1.2,
    "adv. training": 1.2,
}
SEED_SPREAD_RULE = "|difference| ≤ √(std₁² + std₂²)"  # summary.within_spread, in words


def build(
    story: Story, runs: Sequence[RunData], focus: Focus, per_run: PerRun = PerRun.best_worst
) -> None:
    """Every section of a report on ``runs`` (two or more)."""
    groups = seeds.group_runs(runs, focus)
    summary(story, runs, groups, focus)
    setup(story, runs)
    learning_curves(story, runs, groups)
    robustness(story, runs, groups, focus)
    sweep(story, runs, groups, focus)
    sanity(story, runs)
    run_details(story, runs, groups, focus, per_run)


def _knobs(groups: Sequence[SeedGroup], focus: Focus) -> list[str]:
    """The swept settings the comparisons are drawn over: never the seed once seeds are pooled."""
    if seeds.pooled(groups):
        return [p for p in focus.swept if p != "seed"]
    return focus.knobs


def _over(groups: Sequence[SeedGroup]) -> str:
    return over_seeds(seeds.seed_counts(groups))


def summary(
    story: Story, runs: Sequence[RunData], groups: Sequence[SeedGroup], focus: Focus
) -> None:
    story.h1("Summary")
    left_out = facts.left_out_sentence(runs)
    lines = [left_out] if left_out else []
    kept = seeds.compared(groups)
    if kept:
        lines += sweep_sentences(
            seeds.group_table(kept, focus),
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
    with_sanity = [r for r in runs if r.checks]
    lines += sweep_sanity_sentences(len(with_sanity), len(data.runs_with_warnings(with_sanity)))
    story.bullets(lines or ["No numbers to summarise."])


def setup(story: Story, runs: Sequence[RunData]) -> None:
    """What all runs share is said once; the table shows only what differs between runs."""
    story.h1("Setup")
    per_run = [facts.setup_facts(run) for run in runs]
    shared, differ = facts.shared_and_differing(per_run)
    if shared:
        story.para("Shared by all runs:")
        story.table([[k, per_run[0][k]] for k in shared], [0.28, 0.72], header=False)
    if differ:
        story.para("Differences between runs:")
        total = sum(_SETUP_WIDTHS.get(k, 0.8) for k in differ)
        widths = [0.26] + [0.74 * _SETUP_WIDTHS.get(k, 0.8) / total for k in differ]
        rows: list[list[object]] = [["run", *differ]]
        rows += [[run.name, *(f[k] for k in differ)] for run, f in zip(runs, per_run, strict=True)]
        story.table(rows, widths)


def learning_curves(story: Story, runs: Sequence[RunData], groups: Sequence[SeedGroup]) -> None:
    story.h1("Learning curves")
    caption = single.curves_caption(runs)
    if any(g.failed for g in groups):
        caption += f" Titles marked {seeds.FAIL_MARK.strip()}: shown, not compared."
    if seeds.pooled(groups):
        caption += (
            " A setting with several seeds: the mean per epoch, its band ± one std over the "
            "seeds (training-seed spread), a dotted line at each seed's best epoch."
        )
    for start in range(0, len(groups), CURVES_PER_FIGURE):
        chunk = groups[start : start + CURVES_PER_FIGURE]
        story.figure(figures.learning_curves_grid(chunk), caption)
    _name_runs(story, "No per-epoch metrics", [r for r in runs if r.history.empty])


def robustness(
    story: Story, runs: Sequence[RunData], groups: Sequence[SeedGroup], focus: Focus
) -> None:
    story.h1("Robustness")
    attacked = [g for g in groups if not g.robustness.empty]
    if not attacked:
        story.para("No attack was evaluated in any of these runs.", "note")
        return
    if len(attacked) == 1 and attacked[0].n_seeds == 1:
        single.robustness_of_one(story, attacked[0].runs[0])
    else:
        _robustness_of_many(story, attacked, focus)
    _name_runs(story, "No attack results", [r for r in runs if r.robustness.empty])


def _name_runs(story: Story, what: str, runs: Sequence[RunData]) -> None:
    """A note naming ``runs`` (with their status) that lack ``what`` the section shows."""
    if runs:
        story.para(f"{what}: " + ", ".join(f"{r.name} ({r.status})" for r in runs) + ".", "note")


def _robustness_of_many(story: Story, groups: Sequence[SeedGroup], focus: Focus) -> None:
    """Curves of every setting but verdict-fail runs (colour and line style by the first two
    knobs) and a table of every setting, verdict-fail runs marked."""
    drawn = seeds.compared(groups)
    if drawn:
        _robustness_figure(story, drawn, focus, left_out=len(groups) - len(drawn))
    else:
        story.para(
            "Every attacked run's verdict is fail: no curves are compared; the table lists them.",
            "note",
        )
    _robustness_table(story, groups, seeds.pooled(groups))


def _robustness_figure(
    story: Story, groups: Sequence[SeedGroup], focus: Focus, *, left_out: int
) -> None:
    knobs = _knobs(groups, focus)
    hue = knobs[0] if knobs else None
    style = knobs[1] if len(knobs) > 1 else None
    pooled = seeds.pooled(groups)
    bands = len(groups) <= (SEED_BAND_LINES if pooled else BAND_LINES)
    if not pooled:
        extra = " Bands: 95% confidence intervals." if bands else ""
    elif bands:
        extra = (
            f" Lines: mean {_over(groups)}; bands: ± one std over the seeds (training-seed "
            "spread); error bars: one run's 95% Wilson interval (test-sampling error), "
            "averaged over the seeds."
        )
    else:
        extra = f" Lines: mean {_over(groups)}; the seed spread is in the table below."
    if hue:
        extra += f" Colour: {hue}." + (f" Line style: {style}." if style else "")
    if left_out:
        extra += f" Not drawn: {left_out} run(s) whose verdict is fail (in the table, marked)."
    constant = data.constant_acc([r for g in groups for r in g.runs])
    extra += figures.constant_caption(constant)
    story.figure(
        figures.robustness_curves(
            groups, hue_param=hue, style_param=style, bands=bands, constant=constant
        ),
        single.ROBUSTNESS_CAPTION + extra,
    )


def _robustness_table(story: Story, groups: Sequence[SeedGroup], pooled: bool) -> None:
    """Robust accuracy / attack success rate per setting, attack and eps (mean ± std if pooled)."""
    grid = data.eps_union([r for g in groups for r in g.runs])
    head = ["setting", "seeds"] if pooled else ["run"]
    rows: list[list[object]] = [[*head, "attack", "clean acc", *(fmt_eps(e) for e in grid)]]
    highlight = {}
    for group in groups:
        clean = group.spread(lambda r: r.clean_acc)
        first = [group.name, group.n_seeds] if pooled else [group.name]
        for attack in group.attacks:
            cells = []
            for eps in grid:
                row = group.robust(attack, eps)
                cells.append(
                    MISSING
                    if row is None
                    else f"{fmt_spread(row['robust_acc'], row['robust_std'])} / "
                    f"{fmt_spread(row['asr'], row['asr_std'])}"
                )
            rows.append(
                [*first, attack_label(attack), fmt_spread(clean["mean"], clean["std"]), *cells]
            )
            if group.failed:
                highlight[len(rows) - 1] = FAILED_VERDICT
    lead = [0.2, 0.075, 0.085, 0.12] if pooled else [0.28, 0.1, 0.08]
    rest = 1.0 - sum(lead)
    story.table(rows, [*lead, *([rest / len(grid)] * len(grid))], highlight=highlight)
    caption = "Cells: robust accuracy / attack success rate at each eps (1/255)."
    if pooled:
        caption = (
            f"Cells: robust accuracy / attack success rate at each eps (1/255), mean ± std "
            f"{_over(groups)} (the training-seed spread). {_wilson_sentence(groups)}"
        )
    story.para(caption, "caption")


def _wilson_sentence(groups: Sequence[SeedGroup]) -> str:
    """How wide one run's 95% Wilson interval (test-sampling error) is in these runs."""
    frames = [r.robustness for g in groups for r in g.runs if not r.robustness.empty]
    table = pd.concat(frames, ignore_index=True)
    half = ((table["ci_high"] - table["ci_low"]) / 2).dropna()
    if half.empty:
        return ""
    n = sorted({int(v) for v in table["n"].dropna()})
    points = f"{100 * half.min():.1f}–{100 * half.max():.1f}"
    on = f" on n = {', '.join(map(str, n))} points" if n else ""
    return (
        f"The test-sampling error of one run (its 95% Wilson interval{on}) is ± {points} "
        "points: a difference within both is noise."
    )


def sweep(story: Story, runs: Sequence[RunData], groups: Sequence[SeedGroup], focus: Focus) -> None:
    """What the swept parameters did: heatmaps (two knobs) or bars (one), scatter, table."""
    story.h1("Sweep")
    if not focus.swept:
        story.para("The runs share every parameter: nothing was swept.", "note")
        return
    every_run = seeds.run_table(runs, focus)
    story.para(
        "Swept parameters: "
        + ", ".join(
            f"{p} ({', '.join(fmt_num(v) for v in data.swept_values(every_run[p]))})"
            for p in focus.swept
        )
        + "."
    )
    left_out = facts.left_out_sentence(runs)
    if left_out:
        story.para(left_out, "note")
    table = seeds.group_table(groups, focus)  # every setting: the table lists them all
    compared = seeds.group_table(seeds.compared(groups), focus)
    finished = compared[compared[naming.CLEAN_ACC].notna()]
    run_rows = seeds.run_table(data.compared_runs(runs), focus)
    knobs = _knobs(groups, focus)
    robust_title = _robust_title(focus)
    panels = _panels(table, robust_title)
    if knobs and len(finished) >= 2:
        _sweep_figures(story, finished, run_rows, knobs, focus, panels, robust_title)
    elif not knobs and run_rows[naming.CLEAN_ACC].notna().sum() >= 2:
        story.figure(  # only the seed varies: the seeds side by side
            sweep_figures.sweep_bars(
                run_rows[run_rows[naming.CLEAN_ACC].notna()], x="seed", panels=panels
            ),
            "One bar per seed: the spread a single run's numbers carry.",
        )
    elif not seeds.pooled(groups):
        without = " once verdict-fail runs are left out" if left_out else ""
        story.para(f"Fewer than two runs have results{without}: nothing to compare.", "note")
        return
    # Pooled settings are named by their swept values; runs by name, so their values get columns.
    shown = [] if seeds.pooled(groups) else [p for p in focus.swept if p in table][:4]
    _sweep_table(story, table, groups, shown, robust_title)


def _sweep_table(
    story: Story,
    table: pd.DataFrame,
    groups: Sequence[SeedGroup],
    shown: list[str],
    robust_title: str | None,
) -> None:
    """One row per setting: the swept values, clean and robust accuracy, the train − val gap;
    with seeds, mean ± std and whether the robust accuracy is within the best one's seed spread."""
    pooled = seeds.pooled(groups)
    robust_head = f"robust ({robust_title})" if robust_title else "robust"
    if pooled:
        head = ["setting", "seeds", "clean acc", robust_head, "train − val acc"]
        rows: list[list[object]] = [[*head, "≈ most robust"]]
        fixed = [0.075, 0.14, 0.16, 0.14, 0.1]
        lead = 0.385
    else:
        rows = [["run", *shown, "clean acc", robust_head, "train − val acc"]]
        fixed, lead = [0.1, 0.15, 0.1], 0.3
    best = _most_robust(table[~table["left_out"].astype(bool)])
    highlight = {}
    for _, row in table.iterrows():
        cells: list[object] = [row["name"], *(fmt_num(row[p]) for p in shown)]
        if pooled:
            cells.append(row["n_seeds"])
        cells += [
            fmt_spread(row[c], row[f"{c}_std"])
            for c in (naming.CLEAN_ACC, "robust", naming.GEN_GAP)
        ]
        if pooled:
            cells.append("left out" if row["left_out"] else _near_best(row, best))
        rows.append(cells)
        if row["left_out"]:
            highlight[len(rows) - 1] = FAILED_VERDICT
    rest = 1 - lead - sum(fixed)  # shared by the swept-value columns (the name's if none)
    widths = [lead, *([rest / len(shown)] * len(shown))] if shown else [lead + rest]
    story.table(rows, [*widths, *fixed], highlight=highlight)
    marked = (
        f" Rows marked {seeds.FAIL_MARK.strip()} (shaded): runs whose verdict is fail, left "
        "out of the comparisons."
        if table["left_out"].any()
        else ""
    )
    if pooled:
        story.para(
            f"Mean ± std {_over(groups)} per setting (runs that differ only in seed). "
            "≈ most robust: whether the setting's robust accuracy is within the seed spread of "
            f"the most robust setting's ({SEED_SPREAD_RULE}).{marked}",
            "caption",
        )
    elif marked:
        story.para(marked.strip(), "caption")


def _most_robust(table: pd.DataFrame) -> pd.Series | None:
    ranked = table.dropna(subset=["robust"])
    return None if ranked.empty else ranked.loc[ranked["robust"].idxmax()]


def _near_best(row: pd.Series, best: pd.Series | None) -> str:
    """'best', 'yes' (within the seed spread of ``best``), 'no', or '—' (no robust number or
    no spread known)."""
    if best is None or pd.isna(row["robust"]):
        return MISSING
    if row["run_id"] == best["run_id"]:
        return "best"
    near = within_spread(row["robust"], row["robust_std"], best["robust"], best["robust_std"])
    return MISSING if near is None else ("yes" if near else "no")


def _robust_title(focus: Focus) -> str | None:
    """'PGD at 8/255': the robust accuracy the sweep section quotes; None without attacks."""
    return f"{attack_label(focus.attack)} at {fmt_eps(focus.eps)}" if focus.attack else None


def _panels(table: pd.DataFrame, robust_title: str | None) -> list[tuple[str, str]]:
    """(column of the overview table, title) of each heatmap or bar panel."""
    panels = [(naming.CLEAN_ACC, "clean accuracy")]
    if robust_title:
        panels.append(("robust", f"robust accuracy, {robust_title}"))
    if table[naming.GEN_GAP].notna().any():
        panels.append((naming.GEN_GAP, "train − val accuracy (best epoch)"))
    return panels


def _sweep_figures(
    story: Story,
    finished: pd.DataFrame,
    run_rows: pd.DataFrame,
    knobs: list[str],
    focus: Focus,
    panels: list[tuple[str, str]],
    robust_title: str | None,
) -> None:
    """Heatmaps over the first two knobs (bars for one), then clean vs robust per setting.

    ``finished``: one row per setting with results (:func:`seeds.group_table`); ``run_rows``: one
    row per run (:func:`seeds.run_table`), for bars whose error bars span the seeds."""
    pooled = bool((finished["n_seeds"] > 1).any())
    axes = knobs[:2]
    seeds_note = (
        f" Each setting is its mean {over_seeds(list(finished['n_seeds']))}; ± is the seed "
        "spread (root mean square of the settings' stds over seeds); ≈ marks a cell within the "
        f"seed spread of the panel's highest ({SEED_SPREAD_RULE})."
        if pooled
        else ""
    )
    if len(axes) == 2:
        y, x = axes
        averaged = [p for p in focus.swept if p not in axes and not (pooled and p == "seed")]
        story.figure(
            sweep_figures.sweep_heatmaps(finished, x=x, y=y, panels=panels),
            f"Mean over the runs with each pair of values of {y} (rows) and {x} (columns)"
            + (f", averaged over {', '.join(averaged)}" if averaged else "")
            + "."
            + seeds_note,
        )
    else:
        story.figure(
            sweep_figures.sweep_bars(
                run_rows[run_rows[naming.CLEAN_ACC].notna()], x=axes[0], panels=panels
            ),
            f"Mean per value of {axes[0]}."
            + (" Error bars: ± one std over the seeds." if pooled else ""),
        )
    if robust_title:
        story.figure(
            sweep_figures.clean_vs_robust(
                finished,
                hue=axes[0],
                style=axes[1] if len(axes) > 1 else None,
                robust_label=f"robust accuracy ({robust_title})",
            ),
            "One point per setting (its mean over seeds; grey bars: ± one std): up and to the "
            "right is both accurate and robust."
            if pooled
            else "One point per run: up and to the right is both accurate and robust.",
            width=0.8,
        )


def sanity(story: Story, runs: Sequence[RunData]) -> None:
    """How many runs passed each check; every check that did not pass, with its evidence."""
    story.h1("Sanity checks")
    if not any(r.checks for r in runs):
        story.para(f"No check results ({naming.CHECKS_JSON}) were logged.", "note")
        return
    rows: list[list[object]] = [["check", *STATUSES]]
    rows += [[name, *(c[s] for s in STATUSES)] for name, c in data.sanity_counts(runs)]
    story.table(rows, [0.55, 0.15, 0.15, 0.15])
    bad = data.failed_checks(runs)
    if bad:
        story.h2("Checks that did not pass")
        rows = [["run", "check", "status", "evidence"]]
        rows += [[r.name, c["name"], c["status"], c["evidence"]] for r, c in bad]
        story.table(rows, [0.22, 0.2, 0.08, 0.5])
    missing = [r.name for r in runs if not r.checks]
    if missing:
        story.para("No sanity results: " + ", ".join(missing) + ".", "note")


def run_details(
    story: Story,
    runs: Sequence[RunData],
    groups: Sequence[SeedGroup],
    focus: Focus,
    per_run: PerRun,
) -> None:
    """Grids (the headline attack's), per-class robustness and confusion of the runs
    ``report.per_run`` picks (:func:`seeds.detail_runs`)."""
    picks = seeds.detail_runs(groups, focus, per_run)
    where = "every run's grids and tables are artifacts of its MLflow run"
    if per_run == PerRun.none:
        story.h1("Run details")
        story.para(f"No per-run pages (report.per_run=none); {where}.", "note")
        return
    if not picks:
        return
    story.h1("Run details")
    if len(picks) < len(runs):
        judged = (
            f"{attack_label(focus.attack)} robust accuracy at {fmt_eps(focus.eps)}"
            if focus.attack is not None and focus.eps is not None
            else "clean accuracy"
        )
        story.para(
            f"Shown for {len(picks)} of {len(runs)} runs: the best and the worst setting by "
            f"{judged}"
            + (" (mean over seeds; the seed closest to that mean)" if seeds.pooled(groups) else "")
            + (", verdict-fail runs not considered" if any(g.failed for g in groups) else "")
            + f". report.per_run=all shows every run; {where}.",
            "caption",
        )
    for run in picks:
        prefix = f"{run.name}: "
        single.grids(story, data.grids_of(run, focus.attack), story.h2, prefix)
        single.per_class(story, run, story.h2, prefix)
        single.confusion(story, run, focus, story.h2, prefix)
