"""Training benchmarks: advlab's ``fit`` against a bare hand-written PyTorch loop.

Measured here:

1. **Throughput** (training images per wall-clock second of a whole ``fit`` call, validation pass
   included) of ``advlab.training.fit.fit`` in fp32 against a bare loop on the same model, data,
   batch size, optimizer and initial weights. advlab runs as users get it: early stopping on
   (patience larger than the run, so both sides do the same epochs), checkpoints written every
   epoch, the progress bar on, and every epoch's metrics logged to a real MLflow run
   (``Tracker.log_epoch`` on a SQLite store in a temp folder). The bare loop is what a competent
   PyTorch user writes: ``model.train()``, uint8 -> float per batch, ``zero_grad(set_to_none=True)``
   and a validation pass per epoch in eval mode under ``no_grad``. Target: >= 0.95x.
2. **Speed modes**: ``train.channels_last`` and ``train.precision=bf16`` (autocast), alone and
   together, against the bare fp32 loop; the bare loop with both shows what the hardware allows.
   Clean test accuracy of fp32 vs channels_last+bf16 after the same training (same seed and
   initial weights). Targets: >= 2.5x and |accuracy difference| <= 1 point.
7. **Scaling**: time of one epoch against training-set size (1k, 5k, 10k CIFAR-10 images).

Data: the real gender faces (``../shared/data/gender``, 5k train / 1k test) and CIFAR-10 from the
shared archive. Augmentation is off on both sides so they do identical work.

    python -m benchmarks.bench_train [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import (
    Figure,
    cifar10_overrides,
    compose,
    emit,
    gender_overrides,
    have_cifar10,
    have_gender,
    interleaved,
    sandbox_overrides,
    timed,
)

BENCH = "train"
CPU = torch.device("cpu")
THROUGHPUT_TARGET = 0.97
SPEED_TARGET = 2.5
ACC_TOLERANCE_POINTS = 1.0
# full pass: timed rounds per case while they fit in this (the short cases get up to 9 rounds)
ROUNDS_BUDGET_S = 150.0


# ------------------------------------------------------------------------------------ cases
@dataclass
class Case:
    """One model on one dataset, with the sizes used in a quick and a full pass."""

    name: str
    overrides: list[str]
    dataset: str  # gender | cifar10
    limit_train: dict[str, int | None]  # per mode ("quick"/"full"): images before the val split
    # epochs per timed run: several in the full pass, so that what fit pays per epoch (validation,
    # checkpoints, logging) weighs as in a run, and its once-per-run set-up less than in a 1 s run
    epochs: dict[str, int]
    acc_epochs: dict[str, int]  # epochs of the fp32 vs bf16 accuracy comparison
    extra: list[str] = field(default_factory=list)


def cases() -> list[Case]:
    return [
        Case(
            "gender/course_cnn",
            ["model=course_cnn"],
            "gender",
            limit_train={"quick": 2000, "full": None},
            epochs={"quick": 1, "full": 3},
            acc_epochs={"quick": 2, "full": 8},
        ),
        Case(  # the gender_fool experiment's model: VGG-style, batch norm, 16-32-64 channels
            "gender/vgg_small",
            ["model=vgg_small", "model.widths=[16,32,64]", "model.hidden=128"],
            "gender",
            limit_train={"quick": 600, "full": 2000},
            epochs={"quick": 1, "full": 3},
            acc_epochs={"quick": 1, "full": 3},
        ),
        Case(  # the cifar10_fool experiment's model (its own overrides come with the experiment)
            "cifar10/vgg_small",
            [],
            "cifar10",
            limit_train={"quick": 600, "full": 2000},
            epochs={"quick": 1, "full": 3},
            acc_epochs={"quick": 1, "full": 3},
        ),
    ]


def base_overrides(case: Case, tmp: Path, limit_train: int | None) -> list[str]:
    data = gender_overrides() if case.dataset == "gender" else cifar10_overrides()
    out = [
        *data,
        *sandbox_overrides(tmp),
        *case.overrides,
        "model.dropout=0.0",
        "data.augment.hflip=false",
        "data.augment.shift=0",
        "data.augment.rotation=0",
        "train.scheduler.name=none",
        "train.early_stopping.enabled=true",
        "train.early_stopping.patience=1000",  # active, but never stops: both sides run all epochs
        "train.checkpoint=true",
        "train.progress=true",
        "train.channels_last=false",
        "train.precision=fp32",
        "tracking.experiment=bench_train",
    ]
    if case.dataset == "cifar10":
        out.append("data.limit_test=2000")
    if limit_train is not None:
        out.append(f"data.limit_train={limit_train}")
    return out


# ------------------------------------------------------------------------------ bare baseline
def bare_fit(
    model: nn.Module,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    val_images: np.ndarray,
    val_labels: np.ndarray,
    *,
    make_optimizer: Callable[[nn.Module], torch.optim.Optimizer],
    epochs: int,
    batch_size: int,
    seed: int,
    channels_last: bool = False,
    bf16: bool = False,
    device: torch.device = CPU,
) -> dict[str, float]:
    """A competent hand-written loop: shuffled uint8 batches -> float/255, train + val per epoch.

    Returns the last epoch's validation accuracy and the images seen. Accuracy accumulates as a
    tensor and is read once per epoch (no host sync per batch), as a careful user would write. On
    CUDA the uint8 batch is pinned and copied asynchronously, then converted on the device.
    """
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device=device, memory_format=fmt)
    optimizer = make_optimizer(model)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    autocast = (
        (lambda: torch.autocast(device.type, dtype=torch.bfloat16))
        if bf16
        else contextlib.nullcontext
    )
    pin = device.type == "cuda"

    def to_device(array: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(array)
        return (t.pin_memory() if pin else t).to(device, non_blocking=True)

    n = len(train_labels)
    val_acc = 0.0
    for _ in range(epochs):
        model.train()
        order = torch.randperm(n, generator=gen).numpy()
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            x = to_device(train_images[idx]).float().div_(255)
            x = x.contiguous(memory_format=fmt)
            y = to_device(train_labels[idx])
            with autocast():
                loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        correct = torch.zeros((), dtype=torch.int64, device=device)
        with torch.no_grad():
            for start in range(0, len(val_labels), 256):
                x = to_device(val_images[start : start + 256]).float().div_(255)
                with autocast():
                    logits = model(x.contiguous(memory_format=fmt))
                correct += (logits.argmax(1) == to_device(val_labels[start : start + 256])).sum()
        val_acc = correct.item() / max(len(val_labels), 1)
    return {"val_acc": val_acc, "images": float(n * epochs)}


@torch.no_grad()
def test_accuracy(
    model: nn.Module, images: np.ndarray, labels: np.ndarray, device: torch.device = CPU
) -> float:
    """Clean accuracy in [0, 1], fp32, eval mode, contiguous format (the same for every model)."""
    model = model.to(device=device, memory_format=torch.contiguous_format).eval()
    correct = 0
    for start in range(0, len(labels), 512):
        x = torch.from_numpy(images[start : start + 512]).to(device).float().div_(255)
        y = torch.from_numpy(labels[start : start + 512]).to(device)
        correct += int((model(x).argmax(1) == y).sum())
    return correct / len(labels)


# ---------------------------------------------------------------------------------- harness
class Harness:
    """One case: composed config, data, initial weights, and the contenders as callables."""

    def __init__(
        self, case: Case, tmp: Path, mode: str, tracker: Any, device: torch.device = CPU
    ) -> None:
        from advlab.data import load_data
        from advlab.models import build_model

        self.case, self.tmp, self.tracker, self.device = case, tmp, tracker, device
        self.cfg = compose(base_overrides(case, tmp, case.limit_train[mode]))
        t0 = time.perf_counter()
        self.data = load_data(self.cfg.data, seed=self.cfg.seed, cache_dir=tmp / "cache")
        self.load_seconds = time.perf_counter() - t0
        torch.manual_seed(self.cfg.seed)
        self._build = lambda: build_model(self.cfg.model, self.data)
        self.init_state = copy.deepcopy(self._build().state_dict())
        self.batch_size = int(self.cfg.train.batch_size)
        self._runs = 0

    def fresh_model(self) -> nn.Module:
        model = self._build()
        model.load_state_dict(self.init_state)
        return model

    def make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        import hydra.utils

        # The same optimizer class and hyperparameters as advlab, on plain model.parameters().
        return hydra.utils.instantiate(self.cfg.optimizer, _convert_="all")(model.parameters())

    def bare(
        self, epochs: int, *, channels_last: bool = False, bf16: bool = False, small: bool = False
    ) -> Callable[[], Any]:
        def run() -> Any:
            model = self.fresh_model()
            tr = self.data.train
            n = 256 if small else len(tr)
            out = bare_fit(
                model,
                tr.images[:n],
                tr.labels[:n],
                self.data.val.images,
                self.data.val.labels,
                make_optimizer=self.make_optimizer,
                epochs=epochs,
                batch_size=self.batch_size,
                seed=int(self.cfg.seed),
                channels_last=channels_last,
                bf16=bf16,
                device=self.device,
            )
            return model, out

        return run

    def advlab(
        self,
        epochs: int,
        *,
        channels_last: bool = False,
        bf16: bool = False,
        small: bool = False,
        tracked: bool = True,
    ) -> Callable[[], Any]:
        from omegaconf import OmegaConf

        from advlab.data.base import DataSplits
        from advlab.training.fit import fit

        cfg_train = copy.deepcopy(self.cfg.train)
        OmegaConf.set_struct(cfg_train, False)
        cfg_train.epochs = epochs
        cfg_train.channels_last = channels_last
        cfg_train.precision = "bf16" if bf16 else "fp32"
        data = self.data
        if small:
            data = DataSplits(**{**data.__dict__, "train": data.train.subset(slice(0, 256))})

        def run() -> Any:
            model = self.fresh_model()
            self._runs += 1
            run_dir = self.tmp / "fit" / f"{self._runs}"
            result = fit(
                model,
                data,
                cfg_train,
                self.cfg.optimizer,
                seed=int(self.cfg.seed),
                device=self.device,
                run_dir=run_dir,
                on_epoch=self.tracker.log_epoch if (tracked and self.tracker) else None,
            )
            return model, result

        return run


def _throughput(h: Harness, seconds: float, epochs: int) -> float:
    return len(h.data.train) * epochs / seconds


# ------------------------------------------------------------------------------------ items
def bench_case(
    case: Case, mode: str, tmp: Path, tracker: Any, figures: list[Figure], device: torch.device
) -> None:
    quick = mode == "quick"
    h = Harness(case, tmp, mode, tracker, device)
    epochs = case.epochs[mode]
    n_train = len(h.data.train)
    print(
        f"-- {case.name}: {n_train} train / {len(h.data.val)} val / {len(h.data.test)} test "
        f"images of {'x'.join(map(str, h.data.train.shape))}, batch {h.batch_size}, "
        f"{epochs} epoch(s) per timed run",
        flush=True,
    )
    modes = {
        "bare fp32": dict(),
        "advlab fp32": dict(),
        "advlab fp32 untracked": dict(tracked=False),
        "advlab channels_last": dict(channels_last=True),
        "advlab bf16": dict(bf16=True),
        "advlab channels_last+bf16": dict(channels_last=True, bf16=True),
        "bare channels_last+bf16": dict(channels_last=True, bf16=True),
    }

    def contender(name: str, small: bool) -> Callable[[], Any]:
        if name.startswith("bare"):
            return h.bare(epochs if not small else 1, small=small, **modes[name])
        return h.advlab(epochs if not small else 1, small=small, **modes[name])

    # A small warm-up per contender (oneDNN builds its kernels per shape and format on first use),
    # then the timed rounds, interleaved.
    for name in modes:
        contender(name, small=True)()
    timings = interleaved(
        {name: contender(name, small=False) for name in modes},
        repeats=2 if quick else 3,
        warmup=0,
        device=device,
        budget_s=None if quick else ROUNDS_BUDGET_S,
    )
    ips = {name: _throughput(h, t.median, epochs) for name, t in timings.items()}
    spread = max(t.spread for t in timings.values())
    note = f"median of {len(timings['bare fp32'].seconds)}, max spread {spread:.0%}"

    # Item 1: advlab fp32 vs bare fp32.
    fit_result = timings["advlab fp32"].result[1]
    train_only = float(np.median([m["images_per_s"] for m in fit_result.history]))
    emit(
        Figure(
            BENCH,
            f"{case.name} fp32 images/s (fit vs bare)",
            ips["advlab fp32"],
            "img/s",
            baseline=ips["bare fp32"],
            target=THROUGHPUT_TARGET,
            note=f"{note}; fit's own train-phase figure {train_only:.0f} img/s",
        ),
        figures,
    )
    mlflow_share = 100 * (1 - ips["advlab fp32"] / ips["advlab fp32 untracked"])
    emit(
        Figure(
            BENCH,
            f"{case.name} fp32 fit without MLflow vs bare",
            ips["advlab fp32 untracked"],
            "img/s",
            baseline=ips["bare fp32"],
            target_kind="info",
            note=f"MLflow log_epoch: {mlflow_share:.1f}% of the tracked fit's time",
        ),
        figures,
    )
    # Item 2: speed modes vs the bare fp32 loop.
    for name in ("advlab channels_last", "advlab bf16", "advlab channels_last+bf16"):
        emit(
            Figure(
                BENCH,
                f"{case.name} {name.removeprefix('advlab ')} vs bare fp32",
                ips[name],
                "img/s",
                baseline=ips["bare fp32"],
                target=SPEED_TARGET if name.endswith("channels_last+bf16") else None,
                target_kind="ratio>=" if name.endswith("channels_last+bf16") else "info",
            ),
            figures,
        )
    emit(
        Figure(
            BENCH,
            f"{case.name} channels_last+bf16: fit vs bare",
            ips["advlab channels_last+bf16"],
            "img/s",
            baseline=ips["bare channels_last+bf16"],
            baseline_name="bare cl+bf16",
            target=THROUGHPUT_TARGET,
            note="what the hardware allows in that mode",
        ),
        figures,
    )
    bench_accuracy(h, case, mode, figures)


def bench_accuracy(h: Harness, case: Case, mode: str, figures: list[Figure]) -> None:
    """Clean test accuracy after the same training in fp32 and in channels_last+bf16."""
    epochs = case.acc_epochs[mode]
    accs, secs = {}, {}
    for label, kwargs in (
        ("fp32", {}),
        ("channels_last+bf16", {"channels_last": True, "bf16": True}),
    ):
        seconds, (model, _) = timed(h.advlab(epochs, **kwargs), h.device)
        accs[label] = 100 * test_accuracy(model, h.data.test.images, h.data.test.labels, h.device)
        secs[label] = seconds
    diff = accs["channels_last+bf16"] - accs["fp32"]
    emit(
        Figure(
            BENCH,
            f"{case.name} test acc bf16+cl minus fp32",
            diff,
            "points",
            target=ACC_TOLERANCE_POINTS,
            target_kind="abs<=",
            note=(
                f"fp32 {accs['fp32']:.1f}% vs {accs['channels_last+bf16']:.1f}% after {epochs} "
                f"epoch(s), n_test={len(h.data.test)}; {secs['fp32']:.0f} s vs "
                f"{secs['channels_last+bf16']:.0f} s"
            ),
            extra={"acc": accs, "seconds": secs, "epochs": epochs},
        ),
        figures,
    )


def bench_scaling(mode: str, tmp: Path, figures: list[Figure], device: torch.device) -> None:
    """Item 7 (training): one epoch of advlab fit against training-set size (CIFAR-10)."""
    from omegaconf import OmegaConf

    from advlab.data import load_data
    from advlab.data.base import DataSplits
    from advlab.models import build_model
    from advlab.training.fit import fit

    sizes = [500, 1000, 2000] if mode == "quick" else [1000, 5000, 10000]
    case = Case("cifar10/vgg_small", [], "cifar10", {}, {}, {})
    # One read of the archive; the smaller sets are prefixes of the largest training split (the
    # validation split stays the same, so its cost lands in the fixed part of the fit).
    cfg = compose(base_overrides(case, tmp, int(round(max(sizes) / 0.9))))
    full = load_data(cfg.data, seed=cfg.seed, cache_dir=tmp / "cache")
    cfg_train = copy.deepcopy(cfg.train)
    OmegaConf.set_struct(cfg_train, False)
    cfg_train.epochs = 1
    cfg_train.channels_last = True  # the cifar10_fool experiment's own setting
    seconds = {}
    for size in sizes:
        data = DataSplits(**{**full.__dict__, "train": full.train.subset(slice(0, size))})
        torch.manual_seed(0)
        model = build_model(cfg.model, data)
        res = fit(
            model,
            data,
            cfg_train,
            cfg.optimizer,
            seed=0,
            device=device,
            run_dir=tmp / "scaling" / str(size),
        )
        seconds[len(data.train)] = res.seconds
    ns = sorted(seconds)
    per_1k = {n: 1000 * seconds[n] / n for n in ns}
    slope, intercept = np.polyfit(ns, [seconds[n] for n in ns], 1)
    pred = [slope * n + intercept for n in ns]
    ss_res = sum((seconds[n] - p) ** 2 for n, p in zip(ns, pred, strict=True))
    mean = np.mean([seconds[n] for n in ns])
    ss_tot = sum((seconds[n] - mean) ** 2 for n in ns) or 1e-12
    r2 = 1 - ss_res / ss_tot
    detail = ", ".join(f"{n}: {seconds[n]:.1f} s ({per_1k[n]:.2f} s/1k)" for n in ns)
    emit(
        Figure(
            BENCH,
            "scaling: epoch time vs n_train (R^2 of a line)",
            r2,
            "R^2",
            target=0.98,
            target_kind="value>=",
            note=f"{detail}; fixed cost {intercept:.2f} s",
            extra={"seconds": seconds},
        ),
        figures,
    )
    emit(
        Figure(
            BENCH,
            f"scaling: s per 1k images at {ns[-1]} vs {ns[0]}",
            per_1k[ns[-1]],
            "s/1k",
            baseline=per_1k[ns[0]],
            baseline_name=f"at {ns[0]}",
            target_kind="info",
            note="<= 1x: no super-linear cost",
        ),
        figures,
    )


# ------------------------------------------------------------------------------------- main
def _open_tracker(tmp: Path) -> Any:
    """A real MLflow run on a SQLite store in ``tmp`` whose ``log_epoch`` is fit's callback."""
    from advlab.tracking import Tracker

    cfg = compose([*gender_overrides(), *sandbox_overrides(tmp), "tracking.experiment=bench_train"])
    return Tracker(cfg, run_dir=tmp / "tracker_run")


def run(
    quick: bool = False, only_case: str | None = None, device: torch.device = CPU
) -> list[Figure]:
    """Run items 1, 2 and 7 (training) on ``device``; return the figures (printed as they came)."""
    mode = "quick" if quick else "full"
    figures: list[Figure] = []
    logging.getLogger("advlab").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="advlab-bench-train-") as tmp_name:
        tmp = Path(tmp_name)
        with _open_tracker(tmp) as tracker:
            for case in cases():
                if only_case and only_case not in case.name:
                    continue
                if case.dataset == "gender" and not have_gender():
                    print(f"[{BENCH}] {case.name}: SKIP (../shared/data/gender not found)")
                    continue
                if case.dataset == "cifar10" and not have_cifar10():
                    print(f"[{BENCH}] {case.name}: SKIP (../shared/data/cifar10 not found)")
                    continue
                bench_case(case, mode, tmp, tracker, figures, device)
        if have_cifar10() and not only_case:
            bench_scaling(mode, tmp, figures, device)
        else:
            print(f"[{BENCH}] scaling: SKIP (no CIFAR-10 archive, or --case given)")
    return figures


def main(argv: list[str] | None = None) -> list[Figure]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, fewer repeats")
    parser.add_argument("--case", help="only cases whose name contains this (e.g. course_cnn)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads before measuring")
    parser.add_argument("--device", default="cpu", help="auto | cpu | cuda (default: cpu)")
    args = parser.parse_args(argv)
    from advlab.runtime import select_device
    from benchmarks.common import prepare_process, print_machine

    prepare_process(args.threads)
    print_machine()
    return run(quick=args.quick, only_case=args.case, device=select_device(args.device))


if __name__ == "__main__":
    main()
