"""Run-time helpers: seeding, thread count, memory reuse, device and precision choice,
quiet-when-piped progress.

Everything random in advlab derives from ``cfg.seed``; :func:`seed_everything` applies it first.
"""

from __future__ import annotations

import ctypes
import logging
import os
import random
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import numpy as np
import torch

from advlab.errors import ConfigError

log = logging.getLogger(__name__)

T = TypeVar("T")


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every CUDA device)."""
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def set_threads(threads: int | None) -> None:
    """Use ``threads`` CPU threads for torch ops (None: torch's default, one per core).

    Parallel sweeps must set it: two jobs of two threads each on two cores make every parallel op
    wait for a descheduled thread, and a small CNN then trains ten times slower, not two.
    """
    if threads is not None:
        torch.set_num_threads(int(threads))


# glibc's mallopt parameters (malloc.h) and the largest value they take
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_KEEP_BYTES = 2**31 - 1
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_ARENA_MAX")


def reuse_freed_memory() -> bool:
    """Keep freed memory in the process for the next tensor instead of giving it back to the OS.

    glibc serves every allocation above its mmap threshold (32 MiB at most) with fresh pages and
    unmaps them on free, so each large activation is page-faulted in again: evaluating 256 faces
    through the gender VGG (38 MB per activation) ran at 1.17x a hand-written PGD loop without
    reuse and 1.66x with it (docs/benchmarks.md). Raising both thresholds makes the heap reuse
    those blocks, as jemalloc or tcmalloc would. The price: memory freed after the peak stays
    with the process.

    Does nothing where the user chose an allocator setting (glibc's ``MALLOC_*`` variables, or
    an allocator in ``LD_PRELOAD``) or off Linux; returns whether the setting was applied.
    """
    chosen = any(os.environ.get(k) for k in _USER_SETTINGS)
    if chosen or "malloc" in os.environ.get("LD_PRELOAD", "") or sys.platform != "linux":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
    except (OSError, AttributeError):  # no mallopt (musl): nothing to tune
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _KEEP_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES)
    )


def select_device(name: str = "auto") -> torch.device:
    """Map ``cfg.device`` (``auto`` | ``cpu`` | ``cuda`` | ``cuda:<index>``) to a torch device.

    ``auto`` picks CUDA when available, else the CPU. Asking for CUDA on a machine without it is a
    :class:`~advlab.errors.ConfigError` rather than a silent fall-back to a much slower run.
    """
    name = str(name).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device={name}: CUDA is not available on this machine "
                f"(torch {torch.__version__}); use device=cpu or device=auto"
            )
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device={name}: only {torch.cuda.device_count()} CUDA device(s) are visible"
            )
        return device
    raise ConfigError(f"device={name}: must be auto, cpu, cuda or cuda:<index>")


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` runs bf16 matrix arithmetic in hardware: a CUDA GPU with bf16 support,
    or a CPU with AMX tiles. AVX512-BF16 alone is not enough: measured on such a CPU, bf16
    autocast trained the course CNN at 0.6-0.7x and a VGG at 0.85-1.05x of fp32
    (docs/benchmarks.md).
    """
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        amx = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private, present in torch 2.x
        return bool(amx()) if amx is not None else False
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``train.precision`` as used on ``device``: ``auto`` -> ``bf16`` where the hardware does
    bf16 natively (:func:`native_bf16`), else ``fp32``; ``fp32`` and ``bf16`` are kept as asked."""
    if precision != "auto":
        return precision
    return "bf16" if native_bf16(device) else "fp32"


def progress_enabled(enabled: bool = True) -> bool:
    """True when a progress bar should be drawn: asked for, and stderr is an interactive terminal.

    Piped or logged runs (CI, sweeps, ``nohup``) get no bars, so log files stay readable.
    """
    if not enabled or os.environ.get("ADVLAB_NO_PROGRESS"):
        return False
    stream = sys.stderr
    return bool(getattr(stream, "isatty", None) and stream.isatty())


def progress(
    iterable: Iterable[T],
    *,
    enabled: bool = True,
    desc: str | None = None,
    total: int | None = None,
    unit: str = "it",
) -> Iterator[T]:
    """Wrap ``iterable`` in a tqdm bar on stderr, disabled when stderr is not a TTY.

    The bar only counts iterations; it never reads tensors, so it adds no host-device syncs.
    """
    if not progress_enabled(enabled):
        return iter(iterable)
    from tqdm.auto import tqdm  # imported lazily: only interactive runs pay for it

    return iter(tqdm(iterable, desc=desc, total=total, unit=unit, leave=False, file=sys.stderr))


class Stopwatch:
    """Wall-clock seconds per named part of a job, summed when a part runs again."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
