"""Draw the README's picture: clean digits, their PGD perturbation (amplified) and the adversarial
digits, each with the quickstart model's prediction.

    .venv/bin/python scripts/readme_figure.py [--run RUN] [--eps 64] [--n 3] [--out PNG]

RUN is a quickstart run directory or MLflow run id; by default the newest finished run of the
``quickstart`` experiment in the project's store (``runs/mlflow.db``), and when there is none the
quickstart is run first (``python -m advlab``, about 30 s on 2 cores). Nothing is re-trained when a
run exists: the script loads the run's saved model and config, takes the first ``--n`` of the run's
own evaluated test digits that the grids would show (``advlab.attacks.grids.grid_rows``), attacks
them with advlab's PGD under the run's attack options at ``--eps`` (1/255 units) and draws them with
advlab's grid (``advlab.attacks.grids.save_grid``). The PNG is small enough to commit (< 100 KB).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from advlab import naming, results
from advlab.attacks.evaluate import select_subset
from advlab.attacks.grids import grid_rows, save_grid
from advlab.attacks.runner import assert_eval, eval_mode, load_points
from advlab.audit.source import locate
from advlab.config import PROJECT_ROOT
from advlab.data import load_data
from advlab.errors import AdvlabError, ConfigError
from advlab.models.io import load_model

EXPERIMENT = "quickstart"
DEFAULT_OUT = PROJECT_ROOT / "docs" / "img" / "quickstart_examples.png"


def newest_run(tracking_uri: str) -> str | None:
    """Run directory of the newest FINISHED quickstart run (sweep parents have none); None if
    the store or the experiment does not exist yet."""
    try:
        frame = results.load(experiment=EXPERIMENT, tracking_uri=tracking_uri)
    except ConfigError:
        return None
    column = f"tags.{naming.RUN_DIR_TAG}"
    if column not in frame:
        return None
    done = frame[(frame["status"] == "FINISHED") & frame[column].notna()]
    if done.empty:
        return None
    return str(done.sort_values("start_time").iloc[-1][column])


def quickstart_run(tracking_uri: str) -> str:
    """The run to draw from, running the quickstart when the store has none."""
    found = newest_run(tracking_uri)
    if found is None:
        print("no finished quickstart run in the store: running python -m advlab", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "advlab"], cwd=PROJECT_ROOT, check=True)
        found = newest_run(tracking_uri)
    if found is None:
        raise AdvlabError(f"the quickstart left no finished run in {tracking_uri}")
    return found


def draw(run: str, tracking_uri: str, eps: float, n: int, out: Path) -> Path:
    """Attack ``n`` of the run's evaluated digits with PGD at ``eps``/255 and save the grid."""
    with tempfile.TemporaryDirectory(prefix="advlab-figure-") as download:
        source = locate(run, tracking_uri=tracking_uri, download_dir=Path(download))
        cfg = OmegaConf.create(source.config)
        model, spec = load_model(source.model_path)
    data = load_data(cfg.data, seed=int(cfg.seed), cache_dir=Path(cfg.paths.cache_dir))
    indices = select_subset(len(data.test.labels), cfg.eval.n_examples, int(cfg.seed))
    x, y = load_points(data, indices, torch.device("cpu"))
    attack = instantiate(cfg.attacks.pgd)(model, eps=eps, seed=int(cfg.seed))
    with eval_mode(model):
        assert_eval(model)
        with torch.no_grad():
            clean_logits = model(x)
        rows = grid_rows((clean_logits.argmax(1) == y).numpy(), y.numpy(), n)
        adversarial = attack(x[rows], y[rows])
        with torch.no_grad():
            adv_logits = model(adversarial)
    clean_prob = torch.softmax(clean_logits[rows], 1)
    adv_prob = torch.softmax(adv_logits, 1)
    names = list(spec["class_names"])
    return save_grid(
        out,
        x[rows].numpy(),
        adversarial.numpy(),
        y[rows].numpy(),
        clean_prob.argmax(1).numpy(),
        clean_prob.max(1).values.numpy(),
        adv_prob.argmax(1).numpy(),
        adv_prob.max(1).values.numpy(),
        names,
        f"quickstart CNN, PGD-{cfg.attacks.pgd.steps} at eps {naming.format_eps(eps)}/255",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="run directory or MLflow run id (default: newest)")
    parser.add_argument("--eps", type=float, default=64.0, help="PGD budget, 1/255 units")
    parser.add_argument("--n", type=int, default=3, help="digits shown, one per row")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--tracking-uri", default=None, help="default: the project's store")
    args = parser.parse_args()
    if args.eps <= 0 or args.n < 1:
        raise SystemExit(f"--eps={args.eps} must be > 0 and --n={args.n} at least 1")
    uri = results.default_tracking_uri(args.tracking_uri)
    try:
        # a run directory relative to the current directory, as a shell user means it
        run = str(Path(args.run).resolve()) if args.run and Path(args.run).is_dir() else args.run
        run = run or quickstart_run(uri)
        path = draw(run, uri, args.eps, args.n, args.out)
    except AdvlabError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    size = path.stat().st_size
    print(f"{path} ({size / 1024:.0f} KB) from run {run}")


if __name__ == "__main__":
    main()
