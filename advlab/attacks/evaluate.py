"""Robustness evaluation: every attack in ``eval.attacks`` at every budget in ``eval.eps``.

Definitions (docs/attacks.md has the user's version):

- **clean accuracy** (``clean_acc``) is over the whole test split (``clean_n`` points: one forward
  pass is cheap). Every robust figure is over the evaluated points, a fixed, seeded subset of
  ``eval.n_examples`` test images (all if null): ``robust_n`` points, the ``n`` of each table row.
  The eps-0 rows hold the clean accuracy on those same points (``points_clean_acc``), which is
  what the checks ``eps0_clean`` and ``clean_above_chance`` judge.
- **robust accuracy** = correct after the attack / all evaluated points, with a 95% Wilson interval.
  Points misclassified before the attack are *not attacked* (they count as not robust whatever an
  attack would do), which saves the attack's steps without changing the number.
- **attack success rate** = points correct before and wrong after / points correct before.
- Perturbation norms (``linf_*_255``, ``l2_*_255``, both in 1/255 units like eps) and the true-class
  confidences (``conf_true_clean`` / ``conf_true_adv``) are averaged over the *attacked* points
  (those correct before the attack), so clean and adversarial confidences compare like for like.
- **worst_case** (when two or more L-inf attacks ran, or the escalation is on): per example, robust
  only if robust against every L-inf attack at that eps, the escalation's included (``pgd_l2`` is
  left out: its ball is another threat model); its adversarial example is the one that fools it
  with the lowest true-class confidence (else the one with the lowest confidence).
- **escalation** (``eval.escalation``, :mod:`advlab.attacks.escalation`): a margin-loss attack
  (row ``margin``) on the points the main attacks left robust, and a black-box / restarted
  re-attack of the robust points a gradient-masking indicator flags; ``escalation`` (one row per
  eps) counts the points re-attacked and broken.
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

This module is the sequence of steps; each step's work lives in its own module: ``runner``
(clean pass, attack runs, eps cascade, bound checks), ``outcome`` (per-example results),
``escalation`` (margin attack, re-attack of flagged points, worst case), ``tables`` (results
tables, written once), ``checks`` (the evaluation's checks), ``grids`` and ``export``
(adversarial sets).
Transfer attacks are a separate evaluation (:mod:`advlab.attacks.transfer`) that the pipeline
runs on the same points.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from advlab import naming
from advlab.attacks.certification import Certification, certify_grid, check_certificates_sound
from advlab.attacks.checks import log_check, run_checks
from advlab.attacks.escalation import COUNT_COLUMNS, Escalation
from advlab.attacks.export import save_adversarial
from advlab.attacks.grids import attack_grid, grid_rows
from advlab.attacks.outcome import Outcome
from advlab.attacks.runner import (
    AttackRunner,
    assert_eval,
    clean_pass,
    eval_mode,
    load_points,
    split_accuracy,
)
from advlab.attacks.tables import Tables, results_file, write_tables
from advlab.attacks.zoo import build_factories
from advlab.baseline import constant_answer
from advlab.config import Certify, EscalationConf, Norm
from advlab.errors import AttackError, ConfigError
from advlab.fileio import atomic_write_text
from advlab.runtime import Stopwatch, progress
from advlab.validate import check_eval
from advlab.verdict import Check

log = logging.getLogger(__name__)


@dataclass
class Evaluation:
    """Everything one robustness evaluation measured (see the module docstring for definitions)."""

    clean_acc: float  # on the whole test split
    clean_n: int  # its size
    robust_n: int  # the evaluated points: n of every table row
    points_clean_acc: float  # clean accuracy on the evaluated points (the eps-0 rows)
    table: pd.DataFrame  # one row per attack x eps (tables.TABLE_COLUMNS), 'worst_case' included
    per_class: pd.DataFrame  # tables.PER_CLASS_COLUMNS
    confusion: dict[str, list[list[int]]]  # "clean" and "<attack>/eps_<e>": [true][pred] counts
    checks: list[Check]
    artifacts: list[Path]  # every file written under out_dir
    indices: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    # the constant-answer baseline (advlab.baseline): the most frequent class of the evaluated
    # points and its share, what answering it keeps at every eps
    constant_acc: float = 0.0
    constant_answer: str = ""
    # the bracket's lower end (advlab.attacks.certification); None with eval.certify=none
    certification: Certification | None = None
    # escalation.COUNT_COLUMNS, one row per eps: flagged / re-attacked / broken / left out points
    escalation: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=COUNT_COLUMNS))
    # wall seconds per part of the evaluation (naming.EVAL_PARTS): eval_seconds/<part>
    seconds: dict[str, float] = field(default_factory=dict)

    # Earlier names, still read by callers written against them.
    @property
    def n(self) -> int:
        """The number of evaluated points (:attr:`robust_n`)."""
        return self.robust_n

    @property
    def sanity(self) -> list[Check]:
        """The evaluation's checks (:attr:`checks`)."""
        return self.checks


@dataclass
class _Sweep:
    """What the attack loop leaves for the later steps."""

    outcomes: dict[str, dict[float, Outcome]]  # attack -> eps -> per-example outcome
    shown: dict[str, tuple[torch.Tensor, Outcome]]  # attack -> grid rows at eval.grid_eps
    saved: list[Path]  # adversarial/*.npz (eval.save_adversarial)
    pgd_last: torch.Tensor | None = None  # pgd's images at eval.sanity.convergence_eps (check 6)


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
) -> Evaluation:
    """Attack ``model`` with every attack in ``attacks`` (the nodes named by ``eval.attacks``) at
    every eps in ``cfg_eval.eps`` (1/255 units) on a seeded subset of ``data.test``.

    ``cfg_eval`` and ``attacks`` are checked first (:func:`advlab.validate.check_eval` sorts and
    deduplicates ``cfg_eval.eps`` in place). ``data``: a :class:`advlab.data.base.DataSplits`;
    the model maps float (N, C, H, W) in [0, 1] to logits (N, K). Writes under ``out_dir`` the
    files of :mod:`advlab.naming` (robustness, per-class, confusion, checks, grids, certified and
    with ``eval.save_adversarial`` the adversarial sets), all listed in ``artifacts``. Raises
    :class:`AttackError` when an attack cannot run on this task; an example outside its eps ball
    or [0, 1] fails the ``bounds`` check instead."""
    out_dir, device = Path(out_dir), torch.device(device)
    factories, indices, x, y = _prepare(cfg_eval, attacks, data, seed, device, out_dir)
    class_names = [str(c) for c in data.class_names]
    model.to(device)
    part = (watch := Stopwatch()).part  # wall seconds per part: eval_seconds/<part>
    with eval_mode(model, channels_last=bool(cfg_eval.channels_last)):
        assert_eval(model)
        batch_size, num_classes = int(cfg_eval.batch_size), int(data.num_classes)
        with part("clean"):
            clean = clean_pass(model, x, y, batch_size)
            clean_acc = _split_clean_acc(model, data, clean, batch_size, device)
        runner = AttackRunner(
            model, x, y, clean, batch_size=batch_size, seed=seed, num_classes=num_classes
        )
        tables = Tables(clean, y.cpu().numpy(), class_names)
        rows = grid_rows(clean.correct, tables.labels, int(cfg_eval.grid_n))
        with part("attacks"):
            sweep = _attack_every_eps(runner, factories, cfg_eval, tables, rows, out_dir, indices)
        with part("escalation"):
            escalation, worst = _escalate(runner, cfg_eval, sweep, tables)
        table, per_class = tables.frames()
        with part("checks"):
            checks = run_checks(
                table,
                runner,
                factories,
                attacks,
                sweep.outcomes,
                cfg_eval,
                escalation,
                sweep.pgd_last,
            )
        with part("certify"):
            certification, skipped = _certify(model, x, y, cfg_eval)
        robust = {eps: out.correct for eps, out in (worst or _single_linf(runner, sweep)).items()}
        checks.append(log_check(check_certificates_sound(certification, robust, indices, skipped)))
        with part("grids"):
            grids = _grids(runner, factories, cfg_eval, sweep.shown, rows, out_dir, class_names)
    _log_parts(watch.seconds)
    written = write_tables(out_dir, table, per_class, tables.confusion, checks)
    written += _write_certificates(out_dir, certification, indices)
    constant_acc, answer = constant_answer(tables.labels, class_names)
    return Evaluation(
        clean_acc=clean_acc,
        clean_n=len(data.test.labels),
        robust_n=len(indices),
        points_clean_acc=float(clean.correct.mean()),
        table=table,
        per_class=per_class,
        confusion=tables.confusion,
        checks=checks,
        artifacts=[*sweep.saved, *grids, *written],
        indices=indices,
        escalation=escalation.counts,
        constant_acc=constant_acc,
        constant_answer=answer,
        certification=certification,
        seconds=watch.seconds,
    )


def _prepare(cfg_eval: DictConfig, attacks: DictConfig, data: Any, seed: int, device, out_dir):
    """Every refusal before any work (config, attacks that cannot run on this task, an empty
    subset), then the evaluated points: (attack factories, test indices, x, y)."""
    check_eval(cfg_eval, attacks)
    out_dir.mkdir(parents=True, exist_ok=True)
    factories = build_factories(attacks, int(data.num_classes))
    indices = select_subset(len(data.test.labels), cfg_eval.n_examples, seed)
    if len(indices) == 0:
        raise ConfigError("the test set is empty: nothing to evaluate (data.limit_test?)")
    x, y = load_points(data, indices, device)
    return factories, indices, x, y


def _escalate(runner: AttackRunner, cfg_eval: DictConfig, sweep: _Sweep, tables: Tables):
    """The escalation after the main attacks, and the worst case it feeds (added to ``tables``)."""
    escalation = Escalation(runner, _escalation_cfg(cfg_eval), cascade=bool(cfg_eval.cascade))
    worst = escalation.worst_cases(sweep.outcomes, tables)
    for eps, out in worst.items():
        tables.add(naming.WORST_CASE, eps, out)
    return escalation, worst


def _log_parts(seconds: dict[str, float]) -> None:
    """One line: where the evaluation's time went, the extras as a share of the main attacks."""
    attacks = seconds.get("attacks", 0.0)
    extras = seconds.get("escalation", 0.0) + seconds.get("checks", 0.0)
    share = f" (escalation + checks: {extras / attacks:.0%} of the attacks)" if attacks > 0 else ""
    parts = ", ".join(f"{name} {value:.1f} s" for name, value in seconds.items())
    log.info("evaluation time: %s%s", parts, share)


def _certify(model: nn.Module, x, y, cfg_eval: DictConfig) -> tuple[Certification | None, str]:
    """Certificates at every eps with ``eval.certify``, or None and why not: ``none``, or a model
    with a layer the bounds cannot take (the pipeline refuses such a model before training; a
    model given to this function directly is evaluated without the lower bound, with a warning)."""
    method = Certify(cfg_eval.get("certify", Certify.none))
    if method == Certify.none:
        return None, "eval.certify=none"
    try:
        certification = certify_grid(
            model, x, y, list(cfg_eval.eps), method=str(method), batch_size=int(cfg_eval.batch_size)
        )
    except AttackError as error:
        log.warning("no certified lower bound: %s", error)
        return None, str(error)
    return certification, ""


def _write_certificates(
    out_dir: Path, certification: Certification | None, indices: np.ndarray
) -> list[Path]:
    """``results/certified.csv`` (per point and eps) when there are certificates."""
    if certification is None:
        return []
    path = results_file(out_dir, naming.CERTIFIED_CSV)
    return [atomic_write_text(path, certification.points(indices).to_csv(index=False))]


def _single_linf(runner: AttackRunner, sweep: _Sweep) -> dict[float, Outcome]:
    """Per eps, the outcome of the one L-inf attack when no worst case was formed ({} if none)."""
    linf = [name for name in sweep.outcomes if runner.norms[name] == Norm.linf]
    return dict(sweep.outcomes[linf[0]]) if linf else {}


def _split_clean_acc(
    model: nn.Module, data: Any, clean: Any, batch_size: int, device: torch.device
) -> float:
    """Clean accuracy on the whole test split; the clean pass's own when it covered the split."""
    n_test, n_points = len(data.test.labels), len(clean.correct)
    points_acc = float(clean.correct.mean())
    whole = (
        points_acc if n_points == n_test else split_accuracy(model, data.test, batch_size, device)
    )
    log.info(
        "clean accuracy %.1f%% on the %d test points; %.1f%% on the %d evaluated points",
        100 * whole,
        n_test,
        100 * points_acc,
        n_points,
    )
    return whole


def evaluation_metrics(evaluation: Evaluation) -> dict[str, float]:
    """The evaluation's metrics, the one builder of their names (:mod:`advlab.naming`).

    ``clean_acc`` (whole test split) with ``clean_n``, ``points_clean_acc`` on the ``robust_n``
    evaluated points and ``constant_acc`` (the constant-answer baseline on them);
    ``certified_acc/eps_<e>`` per eps with ``eval.certify``;
    ``robust_acc/<attack>/eps_<e>`` and ``asr/<attack>/eps_<e>`` per table row;
    ``escalation/points/eps_<e>`` and ``escalation/flips/eps_<e>`` per eps;
    ``eval_seconds/<part>`` per part of the evaluation. An undefined value
    (NaN: ASR with no point correct before the attack) is left out rather than logged.
    """
    pairs: list[tuple[str, Any]] = [
        (naming.CLEAN_ACC, evaluation.clean_acc),
        (naming.CLEAN_N, evaluation.clean_n),
        (naming.ROBUST_N, evaluation.robust_n),
        (naming.POINTS_CLEAN_ACC, evaluation.points_clean_acc),
        (naming.CONSTANT_ACC, evaluation.constant_acc),
    ]
    for row in evaluation.table.itertuples():
        pairs.append((naming.robust_acc_key(row.attack, row.eps), row.robust_acc))
        pairs.append((naming.asr_key(row.attack, row.eps), row.asr))
    if evaluation.certification is not None:
        for row in evaluation.certification.rows.itertuples():
            pairs.append((naming.certified_acc_key(row.eps), row.certified_acc))
    for row in evaluation.escalation.itertuples():
        pairs.append((naming.escalation_points_key(row.eps), row.points))
        pairs.append((naming.escalation_flips_key(row.eps), row.flips))
    pairs += [(naming.eval_seconds_key(p), s) for p, s in evaluation.seconds.items()]
    return {k: float(v) for k, v in pairs if v is not None and not math.isnan(float(v))}


def _escalation_cfg(cfg_eval: DictConfig) -> DictConfig:
    """``eval.escalation``; its schema's defaults for a config built without the node."""
    node = cfg_eval.get("escalation")
    return node if node is not None else OmegaConf.structured(EscalationConf)


# ------------------------------------------------------------------------------------ the steps
def _attack_every_eps(
    runner: AttackRunner,
    factories: dict[str, Callable[..., Any]],
    cfg_eval: DictConfig,
    tables: Tables,
    rows: np.ndarray,
    out_dir: Path,
    indices: np.ndarray,
) -> _Sweep:
    """Every attack at every eps, recorded in ``tables``; keeps the grid ``rows`` at
    ``eval.grid_eps`` and saves the adversarial sets when ``eval.save_adversarial``."""
    sweep = _Sweep({name: {} for name in factories}, {}, [])
    # Ascending eps per attack (check_eval sorted them), so the cascade can hand each result to
    # the next budget.
    jobs = [(name, float(eps)) for name in factories for eps in cfg_eval.eps]
    carry: dict[str, tuple[torch.Tensor, Outcome]] = {}
    for name, eps in progress(jobs, desc="attacks", unit="attack x eps"):
        cascade = bool(cfg_eval.cascade) and eps > 0 and name in carry
        x_adv, out = runner.attack(
            name, factories[name], eps, carry=carry.get(name) if cascade else None
        )
        carry[name] = (x_adv, out)
        sweep.outcomes[name][eps] = out
        row = tables.add(name, eps, out)
        log.info(
            "%-10s eps %5s/255: robust acc %.1f%% (%.1fs)",
            name,
            naming.format_eps(eps),
            100 * row["robust_acc"],
            out.seconds,
        )
        if cfg_eval.grid_eps is not None and eps == float(cfg_eval.grid_eps):
            sweep.shown[name] = (x_adv[rows], out.take(rows))
        if name == "pgd" and eps == float(cfg_eval.sanity.convergence_eps):
            sweep.pgd_last = x_adv
        if cfg_eval.save_adversarial:
            sweep.saved.append(
                save_adversarial(
                    out_dir, name, eps, x_adv, out, tables.labels, runner.clean, indices
                )
            )
    return sweep


def _grids(
    runner: AttackRunner,
    factories: dict[str, Callable[..., Any]],
    cfg_eval: DictConfig,
    shown: dict[str, tuple[torch.Tensor, Outcome]],
    rows: np.ndarray,
    out_dir: Path,
    class_names: list[str],
) -> list[Path]:
    """One grid per attack at ``eval.grid_eps`` (none when it is null)."""
    if cfg_eval.grid_eps is None:
        return []
    grid_eps = float(cfg_eval.grid_eps)
    paths = []
    for name, factory in factories.items():
        if name not in shown:  # grid eps not in the grid: attack the few shown
            shown[name] = runner.attack(name, factory, grid_eps, rows)
        adv, out = shown[name]
        paths.append(attack_grid(out_dir, runner, name, grid_eps, rows, adv, out, class_names))
    return paths
