"""Seed groups: runs that differ only in their seed are pooled, anything else keeps them apart.

The grouping tests compare typed configs exactly as runs log them (``config/config.json``, made
by ``typed_config_json`` from the composed config). The statistics, the table script and the PDF
are checked on the session fixture ``pipeline_store``: in experiment "sweep" one setting ran with
seeds 0, 1, 2 and another with seed 0 only. Expected numbers are computed here from what MLflow's
own client returns.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import statistics
from pathlib import Path

import pytest
from matplotlib.collections import PolyCollection
from matplotlib.container import ErrorbarContainer
from mlflow.tracking import MlflowClient
from pypdf import PdfReader

from advlab import naming, results, seed_groups
from advlab.config import PROJECT_ROOT
from advlab.report import build_report, figures, seeds
from advlab.report.data import ReportError, focus
from advlab.report.gather import gather
from advlab.report.summary import fmt_pct, fmt_spread
from advlab.tracking.metadata import typed_config_json
from tests.conftest import EXTRA_SEEDS, PIPELINE_OVERRIDES, PipelineStore, compose_config

PGD8 = naming.robust_acc_key("pgd", 8)


@functools.cache
def _config_json(overrides: tuple[str, ...]) -> str:
    return typed_config_json(compose_config(list(overrides)))


def _config(*overrides: str) -> dict:
    """The typed config a run with these overrides logs (a fresh dict on every call)."""
    return json.loads(_config_json(overrides))


def _groups(*configs: dict, experiment: str = "e", status: str = "FINISHED") -> list[int]:
    return seed_groups.assign_seed_groups((experiment, status, c) for c in configs)


# ------------------------------------------------------------------------------------ grouping
def test_same_seed_different_dropout_is_two_groups() -> None:
    assert _groups(_config("model.dropout=0"), _config("model.dropout=0.5")) == [0, 1]


def test_two_seeds_same_dropout_is_one_group_of_two() -> None:
    assert _groups(_config("seed=0"), _config("seed=1")) == [0, 0]


def test_seeds_of_two_settings_pool_per_setting() -> None:
    configs = [
        _config(f"seed={seed}", f"model.dropout={dropout}")
        for seed in (0, 1)
        for dropout in (0, 0.5)
    ]
    assert _groups(*configs) == [0, 1, 0, 1]


def test_bookkeeping_does_not_split_a_group() -> None:
    base = _config("seed=0")
    moved = _config(
        "seed=1",
        "paths.runs_dir=/elsewhere/runs",
        "tracking.run_name=mine",
        "tracking.uri=sqlite:////elsewhere/mlflow.db",
        "tracking.log_model=false",
        "report.dir=/elsewhere/reports",
        "report.enabled=false",
        "train.progress=false",
        "train.checkpoint=false",
    )
    assert _groups(base, moved) == [0, 0]
    assert "seed" in base and base["paths"]  # the key is computed on a copy


@pytest.mark.parametrize(
    "override",
    [
        "optimizer.weight_decay=0.01",
        "train.epochs=3",
        "eval.eps=[0,4]",
        "eval.batch_size=128",
        "attacks.pgd.steps=20",
        "data.limit_train=100",
        "device=cpu",
        "threads=1",
    ],
)
def test_anything_else_differing_is_never_pooled(override: str) -> None:
    assert _groups(_config("seed=0"), _config("seed=1", override)) == [0, 1]


def test_other_experiments_unfinished_runs_and_missing_configs_stay_alone() -> None:
    a, b = _config("seed=0"), _config("seed=1")
    runs = [("e", "FINISHED", a), ("other", "FINISHED", b), ("e", "FAILED", b)]
    assert seed_groups.assign_seed_groups([*runs, ("e", "FINISHED", {})]) == [0, 1, 2, 3]
    assert seed_groups.seed_group_key({}) is None


def test_spread_is_mean_sample_std_min_max_and_count() -> None:
    values = [0.2, 0.4, 0.9]
    assert seed_groups.spread([*values, None, float("nan")]) == {
        "mean": pytest.approx(statistics.mean(values)),
        "std": pytest.approx(statistics.stdev(values)),
        "min": 0.2,
        "max": 0.9,
        "n_seeds": 3.0,
    }
    one = seed_groups.spread([0.5])
    assert one["mean"] == 0.5 and one["std"] != one["std"] and one["n_seeds"] == 1.0


# ------------------------------------------------------------------------- on real pipeline runs
def _metric(store: PipelineStore, run_id: str, key: str) -> float:
    return MlflowClient(tracking_uri=store.uri).get_run(run_id).data.metrics[key]


def _seeded(store: PipelineStore) -> list[str]:
    """The run ids of the setting that ran with 3 seeds (seed 0 first)."""
    return [store.sweep[-1], *store.extra_seeds]


def test_results_seed_groups_one_row_per_setting(pipeline_store: PipelineStore) -> None:
    store = pipeline_store
    frame = results.load("sweep", tracking_uri=store.uri)
    groups = seed_groups.seed_groups(frame, tracking_uri=store.uri)
    assert len(groups) == 2
    by_size = {int(row["n_seeds"]): row for _, row in groups.iterrows()}
    three, one = by_size[3], by_size[1]
    assert sorted(three["run_ids"]) == sorted(_seeded(store))
    assert sorted(three["seeds"]) == [0, *EXTRA_SEEDS]
    assert one["run_ids"] == [store.sweep[0]] and "params.seed" in groups
    assert three["params.model.dropout"] == store.sweep_settings[-1][0]
    assert three["params.seed"] != three["params.seed"]  # differs within the group: not shared
    for key in (naming.CLEAN_ACC, PGD8, naming.asr_key("fgsm", 8), naming.BEST_EPOCH):
        values = [_metric(store, rid, key) for rid in _seeded(store)]
        assert three[f"metrics.{key}.mean"] == pytest.approx(statistics.mean(values))
        assert three[f"metrics.{key}.std"] == pytest.approx(statistics.stdev(values))
        assert three[f"metrics.{key}.min"] == min(values)
        assert three[f"metrics.{key}.max"] == max(values)
        assert three[f"metrics.{key}.n_seeds"] == 3
        assert one[f"metrics.{key}.mean"] == _metric(store, store.sweep[0], key)
        assert one[f"metrics.{key}.n_seeds"] == 1


def test_results_table_prints_mean_and_std_with_the_seed_count(
    pipeline_store: PipelineStore, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    store = pipeline_store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
    spec = importlib.util.spec_from_file_location(
        "results_table", PROJECT_ROOT / "scripts" / "results_table.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["sweep"])
    header, _rule, *rows = capsys.readouterr().out.strip().splitlines()
    assert "| n seeds |" in header and len(rows) == 2
    # the robust accuracies' n is the evaluated points, shown beside the split sizes
    evaluated = header.split(" | ").index("evaluated")
    shown = [int(r.split(" | ")[evaluated]) for r in rows]
    asked = dict(o.split("=", 1) for o in PIPELINE_OVERRIDES)
    assert shown == [min(int(asked["eval.n_examples"]), int(asked["data.limit_test"]))] * 2
    pgd = [_metric(store, rid, PGD8) for rid in _seeded(store)]
    mean, std = statistics.mean(pgd), statistics.stdev(pgd)
    (seeded,) = [r for r in rows if "| 3 |" in r]
    assert f"| {mean:.1%} ± {std:.1%} |" in seeded
    (single,) = [r for r in rows if "| 1 |" in r]
    assert f"| {_metric(store, store.sweep[0], PGD8):.1%} |" in single and "±" not in single


def test_seed_bands_and_wilson_intervals_are_both_drawn(pipeline_store: PipelineStore) -> None:
    store = pipeline_store
    report = gather(tracking_uri=store.uri, experiment=None, runs=_seeded(store))
    (group,) = seeds.group_runs(report.runs, focus(report.runs, None))
    assert group.n_seeds == 3
    row = group.robust("pgd", 8.0)
    pgd = [_metric(store, rid, PGD8) for rid in _seeded(store)]
    assert row["robust_acc"] == pytest.approx(statistics.mean(pgd))
    assert row["robust_std"] == pytest.approx(statistics.stdev(pgd))
    fig = figures.robustness_curves([group], bands=True)
    ax = fig.axes[0]
    assert any(isinstance(c, PolyCollection) for c in ax.collections)  # seed spread band
    assert any(isinstance(c, ErrorbarContainer) for c in ax.containers)  # Wilson interval
    curves = figures.learning_curves_grid([group])
    assert any(isinstance(c, PolyCollection) for a in curves.axes for c in a.collections)


def _flat(pdf: Path) -> str:
    return " ".join(" ".join(p.extract_text() or "" for p in PdfReader(str(pdf)).pages).split())


def test_three_seed_report_shows_mean_std_over_3_seeds(
    pipeline_store: PipelineStore, tmp_path: Path
) -> None:
    store = pipeline_store
    pdf = build_report(
        tracking_uri=store.uri,
        experiment=None,
        runs=_seeded(store),
        out_dir=tmp_path,
        per_run="none",
    )
    flat = _flat(pdf)
    assert "over 3 seeds" in flat and "±" in flat
    pgd = [_metric(store, rid, PGD8) for rid in _seeded(store)]
    assert fmt_spread(statistics.mean(pgd), statistics.stdev(pgd)) in flat
    assert "Wilson interval" in flat and "training-seed spread" in flat
    assert "No per-run pages (report.per_run=none)" in flat
    assert "Adversarial examples" not in flat


@pytest.mark.slow
def test_sweep_report_pools_seeds_and_details_best_and_worst_only(
    pipeline_store: PipelineStore, tmp_path: Path
) -> None:
    store = pipeline_store
    pdf = build_report(tracking_uri=store.uri, experiment="sweep", runs=None, out_dir=tmp_path)
    flat = _flat(pdf)
    assert "over 1–3 seeds" in flat  # one setting ran with 3 seeds, the other with 1
    d1, wd1 = store.sweep_settings[-1]
    cells = []
    for key in (naming.CLEAN_ACC, PGD8):
        values = [_metric(store, rid, key) for rid in _seeded(store)]
        cells.append(fmt_spread(statistics.mean(values), statistics.stdev(values)))
    # The sweep table: one row per setting, named by its swept values, mean ± std over its seeds.
    assert f"dropout={d1:g}, weight_decay={wd1:g} 3 {' '.join(cells)}" in flat
    d0, wd0 = store.sweep_settings[0]
    single = [fmt_pct(_metric(store, store.sweep[0], k)) for k in (naming.CLEAN_ACC, PGD8)]
    assert f"dropout={d0:g}, weight_decay={wd0:g} 1 {' '.join(single)}" in flat
    assert "Shown for 2 of 4 runs: the best and the worst setting" in flat
    assert flat.count("Adversarial examples") == 2
    every = _flat(
        build_report(
            tracking_uri=store.uri, experiment="sweep", runs=None, out_dir=tmp_path, per_run="all"
        )
    )
    assert every.count("Adversarial examples") == 4 and "Shown for" not in every


def test_per_run_takes_only_its_options(tmp_path: Path) -> None:
    from hydra.errors import ConfigCompositionException

    assert compose_config(["report.per_run=all"]).report.per_run == "all"
    with pytest.raises(ConfigCompositionException, match="per_run"):
        compose_config(["report.per_run=some"])
    message = "report.per_run='some': not one of best_worst, all, none"
    with pytest.raises(ReportError, match=message):
        build_report(
            tracking_uri="unused", experiment="x", runs=None, out_dir=tmp_path, per_run="some"
        )


def test_seed_bands_draw_where_every_seed_is_at_zero() -> None:
    # Averaged Wilson bounds equal the mean at 0% only up to rounding; the error bar must not
    # come out negative (matplotlib refuses it, and the sweep PDF with it).
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from advlab.report.figures import _uncertainty

    part = pd.DataFrame(
        {
            "eps": [0.0, 8.0, 16.0],
            "robust_acc": [0.46, 0.21, 0.0],
            "robust_std": [0.04, 0.02, 0.0],
            "ci_low": [0.42, 0.18, 1e-17],
            "ci_high": [0.50, 0.25, 0.0076],
        }
    )
    fig, ax = plt.subplots()
    _uncertainty(ax, part, "C0", seeded=True)
    assert any(isinstance(c, PolyCollection) for c in ax.collections)  # the ± std band
    assert any(isinstance(c, ErrorbarContainer) for c in ax.containers)  # the Wilson bars
    plt.close(fig)
