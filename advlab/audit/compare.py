"""How far apart the libraries are: per-eps rows, disagreements and the verdict (numpy only).

Inputs are per-point robustness flags (bool (N,), True = classified correctly after the attack;
points misclassified before the attack are False, as in advlab's robust accuracy).

Verdicts:

- **FGSM** is deterministic (one signed-gradient step from x): the three libraries must give the
  same outcome on every point. One point where they differ is a ``warn``.
- **PGD** starts from a random point in the eps ball, and each library draws it from its own
  generator, so a few points near the decision boundary fall under one library and not another.
  Such noise is symmetric: for two libraries A and B, a point robust under A only is as likely as
  a point robust under B only. The test is the exact two-sided sign (McNemar) test on those
  discordant points: with ``a`` points robust under A only and ``b`` under B only, the split is
  noise when ``P(Binomial(a + b, 1/2) as extreme as min(a, b)) >= NOISE_LEVEL``. Every pair of
  libraries is tested; a pair below the level is a ``warn``. :func:`allowed_gap` states the bound
  in points: the largest ``|a - b|`` the test accepts for ``a + b`` discordant points.
"""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np

from advlab.verdict import PASS, WARN

NOISE_LEVEL = 0.01  # sign-test p below this: the libraries differ by more than random starts do


def sign_test_p(a: int, b: int) -> float:
    """Exact two-sided sign-test p-value of ``a`` vs ``b`` discordant points (1.0 when none)."""
    m = a + b
    if m == 0:
        return 1.0
    tail = sum(math.comb(m, i) for i in range(min(a, b) + 1)) / 2**m
    return min(1.0, 2 * tail)


def allowed_gap(m: int) -> int:
    """The largest ``|a - b|`` with ``a + b = m`` that :func:`sign_test_p` accepts as noise."""
    gap = m % 2  # a - b has the parity of m
    while gap + 2 <= m and sign_test_p((m + gap + 2) // 2, (m - gap - 2) // 2) >= NOISE_LEVEL:
        gap += 2
    return gap


def compare_row(attack: str, eps: float, robust: dict[str, np.ndarray]) -> dict:
    """One audit row: robust accuracy per library and of the per-point ``worst`` (robust under
    every library), the points where the libraries do not all agree, each pair's discordant
    counts and p-value, and the verdict with its evidence."""
    libraries = list(robust)
    flags = np.stack([robust[name] for name in libraries])
    worst = flags.all(axis=0)
    n = flags.shape[1]
    accuracy = {name: float(robust[name].mean()) for name in libraries}
    accuracy["worst"] = float(worst.mean())
    pairs = []
    for first, second in combinations(libraries, 2):
        a = int((robust[first] & ~robust[second]).sum())
        b = int((robust[second] & ~robust[first]).sum())
        pairs.append(
            {
                "libraries": [first, second],
                "only_first": a,
                "only_second": b,
                "p_value": sign_test_p(a, b),
                "allowed_gap": allowed_gap(a + b),
            }
        )
    disagree = int((flags.any(axis=0) != worst).sum())
    verdict, evidence = _verdict(attack, disagree, pairs, n)
    return {
        "attack": attack,
        "eps": float(eps),
        "n": n,
        "robust_acc": accuracy,
        "disagree": disagree,
        "pairs": pairs,
        "verdict": verdict,
        "evidence": evidence,
    }


def _verdict(attack: str, disagree: int, pairs: list[dict], n: int) -> tuple[str, str]:
    if disagree == 0:
        return PASS, f"identical outcome on all {n} points"
    if attack == "fgsm":
        return WARN, f"{disagree} of {n} points differ; a deterministic attack must agree exactly"
    worst = min(pairs, key=lambda p: p["p_value"])
    first, second = worst["libraries"]
    gap = abs(worst["only_first"] - worst["only_second"])
    evidence = (
        f"{disagree} of {n} points differ; least balanced pair: {worst['only_first']} robust "
        f"under {first} only, {worst['only_second']} under {second} only (p={worst['p_value']:.2g};"
        f" random starts allow a gap up to {worst['allowed_gap']}, found {gap})"
    )
    return (PASS if worst["p_value"] >= NOISE_LEVEL else WARN), evidence


def overall(rows: list[dict]) -> str:
    """``warn`` if any row warns, else ``pass``."""
    return WARN if any(row["verdict"] == WARN for row in rows) else PASS
