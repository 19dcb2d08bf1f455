"""Shared fixtures: compose the real config, shrink it, point every output at tmp_path."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from advlab.config import CONF_DIR, PROJECT_ROOT

SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
GENDER_DIR = SHARED_DATA / "gender"
CIFAR10_ARCHIVE = SHARED_DATA / "cifar10" / "cifar-10-python.tar.gz"
CIFAR10_SHARED_MD5 = "00642bf920abbcac83eeb31b7ac31122"  # a reconstruction: see its README

# Overrides that shrink the quickstart to seconds and keep every output inside tmp_path.
TINY_OVERRIDES = [
    "train.epochs=2",
    "train.batch_size=64",
    "data.limit_train=600",
    "data.limit_test=200",
    "eval.n_examples=64",
    "eval.eps=[0,4,16]",
    "eval.sanity.convergence_n=32",
    "attacks.pgd.steps=3",
    "eval.grid_n=4",
]


def compose_config(overrides: list[str] | None = None) -> DictConfig:
    """Compose conf/config.yaml exactly as `python -m advlab` would (without Hydra's run dir)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides or []))


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """Build a shrunk config whose MLflow store, runs and reports live under tmp_path."""

    def _make(*overrides: str, tiny: bool = True) -> DictConfig:
        base = [
            f"paths.runs_dir={tmp_path / 'runs'}",
            f"paths.cache_dir={tmp_path / 'cache'}",
            f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
            f"tracking.artifact_root={tmp_path / 'mlartifacts'}",
            f"report.dir={tmp_path / 'reports'}",
        ]
        return compose_config(base + (TINY_OVERRIDES if tiny else []) + list(overrides))

    return _make


@pytest.fixture(autouse=True)
def _few_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests use tiny models: more threads only add contention on a 2-core machine.
    import torch

    torch.set_num_threads(1)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def only_run(cfg: DictConfig):
    """The one MLflow run (``mlflow.entities.Run``) of ``cfg``'s experiment in its store."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    experiment = client.get_experiment_by_name(cfg.tracking.experiment)
    (mlflow_run,) = client.search_runs([experiment.experiment_id])
    return mlflow_run


def require(path: Path) -> Path:
    """Skip (with the reason) when a ../shared/data file is absent, e.g. outside this workplace."""
    if not path.exists():
        pytest.skip(f"{path} not found (real data from ../shared/data)")
    return path


# ---------------------------------------------------------------- a store made by the real pipeline
@dataclass
class PipelineStore:
    """MLflow runs written by ``advlab.pipeline.run`` (tiny quickstart configs) in one SQLite store.

    Experiment ``demo``: ``good`` (a finished run with FGSM and PGD at eps 0 and 8) and ``failed``
    (data root missing: the run fails after it started). Experiment ``sweep``: ``sweep`` (two
    finished jobs that differ in model.dropout and optimizer.weight_decay, seed 0) under
    ``sweep_parent``, made by the sweep callback as a multirun makes it, and in the same sweep
    ``extra_seeds``: seeds 1 and 2 of the second setting, so that setting ran with 3 seeds.
    """

    uri: str
    root: Path
    good: str
    failed: str
    sweep_parent: str
    sweep: list[str]
    sweep_settings: list[tuple[float, float]]  # (dropout, weight decay) of each sweep job
    extra_seeds: list[str]  # seeds EXTRA_SEEDS of sweep_settings[-1], same sweep and experiment


# The report and results tests read these runs: small enough for ~30 s on two cores, big enough
# for every artifact the pipeline writes (histories, grids, per-class, confusion, sanity) and for
# distinct numbers (about 45% clean, 40% at eps 8).
PIPELINE_OVERRIDES = [
    "train.epochs=2",
    "train.batch_size=16",
    "data.limit_train=600",  # every seed of the sweep learns above chance (clean_above_chance)
    "data.limit_test=200",
    "eval.n_examples=200",
    "eval.eps=[0,8]",
    "eval.sanity.convergence_n=32",
    "attacks.pgd.steps=3",
    "eval.grid_n=2",
    "report.enabled=false",
    "tracking.log_model=false",
]
SWEEP_SETTINGS = [(0.0, 0.0), (0.5, 0.0001)]
EXTRA_SEEDS = [1, 2]  # the seed groups' tests: one setting over 3 seeds, one over 1


@pytest.fixture(scope="session")
def pipeline_store(tmp_path_factory: pytest.TempPathFactory) -> PipelineStore:
    """Runs of the real pipeline (see :class:`PipelineStore`), shared by the whole session."""
    from advlab.errors import AdvlabError
    from advlab.pipeline import run
    from advlab.sweep_callback import MlflowSweepCallback
    from advlab.tracking import open_client

    root = tmp_path_factory.mktemp("pipeline-store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    base = [
        f"paths.runs_dir={root / 'runs'}",
        f"paths.cache_dir={root / 'cache'}",
        f"tracking.uri={uri}",
        f"tracking.artifact_root={root / 'mlartifacts'}",
        f"report.dir={root / 'reports'}",
        *PIPELINE_OVERRIDES,
    ]

    def latest(experiment: str) -> str:
        client = open_client(uri)
        exp = client.get_experiment_by_name(experiment)
        (newest,) = client.search_runs(
            [exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=1
        )
        return newest.info.run_id

    run(compose_config([*base, "tracking.experiment=demo"]))
    good = latest("demo")

    # A run that fails after it opened (bad input is refused before any run exists, so the
    # failure is injected into training): the real Tracker must end it FAILED with the error.
    def broken_fit(*args, **kwargs):
        raise AdvlabError("training broke on purpose")

    with pytest.MonkeyPatch.context() as patch, pytest.raises(AdvlabError):
        patch.setattr(importlib.import_module("advlab.training.fit"), "fit", broken_fit)
        # seed 1: a name of its own, so the report can be seen to leave this run out
        run(compose_config([*base, "tracking.experiment=demo", "seed=1"]))
    failed = latest("demo")

    sweep_overrides = [*base, "tracking.experiment=sweep"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        # The sweep callback reads the hydra node (sweep dir, overrides) as in a multirun.
        hydra_cfg = compose("config", overrides=sweep_overrides, return_hydra_config=True)
    callback = MlflowSweepCallback()
    callback.on_multirun_start(hydra_cfg)
    parent = callback.parent_run_id
    children = []
    try:
        for dropout, wd in SWEEP_SETTINGS:
            run(
                compose_config(
                    [*sweep_overrides, f"model.dropout={dropout}", f"optimizer.weight_decay={wd}"]
                )
            )
            children.append(latest("sweep"))
        dropout, wd = SWEEP_SETTINGS[-1]
        extra = []
        for seed in EXTRA_SEEDS:
            run(
                compose_config(
                    [
                        *sweep_overrides,
                        f"model.dropout={dropout}",
                        f"optimizer.weight_decay={wd}",
                        f"seed={seed}",
                    ]
                )
            )
            extra.append(latest("sweep"))
    finally:
        callback.on_multirun_end(hydra_cfg)
    assert parent is not None
    return PipelineStore(uri, root, good, failed, parent, children, list(SWEEP_SETTINGS), extra)


@pytest.fixture(scope="session")
def migrated_store_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite store with its schema created (creating it takes seconds)."""
    from advlab.tracking import open_client

    db = tmp_path_factory.mktemp("template") / "mlflow.db"
    open_client(f"sqlite:///{db}")
    return db


@pytest.fixture
def fresh_store(migrated_store_template: Path, tmp_path: Path) -> Path:
    """A copy of that empty store at tmp_path/mlflow.db, the store make_cfg points at."""
    import shutil

    store = tmp_path / "mlflow.db"
    shutil.copy(migrated_store_template, store)
    return store
