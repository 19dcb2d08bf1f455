"""The course's real scale: ``gender_fool`` on 100,000 faces (the size of its ``data_100k.bin``).

The 100k file is built from the shared 5,000 real faces (``../shared/data/gender``): 20 copies,
every other one mirrored left-right, labels alike, written to a temporary folder beside a copy of
``test1k`` and deleted afterwards (never commit it). Then ``python -m advlab
+experiment=gender_fool data.train=100k`` runs in a child process with a sandboxed MLflow store,
and the run's own records give the figures: seconds per epoch (``epoch_seconds``), training
images per second, the evaluation's seconds per part, the whole run's wall time and the child's
peak resident memory. The copies repeat the same faces, so accuracy here is not a result: the
timings and memory are.

    python -m benchmarks.bench_scale [--epochs 1] [--n 100000] [extra advlab overrides ...]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import GENDER_DIR, PROJECT_ROOT, Figure, emit, have_gender

BENCH = "scale"
IMAGE_BYTES = 48 * 48


def write_faces(root: Path, n: int, tag: str = "100k") -> None:
    """``data_<tag>.bin`` / ``gender_<tag>.bin`` of ``n`` faces from the shared 5k, and test1k."""
    faces = np.fromfile(GENDER_DIR / "data_5k.bin", dtype=np.uint8).reshape(-1, 48, 48)
    labels = np.fromfile(GENDER_DIR / "gender_5k.bin", dtype="<f4").reshape(-1, 2)
    with open(root / f"data_{tag}.bin", "wb") as out, open(root / f"gender_{tag}.bin", "wb") as lab:
        written, copy = 0, 0
        while written < n:
            m = min(len(faces), n - written)
            block = faces[:m, :, ::-1] if copy % 2 else faces[:m]
            out.write(np.ascontiguousarray(block).tobytes())
            lab.write(labels[:m].tobytes())
            written, copy = written + m, copy + 1
    for name in ("data_test1k.bin", "gender_test1k.bin"):
        shutil.copy(GENDER_DIR / name, root / name)


def run(epochs: int, n: int, extra: list[str]) -> list[Figure]:
    figures: list[Figure] = []
    if not have_gender():
        print(f"[{BENCH}] SKIP: ../shared/data/gender not found")
        return figures
    with tempfile.TemporaryDirectory(prefix="advlab-bench-scale-") as tmp:
        root = Path(tmp)
        (root / "faces").mkdir()
        write_faces(root / "faces", n)
        out = root / "out"
        command = [
            sys.executable,
            "-m",
            "advlab",
            "+experiment=gender_fool",
            f"data.root={root / 'faces'}",
            "data.train=100k",
            "data.test=test1k",
            f"train.epochs={epochs}",
            f"paths.runs_dir={out / 'runs'}",
            f"tracking.uri=sqlite:///{out / 'mlflow.db'}",
            f"tracking.artifact_root={out / 'mlartifacts'}",
            f"report.dir={out / 'reports'}",
            "hydra.run.dir=" + str(out / "run"),
            *extra,
        ]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            print(done.stderr[-3000:])
            raise RuntimeError(f"[{BENCH}] the run failed (exit {done.returncode})")
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        run_dir = out / "run"
        results = json.loads((run_dir / "results" / "results.json").read_text())
        _emit_figures(results, _epochs(run_dir), wall, peak_mib, n, figures)
    return figures


def _epochs(run_dir: Path) -> dict[str, list[float]]:
    """The run's per-epoch seconds and images/s, read back from its MLflow run."""
    from mlflow import MlflowClient

    from advlab import naming

    where = json.loads((run_dir / "mlflow_run.json").read_text())
    client = MlflowClient(where["tracking_uri"])
    return {
        key: [m.value for m in client.get_metric_history(where["run_id"], key)]
        for key in (naming.EPOCH_SECONDS, naming.IMAGES_PER_S)
    }


def _emit_figures(
    results: dict,
    epochs: dict[str, list[float]],
    wall: float,
    peak_mib: float,
    n: int,
    figures: list[Figure],
) -> None:
    epoch_seconds, speeds = epochs["epoch_seconds"], epochs["images_per_s"]
    name = f"gender_fool on {n // 1000}k faces"
    if epoch_seconds:
        emit(
            Figure(
                BENCH,
                f"{name}: seconds per epoch",
                float(np.median(epoch_seconds)),
                "s",
                target_kind="info",
                note=f"median of {len(epoch_seconds)}; {float(np.median(speeds)):,.0f} img/s",
            ),
            figures,
        )
    evaluation = {
        k.split("/", 1)[1]: v for k, v in results.items() if k.startswith("eval_seconds/")
    }
    if evaluation:
        parts = ", ".join(f"{k} {v:.0f} s" for k, v in evaluation.items())
        emit(
            Figure(
                BENCH,
                f"{name}: evaluation",
                sum(evaluation.values()),
                "s",
                target_kind="info",
                note=parts,
            ),
            figures,
        )
    emit(
        Figure(
            BENCH,
            f"{name}: whole run (wall)",
            wall,
            "s",
            target_kind="info",
            note="load, training, evaluation, MLflow, PDF",
        ),
        figures,
    )
    emit(Figure(BENCH, f"{name}: peak memory (RSS)", peak_mib, "MiB", target_kind="info"), figures)


def main(argv: list[str] | None = None) -> list[Figure]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1, help="epochs to train (default 1)")
    parser.add_argument("--n", type=int, default=100_000, help="faces in the training file")
    args, extra = parser.parse_known_args(argv)
    return run(args.epochs, args.n, extra)


if __name__ == "__main__":
    main()
