"""The lower end of the robustness bracket: certified accuracy at every eps of the grid.

The attacks give an upper bound on robust accuracy (the share of points no attack broke);
:mod:`advlab.certify` proves points robust over their whole eps-ball, so the certified share is a
lower bound. Both are over the same evaluated points, so the truth lies in
[certified, worst case] at each eps: the *bracket*.

- ``eval.certify``: ``ibp`` (default; about two forward passes per eps), ``crown`` (tighter on
  normally trained models, about one backward pass per class), ``none``.
- Once an eps certifies no point, the larger ones are not computed and report 0, which is a
  valid lower bound (the ``computed`` column says so).
- The check ``certificate_sound`` fails the run when a point certified at an eps was broken by
  an attack at that eps: one of the two has a bug, and neither figure can be trusted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from advlab import naming
from advlab.certify import margin_lower_bounds
from advlab.runtime import progress
from advlab.verdict import FAIL, PASS, Check

log = logging.getLogger(__name__)

CERTIFIED_COLUMNS = ["eps", "certified_acc", "n", "method", "computed", "seconds"]
POINT_COLUMNS = ["test_index", "eps", "certified", "margin_lower"]
NAMED_POINTS = 10  # test indices quoted in an unsound certificate's evidence


@dataclass
class Certification:
    """Certificates of the evaluated points at every eps (1/255 units)."""

    method: str
    rows: pd.DataFrame  # CERTIFIED_COLUMNS, one row per eps
    certified: dict[float, np.ndarray] = field(default_factory=dict)  # eps -> bool (n,)
    margins: dict[float, np.ndarray] = field(default_factory=dict)  # eps -> (n,); NaN: skipped

    def points(self, indices: np.ndarray) -> pd.DataFrame:
        """Per point and eps (POINT_COLUMNS), the point named by its test-set index."""
        parts = [
            pd.DataFrame(
                {
                    "test_index": np.asarray(indices, dtype=np.int64),
                    "eps": eps,
                    "certified": self.certified[eps],
                    "margin_lower": self.margins[eps],
                }
            )
            for eps in sorted(self.certified)
        ]
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=POINT_COLUMNS)


def certify_grid(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps_grid: Sequence[float],
    *,
    method: str,
    batch_size: int,
) -> Certification:
    """Certify every point of ``x``/``y`` at every eps of ``eps_grid`` (the model in eval mode)."""
    n = int(y.shape[0])
    rows, certified, margins = [], {}, {}
    exhausted = False  # an eps certified nothing: the larger ones are not computed
    grid = sorted(float(e) for e in eps_grid)
    for eps in progress(grid, desc=f"certify ({method})", total=len(grid), unit="eps"):
        start = time.perf_counter()
        if exhausted:
            lowest = np.full(n, np.nan)
        else:
            lowest = _lowest_margins(model, x, y, eps, method, batch_size)
        ok = np.nan_to_num(lowest, nan=-1.0) > 0
        acc = float(ok.mean()) if n else 0.0
        rows.append([eps, acc, n, method, not exhausted, time.perf_counter() - start])
        certified[eps], margins[eps] = ok, lowest
        exhausted = exhausted or (eps > 0 and not ok.any())
    table = pd.DataFrame(rows, columns=CERTIFIED_COLUMNS)
    log.info(
        "certified (%s): %s",
        method,
        ", ".join(
            f"{100 * r.certified_acc:.1f}% at {naming.format_eps(r.eps)}/255"
            for r in table.itertuples()
        ),
    )
    return Certification(method, table, certified, margins)


def _lowest_margins(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, method: str, batch_size: int
) -> np.ndarray:
    """Per point, the lowest lower bound of its margins ``z_y - z_j`` over the eps-ball.

    At eps 0 the ball is the point: its margins are exact (one forward pass). CROWN runs only on
    the points IBP's cheap pass left uncertified; the others keep IBP's bound, which CROWN's
    (the larger of the two) could only raise above 0 again."""
    if eps == 0:
        with torch.no_grad():
            logits = torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
        true = logits.gather(1, y.view(-1, 1))
        others = logits.scatter(1, y.view(-1, 1), float("-inf"))
        return (true.squeeze(1) - others.max(dim=1).values).float().cpu().numpy()
    lowest = _min_bound(model, x, y, eps, "ibp", batch_size)
    if method == "ibp":
        return lowest
    rest = np.flatnonzero(lowest <= 0)
    if rest.size:
        pick = torch.from_numpy(rest).to(x.device)
        lowest[rest] = _min_bound(model, x[pick], y[pick], eps, method, batch_size)
    return lowest


def _min_bound(model, x, y, eps: float, method: str, batch_size: int) -> np.ndarray:
    bounds = margin_lower_bounds(model, x, y, eps, method, batch_size=batch_size)
    return bounds.min(dim=1).values.float().cpu().numpy()


def check_certificates_sound(
    certification: Certification | None,
    robust: dict[float, np.ndarray],
    indices: np.ndarray,
    skipped: str = "eval.certify=none",
) -> Check:
    """``fail`` when a point certified at an eps is not robust there (``robust``: eps -> bool
    (n,), the worst case over the L-inf attacks), naming the points by test index. ``skipped``:
    why there is no ``certification``."""
    name = "certificate_sound"
    if certification is None:
        return Check(name, PASS, f"not applicable: {skipped}")
    broken = []
    for eps, ok in sorted(certification.certified.items()):
        if eps not in robust:
            continue
        bad = np.flatnonzero(ok & ~robust[eps])
        if bad.size:
            named = ", ".join(str(int(indices[i])) for i in bad[:NAMED_POINTS])
            more = f" and {bad.size - NAMED_POINTS} more" if bad.size > NAMED_POINTS else ""
            broken.append(f"eps {naming.format_eps(eps)}: test points {named}{more}")
    if broken:
        return Check(
            name,
            FAIL,
            f"{certification.method} certified points an attack broke ({'; '.join(broken)}): "
            "a bug in the bounds or in the attack; neither figure can be trusted",
        )
    compared = sum(int(ok.sum()) for eps, ok in certification.certified.items() if eps in robust)
    return Check(
        name,
        PASS,
        f"every certified point ({compared} point-eps pairs, {certification.method}) survived "
        "every attack",
    )
