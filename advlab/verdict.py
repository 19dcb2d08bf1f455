"""The run's verdict: ``pass``, ``warn`` or ``fail``, and the one line naming the first problem.

A run's figures are judged by every check it ran, in order: the training checks of
:mod:`advlab.training.diagnostics` (divergence, catastrophic overfitting), then the evaluation's
sanity checks (:mod:`advlab.attacks.sanity`). The verdict is the worst status among them:

- ``fail``: the figures mean nothing (training diverged, clean accuracy not above chance,
  adversarial examples outside their budget, eps 0 not equal to clean accuracy);
- ``warn``: they may over-state robustness (masking the escalation did not resolve, PGD not
  converged, a black-box attack beating the white-box ones, catastrophic overfitting, ...);
- ``pass``: every check passed.

The reason is the first failing check (else the first warning), as ``<check>: <evidence>`` on
one line, so the terminal summary, the MLflow tag and the PDF banner all say the same thing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

# The statuses of a check and of the verdict, best first.
PASS, WARN, FAIL = "pass", "warn", "fail"
STATUSES = (PASS, WARN, FAIL)
_RANK = {status: rank for rank, status in enumerate(STATUSES)}
REASON_CHARS = 500  # MLflow tag values and the PDF banner stay readable


@dataclass(frozen=True)
class Check:
    """One check of a run (training's or the evaluation's): its name, status and evidence."""

    name: str
    status: str  # PASS | WARN | FAIL
    evidence: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def rank(status: str) -> int:
    """Order of ``status`` (pass < warn < fail); an unknown status ranks worse than fail."""
    return _RANK.get(status, len(STATUSES))


def worst(statuses: Iterable[str]) -> str | None:
    """The worst of ``statuses`` (None when there is none)."""
    return max(statuses, key=rank, default=None)


@dataclass(frozen=True)
class Verdict:
    status: str  # PASS | WARN | FAIL
    reason: str  # one line
    checks: tuple[Check, ...]

    def to_dict(self) -> dict[str, object]:
        """The ``results/verdict.json`` payload."""
        return {
            "verdict": self.status,
            "reason": self.reason,
            "checks": [check.to_dict() for check in self.checks],
        }


def decide(checks: Sequence[Check]) -> Verdict:
    """The verdict over ``checks`` (in the order they were run)."""
    checks = tuple(checks)
    if not checks:
        return Verdict(WARN, "no check was run: nothing supports the figures", checks)
    status = worst(check.status for check in checks)
    if status == PASS:
        return Verdict(PASS, f"all {len(checks)} checks pass", checks)
    first = next(check for check in checks if check.status == status)
    return Verdict(status, _one_line(f"{first.name}: {first.evidence}"), checks)


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= REASON_CHARS else line[: REASON_CHARS - 3] + "..."
