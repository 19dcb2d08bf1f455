"""Benchmark: loading the course's 100k-image gender files (time and memory).

Writes a synthetic ``data_100k.bin`` (100,000 x 2304 uint8, 230 MB) and ``gender_100k.bin`` in a
temporary folder, then, each in a fresh Python process, measures

- ``read``: :func:`advlab.data.gender.load` alone (the raw train + test files);
- ``load_data``: the whole :func:`advlab.data.load_data` (val split + normalisation statistics),

reporting wall time, the peak of numpy/Python allocations (tracemalloc) and the process's peak RSS
above its baseline after imports. The budget: under 2 s and under 400 MB.

    python -m benchmarks.bench_data [--n 100000] [--n-test 10000] [--repeat 3]

The files were just written, so they are read from the page cache (a warm read); a cold read adds
the disk time for 230 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

BUDGET_SECONDS = 2.0
BUDGET_MB = 400.0
_CHUNK = 10_000  # images generated at a time, so writing the file stays small in memory


def write_gender_files(root: Path, tag: str, n: int, seed: int = 0) -> None:
    """Synthetic data_<tag>.bin / gender_<tag>.bin with ``n`` random images and one-hot labels."""
    rng = np.random.default_rng(seed)
    with (
        open(root / f"data_{tag}.bin", "wb") as images,
        open(root / f"gender_{tag}.bin", "wb") as labels,
    ):
        for start in range(0, n, _CHUNK):
            m = min(_CHUNK, n - start)
            images.write(rng.integers(0, 256, size=(m, 2304), dtype=np.uint8).tobytes())
            labels.write(np.eye(2, dtype="<f4")[rng.integers(0, 2, size=m)].tobytes())


def _rss_mb() -> float:
    """Current resident set size in MB (Linux /proc; falls back to the peak elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * resource.getpagesize() / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(mode: str, root: str, train: str, test: str) -> dict[str, float]:
    from omegaconf import OmegaConf

    from advlab.config import GenderDataConf
    from advlab.data import load_data
    from advlab.data.gender import load

    cfg = OmegaConf.structured(GenderDataConf)
    cfg.name, cfg.loader, cfg.root, cfg.train, cfg.test = (
        "gender",
        "advlab.data.gender.load",
        root,
        train,
        test,
    )
    baseline = _rss_mb()
    tracemalloc.start()
    t0 = time.perf_counter()
    if mode == "read":
        raw = load(cfg, seed=0, cache_dir=Path(root))
        n = len(raw.train_full)
    else:
        splits = load_data(cfg, seed=0, cache_dir=Path(root))
        n = len(splits.train) + len(splits.val)
    seconds = time.perf_counter() - t0
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux
    return {
        "n_train": n,
        "seconds": seconds,
        "traced_peak_mb": traced_peak / 2**20,
        "rss_baseline_mb": baseline,
        "rss_peak_mb": peak_rss,
        "rss_added_mb": peak_rss - baseline,
    }


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Run the benchmark, print one line per mode, return the numbers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="training images to generate")
    parser.add_argument("--n-test", type=int, default=10_000, help="test images to generate")
    parser.add_argument("--repeat", type=int, default=3, help="fresh processes per mode (median)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(*args.child)))
        return {}

    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="advlab-bench-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        write_gender_files(root, "bench", args.n)
        write_gender_files(root, "benchtest", args.n_test, seed=1)
        print(
            f"wrote {args.n} + {args.n_test} images ({(args.n + args.n_test) * 2304 / 1e6:.0f} MB) "
            f"in {time.perf_counter() - t0:.1f} s to {root}"
        )
        os.sync()  # flush the new files so the measurement does not race their write-back
        for mode in ("read", "load_data"):
            cmd = [sys.executable, "-m", "benchmarks.bench_data", "--child", mode, str(root)]
            runs = []
            for _ in range(max(args.repeat, 1)):
                out = subprocess.run(
                    [*cmd, "bench", "benchtest"], check=True, capture_output=True, text=True
                )
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            res = {key: float(np.median([r[key] for r in runs])) for key in runs[0]}
            res["seconds_min"] = min(r["seconds"] for r in runs)
            res["seconds_max"] = max(r["seconds"] for r in runs)
            results[mode] = res
            ok = res["seconds"] < BUDGET_SECONDS and res["rss_added_mb"] < BUDGET_MB
            print(
                f"{mode:>9}: {res['seconds']:.2f} s (median of {len(runs)}, "
                f"{res['seconds_min']:.2f}-{res['seconds_max']:.2f}), "
                f"traced peak {res['traced_peak_mb']:.0f} MB, "
                f"RSS +{res['rss_added_mb']:.0f} MB (baseline {res['rss_baseline_mb']:.0f} MB, "
                f"peak {res['rss_peak_mb']:.0f} MB) -> {'within' if ok else 'OVER'} budget "
                f"({BUDGET_SECONDS:.0f} s, {BUDGET_MB:.0f} MB)"
            )
    return results


if __name__ == "__main__":
    main()
