"""advlab.results reads back exactly what advlab.tracking wrote (real SQLite store)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest

from advlab import results
from advlab.errors import ConfigError
from advlab.tracking import Tracker, open_client


@pytest.fixture(scope="module")
def _migrated_db(tmp_path_factory) -> Path:
    # Creating MLflow's schema takes seconds; tests start from a copy of one migrated empty store.
    db = tmp_path_factory.mktemp("template") / "mlflow.db"
    open_client(f"sqlite:///{db}")
    return db


@dataclass
class _Evaluation:  # the contract fields of advlab.attacks.evaluate.Evaluation
    clean_acc: float
    table: pd.DataFrame
    sanity: list = field(default_factory=list)


def _table(fgsm4: float, pgd4: float) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "attack": ["fgsm", "fgsm", "pgd", "pgd"],
            "eps": [0.0, 4.0, 0.0, 4.0],
            "robust_acc": [0.9, fgsm4, 0.9, pgd4],
            "asr": [0.0, 1 - fgsm4 / 0.9, 0.0, 1 - pgd4 / 0.9],
        }
    )


@pytest.fixture
def store(make_cfg, tmp_path, _migrated_db) -> dict:
    """Two finished runs (dropout 0 and 0.5) and one failed run in experiment 'sweepy'."""
    shutil.copy(_migrated_db, tmp_path / "mlflow.db")
    ids = {}
    for dropout, pgd4 in ((0.0, 0.1), (0.5, 0.3)):
        cfg = make_cfg(f"model.dropout={dropout}", "tracking.experiment=sweepy", "device=cpu")
        with Tracker(cfg, run_dir=tmp_path / f"do{dropout}") as tracker:
            for epoch in (1, 2, 3):
                tracker.log_epoch(epoch, {"train_loss": 1 / epoch, "val_acc": 0.6 + epoch / 10})
            tracker.log_metrics({"clean_acc": 0.9, "best_epoch": 3})
            tracker.log_evaluation(_Evaluation(0.9, _table(0.4, pgd4)), [0, 4, 16])
            tracker.log_results({"clean_acc": 0.9})
        ids[dropout] = tracker.run_id
    cfg = make_cfg("tracking.experiment=sweepy", "tracking.run_name=broken", "device=cpu")
    with pytest.raises(ValueError), Tracker(cfg, run_dir=tmp_path / "bad") as tracker:
        raise ValueError("bad data file")
    ids["failed"] = tracker.run_id
    return {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "ids": ids}


def test_load_is_one_tidy_row_per_run(store):
    df = results.load("sweepy", tracking_uri=store["uri"])
    assert len(df) == 3
    assert list(df.columns[:5]) == ["run_id", "run_name", "experiment", "experiment_id", "status"]
    assert set(df["status"]) == {"FINISHED", "FAILED"}
    assert (df["experiment"] == "sweepy").all()
    ok = df[df["status"] == "FINISHED"].set_index("run_id")
    # params come back typed when the whole column parses, so sweeps can be plotted directly
    assert pd.api.types.is_float_dtype(df["params.model.dropout"])
    assert ok.loc[store["ids"][0.5], "params.model.dropout"] == 0.5
    assert ok.loc[store["ids"][0.5], "metrics.robust_acc/pgd/eps_4"] == 0.3
    assert ok.loc[store["ids"][0.0], "metrics.clean_acc"] == 0.9
    assert ok.loc[store["ids"][0.0], "tags.advlab.model"] == "course_cnn"
    failed = df[df["status"] == "FAILED"].iloc[0]
    assert failed["tags.advlab.error"] == "ValueError: bad data file"
    assert failed["run_name"] == "broken"
    assert df["start_time"].is_monotonic_decreasing  # newest first


def test_load_filters_and_run_ids(store):
    uri = store["uri"]
    df = results.load("sweepy", "params.model.dropout = '0.5'", tracking_uri=uri)
    assert list(df["run_id"]) == [store["ids"][0.5]]
    df = results.load("sweepy", "metrics.`robust_acc/pgd/eps_4` < 0.2", tracking_uri=uri)
    assert list(df["run_id"]) == [store["ids"][0.0]]
    df = results.load(run_ids=[store["ids"][0.0]], tracking_uri=uri)
    assert list(df["run_id"]) == [store["ids"][0.0]]
    assert len(results.load(tracking_uri=uri)) == 3  # every experiment
    assert len(results.load("sweepy", tracking_uri=uri, include_running=False)) == 3
    assert len(results.load("sweepy", tracking_uri=uri, max_results=2)) == 2


def test_load_errors_are_one_line(store, tmp_path):
    with pytest.raises(ConfigError, match="experiment 'nope' not found .*known: .*sweepy"):
        results.load("nope", tracking_uri=store["uri"])
    with pytest.raises(ConfigError, match="filter='params.x ==== 1'"):
        results.load("sweepy", "params.x ==== 1", tracking_uri=store["uri"])
    with pytest.raises(ConfigError, match="no MLflow store at"):
        results.load(tracking_uri=f"sqlite:///{tmp_path / 'absent.db'}")
    assert not (tmp_path / "absent.db").exists()  # reading never creates a store


def test_robustness_long_table(store):
    df = results.load("sweepy", tracking_uri=store["uri"], include_running=False)
    long = results.robustness(df[df["status"] == "FINISHED"])
    assert list(long.columns) == ["run_id", "run_name", "attack", "eps", "robust_acc", "asr"]
    assert len(long) == 2 * 2 * 2  # runs x attacks x eps
    row = long[(long.run_id == store["ids"][0.5]) & (long.attack == "pgd") & (long.eps == 4.0)]
    assert row["robust_acc"].item() == 0.3
    assert row["asr"].item() == pytest.approx(1 - 0.3 / 0.9)


def test_histories_and_artifacts(store, tmp_path):
    run_id = store["ids"][0.0]
    hist = results.metric_history(run_id, tracking_uri=store["uri"])
    assert set(hist["key"]) == {"train_loss", "val_acc"}
    assert list(hist[hist.key == "train_loss"]["step"]) == [1, 2, 3]
    epochs = results.epoch_table(run_id, tracking_uri=store["uri"])
    assert list(epochs["epoch"]) == [1, 2, 3]
    assert epochs["train_loss"].tolist() == pytest.approx([1, 0.5, 1 / 3])
    curve = results.metric_history(run_id, "robust_acc/pgd/eps_4", tracking_uri=store["uri"])
    assert curve[["step", "value"]].values.tolist() == [[1, 0.1]]

    files = results.list_artifacts(run_id, tracking_uri=store["uri"])
    assert "results/results.json" in files and "results/robustness.csv" in files
    assert results.read_json(run_id, "results/results.json", tracking_uri=store["uri"]) == {
        "clean_acc": 0.9
    }
    table = results.read_table(run_id, "results/robustness.csv", tracking_uri=store["uri"])
    assert table.equals(_table(0.4, 0.1))
    mlflow_table = results.read_table(
        run_id, "results/robustness_table.json", tracking_uri=store["uri"]
    )
    assert list(mlflow_table["robust_acc"]) == [0.9, 0.4, 0.9, 0.1]
    local = results.download_artifacts(
        run_id, "results", tmp_path / "dl", tracking_uri=store["uri"]
    )
    assert (local / "sanity.json").is_file()
