"""Running attacks on the evaluated points: eval mode, the clean pass, batched attack calls and the
:class:`AttackRunner` that turns one attack at one eps into a checked per-example outcome.

Used by the robustness evaluation (:mod:`advlab.attacks.evaluate`) and the transfer evaluation
(:mod:`advlab.attacks.transfer`); it imports neither.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from advlab.attacks import metrics, sanity
from advlab.attacks.outcome import Clean, Outcome, outcome_of
from advlab.config import Norm
from advlab.data.base import to_float
from advlab.errors import AttackError
from advlab.naming import to_pixels

# (adversarial images, their logits, seconds, points counted as attacked)
_Run = tuple[torch.Tensor, torch.Tensor, float, np.ndarray]


@contextmanager
def eval_mode(model: nn.Module, *, channels_last: bool = False) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode with frozen parameters; restore both afterwards.

    Frozen parameters make every backward pass compute the input gradient only (faster), and stop
    attacks that call ``backward()`` (CW, DeepFool) from leaving gradients on the weights.
    ``channels_last`` holds the convolution weights in that memory format meanwhile (the first
    convolution then passes it on to every activation): on CPUs oneDNN's convolutions and max
    pooling run 1.3-2.6x faster per PGD step on the benchmark models (docs/benchmarks.md). The
    arithmetic is the same up to float rounding; the weights' own format is put back afterwards.
    """
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    originals = [(p, p.data) for p in model.parameters() if p.dim() == 4]  # the exact strides
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    try:
        yield model
    finally:
        for p, data in originals:
            p.data = data
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


def assert_eval(model: nn.Module) -> None:
    """Raise :class:`AttackError` if any module of ``model`` is in training mode."""
    # torchattacks restores the mode it found, so a module switched to train() mid-way would make
    # dropout / batch-norm statistics part of the "robustness": refuse rather than report it.
    if any(m.training for m in model.modules()):
        raise AttackError("the model is in training mode during evaluation (dropout/batch norm on)")


def load_points(data: Any, indices: np.ndarray, device: torch.device) -> tuple[torch.Tensor, ...]:
    """The test points ``indices`` of ``data`` (a DataSplits) as ``(x, y)`` on ``device``:
    x float (N, C, H, W) in [0, 1], y int64 (N,)."""
    x = to_float(torch.from_numpy(np.ascontiguousarray(data.test.images[indices]))).to(device)
    y = torch.from_numpy(np.asarray(data.test.labels[indices], dtype=np.int64)).to(device)
    return x, y


@torch.no_grad()
def split_accuracy(model: nn.Module, split: Any, batch_size: int, device: torch.device) -> float:
    """Accuracy in [0, 1] of ``model`` (in eval mode) on a whole split (an ``ImageSet``: uint8
    images, int labels): one forward pass in batches, no gradient, nothing kept but the count."""
    correct, n = 0, len(split.labels)
    for start in range(0, n, batch_size):
        images = np.ascontiguousarray(split.images[start : start + batch_size])
        x = to_float(torch.from_numpy(images)).to(device)
        y = torch.from_numpy(np.asarray(split.labels[start : start + batch_size], dtype=np.int64))
        correct += int((model(x).argmax(dim=1).cpu() == y).sum())
    return correct / n if n else math.nan


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clean_pass(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> Clean:
    """One forward pass over ``x`` (float (N, C, H, W) in [0, 1]) with the input gradient.

    The logits serve every attack (clean accuracy, points to attack, confidences); the gradient of
    the summed cross-entropy w.r.t. the input gives the zero-gradient share (check
    ``zero_gradients``).
    """
    logits_all, zero_all = [], []
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size].clone().requires_grad_(True)
        yb = y[start : start + batch_size]
        with torch.enable_grad():
            logits = model(xb)
            loss = F.cross_entropy(logits.float(), yb, reduction="sum")
            (grad,) = torch.autograd.grad(loss, xb)
        logits_all.append(logits.detach().float())
        zero_all.append((grad.flatten(1).abs().amax(dim=1) == 0).cpu())
    logits = torch.cat(logits_all)
    pred = logits.argmax(dim=1)
    return Clean(
        logits=logits,
        pred=pred.cpu().numpy(),
        correct=(pred == y).cpu().numpy(),
        conf_true=metrics.true_class_confidence(logits, y).cpu().numpy(),
        zero_grad=torch.cat(zero_all).numpy(),
    )


def run_attack(
    attack: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    mask: np.ndarray,
    batch_size: int,
    clean_logits: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Attack the points where ``mask`` is true, in batches; the others keep their clean image.

    Returns ``(x_adv, logits_adv, seconds)``: x_adv float (N, C, H, W) in [0, 1], logits (N, K)
    (clean logits where not attacked), and the wall time of the attack plus its forward passes.
    """
    device = x.device
    idx = torch.from_numpy(np.flatnonzero(mask)).to(device)
    x_adv = x.clone()
    logits_adv = clean_logits.clone()
    _sync(device)
    start_time = time.perf_counter()
    for start in range(0, len(idx), batch_size):
        b = idx[start : start + batch_size]
        adv = attack(x[b], y[b]).detach()
        x_adv[b] = adv
        with torch.no_grad():
            logits_adv[b] = model(adv).float()
    _sync(device)
    return x_adv, logits_adv, time.perf_counter() - start_time


def _identity(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return images


class AttackRunner:
    """Runs the attacks of one evaluation on its points (the model in eval mode, the clean pass
    done) and keeps what the checks need: bound-check counts and violations, norms,
    white-box flags."""

    def __init__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        clean: Clean,
        *,
        batch_size: int,
        seed: int,
        num_classes: int,
    ) -> None:
        self.model, self.x, self.y, self.clean = model, x, y, clean
        self.batch_size, self.seed, self.num_classes = batch_size, seed, num_classes
        self._unbounded: dict[tuple[str, bytes], tuple[torch.Tensor, torch.Tensor, float]] = {}
        self.n_checked = 0
        self.white_box: dict[str, bool] = {}
        # Threat model of each attack's rows: linf (incl. thresholded minimum-norm) or l2.
        self.norms: dict[str, str] = {}
        self.worst_ratio = math.nan
        self.violations: list[str] = []  # one line per attack x eps that left its ball or [0, 1]

    def make(self, factory: Callable[..., Any], eps: float, **overrides: Any) -> Any:
        """Instantiate an attack partial with the run-time arguments."""
        return factory(
            self.model, eps=eps, seed=self.seed, num_classes=self.num_classes, **overrides
        )

    def attack(
        self,
        name: str,
        factory: Callable[..., Any],
        eps: float,
        rows: np.ndarray | None = None,
        carry: tuple[torch.Tensor, Outcome] | None = None,
        **overrides: Any,
    ) -> tuple[torch.Tensor, Outcome]:
        """Run attack ``name`` at ``eps`` (1/255) on the points ``rows`` (default: all).

        ``carry`` is this attack's result at a smaller eps on the same rows (the eps cascade):
        a point it already fooled keeps that adversarial example, which lies inside the larger
        ball too, and only the points still robust are attacked. Returns the adversarial images
        (len(rows), C, H, W) and the per-example outcome. Check 1 (bounds) runs on every result:
        a violation is recorded in ``violations`` (the ``bounds`` check then fails) and the
        evaluation goes on.
        """
        rows = np.arange(len(self.x)) if rows is None else rows
        sel = torch.from_numpy(rows).to(self.x.device)
        x, y, clean_logits = self.x[sel], self.y[sel], self.clean.logits[sel]
        mask = self.clean.correct[rows]
        atk = self.make(factory, eps, **overrides)
        self.white_box[name] = bool(atk.advlab_white_box)
        self.norms[name] = atk.advlab_norm if atk.advlab_budget is not None else Norm.linf
        assert_eval(self.model)
        if eps == 0:
            run, norm, budget = self._at_zero(x, y, mask, clean_logits), Norm.linf, 0.0
        elif atk.advlab_budget is None:
            run = self._thresholded(name, atk, eps, rows, x, y, mask, clean_logits)
            norm, budget = Norm.linf, to_pixels(eps)
        else:
            run = self._cascaded(atk, x, y, mask, clean_logits, carry)
            norm, budget = atk.advlab_norm, atk.advlab_budget
        x_adv, logits, seconds, attacked = run
        largest, problem = sanity.bound_violation(name, eps, x_adv, x, norm=norm, budget=budget)
        if problem is not None:
            self.violations.append(problem)
        self._count_checked(attacked, largest, budget)
        return x_adv, outcome_of(x_adv, logits, x, y, seconds)

    def _at_zero(self, x, y, mask, clean_logits) -> _Run:
        # A zero budget admits x itself only: no attack runs (Square or APGD would spend their
        # full query/step budget for nothing). The forward pass still goes through the same
        # path as every attack, so check 2 tests that path (eval mode, batching).
        run = run_attack(_identity, self.model, x, y, mask, self.batch_size, clean_logits)
        return (*run, mask)

    def _thresholded(self, name, atk, eps, rows, x, y, mask, clean_logits) -> _Run:
        """Minimum-norm attack: one unbounded run per point set, thresholded at each eps."""
        key = (name, rows.tobytes())
        ran = key not in self._unbounded
        if ran:
            self._unbounded[key] = run_attack(
                atk, self.model, x, y, mask, self.batch_size, clean_logits
            )
        x_full, logits_full, run_seconds = self._unbounded[key]
        t0 = time.perf_counter()
        linf, _ = metrics.perturbation_norms(x_full, x)
        # float32 (k/255) rounding: a perturbation of exactly eps must count as inside.
        inside = linf <= to_pixels(eps) + sanity.BOUND_TOL
        x_adv = torch.where(inside.view(-1, 1, 1, 1), x_full, x)
        logits = torch.where(inside.view(-1, 1), logits_full, clean_logits)
        # The one unbounded run is charged to the first eps that needed it.
        seconds = (run_seconds if ran else 0.0) + time.perf_counter() - t0
        return x_adv, logits, seconds, mask

    def _cascaded(self, atk, x, y, mask, clean_logits, carry) -> _Run:
        """Bounded attack on the points still robust after ``carry`` (all attackable if None)."""
        fooled_before = None
        if carry is not None:
            fooled_before = mask & ~carry[1].correct
            mask = mask & carry[1].correct
        x_adv, logits, seconds = run_attack(
            atk, self.model, x, y, mask, self.batch_size, clean_logits
        )
        if fooled_before is not None and fooled_before.any():
            keep = torch.from_numpy(np.flatnonzero(fooled_before)).to(x.device)
            x_adv[keep] = carry[0][keep]
            with torch.no_grad():
                logits[keep] = self.model(x_adv[keep]).float()
            mask = mask | fooled_before  # counted as attacked points
        return x_adv, logits, seconds, mask

    def _count_checked(self, attacked: np.ndarray, largest: float, budget: float) -> None:
        self.n_checked += int(attacked.sum())
        if budget > 0:
            ratio = largest / budget
            self.worst_ratio = (
                ratio if math.isnan(self.worst_ratio) else max(self.worst_ratio, ratio)
            )
