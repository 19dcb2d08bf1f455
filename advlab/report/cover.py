"""The report's provenance, after its story: what was run, where, on what, with which versions.

The same for one run and for many: the report's facts (experiment, selection, runs left out,
versions, device), the runs, the data and the command lines. Versions and commands come from the
run-info artifact (:func:`advlab.naming.run_info`), or the tags of runs of earlier releases.
"""

from __future__ import annotations

from datetime import UTC, datetime

from advlab import naming
from advlab.report import facts
from advlab.report.blocks import FAILED_VERDICT, NOT_FINISHED, Story
from advlab.report.data import FINISHED, ReportData, RunData
from advlab.report.format import MISSING, fmt_pct

COMMANDS_SHOWN = 12  # distinct command lines shown; the rest are counted
_VERSIONS = (
    ("advlab", naming.VERSION_INFO),
    ("torch", naming.TORCH_VERSION_INFO),
    ("torchattacks", naming.TORCHATTACKS_VERSION_INFO),
    ("git commit", naming.GIT_COMMIT_INFO),
    ("device", naming.DEVICE_INFO),
    ("precision", naming.PRECISION_INFO),
)


def cover(story: Story, report: ReportData) -> None:
    """The report's facts, the runs, the data and the command lines, under one heading."""
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    story.h1("About these runs")
    _facts(story, report, when)
    story.h2("Runs")
    _runs(story, report)
    story.h2("Data")
    story.table(facts.data_table(report.runs), [0.13, 0.1, 0.09, 0.09, 0.1, 0.39, 0.1])
    story.h2("Command lines")
    _commands(story, report)


def verdict_banner(runs: list[RunData]) -> list[tuple[str, str | None, bool]]:
    """The banner's lines (text, verdict, big): one run's verdict and reason, or for many runs
    a line per verdict count, worst first, then the reasons of the failed and warned runs."""
    if len(runs) == 1:
        run = runs[0]
        if run.verdict is None:
            return [("Verdict: not recorded (a run made before verdicts existed)", None, True)]
        reason = f": {run.verdict_reason}" if run.verdict_reason else ""
        return [(f"Verdict: {run.verdict.upper()}{reason}", run.verdict, True)]
    lines: list[tuple[str, str | None, bool]] = []
    for verdict, n in facts.verdict_counts(runs).items():
        shown = verdict.upper() if verdict != facts.NOT_RECORDED else "Verdict not recorded"
        lines.append((f"{shown}: {n} of {len(runs)} runs", verdict, True))
    reasons, more = facts.verdict_reasons(runs)
    for verdict, line in reasons:
        lines.append((line, verdict, False))
    if more:
        rest = f"... and {more} more failed or warned runs (see the runs table)."
        lines.append((rest, None, False))
    return lines


def _facts(story: Story, report: ReportData, when: str) -> None:
    runs = report.runs
    rows = [
        ["Experiment", report.experiment],
        ["Date", when],
        ["Runs included", f"{len(runs)} ({facts.status_text(runs)}); {report.selection}"],
    ]
    if report.omitted_parents:
        rows.append(
            [
                "Left out",
                f"{report.omitted_parents} sweep parent run(s): they hold no results of their own",
            ]
        )
    left_out = facts.unfinished_sentence(report.left_out)
    if left_out:
        rows.append(["Not reported", left_out])
    for label, key in _VERSIONS:
        rows.append([label, facts.distinct(run.info.get(key) for run in runs)])
    story.table(rows, [0.2, 0.8], header=False)


def _runs(story: Story, report: ReportData) -> None:
    head = ["#", "run", "status", "verdict", "started (UTC)", "run id", "clean acc"]
    rows: list[list[object]] = [head]
    highlight = {}
    for i, run in enumerate(report.runs, 1):
        started = run.start_time.strftime("%Y-%m-%d %H:%M") if run.start_time else MISSING
        verdict = facts.verdict_text(run)
        rows.append([i, run.name, run.status, verdict, started, run.run_id, fmt_pct(run.clean_acc)])
        if run.failed_verdict:
            highlight[i] = FAILED_VERDICT
        elif run.status != FINISHED:
            highlight[i] = NOT_FINISHED
    story.table(rows, [0.04, 0.18, 0.1, 0.11, 0.15, 0.32, 0.1], highlight=highlight)


def _commands(story: Story, report: ReportData) -> None:
    commands = facts.command_groups(report.runs)
    shown = list(commands.items())[:COMMANDS_SHOWN]
    for command, names in shown:
        story.mono(names[0] if len(names) == 1 else f"{len(names)} runs", command)
    if len(commands) > len(shown):
        story.para(
            f"... and {len(commands) - len(shown)} more distinct command lines "
            f"({naming.COMMAND_INFO} in each run's {naming.RUN_INFO_JSON}).",
            "caption",
        )
