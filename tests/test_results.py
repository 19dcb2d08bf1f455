"""advlab.results reads back exactly what the pipeline wrote (real runs in a SQLite store).

The runs come from the session fixture ``pipeline_store`` (tests/conftest.py); every expected value
is read from MLflow's own client or from the run's directory, never restated here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from advlab import naming, results
from advlab.errors import ConfigError
from tests.conftest import PipelineStore

EPS = [0.0, 8.0]  # eval.eps of the fixture's runs


def _run(store: PipelineStore, run_id: str):
    return MlflowClient(tracking_uri=store.uri).get_run(run_id)


def test_load_is_one_tidy_row_per_run(pipeline_store: PipelineStore) -> None:
    store = pipeline_store
    df = results.load("sweep", tracking_uri=store.uri)
    children = [*store.sweep, *store.extra_seeds]
    assert sorted(df["run_id"]) == sorted(children)  # the sweep parent is left out
    assert list(df.columns[:5]) == ["run_id", "run_name", "experiment", "experiment_id", "status"]
    assert (df["experiment"] == "sweep").all() and (df["status"] == "FINISHED").all()
    assert (df["sweep"] == _run(store, store.sweep_parent).data.tags["advlab.sweep"]).all()
    assert (df["parent_run_id"] == store.sweep_parent).all()
    # params come back typed when the whole column parses, so sweeps can be plotted directly
    assert pd.api.types.is_float_dtype(df["params.model.dropout"])
    by_id = df.set_index("run_id")
    for rid, (dropout, _wd) in zip(store.sweep, store.sweep_settings, strict=True):
        mlflow_run = _run(store, rid)
        assert by_id.loc[rid, "params.model.dropout"] == dropout
        for key, value in mlflow_run.data.metrics.items():
            assert by_id.loc[rid, f"metrics.{key}"] == value, key
        assert by_id.loc[rid, "tags.advlab.model"] == mlflow_run.data.tags["advlab.model"]
    with_parent = results.load("sweep", tracking_uri=store.uri, include_sweep_parents=True)
    assert store.sweep_parent in set(with_parent["run_id"])


def test_failed_runs_and_order(pipeline_store: PipelineStore) -> None:
    store = pipeline_store
    df = results.load("demo", tracking_uri=store.uri)
    assert list(df["run_id"]) == [store.failed, store.good]  # newest first
    assert df["start_time"].is_monotonic_decreasing
    failed = df.iloc[0]
    assert failed["status"] == "FAILED"
    assert failed["tags.advlab.error"] == _run(store, store.failed).data.tags["advlab.error"]


def test_load_filters_and_run_ids(pipeline_store: PipelineStore) -> None:
    store = pipeline_store
    uri = store.uri
    dropout_half = store.sweep[[d for d, _ in store.sweep_settings].index(0.5)]
    df = results.load("sweep", "params.model.dropout = '0.5'", tracking_uri=uri)
    assert sorted(df["run_id"]) == sorted([dropout_half, *store.extra_seeds])
    df = results.load(
        "sweep", "params.model.dropout = '0.5' and params.seed = '0'", tracking_uri=uri
    )
    assert list(df["run_id"]) == [dropout_half]
    clean = _run(store, store.good).data.metrics[naming.CLEAN_ACC]
    df = results.load("demo", f"metrics.clean_acc >= {clean}", tracking_uri=uri)
    assert list(df["run_id"]) == [store.good]
    df = results.load(run_ids=[store.good], tracking_uri=uri)
    assert list(df["run_id"]) == [store.good]
    every = 2 + len(store.sweep) + len(store.extra_seeds)
    assert len(results.load(tracking_uri=uri)) == every  # every experiment
    assert len(results.load("demo", tracking_uri=uri, include_running=False)) == 2
    assert len(results.load("demo", tracking_uri=uri, max_results=1)) == 1


def test_load_errors_are_one_line(pipeline_store: PipelineStore, tmp_path: Path) -> None:
    uri = pipeline_store.uri
    with pytest.raises(ConfigError, match="experiment 'nope' not found .*known: .*sweep"):
        results.load("nope", tracking_uri=uri)
    with pytest.raises(ConfigError, match="filter='params.x ==== 1'"):
        results.load("sweep", "params.x ==== 1", tracking_uri=uri)
    with pytest.raises(ConfigError, match="no MLflow store at"):
        results.load(tracking_uri=f"sqlite:///{tmp_path / 'absent.db'}")
    assert not (tmp_path / "absent.db").exists()  # reading never creates a store


def test_robustness_long_table(pipeline_store: PipelineStore) -> None:
    store = pipeline_store
    df = results.load("sweep", tracking_uri=store.uri)
    long = results.robustness(df)
    assert list(long.columns) == ["run_id", "run_name", "attack", "eps", "robust_acc", "asr"]
    children = [*store.sweep, *store.extra_seeds]
    # Every attack row the runs logged (fgsm, pgd, worst case and any the evaluation adds).
    logged = _run(store, children[0]).data.metrics
    attacks = sorted({parsed[1] for k in logged if (parsed := naming.parse_eps_metric(k))})
    assert {"fgsm", "pgd", naming.WORST_CASE} <= set(attacks)
    assert len(long) == len(children) * len(attacks) * len(EPS)
    for rid in children:
        metrics = _run(store, rid).data.metrics
        for attack in attacks:
            for eps in EPS:
                row = long[(long.run_id == rid) & (long.attack == attack) & (long.eps == eps)]
                assert row["robust_acc"].item() == metrics[naming.robust_acc_key(attack, eps)]
                assert row["asr"].item() == metrics[naming.asr_key(attack, eps)]


def test_histories(pipeline_store: PipelineStore) -> None:
    store = pipeline_store
    run_id = store.good
    metrics = _run(store, run_id).data.metrics
    epochs = list(range(1, int(metrics[naming.STOPPED_EPOCH]) + 1))
    hist = results.metric_history(run_id, tracking_uri=store.uri)
    assert {"train_loss", "val_acc", "gen_gap"} <= set(hist["key"])
    assert list(hist[hist.key == "train_loss"]["step"]) == epochs
    table = results.epoch_table(run_id, tracking_uri=store.uri)
    assert list(table["epoch"]) == epochs
    assert table["val_acc"].iloc[-1] == metrics["val_acc"]
    key = naming.robust_acc_key("pgd", 8)
    curve = results.metric_history(run_id, key, tracking_uri=store.uri)
    assert curve[["step", "value"]].values.tolist() == [[EPS.index(8.0), metrics[key]]]


def test_artifacts_are_the_run_directory_files(
    pipeline_store: PipelineStore, tmp_path: Path
) -> None:
    store = pipeline_store
    run_id, uri = store.good, store.uri
    run_dir = Path(_run(store, run_id).data.tags["advlab.run_dir"])
    files = results.list_artifacts(run_id, tracking_uri=uri)
    assert {"results/results.json", "results/robustness.csv", "config/config.json"} <= set(files)
    written = json.loads((run_dir / "results" / "results.json").read_text())
    assert results.read_json(run_id, "results/results.json", tracking_uri=uri) == written
    table = results.read_table(run_id, "results/robustness.csv", tracking_uri=uri)
    assert table.equals(pd.read_csv(run_dir / "results" / "robustness.csv"))
    mlflow_table = results.read_table(run_id, "results/robustness_table.json", tracking_uri=uri)
    assert list(mlflow_table["robust_acc"]) == pytest.approx(list(table["robust_acc"]))
    local = results.download_artifacts(run_id, "results", tmp_path / "dl", tracking_uri=uri)
    assert (local / "checks.json").read_bytes() == (run_dir / naming.CHECKS_JSON).read_bytes()
