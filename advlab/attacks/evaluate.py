"""Robustness evaluation: every attack in ``eval.attacks`` at every budget in ``eval.eps``.

Definitions (docs/attacks.md has the user's version):

- The evaluated points are a fixed, seeded subset of ``eval.n_examples`` test images (all if null).
- **robust accuracy** = correct after the attack / all evaluated points, with a 95% Wilson interval.
  Points misclassified before the attack are *not attacked* (they count as not robust whatever an
  attack would do), which saves the attack's steps without changing the number.
- **attack success rate** = points correct before and wrong after / points correct before.
- Perturbation norms (``linf_*`` in 1/255 units, ``l2_*`` in pixel units) and the true-class
  confidences (``conf_true_clean`` / ``conf_true_adv``) are averaged over the *attacked* points
  (those correct before the attack), so clean and adversarial confidences compare like for like.
- **worst_case** (when two or more L-inf attacks ran): per example, robust only if robust against
  every L-inf attack at that eps (``pgd_l2`` is left out: its ball is another threat model); its
  adversarial example is the one that fools it with the lowest true-class confidence (else the one
  with the lowest confidence).
- At eps 0 no attack runs (a zero budget admits only x); the row still goes through the same
  adversarial forward path, so "eps 0 gives the clean accuracy" tests that path.
- Minimum-norm attacks (``cw``, ``deepfool``) take no budget: they run once, and at each grid eps an
  example counts as adversarial only when its L-inf perturbation lies within eps/255 (else the clean
  image stands). So every row of the table lives in the same L-inf ball as the grid says.
- Confusion matrices are ``[true][predicted]``; for points not attacked, the adversarial
  prediction is the clean one.

Speed: the whole subset is attacked in batches of ``eval.batch_size``; one clean forward (with the
input gradient, reused for the zero-gradient check) serves every attack; only clean-correct points
are attacked; the model's parameters are frozen (``requires_grad=False``) during the evaluation
so that backward passes compute input gradients only.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from advlab import naming
from advlab.attacks import metrics, sanity
from advlab.attacks.grids import save_grid
from advlab.attacks.sanity import SanityCheck
from advlab.attacks.zoo import check_attack_support
from advlab.errors import AttackError, ConfigError
from advlab.runtime import progress

log = logging.getLogger(__name__)

TABLE_COLUMNS = [
    "attack",
    "eps",
    "robust_acc",
    "ci_low",
    "ci_high",
    "asr",
    "n",
    "n_clean_correct",
    "linf_mean",
    "linf_max",
    "l2_mean",
    "l2_max",
    "conf_true_clean",
    "conf_true_adv",
    "seconds",
]
PER_CLASS_COLUMNS = ["attack", "eps", "class", "robust_acc", "n"]


@dataclass
class Evaluation:
    """Everything one robustness evaluation measured (see the module docstring for definitions)."""

    clean_acc: float
    n: int
    table: pd.DataFrame  # one row per attack x eps (TABLE_COLUMNS), 'worst_case' included
    per_class: pd.DataFrame  # PER_CLASS_COLUMNS
    confusion: dict[str, list[list[int]]]  # "clean" and "<attack>/eps_<e>": [true][pred] counts
    sanity: list[SanityCheck]
    artifacts: list[Path]  # files written under out_dir
    transfer: pd.DataFrame | None = None  # attack, eps, source, target, accuracy, n (if any)
    indices: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


@dataclass
class _Outcome:
    """Per-example result of one attack at one eps (arrays of shape (N,))."""

    correct: np.ndarray  # bool: still correctly classified
    pred: np.ndarray  # int64 prediction after the attack
    conf_true: np.ndarray  # float: softmax probability of the true class after the attack
    linf: np.ndarray  # float, pixel units (0 where not attacked)
    l2: np.ndarray  # float, pixel units
    seconds: float


@dataclass
class _Clean:
    logits: torch.Tensor  # (N, K) float, on the device
    pred: np.ndarray  # (N,) int64
    correct: np.ndarray  # (N,) bool
    conf_true: np.ndarray  # (N,) float
    zero_grad: np.ndarray  # (N,) bool: the input gradient of the loss is exactly zero


# --------------------------------------------------------------------------------------- helpers
def select_subset(n_test: int, n_examples: int | None, seed: int) -> np.ndarray:
    """Sorted indices of the evaluated test points: a seeded random subset of ``n_examples``.

    The same ``(n_test, n_examples, seed)`` always gives the same points, so runs with different
    models are evaluated on the same images. ``None`` (or more than the test set) takes them all.
    """
    if n_examples is None or n_examples >= n_test:
        if n_examples is not None and n_examples > n_test:
            log.warning("eval.n_examples=%d > %d test images: using all", n_examples, n_test)
        return np.arange(n_test, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.permutation(n_test)[:n_examples]).astype(np.int64)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode with frozen parameters; restore both afterwards.

    Frozen parameters make every backward pass compute the input gradient only (faster), and stop
    attacks that call ``backward()`` (CW, DeepFool) from leaving gradients on the weights.
    """
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


def _assert_eval(model: nn.Module) -> None:
    # torchattacks restores the mode it found, so a module switched to train() mid-way would make
    # dropout / batch-norm statistics part of the "robustness": refuse rather than report it.
    if any(m.training for m in model.modules()):
        raise AttackError("the model is in training mode during evaluation (dropout/batch norm on)")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clean_pass(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> _Clean:
    """One forward pass over ``x`` (float (N, C, H, W) in [0, 1]) with the input gradient.

    The logits serve every attack (clean accuracy, points to attack, confidences); the gradient of
    the summed cross-entropy w.r.t. the input gives the zero-gradient share (sanity check 7).
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
    return _Clean(
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


def _outcome(
    x_adv: torch.Tensor,
    logits: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    seconds: float,
) -> _Outcome:
    pred = logits.argmax(dim=1)
    linf, l2 = metrics.perturbation_norms(x_adv, x)
    return _Outcome(
        correct=(pred == y).cpu().numpy(),
        pred=pred.cpu().numpy(),
        conf_true=metrics.true_class_confidence(logits, y).cpu().numpy(),
        linf=linf.cpu().numpy(),
        l2=l2.cpu().numpy(),
        seconds=seconds,
    )


def _row(attack: str, eps: float, out: _Outcome, clean: _Clean) -> dict[str, Any]:
    n = len(out.correct)
    k = int(out.correct.sum())
    low, high = metrics.wilson_interval(k, n)
    attacked = clean.correct
    return {
        "attack": attack,
        "eps": float(eps),
        "robust_acc": k / n if n else math.nan,
        "ci_low": low,
        "ci_high": high,
        "asr": metrics.success_rate(clean.correct, out.correct),
        "n": n,
        "n_clean_correct": int(attacked.sum()),
        "linf_mean": metrics.mean_or_nan(out.linf[attacked] * 255),
        "linf_max": metrics.max_or_nan(out.linf[attacked] * 255),
        "l2_mean": metrics.mean_or_nan(out.l2[attacked]),
        "l2_max": metrics.max_or_nan(out.l2[attacked]),
        "conf_true_clean": metrics.mean_or_nan(clean.conf_true[attacked]),
        "conf_true_adv": metrics.mean_or_nan(out.conf_true[attacked]),
        "seconds": out.seconds,
    }


def _per_class_rows(
    attack: str, eps: float, correct: np.ndarray, labels: np.ndarray, class_names: list[str]
) -> list[dict[str, Any]]:
    rows = []
    for k, name in enumerate(class_names):
        mask = labels == k
        count = int(mask.sum())
        rows.append(
            {
                "attack": attack,
                "eps": float(eps),
                "class": name,
                "robust_acc": float(correct[mask].mean()) if count else math.nan,
                "n": count,
            }
        )
    return rows


def _worst_case(outcomes: list[_Outcome]) -> _Outcome:
    """Per example, the adversarial outcome of the attack that does the most damage."""
    correct = np.stack([o.correct for o in outcomes])
    conf = np.stack([o.conf_true for o in outcomes])
    # A fooling attack always ranks before a non-fooling one (+2 > any probability gap).
    chosen = np.argmin(conf + 2.0 * correct, axis=0)
    cols = np.arange(correct.shape[1])
    return _Outcome(
        correct=correct.all(axis=0),
        pred=np.stack([o.pred for o in outcomes])[chosen, cols],
        conf_true=conf[chosen, cols],
        linf=np.stack([o.linf for o in outcomes])[chosen, cols],
        l2=np.stack([o.l2 for o in outcomes])[chosen, cols],
        seconds=float(sum(o.seconds for o in outcomes)),
    )


def _atomic_write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def _eps_list(cfg_eval: Any) -> list[float]:
    eps = [float(e) for e in cfg_eval.eps]
    if not eps:
        raise ConfigError("eval.eps is empty: give at least one budget (1/255 units), e.g. [0, 8]")
    if any(e < 0 for e in eps):
        raise ConfigError(f"eval.eps={eps} has a negative budget (units of 1/255)")
    return sorted(set(eps))


class _Session:
    """The evaluated points and the model, shared by every attack run of one evaluation."""

    def __init__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        clean: _Clean,
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
        # Threat model of each attack's rows: 'linf' (incl. thresholded minimum-norm) or 'l2'.
        self.norms: dict[str, str] = {}
        self.worst_ratio = math.nan

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
        carry: tuple[torch.Tensor, _Outcome] | None = None,
        **overrides: Any,
    ) -> tuple[torch.Tensor, _Outcome]:
        """Run attack ``name`` at ``eps`` (1/255) on the points ``rows`` (default: all).

        ``carry`` is this attack's result at a smaller eps on the same rows (the eps cascade):
        a point it already fooled keeps that adversarial example, which lies inside the larger
        ball too, and only the points still robust are attacked. Returns the adversarial images
        (len(rows), C, H, W) and the per-example outcome. Check 1 (bounds) runs on every result
        and raises on a violation.
        """
        rows = np.arange(len(self.x)) if rows is None else rows
        sel = torch.from_numpy(rows).to(self.x.device)
        x, y = self.x[sel], self.y[sel]
        clean_logits, mask = self.clean.logits[sel], self.clean.correct[rows]
        atk = self.make(factory, eps, **overrides)
        budget = atk.advlab_budget
        self.white_box[name] = bool(atk.advlab_white_box)
        self.norms[name] = atk.advlab_norm if budget is not None else "linf"
        _assert_eval(self.model)
        if eps == 0:
            # A zero budget admits x itself only: no attack runs (Square or APGD would spend their
            # full query/step budget for nothing). The forward pass still goes through the same
            # path as every attack, so check 2 tests that path (eval mode, batching).
            x_adv, logits, seconds = run_attack(
                _identity, self.model, x, y, mask, self.batch_size, clean_logits
            )
            largest = sanity.check_bounds(name, eps, x_adv, x, norm="linf", budget=0.0)
            ratio_budget = 0.0
        elif budget is None:
            # Minimum-norm attack: one unbounded run per point set, thresholded at each eps.
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
            inside = linf <= eps / 255 + sanity.BOUND_TOL
            x_adv = torch.where(inside.view(-1, 1, 1, 1), x_full, x)
            logits = torch.where(inside.view(-1, 1), logits_full, clean_logits)
            # The one unbounded run is charged to the first eps that needed it.
            seconds = (run_seconds if ran else 0.0) + time.perf_counter() - t0
            largest = sanity.check_bounds(name, eps, x_adv, x, norm="linf", budget=eps / 255)
            ratio_budget = eps / 255
        else:
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
                mask = mask | fooled_before  # counted as attacked points below
            largest = sanity.check_bounds(name, eps, x_adv, x, norm=atk.advlab_norm, budget=budget)
            ratio_budget = budget
        self.n_checked += int(mask.sum())
        if ratio_budget > 0:
            ratio = largest / ratio_budget
            self.worst_ratio = (
                ratio if math.isnan(self.worst_ratio) else max(self.worst_ratio, ratio)
            )
        return x_adv, _outcome(x_adv, logits, x, y, seconds)


def _identity(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return images


# ------------------------------------------------------------------------------------ the contract
def evaluate_robustness(
    model: nn.Module,
    data: Any,
    cfg_eval: DictConfig,
    attacks: DictConfig,
    *,
    seed: int,
    device: torch.device,
    out_dir: Path,
    transfer_checkpoints: Mapping[str, Path] | None = None,
) -> Evaluation:
    """Attack ``model`` with every attack in ``attacks`` (the nodes named by ``eval.attacks``) at
    every eps in ``cfg_eval.eps`` (1/255 units) on a seeded subset of ``data.test``.

    ``transfer_checkpoints``: the files of ``eval.transfer_from`` already resolved
    (:func:`advlab.attacks.transfer.resolve_sources`, which also takes MLflow run ids); without
    it the entries must be paths.

    ``data`` is a :class:`advlab.data.base.DataSplits`; the model takes float (N, C, H, W) in [0, 1]
    and returns logits (N, K). Writes robustness.csv/.json, per_class.csv, confusion.json,
    sanity.json, grids/<attack>_eps_<e>.png and (``eval.save_adversarial``)
    adversarial/<attack>_eps_<e>.npz under ``out_dir``. Raises :class:`AttackError` when an attack
    cannot run on this task or an adversarial example leaves its eps ball.
    """
    from advlab.data.base import to_float

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    num_classes = int(data.num_classes)
    class_names = [str(c) for c in data.class_names]
    eps_grid = _eps_list(cfg_eval)
    batch_size = int(cfg_eval.batch_size)
    names = list(attacks.keys())
    for name in names:  # refuse undefined attacks before any work
        check_attack_support(name, attacks[name], num_classes)
    factories = {name: instantiate(attacks[name]) for name in names}

    indices = select_subset(len(data.test.labels), cfg_eval.n_examples, seed)
    if len(indices) == 0:
        raise ConfigError("the test set is empty: nothing to evaluate (data.limit_test?)")
    x = to_float(torch.from_numpy(np.ascontiguousarray(data.test.images[indices]))).to(device)
    y = torch.from_numpy(np.asarray(data.test.labels[indices], dtype=np.int64)).to(device)
    labels = y.cpu().numpy()
    n = len(indices)
    artifacts: list[Path] = []

    model.to(device)
    with eval_mode(model):
        _assert_eval(model)
        clean = clean_pass(model, x, y, batch_size)
        clean_acc = float(clean.correct.mean())
        log.info("clean accuracy %.1f%% on %d test points", 100 * clean_acc, n)
        session = _Session(
            model, x, y, clean, batch_size=batch_size, seed=seed, num_classes=num_classes
        )

        rows: list[dict[str, Any]] = []
        per_class = _per_class_rows("clean", 0.0, clean.correct, labels, class_names)
        confusion = {"clean": metrics.confusion_matrix(labels, clean.pred, num_classes)}
        outcomes: dict[str, dict[float, _Outcome]] = {name: {} for name in names}
        grid_eps = None if cfg_eval.grid_eps is None else float(cfg_eval.grid_eps)
        grid_rows = _grid_rows(clean.correct, labels, int(cfg_eval.grid_n))
        grid_images: dict[str, tuple[torch.Tensor, _Outcome]] = {}

        # Ascending eps per attack, so the cascade can hand each result to the next budget.
        jobs = [(name, eps) for name in names for eps in sorted(eps_grid)]
        carry: dict[str, tuple[torch.Tensor, _Outcome]] = {}
        for name, eps in progress(jobs, desc="attacks", unit="attack x eps"):
            cascade = bool(cfg_eval.cascade) and eps > 0 and name in carry
            x_adv, out = session.attack(
                name, factories[name], eps, carry=carry.get(name) if cascade else None
            )
            carry[name] = (x_adv, out)
            outcomes[name][eps] = out
            key = f"{name}/eps_{naming.format_eps(eps)}"
            rows.append(_row(name, eps, out, clean))
            per_class += _per_class_rows(name, eps, out.correct, labels, class_names)
            confusion[key] = metrics.confusion_matrix(labels, out.pred, num_classes)
            log.info(
                "%-10s eps %5s/255: robust acc %.1f%% (%.1fs)",
                name,
                naming.format_eps(eps),
                100 * rows[-1]["robust_acc"],
                out.seconds,
            )
            if grid_eps is not None and eps == grid_eps:
                grid_images[name] = (x_adv[grid_rows], _take(out, grid_rows))
            if cfg_eval.save_adversarial:
                artifacts.append(
                    _save_adversarial(out_dir, name, eps, x_adv, out, labels, clean, indices)
                )

        # Worst case over the attacks that share the grid's L-inf threat model (pgd_l2's rows live
        # in an L2 ball of another size, so mixing it in would not be a worst case of anything).
        linf_names = [name for name in names if session.norms[name] == "linf"]
        if len(linf_names) >= 2:
            for eps in eps_grid:
                out = _worst_case([outcomes[name][eps] for name in linf_names])
                outcomes.setdefault(naming.WORST_CASE, {})[eps] = out
                rows.append(_row(naming.WORST_CASE, eps, out, clean))
                per_class += _per_class_rows(
                    naming.WORST_CASE, eps, out.correct, labels, class_names
                )
                key = f"{naming.WORST_CASE}/eps_{naming.format_eps(eps)}"
                confusion[key] = metrics.confusion_matrix(labels, out.pred, num_classes)

        table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
        checks = [
            sanity.bounds_summary(session.n_checked, session.worst_ratio),
            sanity.check_eps_zero(table, clean_acc, n),
            sanity.check_pgd_le_fgsm(table, float(cfg_eval.sanity.tolerance)),
            sanity.check_monotone(
                table, float(cfg_eval.sanity.tolerance), cascade=bool(cfg_eval.cascade)
            ),
            sanity.check_chance(table, num_classes, float(cfg_eval.sanity.chance_margin)),
            _convergence_check(session, factories, attacks, outcomes, cfg_eval),
            sanity.check_zero_gradients(clean.zero_grad),
            sanity.check_black_box(
                table,
                {a: wb for a, wb in session.white_box.items() if session.norms[a] == "linf"},
                float(cfg_eval.sanity.tolerance),
            ),
        ]
        for check in checks:
            (log.warning if check.status != sanity.PASS else log.info)(
                "sanity %s: %s: %s", check.name, check.status, check.evidence
            )

        if grid_eps is not None:
            for name in names:
                if name not in grid_images:  # grid eps not in the grid: attack the few shown
                    grid_images[name] = session.attack(name, factories[name], grid_eps, grid_rows)
                adv, out = grid_images[name]
                artifacts.append(
                    _grid(
                        out_dir,
                        model,
                        name,
                        grid_eps,
                        x,
                        adv,
                        out,
                        grid_rows,
                        labels,
                        clean,
                        class_names,
                    )
                )

        transfer = None
        if list(cfg_eval.transfer_from):
            from advlab.attacks.transfer import evaluate_transfer

            transfer, written = evaluate_transfer(
                model,
                data,
                cfg_eval,
                attacks,
                x=x,
                y=y,
                seed=seed,
                device=device,
                out_dir=out_dir,
                checkpoints=transfer_checkpoints,
            )
            artifacts += written

    per_class_df = pd.DataFrame(per_class, columns=PER_CLASS_COLUMNS)
    artifacts += _write_tables(out_dir, table, per_class_df, confusion, checks)
    return Evaluation(
        clean_acc=clean_acc,
        n=n,
        table=table,
        per_class=per_class_df,
        confusion=confusion,
        sanity=checks,
        artifacts=artifacts,
        transfer=transfer,
        indices=indices,
    )


def headline_metrics(evaluation: Evaluation) -> dict[str, float]:
    """``clean_acc`` plus ``robust_acc/<attack>/eps_<e>`` and ``asr/<attack>/eps_<e>`` per row.

    Names come from :mod:`advlab.naming`. An undefined value (ASR with no point correct before the
    attack) is left out rather than logged as NaN.
    """
    out: dict[str, float] = {naming.CLEAN_ACC: float(evaluation.clean_acc)}
    for row in evaluation.table.itertuples():
        for key, value in (
            (naming.robust_acc_key(row.attack, row.eps), row.robust_acc),
            (naming.asr_key(row.attack, row.eps), row.asr),
        ):
            if value is not None and not math.isnan(value):
                out[key] = float(value)
    return out


# ----------------------------------------------------------------------------------- the extras
def _grid_rows(clean_correct: np.ndarray, labels: np.ndarray, grid_n: int) -> np.ndarray:
    """Rows shown in the grids: clean-correct points first (the ones an attack can flip), taken
    round-robin over the classes so that a test set stored class by class still shows them all."""
    picked: list[int] = []
    for pool in (clean_correct, ~clean_correct):
        queues = [np.flatnonzero(pool & (labels == c)) for c in np.unique(labels)]
        depth = 0
        while len(picked) < grid_n and any(depth < len(q) for q in queues):
            picked.extend(int(q[depth]) for q in queues if depth < len(q))
            depth += 1
    return np.asarray(picked[:grid_n], dtype=np.int64)


def _take(out: _Outcome, rows: np.ndarray) -> _Outcome:
    return _Outcome(
        correct=out.correct[rows],
        pred=out.pred[rows],
        conf_true=out.conf_true[rows],
        linf=out.linf[rows],
        l2=out.l2[rows],
        seconds=out.seconds,
    )


def _grid(
    out_dir: Path,
    model: nn.Module,
    name: str,
    eps: float,
    x: torch.Tensor,
    adv: torch.Tensor,
    out: _Outcome,
    rows: np.ndarray,
    labels: np.ndarray,
    clean: _Clean,
    class_names: list[str],
) -> Path:
    clean_x = x[torch.from_numpy(rows).to(x.device)].cpu().numpy()
    adv_x = adv.cpu().numpy()
    with torch.no_grad():
        probs = torch.softmax(clean.logits[torch.from_numpy(rows).to(x.device)], dim=1)
    clean_conf = probs.max(dim=1).values.cpu().numpy()
    # Confidence of the adversarial prediction: recompute from the images shown (cheap, n rows).
    with torch.no_grad():
        adv_conf = torch.softmax(model(adv).float(), dim=1).max(dim=1).values.cpu().numpy()
    path = out_dir / "grids" / f"{name}_eps_{naming.format_eps(eps)}.png"
    return save_grid(
        path,
        clean_x,
        adv_x,
        labels[rows],
        clean.pred[rows],
        clean_conf,
        out.pred,
        adv_conf,
        class_names,
        f"{name} at eps {naming.format_eps(eps)}/255",
    )


def _save_adversarial(
    out_dir: Path,
    name: str,
    eps: float,
    x_adv: torch.Tensor,
    out: _Outcome,
    labels: np.ndarray,
    clean: _Clean,
    indices: np.ndarray,
) -> Path:
    """adversarial/<attack>_eps_<e>.npz: float32 images in [0, 1] plus what reusing them needs."""
    path = out_dir / "adversarial" / f"{name}_eps_{naming.format_eps(eps)}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(
        tmp,
        x_adv=x_adv.detach().cpu().numpy().astype(np.float32),  # (N, C, H, W), [0, 1]
        labels=labels,
        clean_pred=clean.pred,
        adv_pred=out.pred,
        attacked=clean.correct,  # points not attacked keep their clean image
        test_index=indices,  # rows of the test split
        eps=np.float64(eps),  # 1/255 units
    )
    os.replace(tmp, path)
    return path


def _convergence_check(
    session: _Session,
    factories: dict[str, Callable[..., Any]],
    attacks: DictConfig,
    outcomes: dict[str, dict[float, _Outcome]],
    cfg_eval: DictConfig,
) -> SanityCheck:
    """Check 6: PGD with twice the steps on the first ``convergence_n`` points at one eps.

    Only the points the main PGD left robust are attacked again: a point it already fooled is
    fooled whatever a longer run finds, so the per-point worst case of the two runs is compared
    with the main run. That is the question the check asks (would more steps lower robust
    accuracy?) at a fraction of the cost of a second full run.
    """
    if "pgd" not in factories:
        return SanityCheck("pgd_converged", sanity.PASS, "not applicable: pgd was not run")
    n = min(int(cfg_eval.sanity.convergence_n), len(session.x))
    eps = float(cfg_eval.sanity.convergence_eps)
    steps = int(attacks["pgd"].get("steps", 10))
    rows = np.arange(n, dtype=np.int64)
    if eps in outcomes["pgd"]:  # reuse the main run instead of attacking again
        base = outcomes["pgd"][eps].correct[:n]
    else:
        base = session.attack("pgd", factories["pgd"], eps, rows)[1].correct
    double = base.copy()
    if base.any():
        _, longer = session.attack("pgd", factories["pgd"], eps, rows[base], steps=2 * steps)
        double[base] = longer.correct
    return sanity.check_convergence(base, double, steps=steps, eps=eps)


def _write_tables(
    out_dir: Path,
    table: pd.DataFrame,
    per_class: pd.DataFrame,
    confusion: dict[str, list[list[int]]],
    checks: list[SanityCheck],
) -> list[Path]:
    return [
        _atomic_write(out_dir / "robustness.csv", table.to_csv(index=False)),
        _atomic_write(out_dir / "robustness.json", table.to_json(orient="records", indent=2)),
        _atomic_write(out_dir / "per_class.csv", per_class.to_csv(index=False)),
        _atomic_write(out_dir / "confusion.json", json.dumps(confusion, indent=2)),
        _atomic_write(out_dir / "sanity.json", json.dumps([c.to_dict() for c in checks], indent=2)),
    ]
