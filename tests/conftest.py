"""Shared fixtures: compose the real config, shrink it, point every output at tmp_path."""

from __future__ import annotations

from collections.abc import Callable
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


def require(path: Path) -> Path:
    """Skip (with the reason) when a ../shared/data file is absent, e.g. outside this workplace."""
    if not path.exists():
        pytest.skip(f"{path} not found (real data from ../shared/data)")
    return path
