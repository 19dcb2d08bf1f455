"""One run, start to end: validate, seed, data, model, fit, evaluate, track, report.

This module reads like a table of contents; each step lives in its own package. It is imported
lazily by ``advlab.__main__`` so that ``python -m advlab --help`` stays fast.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from advlab import naming
from advlab.config import AdversarialMethod
from advlab.fileio import atomic_write_text
from advlab.validate import validate_config
from advlab.verdict import PASS, Check, Verdict, decide

log = logging.getLogger(__name__)


def run(cfg: DictConfig, run_dir: Path | None = None) -> dict[str, float | str]:
    """Train, attack, track and report one configuration; return its headline metrics and verdict.

    The returned names are the MLflow metric names (``clean_acc``, ``robust_acc/<attack>/eps_<e>``,
    ``asr/<attack>/eps_<e>``, ``num_params``) plus ``verdict`` (pass | warn | fail) and
    ``verdict_reason`` (:mod:`advlab.verdict`), also written to ``<run_dir>/results/results.json``.
    ``run_dir``: where the run's files go (a search's trials name theirs); None: Hydra's output
    directory, or a fresh folder under ``paths.runs_dir``.
    """
    validate_config(cfg)  # before anything slow: a bad value costs milliseconds, not a training run

    # Heavy imports only once the config is known to be good.
    import torch

    from advlab.attacks.transfer import load_sources
    from advlab.data import load_data
    from advlab.runtime import reuse_freed_memory, seed_everything, select_device, set_threads
    from advlab.tracking import Tracker, resolve_sources, resolve_tracking_uri
    from advlab.tracking.metadata import run_facts

    set_threads(cfg.threads)
    reuse_freed_memory()
    seed_everything(cfg.seed)
    device = select_device(cfg.device)
    run_dir = _run_dir(cfg) if run_dir is None else Path(run_dir)
    results_dir = run_dir / naming.RESULTS_DIR
    results_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(cfg.paths.cache_dir)

    # Everything that can refuse the command is done before an MLflow run is opened, so a
    # refused command (bad data file, attack undefined on the task, unknown transfer source)
    # leaves no FAILED run in the store.
    transfer_refs = [str(r) for r in cfg.eval.transfer_from]
    transfer_checkpoints = resolve_sources(
        transfer_refs,
        tracking_uri=resolve_tracking_uri(cfg.tracking, cfg.paths),
        download_dir=run_dir / "transfer_sources",
    )
    data = load_data(cfg.data, seed=cfg.seed, cache_dir=cache_dir)
    _check_attacks_fit_task(cfg, data.num_classes)
    load_sources(transfer_refs, data, torch.device("cpu"), transfer_checkpoints)
    model, num_params = _build_model(cfg, data)
    _check_certifiable(cfg, model)

    with Tracker(cfg, run_dir=run_dir) as tracker:
        tracker.log_run_info(run_facts(cfg))
        tracker.log_data_facts(data.facts())
        tracker.log_datasets(data, cfg.data, cache_dir)
        tracker.log_metrics({naming.NUM_PARAMS: num_params})
        fitted = _train(cfg, model, data, device, run_dir, tracker)
        evaluation = _evaluate(cfg, model, data, device, results_dir, transfer_checkpoints)
        verdict = decide([*fitted.checks, *evaluation.checks, _constant_baseline(cfg, evaluation)])
        metrics = _track_results(cfg, tracker, evaluation, verdict, num_params, run_dir)
        run_id = tracker.run_id
        tracking_uri = tracker.tracking_uri
        experiment = tracker.experiment_name

    pdf = None
    if cfg.report.enabled and run_id is not None:
        pdf = _single_run_report(cfg, tracking_uri, experiment, run_id)

    _print_summary(cfg, metrics, verdict, run_dir, tracker, device, pdf)
    return {**metrics, **_verdict_fields(verdict)}


def _constant_baseline(cfg: DictConfig, evaluation) -> Check:
    """The ``constant_baseline`` check (:mod:`advlab.baseline`): judged when the model was
    adversarially trained (at every eps > 0 of the grid)."""
    from advlab.baseline import check_constant_baseline

    adversarial = cfg.train.adversarial
    trained = None if adversarial.method == AdversarialMethod.none else float(adversarial.eps)
    return check_constant_baseline(
        evaluation.table, evaluation.constant_acc, evaluation.constant_answer, trained
    )


def _track_results(cfg, tracker, evaluation, verdict: Verdict, num_params: int, run_dir: Path):
    """The run's metrics (returned), in ``results/results.json`` and MLflow; its verdict and
    checks as tags and ``results/verdict.json``; its summary as the run's description."""
    from advlab.attacks.evaluate import evaluation_metrics
    from advlab.tracking.summary import run_description

    metrics = {**evaluation_metrics(evaluation), naming.NUM_PARAMS: float(num_params)}
    # Today's evaluation measures clean and robust accuracy on the same points.
    metrics.setdefault(naming.CLEAN_N, float(evaluation.n))
    metrics.setdefault(naming.ROBUST_N, float(evaluation.n))
    results_json = run_dir / naming.RESULTS_JSON
    _write_json(results_json, {**metrics, **_verdict_fields(verdict)})
    tracker.log_evaluation(evaluation, list(cfg.eval.eps))
    tracker.log_metrics({k: metrics[k] for k in (naming.CLEAN_N, naming.ROBUST_N)})
    _track_verdict(tracker, verdict, run_dir)
    clean_n, robust_n = int(metrics[naming.CLEAN_N]), int(metrics[naming.ROBUST_N])
    summary = run_description(
        verdict, metrics[naming.CLEAN_ACC], clean_n, robust_n, evaluation.table
    )
    tracker.set_description(summary)
    tracker.log_artifact(results_json, naming.RESULTS_DIR)
    return metrics


def _build_model(cfg: DictConfig, data):
    """The model chosen by ``cfg.model``, sized from the data, and its number of parameters."""
    from advlab.models import build_model, count_params, layer_table

    model = build_model(cfg.model, data)
    num_params = count_params(model)
    log.info(
        "model %s, %d trainable parameters\n%s",
        naming.option_name(cfg.model._target_),
        num_params,
        layer_table(model, (1, data.channels, *data.image_size)),
    )
    return model, num_params


def _check_certifiable(cfg: DictConfig, model) -> None:
    """Before training: a model with a layer the certified bounds cannot take is refused in one
    line (which layer, and how to run without the lower bound; IBP training needs the bounds)."""
    from advlab.certify import check_supported
    from advlab.config import Certify
    from advlab.errors import AttackError, ConfigError

    method = Certify(cfg.eval.get("certify", Certify.none))
    ibp_training = cfg.train.adversarial.method == AdversarialMethod.ibp  # trains on the bounds
    if method == Certify.none and not ibp_training:
        return
    try:
        check_supported(model)
    except AttackError as error:
        if ibp_training:
            raise ConfigError(f"train.adversarial.method=ibp: {error}") from error
        raise ConfigError(
            f"eval.certify={method}: {error}; eval.certify=none evaluates this model without "
            "a certified lower bound"
        ) from error


def _train(cfg: DictConfig, model, data, device, run_dir: Path, tracker):
    """Fit (each epoch tracked), record where it stopped, save and log the trained model (as
    ``model/model.pt`` and as the run's MLflow PyTorch model); the
    :class:`~advlab.training.fit.FitResult` (its ``checks`` join the verdict)."""
    from advlab.models.io import save_model
    from advlab.training.fit import fit

    fitted = fit(
        model,
        data,
        cfg.train,
        cfg.optimizer,
        seed=cfg.seed,
        device=device,
        run_dir=run_dir,
        on_epoch=tracker.log_epoch,
    )
    tracker.log_metrics(
        {
            naming.BEST_EPOCH: fitted.best_epoch,
            naming.STOPPED_EPOCH: fitted.stopped_epoch,
            naming.TRAIN_SECONDS: fitted.seconds,
        }
    )
    if cfg.tracking.log_model:
        model_path = run_dir / naming.MODEL_ARTIFACT
        save_model(model_path, model, OmegaConf.to_container(cfg.model), _data_spec(data))
        tracker.log_artifact(model_path, naming.MODEL_DIR)
        tracker.log_model(model, data)
    return fitted


def _evaluate(cfg: DictConfig, model, data, device, results_dir: Path, transfer_checkpoints):
    """Robustness evaluation, then (``eval.transfer_from``) the transfer matrix on the same
    points; the transfer files join the evaluation's artifacts, so they are logged with it."""
    from advlab.attacks.evaluate import evaluate_robustness
    from advlab.attacks.transfer import evaluate_transfer

    attacks = _selected_attacks(cfg)
    evaluation = evaluate_robustness(
        model, data, cfg.eval, attacks, seed=cfg.seed, device=device, out_dir=results_dir
    )
    if list(cfg.eval.transfer_from):
        _, written = evaluate_transfer(
            model,
            data,
            cfg.eval,
            attacks,
            indices=evaluation.indices,
            seed=cfg.seed,
            device=device,
            out_dir=results_dir,
            checkpoints=transfer_checkpoints,
        )
        evaluation.artifacts.extend(written)
    return evaluation


def _run_dir(cfg: DictConfig) -> Path:
    """Hydra's output directory when run by Hydra; a fresh folder under paths.runs_dir otherwise."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    path = Path(cfg.paths.runs_dir) / "local" / f"{stamp}-{os.getpid()}-{time.monotonic_ns()}"
    path.mkdir(parents=True, exist_ok=False)
    return path


def _selected_attacks(cfg: DictConfig) -> DictConfig:
    """The attack configs named in eval.attacks, in that order."""
    return OmegaConf.create({name: cfg.attacks[name] for name in cfg.eval.attacks})


def _check_attacks_fit_task(cfg: DictConfig, num_classes: int) -> None:
    """Refuse attacks that are undefined on this task before training, not after it."""
    from advlab.attacks.zoo import check_attack_support

    for name in cfg.eval.attacks:
        check_attack_support(name, cfg.attacks[name], num_classes)


def _data_spec(data) -> dict:
    return {
        "in_channels": data.channels,
        "image_size": list(data.image_size),
        "num_classes": data.num_classes,
        "mean": list(data.mean),
        "std": list(data.std),
        "class_names": list(data.class_names),
        "dataset": data.name,
    }


def _verdict_fields(verdict: Verdict) -> dict[str, str]:
    return {naming.VERDICT_KEY: verdict.status, naming.VERDICT_REASON_KEY: verdict.reason}


def _track_verdict(tracker, verdict: Verdict, run_dir: Path) -> None:
    """Tags ``advlab.verdict`` / ``advlab.verdict_reason`` and ``advlab.check.<name>`` for every
    check behind the verdict that did not pass (training's and the evaluation's, written once
    here), and ``results/verdict.json``."""
    path = run_dir / naming.VERDICT_JSON
    _write_json(path, verdict.to_dict())
    not_passed = {naming.check_tag(c.name): c.status for c in verdict.checks if c.status != PASS}
    tracker.set_tags(
        {
            **not_passed,
            naming.VERDICT_TAG: verdict.status,
            naming.VERDICT_REASON_TAG: verdict.reason,
        }
    )
    tracker.log_artifact(path, naming.RESULTS_DIR)
    if verdict.status != PASS:
        log.warning("verdict %s: %s", verdict.status, verdict.reason)


def _write_json(path: Path, payload: dict) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True))  # never half-written


def _single_run_report(cfg: DictConfig, tracking_uri: str, experiment: str, run_id: str):
    """Build the run's PDF from what MLflow now holds and attach it to the (finished) run."""
    from advlab.config import PROJECT_ROOT
    from advlab.report import build_report
    from advlab.tracking import attach_artifact

    out_dir = Path(cfg.report.dir)
    if not out_dir.is_absolute():
        out_dir = PROJECT_ROOT / out_dir
    pdf = build_report(
        tracking_uri=tracking_uri, experiment=experiment, runs=[run_id], out_dir=out_dir
    )
    attach_artifact(run_id, pdf, naming.REPORT_ARTIFACT_DIR, tracking_uri=tracking_uri)
    return pdf


def _print_summary(cfg, metrics, verdict: Verdict, run_dir, tracker, device, pdf) -> None:
    from advlab.tracking import serve_command, ui_link

    lines = ["", "advlab run finished"]
    lines.append(f"  verdict             {verdict.status.upper()}: {verdict.reason}")
    lines.append(f"  clean accuracy      {metrics[naming.CLEAN_ACC]:.1%}")
    largest = max(cfg.eval.eps)
    for attack in cfg.eval.attacks:
        key = naming.robust_acc_key(attack, largest)
        if key in metrics:
            lines.append(f"  {attack:<8} eps {naming.format_eps(largest)}/255  {metrics[key]:.1%}")
    worst = naming.robust_acc_key(naming.WORST_CASE, largest)
    if worst in metrics:
        lines.append(f"  worst    eps {naming.format_eps(largest)}/255  {metrics[worst]:.1%}")
    bracket = _bracket_line(cfg, metrics)
    if bracket:
        lines.append(f"  bracket             {bracket}")
    if naming.CONSTANT_ACC in metrics:
        # what a model that ignores its input keeps: the floor a defence must stay above
        constant = f"{metrics[naming.CONSTANT_ACC]:.1%} at every eps (the most frequent class)"
        lines.append(f"  constant answer     {constant}")
    lines.append(f"  device              {_device_line(device)}")
    lines.append(f"  run directory       {run_dir}")
    if tracker.run_id is not None:
        uri, experiment_id = tracker.tracking_uri, tracker.experiment_id
        lines.append(f"  MLflow run          {tracker.run_id} ({uri})")
        lines.append(f"  open in MLflow UI   {ui_link(uri, experiment_id, tracker.run_id)}")
        if tracker.in_sweep:
            lines.append(f"  the sweep's runs    {ui_link(uri, experiment_id)}")
        serve = serve_command(uri)
        if serve is not None:
            lines.append(f"  serve the UI with   {serve}")
    if pdf is not None:
        lines.append(f"  PDF report          {pdf}")
    # The summary is the product's answer to the user, so it goes to the log (Hydra's console).
    log.info("\n".join(lines))


def _bracket_line(cfg, metrics) -> str | None:
    """``[certified, worst case]`` at the grid's headline eps (eval.grid_eps if evaluated, else
    the largest eps at which anything was certified, else the largest): the truth lies between."""
    grid = [float(e) for e in cfg.eval.eps if float(e) > 0]
    certified = {e: metrics.get(naming.certified_acc_key(e)) for e in grid}
    if not grid or all(v is None for v in certified.values()):
        return None
    some = [e for e in grid if certified[e]]
    grid_eps = cfg.eval.get("grid_eps")
    eps = float(grid_eps) if grid_eps in grid else (some[-1] if some else grid[-1])
    worst = metrics.get(naming.robust_acc_key(naming.WORST_CASE, eps))
    upper = "n/a" if worst is None else f"{worst:.1%}"
    return f"eps {naming.format_eps(eps)}/255  [{certified[eps]:.1%} certified, {upper} worst case]"


def _device_line(device) -> str:
    """``cpu (torch 2.13.0+cpu)``; a GPU with its name: ``cuda:0 (NVIDIA H200, torch ...)``."""
    import torch

    name = f"{torch.cuda.get_device_name(device)}, " if device.type == "cuda" else ""
    return f"{device} ({name}torch {torch.__version__})"
