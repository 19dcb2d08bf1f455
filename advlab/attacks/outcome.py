"""Per-example results of the clean pass and of one attack at one eps, and their worst case.

Pure containers and combinations of numpy arrays (torch only to read logits); the evaluator's
definitions (which points are attacked, what ``worst_case`` means) are in
:mod:`advlab.attacks.evaluate`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from advlab.attacks import metrics


@dataclass
class Clean:
    """The clean pass over the evaluated points (shared by every attack)."""

    logits: torch.Tensor  # (N, K) float, on the device
    pred: np.ndarray  # (N,) int64
    correct: np.ndarray  # (N,) bool
    conf_true: np.ndarray  # (N,) float
    zero_grad: np.ndarray  # (N,) bool: the input gradient of the loss is exactly zero


@dataclass
class Outcome:
    """Per-example result of one attack at one eps (arrays of shape (N,))."""

    correct: np.ndarray  # bool: still correctly classified
    pred: np.ndarray  # int64 prediction after the attack
    conf_true: np.ndarray  # float: softmax probability of the true class after the attack
    linf: np.ndarray  # float, pixel units (0 where not attacked)
    l2: np.ndarray  # float, pixel units
    seconds: float

    def take(self, rows: np.ndarray) -> Outcome:
        """The outcome of the examples ``rows`` only (same attack time)."""
        return Outcome(
            self.correct[rows],
            self.pred[rows],
            self.conf_true[rows],
            self.linf[rows],
            self.l2[rows],
            self.seconds,
        )


def outcome_of(
    x_adv: torch.Tensor, logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor, seconds: float
) -> Outcome:
    """The :class:`Outcome` of adversarial images ``x_adv`` (N, C, H, W) scored as ``logits``."""
    pred = logits.argmax(dim=1)
    linf, l2 = metrics.perturbation_norms(x_adv, x)
    return Outcome(
        correct=(pred == y).cpu().numpy(),
        pred=pred.cpu().numpy(),
        conf_true=metrics.true_class_confidence(logits, y).cpu().numpy(),
        linf=linf.cpu().numpy(),
        l2=l2.cpu().numpy(),
        seconds=seconds,
    )


def worst_case(outcomes: list[Outcome]) -> Outcome:
    """Per example, the adversarial outcome of the attack that does the most damage.

    Robust only if robust against every attack; the example kept is the one that fools with the
    lowest true-class confidence (else the one with the lowest confidence). Seconds add up.
    """
    correct = np.stack([o.correct for o in outcomes])
    conf = np.stack([o.conf_true for o in outcomes])
    # A fooling attack always ranks before a non-fooling one (+2 > any probability gap).
    chosen = np.argmin(conf + 2.0 * correct, axis=0)
    cols = np.arange(correct.shape[1])

    def pick(field: str) -> np.ndarray:
        return np.stack([getattr(o, field) for o in outcomes])[chosen, cols]

    return Outcome(
        correct=correct.all(axis=0),
        pred=pick("pred"),
        conf_true=conf[chosen, cols],
        linf=pick("linf"),
        l2=pick("l2"),
        seconds=float(sum(o.seconds for o in outcomes)),
    )
