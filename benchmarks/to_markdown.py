"""A recorded benchmark run (``runs/benchmarks/<stamp>.json``) as the Markdown table of
docs/benchmarks.md: every figure of that one run, in its order, nothing recomputed.

    python -m benchmarks.to_markdown runs/benchmarks/<stamp>.json [--notes]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.common import Figure, _fmt

_OPS = {"ratio>=": ">= {:g}x", "value<=": "<= {:g}", "value>=": ">= {:g}", "abs<=": "|.| <= {:g}"}


def row(figure: Figure, notes: bool) -> str:
    against = ""
    if figure.baseline is not None:
        against = f"{figure.baseline_name} {_fmt(figure.baseline)}"
        against += "" if figure.ratio is None else f": {figure.ratio:.2f}x"
    target = ""
    if figure.passed is not None:
        verdict = "PASS" if figure.passed else "**MISS**"
        target = _OPS[figure.target_kind].format(figure.target) + " " + verdict
    name = f"{figure.bench}: {figure.name}"
    cells = [name, f"{_fmt(figure.value)} {figure.unit}", against, target]
    cells += [figure.note.replace("|", "/")] if notes else []
    return "| " + " | ".join(cells) + " |"


def table(payload: dict, notes: bool = False) -> str:
    fields = Figure.__dataclass_fields__
    figures = [Figure(**{k: v for k, v in f.items() if k in fields}) for f in payload["figures"]]
    judged = [f for f in figures if f.passed is not None]
    met = sum(bool(f.passed) for f in judged)
    head = ["figure", "advlab", "against", "target"] + (["note"] if notes else [])
    lines = [
        f"{met} of {len(judged)} targets met.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *(row(f, notes) for f in figures),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path, help="a run's results (runs/benchmarks/<stamp>.json)")
    parser.add_argument("--notes", action="store_true", help="add each figure's note column")
    args = parser.parse_args(argv)
    print(table(json.loads(args.json.read_text()), notes=args.notes))


if __name__ == "__main__":
    main()
