"""The report's first page, the same for one run and for many: what was run, where, on what."""

from __future__ import annotations

from datetime import UTC, datetime

from advlab.report import data
from advlab.report.blocks import FAILED_VERDICT, NOT_FINISHED, Story
from advlab.report.data import ReportData
from advlab.report.summary import MISSING, fmt_pct

COMMANDS_SHOWN = 12  # distinct command lines on the cover; the rest are counted
_VERSION_TAGS = (
    ("advlab", "advlab.version"),
    ("torch", "advlab.torch_version"),
    ("torchattacks", "advlab.torchattacks_version"),
    ("git commit", "advlab.git_commit"),
    ("device", "advlab.device"),
)


def cover(story: Story, report: ReportData) -> None:
    """Title, the report's facts, the runs, the data and the command lines."""
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    story.para(f"advlab report: {report.experiment}", "title")
    story.para(f"Generated {when} from the MLflow store {report.tracking_uri}", "subtitle")
    story.banner(verdict_banner(report.runs))
    _facts(story, report, when)
    story.h2("Runs")
    _runs(story, report)
    story.h2("Data")
    story.table(data.data_table(report.runs), [0.13, 0.1, 0.09, 0.09, 0.1, 0.39, 0.1])
    story.h2("Command lines")
    _commands(story, report)


def verdict_banner(runs: list[data.RunData]) -> list[tuple[str, str | None, bool]]:
    """The banner's lines (text, verdict, big): one run's verdict and reason, or for many runs
    a line per verdict count, worst first, then the reasons of the failed and warned runs."""
    if len(runs) == 1:
        run = runs[0]
        if run.verdict is None:
            return [("Verdict: not recorded (a run made before verdicts existed)", None, True)]
        reason = f": {run.verdict_reason}" if run.verdict_reason else ""
        return [(f"Verdict: {run.verdict.upper()}{reason}", run.verdict, True)]
    lines: list[tuple[str, str | None, bool]] = []
    for verdict, n in data.verdict_counts(runs).items():
        shown = verdict.upper() if verdict != data.NOT_RECORDED else "Verdict not recorded"
        lines.append((f"{shown}: {n} of {len(runs)} runs", verdict, True))
    reasons, more = data.verdict_reasons(runs)
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
        ["Runs included", f"{len(runs)} ({data.status_text(runs)}); {report.selection}"],
    ]
    if report.omitted_parents:
        rows.append(
            [
                "Left out",
                f"{report.omitted_parents} sweep parent run(s): they hold no results of their own",
            ]
        )
    for label, tag in _VERSION_TAGS:
        rows.append([label, data.distinct(run.tags.get(tag) for run in runs)])
    story.table(rows, [0.2, 0.8], header=False)


def _runs(story: Story, report: ReportData) -> None:
    head = ["#", "run", "status", "verdict", "started (UTC)", "run id", "clean acc"]
    rows: list[list[object]] = [head]
    highlight = {}
    for i, run in enumerate(report.runs, 1):
        started = run.start_time.strftime("%Y-%m-%d %H:%M") if run.start_time else MISSING
        verdict = data.verdict_text(run)
        rows.append([i, run.name, run.status, verdict, started, run.run_id, fmt_pct(run.clean_acc)])
        if run.failed_verdict:
            highlight[i] = FAILED_VERDICT
        elif run.status != "FINISHED":
            highlight[i] = NOT_FINISHED
    story.table(rows, [0.04, 0.18, 0.1, 0.11, 0.15, 0.32, 0.1], highlight=highlight)


def _commands(story: Story, report: ReportData) -> None:
    commands = data.command_groups(report.runs)
    shown = list(commands.items())[:COMMANDS_SHOWN]
    for command, names in shown:
        story.mono(names[0] if len(names) == 1 else f"{len(names)} runs", command)
    if len(commands) > len(shown):
        story.para(
            f"... and {len(commands) - len(shown)} more distinct command lines "
            "(MLflow tag advlab.command of each run).",
            "caption",
        )
