"""Shared benchmark helpers: machine facts, fair timing, peak memory, one printed line per figure.

Every figure is a *ratio measured in the same process* (advlab vs a hand-written baseline, run
interleaved A, B, A, B, ... so that a noisy neighbour slows both sides alike), printed as::

    [train] course_cnn fp32 images/s | 5,120 img/s | bare 5,300 | 0.97x | target >= 0.95x | PASS

Benchmarks are measurements, not tests: they print and return :class:`Figure` records; nothing
here asserts. Timings are wall-clock seconds (``time.perf_counter``); memory is peak resident set
size in MiB (``ru_maxrss``).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
GENDER_DIR = SHARED_DATA / "gender"
CIFAR10_ARCHIVE = SHARED_DATA / "cifar10" / "cifar-10-python.tar.gz"
CIFAR10_SHARED_MD5 = "00642bf920abbcac83eeb31b7ac31122"  # a reconstruction: see its README


# ------------------------------------------------------------------------------------ machine
def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def machine_info() -> dict[str, Any]:
    """CPU model, cores, ISA extensions that matter here (AVX-512, AMX), library versions, load."""
    import torch

    flags = cpu_flags()
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "avx512": "avx512f" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "amx_bf16": "amx_bf16" in flags,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_avg_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "time": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    try:
        import torchattacks

        info["torchattacks"] = torchattacks.__version__
    except ImportError:
        info["torchattacks"] = None
    return info


def print_machine(info: dict[str, Any] | None = None) -> dict[str, Any]:
    info = info or machine_info()
    isa = (
        ", ".join(k for k in ("avx512", "avx512_bf16", "amx_bf16") if info.get(k))
        or "no AVX-512/AMX"
    )
    print(
        f"machine: {info['cpu']} | {info['cores']} cores ({info['torch_threads']} torch threads) | "
        f"{isa} | GPU: {info['cuda'] or 'none'}"
    )
    print(
        f"software: python {info['python']} | torch {info['torch']} | "
        f"torchattacks {info['torchattacks']} | load avg {info['load_avg_1_5_15']} | {info['time']}"
    )
    return info


def prepare_process(threads: int | None = None) -> None:
    """What ``python -m advlab`` does to its process before any work: the thread count (None:
    torch's default) and freed memory kept for reuse (:func:`advlab.runtime.reuse_freed_memory`),
    so advlab and its baselines are measured as a run would see them."""
    from advlab.runtime import reuse_freed_memory, set_threads

    set_threads(threads)
    reuse_freed_memory()


# ------------------------------------------------------------------------------------- timing
def sync(device: Any = None) -> None:
    """Wait for queued GPU work so wall-clock timings are real (no-op on the CPU)."""
    import torch

    if device is not None and getattr(device, "type", str(device)).startswith("cuda"):
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: Any = None) -> tuple[float, Any]:
    """(seconds, result) of one call of ``fn``, synchronised on ``device`` before and after."""
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


@dataclass
class Timing:
    """Wall-clock seconds of the repeats (warm-up excluded) and their median."""

    seconds: list[float]
    result: Any = None  # what the last timed call returned

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def spread(self) -> float:
        """(max - min) / median: how noisy the repeats were."""
        return (max(self.seconds) - min(self.seconds)) / self.median if self.median else 0.0


def interleaved(
    fns: dict[str, Callable[[], Any]],
    *,
    repeats: int = 3,
    warmup: int = 1,
    device: Any = None,
    budget_s: float | None = None,
    max_repeats: int = 9,
) -> dict[str, Timing]:
    """Time several contenders round-robin: warm-up round(s), then ``repeats`` rounds A, B, C, ...

    Interleaving matters on a shared machine: load that comes and goes hits every contender in
    turn instead of one of them. The order rotates every round to cancel position effects
    (caches, turbo). With ``budget_s``, more rounds follow (up to ``max_repeats``) while another
    one fits in the budget: short contenders get the repeats that tame a noisy host, long ones
    keep ``repeats``. Returns the per-contender :class:`Timing` (median of the rounds).
    """
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    out = {name: Timing([]) for name in names}
    start = time.perf_counter()
    r = 0
    while r < repeats or _another_round_fits(start, r, budget_s, max_repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            seconds, result = timed(fns[name], device)
            out[name].seconds.append(seconds)
            out[name].result = result
        r += 1
    return out


def _another_round_fits(start: float, rounds: int, budget_s: float | None, most: int) -> bool:
    if budget_s is None or rounds == 0 or rounds >= most:
        return False
    spent = time.perf_counter() - start
    return spent + spent / rounds <= budget_s


# ------------------------------------------------------------------------------------- memory
def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_python(code: str, *, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter (this venv's python); return wall seconds, the child's
    peak RSS (MiB) and its stdout.

    The peak is the child's ``VmHWM`` (the high-water mark of its own address space), not
    ``ru_maxrss``: on Linux ``ru_maxrss`` survives ``exec``, so a child started by a big parent
    (this process after a training benchmark) would report the parent's peak instead of its own.
    """
    wrapped = (
        code
        + "\nimport sys as _s\n"
        + "_hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')]\n"
        + "_s.stdout.write('\\n__PEAK_KIB__=%s\\n' % (_hwm[0].split()[1] if _hwm else '0'))\n"
    )
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", wrapped],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tail = proc.stderr.strip()[-2000:]
        raise RuntimeError(f"child python failed ({proc.returncode}): {tail}")
    stdout, _, tail = proc.stdout.rpartition("__PEAK_KIB__=")
    return {"seconds": seconds, "peak_rss_mib": int(tail.strip()) / 1024, "stdout": stdout}


# ------------------------------------------------------------------------------------ figures
@dataclass
class Figure:
    """One measured figure: ``value`` (advlab) against ``baseline`` and the resulting ratio.

    ``higher_is_better`` says which way the ratio reads: throughput ratios are value/baseline
    (>= target passes); time or memory limits are checked as value <= target.
    """

    bench: str
    name: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_name: str = "bare"
    target: float | None = None
    target_kind: str = "ratio>="  # ratio>= | value<= | value>= | abs<= | info
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0):
            return None
        return self.value / self.baseline

    @property
    def passed(self) -> bool | None:
        if self.target is None or self.target_kind == "info":
            return None
        if self.target_kind == "ratio>=":
            return self.ratio is not None and self.ratio >= self.target
        if self.target_kind == "value<=":
            return self.value <= self.target
        if self.target_kind == "value>=":
            return self.value >= self.target
        if self.target_kind == "abs<=":
            return abs(self.value) <= self.target
        raise ValueError(f"unknown target_kind {self.target_kind!r}")

    def line(self) -> str:
        parts = [f"[{self.bench}] {self.name:<44}", f"{_fmt(self.value)} {self.unit}"]
        if self.baseline is not None:
            parts.append(f"{self.baseline_name} {_fmt(self.baseline)}")
            if self.ratio is not None:
                parts.append(f"{self.ratio:.2f}x")
        if self.target is not None and self.target_kind != "info":
            op = {"ratio>=": ">= {:g}x", "value<=": "<= {:g}", "value>=": ">= {:g}"}.get(
                self.target_kind, "|.| <= {:g}"
            )
            parts.append("target " + op.format(self.target))
            parts.append("PASS" if self.passed else "MISS")
        if self.note:
            parts.append(self.note)
        return " | ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ratio"] = self.ratio
        d["passed"] = self.passed
        return d


def _fmt(x: float) -> str:
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.3g}"


def emit(figure: Figure, sink: list[Figure] | None = None) -> Figure:
    """Print the figure's line (flushed, so long runs show progress) and append it to ``sink``."""
    print(figure.line(), flush=True)
    if sink is not None:
        sink.append(figure)
    return figure


def write_json(path: Path, machine: dict[str, Any], figures: Sequence[Figure]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine, "figures": [f.as_dict() for f in figures]}
    path.write_text(json.dumps(payload, indent=2, default=str))


# ------------------------------------------------------------------------------------- config
def compose(overrides: Sequence[str] = ()) -> Any:
    """Compose conf/config.yaml as ``python -m advlab`` would (no Hydra run directory)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from advlab.config import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides))


def sandbox_overrides(tmp: Path) -> list[str]:
    """Overrides that keep every output of a benchmark run (MLflow store, runs, PDFs) in ``tmp``."""
    return [
        f"paths.runs_dir={tmp / 'runs'}",
        f"paths.cache_dir={tmp / 'cache'}",
        f"tracking.uri=sqlite:///{tmp / 'mlflow.db'}",
        f"tracking.artifact_root={tmp / 'mlartifacts'}",
        f"report.dir={tmp / 'reports'}",
    ]


def gender_overrides(train: str = "5k", test: str = "test1k") -> list[str]:
    return [
        "+experiment=gender_cnn",
        f"data.root={GENDER_DIR}",
        f"data.train={train}",
        f"data.test={test}",
    ]


def cifar10_overrides() -> list[str]:
    return [
        "+experiment=cifar10_fool",
        f"data.root={CIFAR10_ARCHIVE.parent}",
        "data.download=false",
        f"data.md5={CIFAR10_SHARED_MD5}",
    ]


def have_gender() -> bool:
    return (GENDER_DIR / "data_5k.bin").is_file() and (GENDER_DIR / "data_test1k.bin").is_file()


def have_cifar10() -> bool:
    return CIFAR10_ARCHIVE.is_file()
