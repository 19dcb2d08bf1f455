"""The search report's PDF: page one is the Pareto front, the best trial and the importances;
then every complete trial. Built with the report's blocks and figure style."""

from __future__ import annotations

from pathlib import Path

from advlab.report.blocks import Doc, Story, register_fonts
from advlab.report.figures import WIDTH, constant_caption, constant_line, new_figure, plot_style
from advlab.report.format import fmt_num, fmt_pct, fmt_spread
from advlab.search import space
from advlab.search.summary import Row, Summary


def render(summary: Summary, path: Path) -> Path:
    register_fonts()
    story = Story()
    story.h1(f"Search {summary.study}: the most robust setting")
    story.para(_sentence(summary))
    story.figure(front_figure(summary), _caption(summary))
    _best(story, summary)
    _importances(story, summary)
    _trials(story, summary)
    title = f"advlab search: {summary.study}"
    Doc(path, title=title, footer=f"advlab search · {summary.study}").build(story.flowables)
    return path


def _sentence(summary: Summary) -> str:
    feasible = sum(r.feasible for r in summary.rows)
    text = (
        f"{len(summary.rows)} complete trials ({feasible} feasible: clean accuracy at least "
        f"{fmt_pct(summary.min_clean)} and no fail verdict), {summary.errors} failed with an "
        f"error; objective {summary.objective}, the mean over each trial's seeds."
    )
    if summary.best is not None:
        b = summary.best
        text += f" Best: trial {b.number}, {fmt_pct(b.value)} at {fmt_pct(b.clean)} clean."
    return text


def front_figure(summary: Summary):
    """Clean accuracy (x) against the objective (y), one point per trial, seed spread as error
    bars; the Pareto front joined; the constant answer and the clean constraint as lines."""
    with plot_style():
        fig = new_figure(WIDTH, 3.6)
        ax = fig.add_subplot()
        for feasible, style in (
            (True, {"fmt": "o", "color": "#1b7837"}),
            (False, {"fmt": "x", "color": "#999999"}),
        ):
            rows = [r for r in summary.rows if r.feasible == feasible]
            if rows:
                ax.errorbar(
                    [r.clean for r in rows],
                    [r.value for r in rows],
                    xerr=[r.clean_std or 0.0 for r in rows],
                    yerr=[r.value_std or 0.0 for r in rows],
                    capsize=2,
                    lw=0.8,
                    ms=5,
                    ls="none",
                    label="feasible trial" if feasible else "infeasible trial",
                    **style,
                )
        if summary.front:
            ax.plot(
                [r.clean for r in summary.front],
                [r.value for r in summary.front],
                color="#1b7837",
                lw=1.2,
                label="Pareto front",
            )
        if summary.best is not None:
            ax.annotate(
                f"best #{summary.best.number}",
                (summary.best.clean, summary.best.value),
                textcoords="offset points",
                xytext=(6, 6),
                fontsize=7,
            )
        constant_line(ax, _constant(summary))
        ax.axvline(summary.min_clean, color="#b2182b", lw=0.8, ls=":", label="min clean")
        ax.set_xlabel("clean accuracy")
        ax.set_ylabel(summary.objective)
        from matplotlib.ticker import PercentFormatter

        ax.xaxis.set_major_formatter(PercentFormatter(1.0))
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.legend(fontsize=7, loc="best")
    return fig


def _constant(summary: Summary) -> float | None:
    values = [r.constant for r in summary.rows if r.constant is not None]
    return sum(values) / len(values) if values else None


def _caption(summary: Summary) -> str:
    return (
        "Each trial's mean over its seeds, with the seed spread (std) as error bars; green line: "
        "the Pareto front of the feasible trials (no other is better on both axes); dotted red: "
        f"search.min_clean.{constant_caption(_constant(summary))}"
    )


def _best(story: Story, summary: Summary) -> None:
    story.h2("Best trial")
    best = summary.best
    if best is None:
        story.para("No trial is feasible: relax search.min_clean, or widen the space.")
        return
    rows: list[list[object]] = [["key", "value"]]
    rows += [[key, fmt_num(value)] for key, value in best.values.items()]
    rows.append([summary.objective, fmt_spread(best.value, best.value_std)])
    rows.append(["clean accuracy", fmt_spread(best.clean, best.clean_std)])
    rows.append(["verdicts", ", ".join(best.verdicts)])
    story.table(rows, [0.45, 0.55])
    story.mono("Its command line", summary.command or "")


def _importances(story: Story, summary: Summary) -> None:
    story.h2("Importance of each searched key")
    if not summary.importances:
        story.para(summary.importance_note)
        return
    rows: list[list[object]] = [["key", "importance (PED-ANOVA, sums to 1)"]]
    rows += [[k, f"{v:.2f}"] for k, v in summary.importances.items()]
    story.table(rows, [0.55, 0.45])


def _trials(story: Story, summary: Summary) -> None:
    story.h2("Every complete trial")
    rows: list[list[object]] = [["trial", "settings", summary.objective, "clean", "feasible"]]
    for r in sorted(summary.rows, key=lambda r: -r.value):
        rows.append(_trial_row(r))
    story.table(rows, [0.08, 0.5, 0.16, 0.14, 0.12])


def _trial_row(r: Row) -> list[object]:
    return [
        r.number,
        " ".join(space.overrides(r.values)),
        fmt_spread(r.value, r.value_std),
        fmt_spread(r.clean, r.clean_std),
        "yes" if r.feasible else "no",
    ]
