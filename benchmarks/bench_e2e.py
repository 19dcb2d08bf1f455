"""End-to-end benchmarks: start-up and the quickstart, as a user runs them.

- ``python -m advlab --help``: wall time of a fresh interpreter (median of repeats), target < 3 s,
  and which heavy modules the help path imported (torch, mlflow, ... should be none of them).
- ``python -m advlab eval.eps=[0,-1]``: how long a bad value takes to be refused, target < 5 s.
- ``python -m advlab``: wall time of the whole quickstart (embedded MNIST, train, FGSM/PGD eps
  curve, MLflow tracking, PDF report), with every output redirected to a temporary folder.
  ``--quick`` shrinks it with the test suite's tiny overrides.
- ``python -m advlab.leaderboard`` on a store of 24 runs (:mod:`benchmarks.bench_leaderboard`),
  target < 10 s.
- the quickstart with ``eval.certify=ibp`` (its default) against ``eval.certify=none``: what the
  certified lower bound costs, target at most 1.15x.

    python -m benchmarks.bench_e2e [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from advlab import naming
from benchmarks.common import PROJECT_ROOT, Figure, emit, sandbox_overrides

BENCH = "e2e"
HELP_TARGET_S = 3.0
REFUSAL_TARGET_S = 5.0
CERTIFY_COST_TARGET = 1.15  # the certified lower bound may add at most 15% to the evaluation
HEAVY = ("torch", "mlflow", "torchattacks", "matplotlib", "pandas", "seaborn", "reportlab", "numpy")

# The test suite's overrides that shrink the quickstart to seconds (tests/conftest.py).
TINY = [
    "train.epochs=2",
    "data.limit_train=600",
    "data.limit_test=200",
    "eval.n_examples=64",
    "eval.eps=[0,4,16]",
    "eval.sanity.convergence_n=32",
    "attacks.pgd.steps=3",
    "eval.grid_n=4",
]

_HELP_PROBE = """
import runpy, sys, json, time
t = time.perf_counter()
sys.argv = ["advlab", "--help"]
try:
    runpy.run_module("advlab", run_name="__main__", alter_sys=True)
except SystemExit:
    pass
heavy = [m for m in {heavy!r} if m in sys.modules]
sys.stderr.write(json.dumps({{"heavy": heavy}}) + "\\n")
"""


def _env() -> dict[str, str]:
    env = {**os.environ, "ADVLAB_NO_PROGRESS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)  # never write to a store the user configured
    return env


def time_command(
    args: list[str], repeats: int, expect_exit: int = 0
) -> tuple[list[float], subprocess.CompletedProcess]:
    """Wall seconds of ``repeats`` fresh runs of ``python args...`` from the project root; any
    exit status but ``expect_exit`` is an error."""
    seconds = []
    proc = None
    for _ in range(repeats):
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, *args],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            env=_env(),
            check=False,
        )
        seconds.append(time.perf_counter() - start)
        if proc.returncode != expect_exit:
            raise RuntimeError(
                f"`python {' '.join(args)}` exited {proc.returncode}: {proc.stderr.strip()[-1500:]}"
            )
    assert proc is not None
    return seconds, proc


def bench_help(repeats: int, figures: list[Figure]) -> None:
    time_command(["-m", "advlab", "--help"], 1)  # warm the page cache / .pyc files first
    seconds, proc = time_command(["-m", "advlab", "--help"], repeats)
    probe = subprocess.run(
        [sys.executable, "-c", _HELP_PROBE.format(heavy=HEAVY)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        env=_env(),
        check=False,
    )
    heavy = "?"
    for line in probe.stderr.splitlines()[::-1]:
        if line.startswith("{"):
            heavy = ", ".join(json.loads(line)["heavy"]) or "none"
            break
    base, _ = time_command(["-c", "pass"], repeats)
    emit(
        Figure(
            BENCH,
            "python -m advlab --help (start-up)",
            statistics.median(seconds),
            "s",
            target=HELP_TARGET_S,
            target_kind="value<=",
            note=(
                f"median of {repeats}; bare interpreter {statistics.median(base):.2f} s; "
                f"heavy modules imported: {heavy}"
            ),
        ),
        figures,
    )


def bench_refusal(repeats: int, figures: list[Figure]) -> None:
    """A bad config value (refused in under 5 s, with one line, before any data)."""
    with tempfile.TemporaryDirectory(prefix="advlab-bench-e2e-") as tmp_name:
        args = ["-m", "advlab", "eval.eps=[0,-1]", *sandbox_overrides(Path(tmp_name))]
        seconds, proc = time_command(args, repeats, expect_exit=2)
    emit(
        Figure(
            BENCH,
            "python -m advlab eval.eps=[0,-1] (refused)",
            statistics.median(seconds),
            "s",
            target=REFUSAL_TARGET_S,
            target_kind="value<=",
            note=f"median of {repeats}; exit {proc.returncode}",
        ),
        figures,
    )


def bench_quickstart(quick: bool, figures: list[Figure]) -> None:
    with tempfile.TemporaryDirectory(prefix="advlab-bench-e2e-") as tmp_name:
        tmp = Path(tmp_name)
        overrides = sandbox_overrides(tmp)
        if quick:
            overrides += TINY
        seconds, proc = time_command(["-m", "advlab", *overrides], 1)
        pdfs = sorted((tmp / "reports").rglob("*.pdf"))
        emit(
            Figure(
                BENCH,
                "python -m advlab (quickstart" + (", tiny)" if quick else ")"),
                seconds[0],
                "s",
                target_kind="info",
                note=f"train + FGSM/PGD curve + MLflow + PDF ({len(pdfs)} PDF written)",
            ),
            figures,
        )


def bench_certify_cost(quick: bool, figures: list[Figure]) -> None:
    """The quickstart's evaluation with its default certified bound (eval.certify=ibp) against
    the same evaluation without it, interleaved (median of 2 each; 1 with --quick): what the lower
    bound costs. The evaluation's seconds are the sum of the run's eval_seconds/<part>."""
    spent: dict[str, list[float]] = {"ibp": [], "none": []}
    with tempfile.TemporaryDirectory(prefix="advlab-bench-certify-") as tmp_name:
        tmp = Path(tmp_name)
        for repeat in range(1 if quick else 2):
            for method in spent:
                runs = tmp / f"{method}-{repeat}"
                overrides = [*sandbox_overrides(runs), f"eval.certify={method}"]
                overrides += TINY if quick else []
                time_command(["-m", "advlab", *overrides], 1)
                (results,) = (runs / "runs").rglob(Path(naming.RESULTS_JSON).name)
                recorded = json.loads(results.read_text())
                spent[method].append(
                    sum(recorded[naming.eval_seconds_key(part)] for part in naming.EVAL_PARTS)
                )
    with_bound, without = statistics.median(spent["ibp"]), statistics.median(spent["none"])
    emit(
        Figure(
            BENCH,
            "quickstart evaluation with eval.certify=ibp / none",
            with_bound / without,
            "x",
            target=CERTIFY_COST_TARGET,
            target_kind="value<=",
            note=f"{with_bound:.1f} s vs {without:.1f} s (median of eval_seconds summed)",
        ),
        figures,
    )


def run(quick: bool = False) -> list[Figure]:
    figures: list[Figure] = []
    bench_help(3 if quick else 5, figures)
    bench_refusal(3, figures)
    bench_quickstart(quick, figures)
    bench_certify_cost(quick, figures)
    from benchmarks.bench_leaderboard import bench_leaderboard  # it reuses time_command

    bench_leaderboard(24, 1 if quick else 3, figures)
    return figures


def main(argv: list[str] | None = None) -> list[Figure]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny quickstart, fewer repeats")
    args = parser.parse_args(argv)
    return run(quick=args.quick)


if __name__ == "__main__":
    main()
