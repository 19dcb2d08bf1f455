"""The run's description in the MLflow UI (``mlflow.note.content``): its summary in markdown.

The verdict and its reason, the clean accuracy with its n, the worst case at each eps with its n,
the checks that did not pass, and one table of robust accuracy (95% interval) per attack and eps.
Pure: the pipeline passes what the run measured; :class:`~advlab.tracking.Tracker` writes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from advlab import naming
from advlab.verdict import PASS, Verdict


def _pct(value: float) -> str:
    return "n/a" if value != value else f"{value:.1%}"  # NaN != NaN: no point to count


def _cell(row: Any) -> str:
    return f"{_pct(row.robust_acc)} [{row.ci_low:.1%}, {row.ci_high:.1%}]"


def run_description(
    verdict: Verdict, clean_acc: float, clean_n: int, robust_n: int, table: Any
) -> str:
    """Markdown summary of a run; ``table`` is the evaluation's robustness table (one row per
    attack x eps, columns ``attack``, ``eps``, ``robust_acc``, ``ci_low``, ``ci_high``)."""
    lines = [f"**Verdict: {verdict.status.upper()}**: {verdict.reason}", ""]
    lines.append(f"Clean accuracy **{_pct(clean_acc)}** (n = {clean_n} test images).")
    attacks = list(dict.fromkeys(str(a) for a in table["attack"]))
    eps_grid = sorted({float(e) for e in table["eps"]})
    headline = naming.WORST_CASE if naming.WORST_CASE in attacks else (attacks or [None])[-1]
    cells = {(str(r.attack), float(r.eps)): r for r in table.itertuples(index=False)}
    if headline is not None:
        worst = ", ".join(
            f"{_pct(cells[headline, e].robust_acc)} at {naming.format_eps(e)}/255"
            for e in eps_grid
            if (headline, e) in cells
        )
        lines += ["", f"Robust accuracy, {headline} (n = {robust_n} test images): {worst}."]
    not_passed = [c for c in verdict.checks if c.status != PASS]
    if not_passed:
        lines += ["", "Checks that did not pass:", ""]
        lines += [f"- `{c.name}` {c.status}: {c.evidence}" for c in not_passed]
    lines += ["", *_table(attacks, eps_grid, cells)]
    return "\n".join(lines)


def _table(attacks: Sequence[str], eps_grid: Sequence[float], cells: dict) -> list[str]:
    header = ["eps (/255)", *attacks]
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for eps in eps_grid:
        row = [_cell(cells[a, eps]) if (a, eps) in cells else "" for a in attacks]
        out.append("| " + " | ".join([naming.format_eps(eps), *row]) + " |")
    return out
