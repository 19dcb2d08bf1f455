"""A whole search: check the input, open the study and the search run, run the workers, report.

Every check that can refuse the command runs before any training starts: the search's own keys,
the space (each key composed with both ends of its range and every choice, and validated as a run
would be), the objective's name and the storage URL, each refusal one line naming key and value.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from advlab import naming, tracking
from advlab.config import PROJECT_ROOT, Sampler
from advlab.errors import ConfigError
from advlab.search import parent, space, study, trial
from advlab.search.worker import Spec, work

log = logging.getLogger("advlab.search")

_NOT_FOR_TRIALS = ("search", "hydra")  # roots of overrides that are the search's, not a run's


@dataclass
class Result:
    """What a finished (or joined) search returns."""

    study: str
    storage: str
    ran: int  # trials this command ran
    run_id: str
    pdf: Path | None = None
    finished: bool = False  # False: other workers were still running (the last one reports)


def trial_overrides(overrides: Sequence[str], cfg: DictConfig) -> list[str]:
    """The search command's overrides that every trial gets: all but ``search.*`` and Hydra's,
    with the relative paths typed on the command line made absolute (``resolve_cli_paths``)."""
    from advlab.__main__ import CLI_PATH_KEYS

    out = []
    for item in overrides:
        key = item.split("=", 1)[0].lstrip("+~")
        if key.split(".", 1)[0].split("/", 1)[0] in _NOT_FOR_TRIALS:
            continue
        if key in CLI_PATH_KEYS and "=" in item:
            item = f"{item.split('=', 1)[0]}={_select(cfg, key)}"  # made absolute already
        out.append(item)
    return out


def _select(cfg: DictConfig, key: str) -> str:
    from omegaconf import OmegaConf

    return str(OmegaConf.select(cfg, key))


def check_objective(cfg: DictConfig, objective: str | None) -> None:
    """A named objective must be a metric every trial logs: clean accuracy or an eps metric of
    an attack run on the grid."""
    if objective is None or objective in (naming.CLEAN_ACC, naming.POINTS_CLEAN_ACC):
        return
    parsed = naming.parse_eps_metric(str(objective))
    attacks = {*map(str, cfg.eval.attacks), naming.WORST_CASE}
    grid = {float(e) for e in cfg.eval.eps}
    if parsed is None or parsed[1] not in attacks or parsed[2] not in grid:
        example = naming.robust_acc_key("pgd", max(grid))
        raise ConfigError(
            f"search.objective={objective}: not a metric of these runs (e.g. {example}, or "
            f"{naming.CLEAN_ACC}; attacks {', '.join(sorted(attacks))}; eps of eval.eps)"
        )


def prepare(cfg: DictConfig, overrides: Sequence[str]) -> tuple[list[space.Param], list[str]]:
    """The space and the trials' overrides, every input checked (see the module docstring)."""
    from advlab.validate import check_search

    check_search(cfg.search)
    if not cfg.tracking.enabled:
        raise ConfigError("tracking.enabled=false: a search records its trials in MLflow")
    params = space.read_space(cfg.search.space)
    base = trial_overrides(overrides, cfg)
    base_cfg = trial.check_run_config(base)
    space.check_composes(params, lambda item: trial.check_value(base, base_cfg, item))
    check_objective(cfg, cfg.search.objective)
    return params, base


def run_search(cfg: DictConfig, overrides: Sequence[str], work_dir: Path) -> Result:
    """Run (or resume, or join) the search the composed config describes."""
    params, base = prepare(cfg, overrides)
    uri = tracking.resolve_tracking_uri(cfg.tracking, cfg.paths)
    storage = study.storage_url(cfg.search.storage, uri)
    name = str(cfg.search.study or cfg.tracking.experiment)
    opened = study.open_study(storage, name, Sampler(cfg.search.sampler), None)
    artifact_root = tracking.resolve_artifact_root(cfg.tracking, cfg.paths, uri)
    facts = {naming.DATASET_TAG: str(cfg.data.name), naming.SEARCH_STORAGE_TAG: storage}
    run_id, _ = parent.open_search_run(
        uri, str(cfg.tracking.experiment), artifact_root, name, facts
    )
    parent.log_facts(uri, run_id, work_dir, list(overrides))
    with study.storage_lock(storage):
        study.reap_dead_trials(opened)  # a killed search's trial: not held, its settings queued
    log.info(
        "study %r in %s: %d trials held, %d asked",
        name,
        storage,
        study.n_counted(opened),
        int(cfg.search.n_trials),
    )
    spec = Spec(
        storage=storage,
        study=name,
        sampler=Sampler(cfg.search.sampler),
        n_trials=int(cfg.search.n_trials),
        params=tuple(params),
        base=tuple(base),
        seeds=tuple(int(s) for s in cfg.search.seeds),
        min_clean=float(cfg.search.min_clean),
        objective=None if cfg.search.objective is None else str(cfg.search.objective),
        run_root=str(_run_root(cfg, name)),
        tracking_uri=uri,
        parent_run_id=run_id,
    )
    result = Result(study=name, storage=storage, ran=0, run_id=run_id)
    previous = tracking.sigterm_raises()
    try:
        result.ran = _launch(spec, int(cfg.search.workers))
    except BaseException as error:
        if not _others_running(opened):
            status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
            why = f"the search stopped: {type(error).__name__}: {error}".rstrip(": ")
            parent.end_search_run(uri, run_id, status, {}, reason=why)
        raise
    finally:
        tracking.restore_sigterm(previous)
        parent.unnest_trials()
    if _others_running(opened):
        log.info("other workers are still running trials of %r: the last one reports", name)
        return result
    return _finish(cfg, spec, opened, result)


def _launch(spec: Spec, workers: int) -> int:
    if workers == 1:
        return work(spec)
    from joblib import Parallel, delayed

    jobs = (delayed(work)(spec, i) for i in range(workers))
    return sum(Parallel(n_jobs=workers, backend="loky")(jobs))


def _others_running(opened) -> bool:
    from optuna.trial import TrialState

    study.reap_dead_trials(opened)
    return bool(opened.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


def _run_root(cfg: DictConfig, name: str) -> Path:
    runs_dir = Path(str(cfg.paths.runs_dir))
    runs_dir = runs_dir if runs_dir.is_absolute() else PROJECT_ROOT / runs_dir
    return runs_dir / "search" / tracking.store.clean_key(name)


def _finish(cfg: DictConfig, spec: Spec, opened, result: Result) -> Result:
    """The study's report (PDF and best trial, logged to the search run) and its end."""
    from advlab.search import report
    from advlab.search.summary import summarise

    summary = summarise(opened, spec)
    if cfg.search.report:
        out_dir = Path(str(cfg.report.dir))
        out_dir = out_dir if out_dir.is_absolute() else PROJECT_ROOT / out_dir
        result.pdf = report.write(summary, out_dir)
    report.log_to_run(summary, spec, result.pdf, Path(spec.run_root))
    parent.end_search_run(spec.tracking_uri, result.run_id, "FINISHED", summary.metrics())
    result.finished = True
    log.info("%s", report.text(summary, result.pdf, spec))
    return result
