#!/usr/bin/env python3
"""How far a run's reported robust accuracy is from AutoAttack's on the very same test points.

    .venv/bin/python scripts/autoattack_gap.py RUN_DIR [--eps 8] [--attack apgd-t] [--device cpu]
    scripts/autoattack_gap.py RUN_DIR ...          (with .venv activated)

RUN_DIR is a run directory (``config.json`` + ``model/model.pt``). The script rebuilds the points
the run's evaluation attacked (its data config, ``eval.n_examples`` and seed), runs torchattacks'
AutoAttack (version ``standard``: APGD-CE, APGD-T, FAB-T, Square) at each eps (1/255 units) and
prints, per eps, the run's own ``worst_case`` figure, AutoAttack's and the gap in points; it writes
them into the run directory (``naming.AUTOATTACK_GAP_JSON``, under results/). ``--attack apgd-t``
runs AutoAttack's strongest part alone instead: APGD-T against every wrong class (9 on CIFAR-10),
100 iterations each, the yardstick of ``eval=thorough``. This is the check
behind the adversarial-training figures of README and docs/attacks.md ("within 1 point of
AutoAttack"), not part of a run: AutoAttack costs minutes per eps on a CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--eps", type=float, nargs="+", default=[8.0], help="1/255 units")
    parser.add_argument("--attack", choices=sorted(REFERENCES), default="autoattack")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    import torch
    import torchattacks

    from advlab import naming
    from advlab.attacks.evaluate import select_subset
    from advlab.attacks.runner import clean_pass, eval_mode, load_points
    from advlab.audit.source import locate
    from advlab.data import load_data
    from advlab.fileio import atomic_write_text
    from advlab.models.io import load_model

    run_dir = args.run_dir.resolve()
    source = locate(str(run_dir), tracking_uri="", download_dir=run_dir)
    cfg = OmegaConf.create(source.config)
    seed, device = int(cfg.seed), torch.device(args.device)
    data = load_data(cfg.data, seed=seed, cache_dir=Path(cfg.paths.cache_dir))
    indices = select_subset(len(data.test.labels), cfg.eval.n_examples, seed)
    x, y = load_points(data, indices, device)
    model, _ = load_model(source.model_path, map_location=device)
    rows = []
    with eval_mode(model):
        clean = float(clean_pass(model, x, y, int(cfg.eval.batch_size)).correct.mean())
        for eps in args.eps:
            attack = _reference(torchattacks, args.attack, model, eps, data.num_classes, seed)
            start = time.perf_counter()
            robust = _accuracy(model, attack, x, y, int(cfg.eval.batch_size))
            reported = source.logged.get(naming.robust_acc_key(naming.WORST_CASE, eps))
            rows.append(
                {
                    "eps": eps,
                    "n": len(indices),
                    "attack": args.attack,
                    "reference": robust,
                    "run_worst_case": reported,
                    "gap_points": None if reported is None else 100 * (reported - robust),
                    "seconds": time.perf_counter() - start,
                }
            )
    payload = {"run_dir": str(run_dir), naming.CLEAN_ACC: clean, "rows": rows}
    atomic_write_text(run_dir / naming.AUTOATTACK_GAP_JSON, json.dumps(payload, indent=2))
    print(f"{run_dir}: clean {clean:.1%} on {len(indices)} points")
    for row in rows:
        run = "n/a" if row["run_worst_case"] is None else f"{row['run_worst_case']:.1%}"
        gap = "n/a" if row["gap_points"] is None else f"{row['gap_points']:+.1f}"
        print(
            f"  eps {row['eps']:g}/255: advlab worst case {run}, {REFERENCES[args.attack]} "
            f"{row['reference']:.1%} (gap {gap} points, {row['seconds']:.0f} s)"
        )
    return 0


REFERENCES = {"autoattack": "AutoAttack standard", "apgd-t": "APGD-T (every target, 100 steps)"}


def _reference(torchattacks, name: str, model, eps: float, num_classes: int, seed: int):
    if name == "apgd-t":  # as inside AutoAttack standard: one restart per target class
        return torchattacks.APGDT(
            model, norm="Linf", eps=eps / 255, steps=100, n_restarts=1,
            n_classes=num_classes, seed=seed,
        )  # fmt: skip
    return torchattacks.AutoAttack(
        model, norm="Linf", eps=eps / 255, version="standard", n_classes=num_classes, seed=seed
    )


def _accuracy(model, attack, x, y, batch_size: int) -> float:
    import torch

    correct = 0
    for start in range(0, len(y), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        adv = attack(xb, yb)
        with torch.no_grad():
            correct += int((model(adv).argmax(dim=1) == yb).sum())
    return correct / len(y)


if __name__ == "__main__":
    sys.exit(main())
