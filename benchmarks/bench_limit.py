"""The physical limit: achieved GFLOP/s of a training step and of a PGD step, per model, against
the machine's measured peak for the same dtype (a large matmul on the same cores).

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on one step (matmuls and
convolutions, forward and backward: what the cores must compute; element-wise work is left out,
so the ratio reads "share of the matmul peak spent on the model's own arithmetic"). A training
step is advlab's: zero_grad, forward, cross-entropy, backward, optimizer step, on one batch of the
experiment's size, in fp32 and in channels_last + bf16 autocast (against the bf16 peak). A PGD
step is one forward and one input-gradient backward in eval mode with frozen weights (the
weights' gradients are never computed), then the signed step and the projection. Seconds are the
median of repeated steps on the same batch (the data pipeline is outside: bench_train has it).

For the CIFAR VGG's step ``torch.profiler`` also splits the step's time by kind of operator
(convolutions and matmuls, batch norm, pooling, ReLU, the rest): where the time off the peak goes.

    python -m benchmarks.bench_limit [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.bench_train import Harness, cases
from benchmarks.common import Figure, emit, have_cifar10, have_gender, prepare_process, sync

BENCH = "limit"
CPU = torch.device("cpu")
# Half the matmul peak for the CIFAR VGG's training step: conv layers of 32-128 channels on
# 32x32 images are large enough to keep the vector units busy most of the time.
TRAIN_SHARE_TARGET = 0.5
MATMUL_N = 2048


def _median_seconds(step: Callable[[], object], repeats: int, device: torch.device) -> float:
    step()  # warm-up: one-off allocations and kernel selection
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


def peak_gflops(dtype: torch.dtype, device: torch.device, repeats: int) -> float:
    """GFLOP/s of an (n x n) @ (n x n) matmul in ``dtype``: 2 n^3 FLOPs per product."""
    a = torch.randn(MATMUL_N, MATMUL_N, device=device).to(dtype)
    b = torch.randn(MATMUL_N, MATMUL_N, device=device).to(dtype)
    seconds = _median_seconds(lambda: a @ b, repeats, device)
    return 2 * MATMUL_N**3 / seconds / 1e9


def count_flops(step: Callable[[], object]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


def training_step(
    h: Harness, x: torch.Tensor, y: torch.Tensor, *, channels_last: bool, bf16: bool = False
) -> Callable[[], object]:
    """advlab's training step in the given memory format; ``bf16``: under bf16 autocast
    (train.precision=bf16)."""
    model, x = _in_format(h.fresh_model().to(x.device), x, channels_last)
    optimizer = h.make_optimizer(model)
    model.train()

    def step() -> object:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return loss

    return step


def _in_format(model: nn.Module, x: torch.Tensor, channels_last: bool):
    if not channels_last:
        return model, x
    # the weights carry the format (a greyscale batch is the same tensor in either format)
    fmt = torch.channels_last
    return model.to(memory_format=fmt), x.contiguous(memory_format=fmt)


def pgd_step(
    h: Harness, x: torch.Tensor, y: torch.Tensor, eps: float, *, channels_last: bool
) -> Callable[[], object]:
    """One PGD step in the given memory format (the evaluation's is channels_last)."""
    model, x = _in_format(h.fresh_model().to(x.device).eval(), x, channels_last)
    for p in model.parameters():
        p.requires_grad_(False)
    alpha = 2.5 * eps / 10
    adv = x.clone()

    def step() -> object:
        nonlocal adv
        adv.requires_grad_(True)
        # backward(), not autograd.grad: FlopCounterMode's hooks refuse grad() on a leaf; the
        # weights are frozen, so only the input's gradient is computed either way.
        F.cross_entropy(model(adv), y).backward()
        grad = adv.grad
        adv = torch.min(torch.max(adv.detach() + alpha * grad.sign(), x - eps), x + eps)
        adv = adv.clamp(0, 1)
        return adv

    return step


# operator-name fragments -> the kind of work, in the order they are matched
_KINDS = (
    ("conv", "convolution and matmul"),
    ("mm", "convolution and matmul"),
    ("batch_norm", "batch norm"),
    ("pool", "pooling"),
    ("threshold", "ReLU"),
    ("relu", "ReLU"),
    ("clamp_min", "ReLU"),
)


def time_shares(step: Callable[[], object], repeats: int) -> dict[str, float]:
    """Share of ``step``'s operator time (self CPU time of the aten operators) per kind of work."""
    from torch.profiler import ProfilerActivity, profile

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            step()
    totals: dict[str, float] = {}
    for event in prof.key_averages():
        if not event.key.startswith("aten::"):
            continue
        kind = next((k for frag, k in _KINDS if frag in event.key), "the rest")
        totals[kind] = totals.get(kind, 0.0) + event.self_cpu_time_total
    whole = sum(totals.values()) or 1.0
    return {k: v / whole for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}


def _batch(h: Harness, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    n = h.batch_size
    x = torch.from_numpy(h.data.train.images[:n]).float().div(255).to(device)
    y = torch.from_numpy(h.data.train.labels[:n]).to(device)
    return x, y


def bench_model(
    h: Harness, peaks: dict[str, float], repeats: int, figures: list[Figure], device: torch.device
) -> None:
    x, y = _batch(h, device)
    steps = (
        ("fp32", "training step", training_step(h, x, y, channels_last=False)),
        ("fp32", "channels_last training step", training_step(h, x, y, channels_last=True)),
        ("fp32", "PGD step", pgd_step(h, x, y, 8 / 255, channels_last=False)),
        ("fp32", "channels_last PGD step", pgd_step(h, x, y, 8 / 255, channels_last=True)),
        (
            "bf16",
            "channels_last training step",
            training_step(h, x, y, channels_last=True, bf16=True),
        ),
    )
    for dtype, kind, step in steps:
        flops = count_flops(step)
        seconds = _median_seconds(step, repeats, device)
        achieved = flops / seconds / 1e9
        # the target is on the step cifar10_fool trains with (train.channels_last: true)
        is_target = (dtype, kind) == ("fp32", "channels_last training step") and (
            h.case.name.startswith("cifar")
        )
        emit(
            Figure(
                BENCH,
                f"{h.case.name} {dtype} {kind}: GFLOP/s",
                achieved,
                "GFLOP/s",
                baseline=peaks[dtype],
                baseline_name=f"{dtype} matmul peak",
                target=TRAIN_SHARE_TARGET if is_target else None,
                target_kind="ratio>=" if is_target else "info",
                note=(
                    f"{flops / 1e6:.0f} MFLOP per step of {len(y)} images, {1e3 * seconds:.1f} ms"
                ),
            ),
            figures,
        )
    if h.case.name.startswith("cifar") and device.type == "cpu":  # CPU operator times only
        shares = time_shares(training_step(h, x, y, channels_last=True), repeats=5)
        emit(
            Figure(
                BENCH,
                f"{h.case.name} fp32 channels_last training step: time in convolutions",
                100 * shares.get("convolution and matmul", 0.0),
                "%",
                target_kind="info",
                note="; ".join(f"{k} {100 * v:.0f}%" for k, v in shares.items()),
            ),
            figures,
        )


def run(quick: bool, device: torch.device = CPU) -> list[Figure]:
    figures: list[Figure] = []
    repeats = 10 if quick else 30
    peaks = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        peaks[name] = peak_gflops(dtype, device, repeats=5 if quick else 15)
        emit(
            Figure(
                BENCH,
                f"matmul {MATMUL_N}x{MATMUL_N} {name}: peak GFLOP/s",
                peaks[name],
                "GFLOP/s",
                target_kind="info",
                note=f"torch {torch.get_num_threads()} threads on {device}",
            ),
            figures,
        )
    with tempfile.TemporaryDirectory(prefix="advlab-bench-limit-") as tmp:
        for case in cases():
            have = have_gender() if case.dataset == "gender" else have_cifar10()
            if not have:
                print(f"[{BENCH}] {case.name}: SKIP (its data is not in ../shared/data)")
                continue
            h = Harness(case, Path(tmp), "quick", tracker=None, device=device)
            bench_model(h, peaks, repeats, figures, device)
    return figures


def main(argv: list[str] | None = None) -> list[Figure]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    args = parser.parse_args(argv)
    prepare_process()
    return run(args.quick, device=torch.device(args.device))


if __name__ == "__main__":
    main()
