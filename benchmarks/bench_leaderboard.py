"""``python -m advlab.leaderboard`` on a store of many runs: wall time of a fresh process.

The store is logged directly (no training): ``--runs`` runs (default 24) with as many params and
metrics as a pipeline run records (about 300 params, one robust accuracy per attack and eps), in
seed groups of three, with a fail verdict every fifth run and the escalation off every seventh.
The leaderboard reads params, metrics and tags in one bulk search, so its time is start-up
(Hydra, MLflow, reportlab) plus a search whose cost grows slowly with the runs. Target: under
10 s for 20+ runs.

    python -m benchmarks.bench_leaderboard [--runs 24] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from benchmarks.bench_e2e import time_command
from benchmarks.common import Figure, emit

BENCH = "e2e"
TARGET_S = 10.0
FILLER_PARAMS = 290  # a pipeline run records about 300 params (its flattened config and facts)
EPS = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0)
ATTACKS = ("fgsm", "pgd", "margin", "worst_case")


def make_store(db: Path, n_runs: int) -> str:
    """A SQLite store at ``db`` with ``n_runs`` finished runs of experiment ``bench``."""
    from mlflow.entities import Metric, Param, RunTag

    from advlab import naming
    from advlab.tracking import open_client

    uri = f"sqlite:///{db}"
    client = open_client(uri)
    experiment = client.create_experiment("bench")
    for i in range(n_runs):
        setting, seed = divmod(i, 3)
        failed = i % 5 == 4
        verdict = "fail" if failed else "pass"
        tags = {naming.SEED_TAG: str(seed), naming.VERDICT_TAG: verdict}
        if failed:
            tags[naming.check_tag("clean_above_chance")] = "fail"
        run_id = client.create_run(experiment, run_name=f"setting{setting}-s{seed}").info.run_id
        params = {f"bench.p{k}": str(k * setting) for k in range(FILLER_PARAMS)}
        params.update(
            {
                "seed": str(seed),
                "eval.eps": str(list(EPS)),
                "eval.grid_eps": "8.0",
                "eval.escalation.enabled": str(i % 7 != 6),
            }
        )
        clean = 0.6 + 0.01 * setting
        metrics = {naming.CLEAN_ACC: clean, naming.TRAIN_SECONDS: 60.0}
        for eps in EPS:
            metrics[naming.certified_acc_key(eps)] = clean / (1 + eps)
            for attack in ATTACKS:
                metrics[naming.robust_acc_key(attack, eps)] = clean / (1 + eps / 8)
        client.log_batch(
            run_id,
            metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()],
            params=[Param(k, v) for k, v in params.items()],
            tags=[RunTag(k, v) for k, v in tags.items()],
        )
        client.set_terminated(run_id, "FINISHED")
    return uri


def bench_leaderboard(n_runs: int, repeats: int, figures: list[Figure]) -> None:
    with tempfile.TemporaryDirectory(prefix="advlab-bench-leaderboard-") as tmp_name:
        tmp = Path(tmp_name)
        uri = make_store(tmp / "mlflow.db", n_runs)
        args = ["-m", "advlab.leaderboard", f"tracking.uri={uri}", f"leaderboard.dir={tmp}"]
        time_command(args, 1)  # warm the page cache and .pyc files first
        seconds, _ = time_command(args, repeats)
    emit(
        Figure(
            BENCH,
            f"python -m advlab.leaderboard ({n_runs} runs)",
            statistics.median(seconds),
            "s",
            target=TARGET_S,
            target_kind="value<=",
            note=f"median of {repeats}; terminal table + CSV + markdown + PDF",
        ),
        figures,
    )


def main(argv: list[str] | None = None) -> list[Figure]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=24, help="runs in the store")
    parser.add_argument("--repeats", type=int, default=3, help="timed fresh processes")
    args = parser.parse_args(argv)
    figures: list[Figure] = []
    bench_leaderboard(args.runs, args.repeats, figures)
    return figures


if __name__ == "__main__":
    main()
