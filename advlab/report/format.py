"""How the report writes numbers: percentages, budgets, counts, hyperparameters, attack names.

Every percentage in the PDF goes through :func:`fmt_pct` (one decimal, e.g. ``91.2%``) so that a
number in the text, in a table and in a test is written the same way. Accuracies, attack success
rates and class shares are fractions in [0, 1] in MLflow; they are formatted, never recomputed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from advlab import naming

MISSING = "—"  # shown where a run has no value (failed, not evaluated, not logged)


def _absent(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def fmt_pct(value: float | None) -> str:
    """A fraction in [0, 1] as a percentage with one decimal: 0.9123 -> '91.2%'; None/NaN -> '—'."""
    if _absent(value):
        return MISSING
    return f"{100.0 * float(value):.1f}%"


def fmt_pp(value: float | None) -> str:
    """A difference of two fractions in percentage points: 0.123 -> '12.3 points'."""
    if _absent(value):
        return MISSING
    return f"{100.0 * float(value):.1f} points"


def fmt_spread(mean: float | None, std: float | None) -> str:
    """A mean over seeds with its std: '45.2% ± 1.3%'; just :func:`fmt_pct` when the std is
    unknown (a single seed), so a setting run once reads as a single run."""
    if _absent(std):
        return fmt_pct(mean)
    return f"{fmt_pct(mean)} ± {fmt_pct(std)}"


def over_seeds(counts: Sequence[int]) -> str:
    """How many seeds each number averages, in words: 'over 3 seeds', 'over 1–3 seeds'."""
    low, high = min(counts), max(counts)
    many = f"{low}–{high}" if low != high else str(high)
    return f"over {many} seed{'' if many == '1' else 's'}"


def fmt_eps(eps: float) -> str:
    """Eps in 1/255 units as a budget: 8.0 -> '8/255'."""
    return f"{naming.format_eps(eps)}/255"


def fmt_int(value: float | None) -> str:
    """A count with thousands separators: 25450.0 -> '25,450'; None/NaN -> '—'."""
    if _absent(value):
        return MISSING
    return f"{int(round(float(value))):,}"


def fmt_n(value: float | None) -> str:
    """How many points a figure is over, for a sentence: 200.0 -> 'n = 200'; '' when unknown."""
    return "" if _absent(value) else f"n = {fmt_int(value)}"


def fmt_num(value: float | str | None) -> str:
    """A hyperparameter value as short as it stays exact: '0.0005' -> '0.0005', 1e-4 -> '0.0001'."""
    if value is None:
        return MISSING
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(number):
        return MISSING
    return f"{number:g}"


def fmt_seconds(seconds: float | None) -> str:
    """A duration: 42.0 -> '42 s', 135.0 -> '2 min 15 s'; None/NaN -> '—'."""
    if _absent(seconds):
        return MISSING
    whole = int(round(float(seconds)))
    return f"{whole} s" if whole < 60 else f"{whole // 60} min {whole % 60} s"


def attack_label(attack: str) -> str:
    """Display name of an attack option: 'pgd' -> 'PGD', 'worst_case' -> 'worst case'."""
    if attack == naming.WORST_CASE:
        return "worst case"
    if attack == naming.MARGIN:
        return "margin"
    return attack.upper().replace("_", "-")


def attack_list(attacks: Sequence[str]) -> str:
    """Attacks in words: ['fgsm', 'pgd', 'margin'] -> 'FGSM, PGD and a margin-loss attack'."""
    labels = [
        "a margin-loss attack" if a == naming.MARGIN else attack_label(a)
        for a in attacks
        if a != naming.WORST_CASE
    ]
    if len(labels) <= 1:
        return "".join(labels)
    return f"{', '.join(labels[:-1])} and {labels[-1]}"


def setting_sort_key(value: object) -> tuple[int, float | str]:
    """Order of a swept param's values (MLflow strings): numbers by value ('0.0001' < '0.001'),
    then the others alphabetically."""
    try:
        return (0, float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return (1, str(value))
