"""Small, pure metric functions used by the robustness evaluation (numpy / torch in, floats out)."""

from __future__ import annotations

import math

import numpy as np
import torch


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval (95% by default) for a proportion ``successes / n``.

    Better than the normal approximation near 0 and 1, where robust accuracies often sit.
    Returns ``(nan, nan)`` when ``n == 0``.
    """
    if n <= 0:
        return math.nan, math.nan
    if not 0 <= successes <= n:
        raise ValueError(f"successes={successes} must lie in [0, n={n}]")
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def success_rate(clean_correct: np.ndarray, adv_correct: np.ndarray) -> float:
    """Attack success rate: share of the points correct before the attack that are wrong after.

    Both arrays are bool of shape (N,). ``nan`` when no point was correct before the attack.
    """
    clean_correct = np.asarray(clean_correct, dtype=bool)
    adv_correct = np.asarray(adv_correct, dtype=bool)
    n = int(clean_correct.sum())
    if n == 0:
        return math.nan
    return float((clean_correct & ~adv_correct).sum() / n)


def perturbation_norms(x_adv: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example L-inf and L2 norms of ``x_adv - x`` (both (N, C, H, W)), in pixel units.

    Returns two float tensors of shape (N,).
    """
    delta = (x_adv - x).flatten(1)
    if delta.shape[1] == 0:
        zeros = torch.zeros(delta.shape[0], device=delta.device)
        return zeros, zeros
    return delta.abs().amax(dim=1), delta.norm(p=2, dim=1)


def true_class_confidence(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Softmax probability of the true class: logits (N, K), labels (N,) -> (N,)."""
    return torch.softmax(logits.float(), dim=1).gather(1, labels.view(-1, 1)).squeeze(1)


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> list[list[int]]:
    """Counts ``[true][predicted]`` as nested lists of int (JSON-ready), shape (K, K)."""
    labels = np.asarray(labels, dtype=np.int64)
    preds = np.asarray(preds, dtype=np.int64)
    flat = np.bincount(labels * num_classes + preds, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).astype(int).tolist()


def mean_or_nan(values: np.ndarray) -> float:
    """Mean of a possibly empty array (``nan`` when empty), as a Python float."""
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()) if values.size else math.nan


def max_or_nan(values: np.ndarray) -> float:
    """Max of a possibly empty array (``nan`` when empty), as a Python float."""
    values = np.asarray(values, dtype=np.float64)
    return float(values.max()) if values.size else math.nan
