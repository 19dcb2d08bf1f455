"""The search's report: the PDF, and the best trial, every trial and the PDF in the search run.

The numbers come from :mod:`advlab.search.summary` (read from the study), so the PDF, the search
run's artifacts and the console say the same.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

from advlab import naming, tracking
from advlab.fileio import atomic_write_text
from advlab.search import space
from advlab.search.summary import Summary
from advlab.search.worker import Spec


def write(summary: Summary, out_dir: Path) -> Path:
    """The PDF ``<out_dir>/search-<study>-<time>.pdf``; page one tells the result."""
    from advlab.search.pdf import render  # reportlab and seaborn only when a PDF is wanted

    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = tracking.store.clean_key(naming.search_run_name(summary.study))
    return render(summary, out_dir / f"{name}-{stamp}.pdf")


def log_to_run(summary: Summary, spec: Spec, pdf: Path | None, work_dir: Path) -> None:
    """The best trial (JSON), every trial (CSV) and the PDF, as artifacts of the search run."""
    client = tracking.open_client(spec.tracking_uri)
    best = summary.best
    payload = {
        "study": summary.study,
        "objective": summary.objective,
        "trial": None if best is None else best.number,
        "value": None if best is None else best.value,
        naming.CLEAN_ACC: None if best is None else best.clean,
        "settings": None if best is None else best.values,
        "command": summary.command,
        "importances": summary.importances,
    }
    paths = [atomic_write_text(work_dir / naming.SEARCH_BEST_JSON, json.dumps(payload, indent=2))]
    paths.append(_trials_csv(summary, work_dir / naming.SEARCH_TRIALS_CSV))
    for path in paths:
        tracking.store.upload(client, spec.parent_run_id, path, naming.RESULTS_DIR)
    if pdf is not None:
        tracking.store.upload(client, spec.parent_run_id, pdf, naming.REPORT_ARTIFACT_DIR)


def _trials_csv(summary: Summary, path: Path) -> Path:
    keys = sorted({k for r in summary.rows for k in r.values})
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        out = csv.writer(handle)
        head = [summary.objective, "std", naming.CLEAN_ACC, "std", "feasible"]
        out.writerow(["trial", *keys, *head])
        for r in summary.rows:
            cells = [r.values.get(k, "") for k in keys]
            out.writerow([r.number, *cells, r.value, r.value_std, r.clean, r.clean_std, r.feasible])
    return path


def text(summary: Summary, pdf: Path | None, spec: Spec) -> str:
    """The console's answer: the best trial, its command, the PDF."""
    lines = ["", f"advlab search {summary.study!r} finished"]
    lines.append(
        f"  trials              {len(summary.rows)} complete, {summary.errors} failed, "
        f"{sum(r.feasible for r in summary.rows)} feasible"
    )
    best = summary.best
    if best is None:
        lines.append(
            f"  best trial          none feasible (clean >= {summary.min_clean:.0%}, "
            "no fail verdict)"
        )
    else:
        lines.append(
            f"  best trial          #{best.number}: {summary.objective} "
            f"{best.value:.1%}, clean {best.clean:.1%}"
        )
        lines.append(f"  its settings        {' '.join(space.overrides(best.values))}")
        lines.append(f"  rerun it with       {summary.command}")
    lines.append(f"  search run          {spec.parent_run_id} ({spec.tracking_uri})")
    if pdf is not None:
        lines.append(f"  PDF report          {pdf}")
    return "\n".join(lines)
