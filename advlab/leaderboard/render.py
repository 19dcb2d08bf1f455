"""The leaderboard as text: the terminal table, the CSV and the markdown file.

Every cell is made once, by :func:`cells`, so the terminal, the markdown file and the PDF say the
same thing; the CSV keeps fractions and run ids for a spreadsheet or a script.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from urllib.parse import urlsplit

from advlab.leaderboard.table import Board, Row
from advlab.report.format import MISSING, fmt_eps, fmt_seconds, fmt_spread
from advlab.tracking.ui import ui_link

HEADER = (
    "#",
    "run",
    "clean",
    "worst case",
    "certified",
    "verdict",
    "seeds",
    "data / model",
    "train",
)
APART_HEADER = ("run", "clean", "worst case", "verdict", "data / model", "not ranked because")


def title(board: Board) -> str:
    """What the table ranks, in one line."""
    within = " within each data set" if len(board.data_sets) > 1 else ""
    return f"advlab leaderboard: ranked by {board.threat_model.describe()}{within}"


def _spread(row: Row, what: str) -> str:
    stat = row.stat(what)
    return fmt_spread(stat["mean"], stat["std"]) if stat["n_seeds"] else MISSING


def _verdict(row: Row) -> str:
    verdict = row.verdict or MISSING
    flags = ", ".join(row.checks)
    return f"{verdict} ({flags})" if flags else verdict


def _seeds(row: Row) -> str:
    seeds = ", ".join(str(s) for s in row.seeds)
    text = f"{row.n_seeds} ({seeds})" if row.n_seeds > 1 else seeds
    return f"{text} + {row.apart_seeds} not ranked" if row.apart_seeds else text


def _model(row: Row) -> str:
    entry = row.first
    adversarial = entry.adversarial if entry.adversarial not in (None, "none") else None
    model = f"{entry.model} + {adversarial} training" if adversarial else entry.model
    return f"{entry.data} / {model}"


def cells(row: Row) -> list[str]:
    """The ranked row's cells, in the order of :data:`HEADER`."""
    return [
        str(row.rank),
        row.label,
        _spread(row, "clean"),
        _spread(row, "worst"),
        _spread(row, "certified"),
        _verdict(row),
        _seeds(row),
        _model(row),
        fmt_seconds(row.stat("train_time")["mean"]),
    ]


def apart_cells(row: Row) -> list[str]:
    """The cells of a row listed apart, in the order of :data:`APART_HEADER`."""
    worst = _spread(row, "worst")
    return [
        row.label,
        _spread(row, "clean"),
        worst,
        _verdict(row),
        _model(row),
        row.reason or "",
    ]


def link(board: Board, row: Row) -> str:
    """The MLflow UI page of the row's (first) run."""
    return ui_link(board.tracking_uri, row.first.experiment_id, row.first.run_id)


def _text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return lines


def terminal(board: Board) -> str:
    """The leaderboard for a terminal: the ranking, the runs listed apart, the MLflow links."""
    lines = [title(board), ""]
    if board.ranked:
        lines += _text_table(HEADER, [cells(r) for r in board.ranked])
    else:
        lines.append("no run can be ranked: every run is listed apart below")
    if board.hidden:
        lines.append(f"... and {board.hidden} more ranked (leaderboard.top)")
    if board.apart:
        lines += ["", f"Not ranked ({len(board.apart)}):"]
        lines += _text_table(APART_HEADER, [apart_cells(r) for r in board.apart])
    if board.ranked:
        lines += ["", "MLflow:"]
        lines += [f"  {r.rank}. {r.label}: {link(board, r)}" for r in board.ranked]
    return "\n".join(lines)


CSV_COLUMNS = (
    "ranked",
    "rank",
    "not_ranked_because",
    "run",
    "experiment",
    "data",
    "model",
    "adversarial_training",
    "eps",
    "clean_mean",
    "clean_std",
    "worst_case_mean",
    "worst_case_std",
    "certified_mean",
    "certified_std",
    "n_seeds",
    "seeds",
    "seeds_not_ranked",
    "verdict",
    "flags",
    "train_seconds_mean",
    "attacks",
    "escalation",
    "run_ids",
    "mlflow_link",
)


def _number(value: float) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.6g}"


def csv_text(board: Board) -> str:
    """Every row, ranked first, with fractions (not percentages) and every run id of a row."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in [*board.ranked, *board.apart]:
        entry = row.first
        stats = {w: row.stat(w) for w in ("clean", "worst", "certified", "train_time")}
        writer.writerow(
            [
                "yes" if row.reason is None else "no",
                row.rank if row.rank is not None else "",
                row.reason or "",
                row.label,
                entry.experiment,
                entry.data,
                entry.model,
                entry.adversarial or "",
                _number(board.threat_model.eps),
                *(
                    _number(stats[w][s])
                    for w in ("clean", "worst", "certified")
                    for s in ("mean", "std")
                ),
                row.n_seeds,
                " ".join(str(s) for s in row.seeds),
                row.apart_seeds,
                row.verdict or "",
                " ".join(f"{k}={v}" for k, v in row.checks.items()),
                _number(stats["train_time"]["mean"]),
                " ".join(entry.attacks),
                "" if entry.escalation is None else str(entry.escalation).lower(),
                " ".join(e.run_id for e in row.entries),
                link(board, row),
            ]
        )
    return buffer.getvalue()


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]


def _md_runs(board: Board, row: Row) -> str:
    """The row's name linked to its runs in the MLflow UI (one link per seed)."""
    first = f"[{_md_cell(row.label)}]({link(board, row)})"
    if row.n_seeds == 1:
        return first
    others = [
        f"[s{e.seed}]({ui_link(board.tracking_uri, e.experiment_id, e.run_id)})"
        for e in row.entries
    ]
    return f"{row.label}: {' '.join(others)}"


def markdown(board: Board) -> str:
    """The leaderboard as a markdown page: the ranking, then the runs listed apart."""
    threat = board.threat_model
    lines = [f"# Leaderboard: worst case at {fmt_eps(threat.eps)}", "", title(board) + ".", ""]
    ranked = [[cells(r)[0], _md_runs(board, r), *cells(r)[2:]] for r in board.ranked]
    lines += _md_table(HEADER, ranked) if ranked else ["No run can be ranked."]
    if board.hidden:
        lines += ["", f"{board.hidden} more ranked rows are not shown (leaderboard.top)."]
    if board.apart:
        lines += ["", f"## Not ranked ({len(board.apart)})", ""]
        apart = [[_md_runs(board, r), *apart_cells(r)[1:]] for r in board.apart]
        lines += _md_table(APART_HEADER, apart)
    lines += ["", f"{footnote(board)}."]
    return "\n".join(lines) + "\n"


def footnote(board: Board) -> str:
    """Where the figures come from and how a row pools its seeds."""
    return (
        f"Mean ± std over the seeds of a setting where it ran several; runs of "
        f"{', '.join(board.experiments)} read from {public_uri(board.tracking_uri)}"
    )


def public_uri(uri: str) -> str:
    """``uri`` less any user:password (a page may be published)."""
    parts = urlsplit(uri)
    if parts.scheme in ("http", "https") and "@" in parts.netloc:
        return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
    return uri
