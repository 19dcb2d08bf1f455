"""Run every benchmark and print one line per figure, then a summary (``make bench``).

    python -m benchmarks.run_all                 # the full pass (~15 minutes on 2 CPU cores)
    python -m benchmarks.run_all --quick         # a fast pass: small sizes, fewer repeats
    python -m benchmarks.run_all --only train    # data | e2e | train | attack | limit (repeatable)
    python -m benchmarks.run_all --threads 1     # torch threads (default: torch's own choice)

Each figure is a ratio measured in this run (advlab vs a hand-written baseline, interleaved), with
its target and PASS/MISS; the machine (CPU, cores, torch) is printed first. Results also go to
``runs/benchmarks/<timestamp>.json`` (git-ignored). docs/benchmarks.md records a full run.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import (
    CIFAR10_ARCHIVE,
    PROJECT_ROOT,
    Figure,
    cifar10_overrides,
    emit,
    print_machine,
    run_python,
    write_json,
)

# data and e2e first: they time fresh child processes, whose peak-memory figures (ru_maxrss)
# would otherwise inherit this process's peak after the training benchmarks; and start-up is best
# measured before the page cache fills with other work.
SECTIONS = ("data", "e2e", "train", "attack", "limit")
DATA_SECONDS_TARGET = 2.0
DATA_MB_TARGET = 400.0


def run_data(quick: bool) -> list[Figure]:
    """Item 5: the data engineer's bench_data (gender-format load) + CIFAR-10 from the archive."""
    figures: list[Figure] = []
    try:
        from benchmarks import bench_data
    except ImportError as exc:
        print(f"[data] SKIP: benchmarks.bench_data not importable ({exc})")
        bench_data = None
    if bench_data is not None:
        argv = ["--n", "20000", "--n-test", "2000", "--repeat", "1"] if quick else []
        results = bench_data.main(argv) or {}
        n = "20k" if quick else "100k"
        for mode, res in results.items():
            if "seconds" in res:
                emit(
                    Figure(
                        "data",
                        f"gender-{n} {mode}: time",
                        float(res["seconds"]),
                        "s",
                        target=DATA_SECONDS_TARGET,
                        target_kind="value<=",
                        note="fresh process, warm page cache",
                    ),
                    figures,
                )
            mem_key = next((k for k in ("rss_added_mb", "rss_peak_mb") if k in res), None)
            if mem_key:
                emit(
                    Figure(
                        "data",
                        f"gender-{n} {mode}: memory ({mem_key})",
                        float(res[mem_key]),
                        "MB",
                        target=DATA_MB_TARGET,
                        target_kind="value<=",
                    ),
                    figures,
                )
    if CIFAR10_ARCHIVE.is_file():
        code = (
            "import time\n"
            "from pathlib import Path\n"
            "from benchmarks.common import compose\n"
            "from advlab.data import load_data\n"
            f"cfg = compose({cifar10_overrides()!r})\n"
            "t = time.perf_counter()\n"
            "d = load_data(cfg.data, seed=0, cache_dir=Path('/nonexistent'))\n"
            "print('SECONDS', time.perf_counter() - t, len(d.train) + len(d.val) + len(d.test))\n"
        )
        out = run_python(code)
        line = [x for x in out["stdout"].splitlines() if x.startswith("SECONDS")][-1].split()
        emit(
            Figure(
                "data",
                "cifar10 load_data from the .tar.gz",
                float(line[1]),
                "s",
                target_kind="info",
                note=(
                    f"{int(line[2])} images, read in place from the archive; child peak RSS "
                    f"{out['peak_rss_mib']:.0f} MiB (imports included)"
                ),
            ),
            figures,
        )
    else:
        print("[data] cifar10: SKIP (../shared/data/cifar10 not found)")
    return figures


def _section(name: str, device: Any) -> Callable[[bool], list[Figure]]:
    if name == "train":
        from benchmarks.bench_train import run as train

        return lambda quick: train(quick, device=device)
    if name == "attack":
        from benchmarks.bench_attack import run as attack

        return lambda quick: attack(quick, device=device)
    if name == "limit":
        from benchmarks.bench_limit import run as limit

        return lambda quick: limit(quick, device=device)
    if name == "e2e":
        from benchmarks.bench_e2e import run as e2e

        return e2e
    return run_data


def wait_for_quiet(max_seconds: float, threshold: float = 1.5, poll: float = 30.0) -> float:
    """Wait (up to ``max_seconds``) until the 1-minute load average is below ``threshold``.

    The machine is shared: timings taken while others compute are noisy. Returns the load seen
    when measuring starts (it starts anyway once the wait is over).
    """
    deadline = time.monotonic() + max_seconds
    load = os.getloadavg()[0]
    while load >= threshold and time.monotonic() < deadline:
        print(
            f"load {load:.2f} >= {threshold}: waiting {poll:.0f} s for a quieter machine",
            flush=True,
        )
        time.sleep(poll)
        load = os.getloadavg()[0]
    return load


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, fewer repeats")
    parser.add_argument(
        "--only", action="append", choices=SECTIONS, help="run only this section (repeatable)"
    )
    parser.add_argument("--threads", type=int, help="torch.set_num_threads before measuring")
    parser.add_argument("--json", type=Path, help="where to write the results (JSON)")
    parser.add_argument("--device", default="cpu", help="auto | cpu | cuda (default: cpu)")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="first wait up to SECONDS for the 1-minute load average to drop below 1.5",
    )
    args = parser.parse_args(argv)

    from advlab.runtime import select_device
    from benchmarks.common import prepare_process

    device = select_device(args.device)
    prepare_process(args.threads)
    if args.wait_quiet > 0:
        wait_for_quiet(args.wait_quiet)
    machine = print_machine()
    machine["device"] = str(device)
    print(
        f"mode: {'quick' if args.quick else 'full'}; sections: {', '.join(args.only or SECTIONS)}"
    )
    figures: list[Figure] = []
    failed: list[str] = []
    t0 = time.perf_counter()
    for name in args.only or SECTIONS:
        print(f"\n== {name} ==", flush=True)
        t_section = time.perf_counter()
        try:
            figures += _section(name, device)(args.quick)
        except Exception:  # one broken section must not hide the others' figures
            failed.append(name)
            traceback.print_exc(limit=-4)
        print(f"({name}: {time.perf_counter() - t_section:.0f} s)", flush=True)

    total = time.perf_counter() - t0
    judged = [f for f in figures if f.passed is not None]
    misses = [f for f in judged if not f.passed]
    print(
        f"\n== summary: {len(judged) - len(misses)}/{len(judged)} targets met in {total:.0f} s =="
    )
    for f in misses:
        print("MISS " + f.line())
    if failed:
        print(f"FAILED sections: {', '.join(failed)}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.json or PROJECT_ROOT / "runs" / "benchmarks" / f"{stamp}.json"
    machine["mode"] = "quick" if args.quick else "full"
    machine["seconds"] = round(total, 1)
    write_json(out, machine, figures)
    print(f"results: {out}")
    print(json.dumps({"targets_met": len(judged) - len(misses), "targets": len(judged)}))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
