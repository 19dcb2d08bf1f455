"""The cross-library audit: the same FGSM and PGD from torchattacks, IBM ART and Foolbox.

``python -m advlab.audit audit.run=<run directory or MLflow run id>`` loads the run's model and
the test points its evaluation attacked (the run's data config, ``eval.n_examples`` and seed),
attacks them with FGSM and PGD at the run's eps grid, steps, step size and random start from the
three libraries (:mod:`~advlab.audit.measure`), and compares them point by point
(:mod:`~advlab.audit.compare`: FGSM must agree exactly, PGD within its random-start noise).

It writes ``<run dir>/results/audit.json``; when the run is tracked it logs, into that same MLflow
run, the metrics ``audit/<library>/<attack>/eps_<e>`` (robust accuracy; library torchattacks,
art, foolbox or worst, the per-point worst case over the three, step = index of eps in the grid)
and ``audit/<library>/<attack>/seconds`` (wall time over the grid), the tag ``advlab.audit``
(pass | warn), the artifact ``results/audit.json``, and a rebuilt PDF report whose "Audit"
section shows the comparison (``audit.report``).

ART and Foolbox are the optional extra ``audit``; they are imported here only, first thing, so a
missing one costs one line and nothing else (:func:`~advlab.audit.libraries.import_extras`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from advlab import naming
from advlab.config import PROJECT_ROOT, Targeted
from advlab.errors import ConfigError
from advlab.fileio import atomic_write_text

log = logging.getLogger(__name__)

WORST = "worst"  # the per-point worst case over the libraries, as a library name


def run_audit(cfg: DictConfig, *, work_dir: Path) -> dict[str, Any]:
    """Audit the run named by ``cfg.audit.run``; return what ``results/audit.json`` holds.

    ``work_dir`` receives the files of a run fetched from MLflow (its directory is elsewhere).
    Raises :class:`~advlab.errors.MissingDependencyError` without ART or Foolbox,
    :class:`~advlab.errors.ConfigError` when the run cannot be found or used.
    """
    from advlab.audit.libraries import import_extras

    extras = import_extras()
    if cfg.audit.run is None:
        raise ConfigError("audit.run is not set: give a run directory or an MLflow run id")

    from advlab.audit.source import locate
    from advlab.runtime import reuse_freed_memory, select_device, set_threads
    from advlab.tracking import resolve_tracking_uri

    set_threads(cfg.threads)
    reuse_freed_memory()
    device = select_device(cfg.device)
    uri = resolve_tracking_uri(cfg.tracking, cfg.paths)
    source = locate(str(cfg.audit.run), tracking_uri=uri, download_dir=Path(work_dir))
    run_cfg = OmegaConf.create(source.config)
    payload = _audit_points(run_cfg, source, extras, device)
    path = atomic_write_text(source.out_dir / naming.AUDIT_JSON, json.dumps(payload, indent=2))
    log.info("%s", summary(payload))
    log.info("audit written to %s", path)
    if source.run_id is None:
        log.warning("no MLflow run is tagged %s: the audit is only in %s", source.out_dir, path)
        return payload
    _log_to_run(source, payload, path, list(run_cfg.eval.eps))
    if cfg.audit.report:
        _rebuild_report(cfg, source)
    return payload


def _audit_points(run_cfg: DictConfig, source, extras: dict, device) -> dict[str, Any]:
    """Rebuild the run's evaluated points, attack them from every library, compare."""
    from advlab.attacks.evaluate import select_subset
    from advlab.attacks.runner import assert_eval, clean_pass, eval_mode, load_points
    from advlab.audit.compare import compare_row, overall
    from advlab.audit.libraries import versions
    from advlab.audit.measure import ATTACKS, measure
    from advlab.data import load_data
    from advlab.models.io import load_model

    options = {name: _attack_options(run_cfg, name) for name in ATTACKS}
    seed, batch_size = int(run_cfg.seed), int(run_cfg.eval.batch_size)
    eps_grid = [float(e) for e in run_cfg.eval.eps]
    data = load_data(run_cfg.data, seed=seed, cache_dir=Path(run_cfg.paths.cache_dir))
    indices = select_subset(len(data.test.labels), run_cfg.eval.n_examples, seed)
    x, y = load_points(data, indices, device)
    model, _ = load_model(source.model_path, map_location=device)
    with eval_mode(model):
        assert_eval(model)
        correct = clean_pass(model, x, y, batch_size).correct
        measured = measure(
            model,
            x,
            y,
            correct,
            eps_grid=eps_grid,
            options=options,
            seed=seed,
            batch_size=batch_size,
            extras=extras,
        )
    rows = []
    for attack in ATTACKS:
        for eps in eps_grid:
            row = compare_row(attack, eps, measured.robust[(attack, eps)])
            spec = measured.specs.get((attack, eps))  # None at eps 0: nothing ran
            if spec is not None:
                row.update(steps=spec.steps, alpha=spec.alpha * 255, random_start=spec.random_start)
            # advlab's own figure, for comparison (equal for FGSM when the run had cascade off)
            row["run_robust_acc"] = source.logged.get(naming.robust_acc_key(attack, eps))
            rows.append(row)
    return {
        "run_id": source.run_id,
        "run_dir": str(source.out_dir),
        "n": len(indices),
        naming.CLEAN_ACC: float(correct.mean()),
        # the run's clean accuracy on these same points (runs of earlier releases measured
        # clean_acc on them; later ones on the whole test split, and points_clean_acc here)
        "run_clean_acc": source.logged.get(
            naming.POINTS_CLEAN_ACC, source.logged.get(naming.CLEAN_ACC)
        ),
        "cascade": bool(run_cfg.eval.cascade),
        "device": str(device),
        "versions": versions(),
        "seconds": measured.seconds,
        "rows": rows,
        "verdict": overall(rows),
    }


def _attack_options(run_cfg: DictConfig, name: str) -> dict[str, Any]:
    """The run's ``attacks.<name>`` options for :mod:`advlab.attacks.zoo`; a targeted attack is
    refused (the audit compares the untargeted attacks of the three libraries). PGD runs every
    step on every point, as ART's and Foolbox's do: the audit compares one algorithm, and the
    evaluation's first-success PGD (``stop_on_success``) is never above it."""
    node = OmegaConf.to_container(run_cfg.attacks[name], resolve=True)
    options = {k: v for k, v in node.items() if k not in ("_target_", "_partial_")}
    if "stop_on_success" in options:
        options["stop_on_success"] = False
    if options.get("targeted") is not None:
        raise ConfigError(
            f"attacks.{name}.targeted={options['targeted']} in the audited run: the audit "
            f"compares untargeted attacks only (targeted: null); choose from {list(Targeted)}"
            " in advlab's own evaluation instead"
        )
    return options


def _log_to_run(source, payload: dict[str, Any], path: Path, eps_grid: list[float]) -> None:
    """Metrics, tag and ``results/audit.json`` into the audited (finished) MLflow run."""
    import time

    from mlflow.entities import Metric, RunTag

    from advlab.tracking.store import open_client, retry, upload

    stamp = int(time.time() * 1000)
    metrics = [
        Metric(
            naming.audit_acc_key(name, row["attack"], row["eps"]),
            acc,
            stamp,
            eps_grid.index(row["eps"]),
        )
        for row in payload["rows"]
        for name, acc in row["robust_acc"].items()
    ]
    metrics += [
        Metric(naming.audit_seconds_key(name, attack), seconds, stamp, 0)
        for name, by_attack in payload["seconds"].items()
        for attack, seconds in by_attack.items()
    ]
    client = open_client(str(source.tracking_uri))
    tags = [RunTag(naming.AUDIT_TAG, payload["verdict"])]
    retry(lambda: client.log_batch(source.run_id, metrics=metrics, tags=tags), what="log audit")
    upload(client, str(source.run_id), path, naming.RESULTS_DIR)
    log.info("audit logged to MLflow run %s (%s)", source.run_id, source.tracking_uri)


def _rebuild_report(cfg: DictConfig, source) -> Path:
    """The run's PDF, built again from MLflow (now with its "Audit" section) and attached."""
    from advlab.report import build_report
    from advlab.tracking import attach_artifact

    out_dir = Path(str(cfg.report.dir)).expanduser()
    if not out_dir.is_absolute():
        out_dir = PROJECT_ROOT / out_dir  # never Hydra's per-run working directory
    pdf = build_report(
        tracking_uri=str(source.tracking_uri),
        experiment=source.experiment,
        runs=[str(source.run_id)],
        out_dir=out_dir,
    )
    attach_artifact(str(source.run_id), pdf, "report", tracking_uri=str(source.tracking_uri))
    log.info("PDF report with the audit: %s", pdf)
    return pdf


def summary(payload: dict[str, Any]) -> str:
    """The audit as a few lines of text: one per attack x eps, then each library's time."""
    from advlab.audit.libraries import LIBRARIES

    names = [*LIBRARIES, WORST]
    lines = [
        f"audit of {payload['n']} points (clean accuracy {payload[naming.CLEAN_ACC]:.1%}): "
        f"{payload['verdict']}",
        f"  {'attack':<6} {'eps':>4}  " + "  ".join(f"{n:>12}" for n in names) + "  disagree",
    ]
    for row in payload["rows"]:
        accs = "  ".join(f"{row['robust_acc'][n]:>12.1%}" for n in names)
        eps = naming.format_eps(row["eps"])
        verdict = f"{row['disagree']:>8}  {row['verdict']}"
        lines.append(f"  {row['attack']:<6} {eps:>4}  {accs}  {verdict}")
    for library, by_attack in payload["seconds"].items():
        times = ", ".join(f"{attack} {s:.1f} s" for attack, s in by_attack.items())
        lines.append(f"  {library:<12} {times}")
    return "\n".join(lines)
