"""The run verdict (tags advlab.verdict / advlab.verdict_reason, results/verdict.json) in reports.

Runs are written straight into a temporary MLflow store (a copy of the migrated empty store of
tests/conftest.py) with the params, metrics, tags and artifacts a pipeline run leaves: no training,
so each test takes seconds. Tests read the PDF's text with pypdf, as tests/test_report.py does.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import statistics
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from pypdf import PdfReader

from advlab import naming
from advlab.config import PROJECT_ROOT, PerRun
from advlab.report import build_report, data, figures, seeds, sweep_figures
from advlab.report.data import focus
from advlab.report.facts import NO_VERDICT, PLAIN_VERDICT, PLAIN_WARNING
from advlab.report.format import fmt_pct, fmt_spread
from advlab.report.gather import gather, latest_experiment
from advlab.training.diagnostics import catastrophic_epochs
from advlab.verdict import FAIL, PASS

PGD8 = naming.robust_acc_key("pgd", 8)
FAIL_REASON = "catastrophic_overfitting: PGD validation accuracy collapsed in epoch 3"
CONSTANT_REASON = (
    "constant_baseline: at eps 8/255 (trained for 4) the worst case 49.9% is not above 54.7%"
)
WARN_REASON = "clean_above_chance: clean accuracy 55.0% is barely above chance"
# A collapse in epoch 3: PGD validation accuracy 35% -> 2% while FGSM's rises 45% -> 80%.
COLLAPSING = {
    naming.VAL_ACC: [0.50, 0.60, 0.70, 0.72],
    naming.VAL_FGSM_ACC: [0.40, 0.45, 0.80, 0.90],
    naming.VAL_PGD_ACC: [0.30, 0.35, 0.02, 0.01],
}


def _flat(pdf: Path) -> str:
    return " ".join(" ".join(p.extract_text() or "" for p in PdfReader(str(pdf)).pages).split())


def _first_page(pdf: Path) -> str:
    return " ".join((PdfReader(str(pdf)).pages[0].extract_text() or "").split())


def _new_store(template: Path, folder: Path) -> tuple[str, MlflowClient]:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(template, folder / "mlflow.db")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    return uri, MlflowClient(tracking_uri=uri)


def _log_run(
    client: MlflowClient,
    experiment_id: str,
    name: str,
    *,
    seed: int = 0,
    dropout: float = 0.0,
    weight_decay: float = 0.0,
    clean: float = 0.8,
    pgd8: float = 0.4,
    verdict: str | None = None,
    reason: str | None = None,
    history: dict[str, list[float]] | None = None,
    method: str | None = None,
    train_seconds: float | None = None,
) -> str:
    """A FINISHED run as the pipeline leaves it; ``verdict`` None: a run made before verdicts."""
    tags = {naming.VERDICT_TAG: verdict} if verdict else {}
    if verdict and reason:
        tags[naming.VERDICT_REASON_TAG] = reason
    run_id = client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
    params = {"seed": seed, "model.dropout": dropout, "optimizer.weight_decay": weight_decay}
    values = {
        naming.CLEAN_ACC: clean,
        naming.robust_acc_key("pgd", 0): clean,
        PGD8: pgd8,
        naming.asr_key("pgd", 0): 0.0,
        naming.asr_key("pgd", 8): 1 - pgd8 / clean,
    }
    if train_seconds is not None:
        values[naming.TRAIN_SECONDS] = train_seconds
    if method is not None:
        params["train.adversarial.method"] = method
    metrics = [Metric(k, v, 0, 0) for k, v in values.items()]
    for key, series in (history or {}).items():
        metrics += [Metric(key, v, 0, epoch) for epoch, v in enumerate(series, 1)]
    client.log_batch(run_id, metrics=metrics, params=[Param(k, str(v)) for k, v in params.items()])
    config = {
        "seed": seed,
        "model": {"dropout": dropout},
        "optimizer": {"weight_decay": weight_decay},
    }
    if method is not None:
        config["train"] = {"adversarial": {"method": method}}
    client.log_text(run_id, json.dumps(config), naming.CONFIG_ARTIFACT)
    sanity = [{"name": "pgd_le_fgsm", "status": "pass", "evidence": "PGD <= FGSM at every eps"}]
    client.log_text(run_id, json.dumps(sanity), naming.CHECKS_JSON)
    if verdict:
        training = [
            {"name": "training_stable", "status": "pass", "evidence": "loss fell"},
            {"name": "catastrophic_overfitting", "status": verdict, "evidence": reason or "-"},
        ]
        above = {"name": "clean_above_chance", "status": "pass", "evidence": "80% vs 50%"}
        body = {"verdict": verdict, "reason": reason, "checks": [*training, *sanity, above]}
        client.log_text(run_id, json.dumps(body), naming.VERDICT_JSON)
    client.set_terminated(run_id, "FINISHED")
    return run_id


# ----------------------------------------------------------------------------------- one run
@pytest.mark.parametrize(
    ("verdict", "reason", "banner"),
    [
        ("fail", FAIL_REASON, PLAIN_VERDICT[FAIL]),
        ("pass", None, PLAIN_VERDICT[PASS]),
        (None, None, NO_VERDICT),
        ("warn", CONSTANT_REASON, PLAIN_WARNING["constant_baseline"]),
    ],
)
def test_single_run_cover_banner_and_checks(
    migrated_store_template: Path, tmp_path: Path, verdict, reason, banner: str
) -> None:
    uri, client = _new_store(migrated_store_template, tmp_path)
    exp = client.create_experiment("one", artifact_location=str(tmp_path / "artifacts"))
    _log_run(client, exp, "r", verdict=verdict, reason=reason)
    pdf = build_report(tracking_uri=uri, experiment="one", runs=None, out_dir=tmp_path)
    first = _first_page(pdf)
    assert banner in first
    if reason:
        assert reason in first  # the technical reason beneath the plain words
    flat = _flat(pdf)
    assert f"r FINISHED {verdict or 'not recorded'}" in flat  # the runs table's verdict column
    if verdict:  # the checks of results/verdict.json, training checks first
        assert "training_stable pass" in flat and "clean_above_chance pass" in flat
        assert f"catastrophic_overfitting {verdict}" in flat
        assert flat.index("training_stable pass") < flat.index("pgd_le_fgsm pass")
    else:  # an old run: results/sanity.json as before
        assert "pgd_le_fgsm pass" in flat and "training_stable" not in flat


def test_banner_colour_follows_the_verdict(migrated_store_template: Path, tmp_path: Path) -> None:
    from reportlab.lib.rl_accel import fp_str

    from advlab.report.blocks import VERDICT_COLOURS

    uri, client = _new_store(migrated_store_template, tmp_path)
    exp = client.create_experiment("one", artifact_location=str(tmp_path / "artifacts"))
    ids = {v: _log_run(client, exp, v, verdict=v, reason="why") for v in ("fail", "warn", "pass")}

    def fill(verdict: str) -> str:  # the fill-colour operator reportlab writes for the banner
        return f"{fp_str(*VERDICT_COLOURS[verdict][0].rgb())} rg"

    for verdict, run_id in ids.items():
        pdf = build_report(tracking_uri=uri, experiment=None, runs=[run_id], out_dir=tmp_path)
        page = PdfReader(str(pdf)).pages[0].get_contents().get_data().decode("latin-1")
        assert fill(verdict) in page, verdict
        assert all(fill(other) not in page for other in ids if other != verdict), verdict


# ---------------------------------------------------------------------------------- learning curves
def test_learning_curves_draw_fgsm_and_pgd_and_mark_the_collapse(
    migrated_store_template: Path, tmp_path: Path
) -> None:
    uri, client = _new_store(migrated_store_template, tmp_path)
    exp = client.create_experiment("one", artifact_location=str(tmp_path / "artifacts"))
    run_id = _log_run(client, exp, "r", verdict="warn", reason=FAIL_REASON, history=COLLAPSING)
    (run,) = gather(tracking_uri=uri, experiment=None, runs=[run_id]).runs
    epochs = [dict(zip(COLLAPSING, v, strict=True)) for v in zip(*COLLAPSING.values(), strict=True)]
    expected = catastrophic_epochs(epochs)
    assert expected == [3]  # the history above does collapse, in epoch 3
    assert data.catastrophic_epochs(run) == expected
    fig = figures.learning_curves(run)
    acc = fig.axes[1]
    labels = [line.get_label() for line in acc.get_lines()]
    for label in ("validation (clean)", "validation (FGSM)", "validation (PGD)"):
        assert label in labels
    notes = [t for t in acc.texts if t.get_text() == "catastrophic overfitting"]
    assert [t.xy for t in notes] == [(3, COLLAPSING[naming.VAL_PGD_ACC][2])]
    (marks,) = [c for c in acc.collections if c.get_label() == "catastrophic overfitting"]
    assert marks.get_offsets().tolist() == [[3, COLLAPSING[naming.VAL_PGD_ACC][2]]]
    flat = _flat(build_report(tracking_uri=uri, experiment=None, runs=[run_id], out_dir=tmp_path))
    assert "clean, FGSM and PGD validation accuracy" in flat and "1 such epoch(s) marked" in flat


# ----------------------------------------------------------------------------------- many runs
@dataclass
class SweepStore:
    uri: str
    seeded: list[str]  # the setting (dropout 0, wd 0) run with seeds 0 and 1, verdicts pass
    failed: str  # seed 2 of that setting: verdict fail, the highest PGD accuracy of all
    others: dict[str, str]  # name -> run id of the other settings (warn, pass, no verdict)


SEEDED_PGD = [0.40, 0.50]


@pytest.fixture(scope="module")
def sweep_store(migrated_store_template: Path, tmp_path_factory) -> SweepStore:
    """Four settings over dropout x weight decay; one ran with three seeds, one of them fail."""
    folder = tmp_path_factory.mktemp("verdict-sweep")
    uri, client = _new_store(migrated_store_template, folder)
    exp = client.create_experiment("sweep", artifact_location=str(folder / "artifacts"))
    seeded = [
        _log_run(client, exp, f"s{seed}", seed=seed, pgd8=pgd, verdict="pass")
        for seed, pgd in enumerate(SEEDED_PGD)
    ]
    failed = _log_run(client, exp, "s2", seed=2, pgd8=0.95, verdict="fail", reason=FAIL_REASON)
    others = {
        "b": _log_run(client, exp, "b", dropout=0.5, pgd8=0.30, verdict="pass"),
        "c": _log_run(
            client, exp, "c", weight_decay=1e-4, pgd8=0.35, verdict="warn", reason=WARN_REASON
        ),
        "old": _log_run(client, exp, "old", dropout=0.5, weight_decay=1e-4, pgd8=0.20),
    }
    return SweepStore(uri, seeded, failed, others)


def test_fail_run_is_left_out_of_seed_means_best_and_heatmaps(
    sweep_store: SweepStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = sweep_store
    drawn: list = []
    real = sweep_figures.sweep_heatmaps

    def spy(table, **kwargs):  # the real heatmaps, with the table they were drawn from kept
        drawn.append(table)
        return real(table, **kwargs)

    monkeypatch.setattr(sweep_figures, "sweep_heatmaps", spy)
    pdf = build_report(
        tracking_uri=store.uri, experiment="sweep", runs=None, out_dir=tmp_path, per_run="none"
    )
    (heatmap_table,) = drawn
    assert store.failed not in set(heatmap_table["run_id"]) and len(heatmap_table) == 4
    seeded_row = heatmap_table[heatmap_table["run_id"] == store.seeded[0]].iloc[0]
    assert seeded_row["robust"] == pytest.approx(statistics.mean(SEEDED_PGD))
    assert seeded_row["n_seeds"] == 2
    flat = _flat(pdf)
    mean = fmt_spread(statistics.mean(SEEDED_PGD), statistics.stdev(SEEDED_PGD))
    assert f"Highest PGD robust accuracy at 8/255: dropout=0, weight_decay=0 with {mean}" in flat
    left_out = (
        "1 of 6 runs are left out of the comparisons (heatmaps, best settings, seed-group means) "
        f"because their verdict is fail: s2 ({FAIL_REASON})."
    )
    assert flat.count(left_out) == 3  # on the first page, in the summary and the sweep section
    # Still listed: the sweep table's row of its own, marked, and its number as logged.
    assert f"dropout=0, weight_decay=0 (verdict fail) 1 {fmt_pct(0.8)} {fmt_pct(0.95)}" in flat
    first = _first_page(pdf)
    for line in ("FAIL: 1 of 6 runs", "WARN: 1 of 6 runs", "PASS: 3 of 6 runs"):
        assert line in first
    assert "Verdict not recorded: 1 of 6 runs" in first
    assert f"s2: fail: {FAIL_REASON}" in first and f"c: warn: {WARN_REASON}" in first
    assert "s2 FINISHED fail" in flat and "old FINISHED not recorded" in flat  # the runs table


def test_best_and_worst_pages_never_pick_a_fail_run(sweep_store: SweepStore) -> None:
    runs = gather(tracking_uri=sweep_store.uri, experiment="sweep", runs=None).runs
    where = focus(runs, None)
    groups = seeds.group_runs(runs, where)
    (alone,) = [g for g in groups if sweep_store.failed in {r.run_id for r in g.runs}]
    assert alone.failed and alone.n_seeds == 1
    picks = seeds.detail_runs(groups, where, PerRun.best_worst)
    assert sweep_store.failed not in {r.run_id for r in picks} and len(picks) == 2


def test_results_table_leaves_fail_run_out_of_its_seed_group(
    sweep_store: SweepStore, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sweep_store.uri)
    spec = importlib.util.spec_from_file_location(
        "results_table", PROJECT_ROOT / "scripts" / "results_table.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["sweep"])
    lines = capsys.readouterr().out.strip().splitlines()
    header, _rule, *rows = lines[: lines.index("")]
    assert header.endswith("| verdict |") and len(rows) == 5
    mean, std = statistics.mean(SEEDED_PGD), statistics.stdev(SEEDED_PGD)
    (seeded,) = [r for r in rows if "| 2 |" in r]
    assert f"| {mean:.1%} ± {std:.1%} |" in seeded and seeded.endswith("| pass |")
    (failed,) = [r for r in rows if r.endswith("| **fail** |")]
    assert "| 1 |" in failed and f"| {0.95:.1%} |" in failed
    assert [r for r in rows if r.endswith("| not recorded |")]  # the run made before verdicts
    assert [r for r in rows if r.endswith("| warn |")]
    assert lines[-1] == (
        "Left out of the mean ± std groups: 1 run(s) whose verdict is fail, each shown on its "
        f"own row marked **fail**: sweep/s2 ({FAIL_REASON})."
    )


# ---------------------------------------------------------------------- what a report leaves out
def _failed_run(client: MlflowClient, experiment_id: str, name: str, error: str) -> str:
    run_id = client.create_run(experiment_id, run_name=name).info.run_id
    client.set_tag(run_id, naming.ERROR_TAG, error)
    client.set_terminated(run_id, "FAILED")
    return run_id


def test_experiment_of_failed_runs_only_is_one_line_and_no_pdf(
    migrated_store_template: Path, tmp_path: Path
) -> None:
    from advlab.report.data import ReportError

    uri, client = _new_store(migrated_store_template, tmp_path / "store")
    exp = client.create_experiment("broken", artifact_location=str(tmp_path / "artifacts"))
    for i in range(3):
        _failed_run(client, exp, f"f{i}", f"DataError: data.root missing ({i})")
    with pytest.raises(ReportError) as info:
        build_report(tracking_uri=uri, experiment="broken", runs=None, out_dir=tmp_path / "out")
    message = str(info.value)
    assert "\n" not in message
    assert "'broken' has no finished run to report (3 failed)" in message
    assert "data.root missing (2)" in message  # the latest run's error
    assert not (tmp_path / "out").exists()


def test_failed_runs_are_counted_on_the_first_page(
    migrated_store_template: Path, tmp_path: Path
) -> None:
    uri, client = _new_store(migrated_store_template, tmp_path)
    exp = client.create_experiment("mixed", artifact_location=str(tmp_path / "artifacts"))
    _log_run(client, exp, "a", verdict="pass")
    _log_run(client, exp, "b", dropout=0.5, verdict="pass")
    _failed_run(client, exp, "f1", "boom")
    _failed_run(client, exp, "f2", "boom")
    report = gather(tracking_uri=uri, experiment="mixed", runs=None)
    assert [r.name for r in report.runs] == ["a", "b"] and report.left_out == {"FAILED": 2}
    pdf = build_report(tracking_uri=uri, experiment="mixed", runs=None, out_dir=tmp_path)
    assert "2 failed runs are left out of this report" in _first_page(pdf)
    # Asked for by a filter on the status, they are reported.
    asked = gather(tracking_uri=uri, experiment="mixed", runs="attributes.status = 'FAILED'")
    assert sorted(r.name for r in asked.runs) == ["f1", "f2"] and not asked.left_out


def test_the_default_experiment_is_the_latest_runs(
    migrated_store_template: Path, tmp_path: Path
) -> None:
    uri, client = _new_store(migrated_store_template, tmp_path)
    older = client.create_experiment("older", artifact_location=str(tmp_path / "a1"))
    newer = client.create_experiment("newer", artifact_location=str(tmp_path / "a2"))
    _log_run(client, newer, "first")
    _log_run(client, older, "latest")  # started last: its experiment is the default
    assert latest_experiment(uri) == "older"


@pytest.mark.slow
def test_app_without_arguments_reports_the_latest_runs_experiment(
    migrated_store_template: Path, tmp_path: Path
) -> None:
    import subprocess
    import sys

    uri, client = _new_store(migrated_store_template, tmp_path)
    newer = client.create_experiment("newer", artifact_location=str(tmp_path / "a2"))
    older = client.create_experiment("older", artifact_location=str(tmp_path / "a1"))
    _log_run(client, older, "first")
    _log_run(client, newer, "latest")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "advlab.report",
            f"tracking.uri={uri}",
            f"paths.runs_dir={tmp_path / 'runs'}",
            f"report.dir={tmp_path / 'reports'}",
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert [p.name.split("-")[0] for p in (tmp_path / "reports").glob("*.pdf")] == ["newer"]
    assert not (tmp_path / "runs").exists()  # no Hydra run directory for a report
    # `make report` runs exactly this command, with no argument of its own. (Under `make test`
    # a nested make would add "Leaving directory" lines, hence --no-print-directory.)
    made = subprocess.run(
        ["make", "-n", "--no-print-directory", "report"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.stdout.strip().splitlines()[-1].endswith("-m advlab.report")


# --------------------------------------------------------------------------- the recorded names
def _run_data(run_id: str, params: dict[str, str], overrides: str | None = None):
    import pandas as pd

    from advlab.report.data import RunData

    info = {} if overrides is None else {naming.OVERRIDES_INFO: overrides}
    return RunData(
        run_id=run_id,
        name=run_id,
        experiment="x",
        status="FINISHED",
        start_time=None,
        params=params,
        tags={},
        config={},
        metrics={},
        history=pd.DataFrame(columns=["epoch"]),
        robustness=pd.DataFrame(columns=list(data.ROBUSTNESS_COLUMNS)),
        info=info,
    )


def test_swept_params_are_only_keys_a_user_set() -> None:
    base = {"seed": "0", "model.dropout": "0", "optimizer.lr": "0.001"}
    a = _run_data("a", {**base, "model._target_": "advlab.models.zoo.course_cnn"})
    b = _run_data(
        "b",
        {
            **base,
            "model.dropout": "0.5",
            "model._target_": "advlab.models.zoo.vgg_small",
            "attacks.cw._target_": "advlab.attacks.zoo.cw",
            "attacks.cw._partial_": "True",
            "attacks.cw.norm": "l2",
        },
    )
    assert data.swept_params([a, b]) == ["model.dropout"]
    # With the runs' overrides recorded, only the keys they set count (lr differs, unasked).
    c = _run_data("c", {**base, "optimizer.lr": "0.1"}, overrides="seed=1 model.dropout=0")
    d = _run_data("d", {**base, "model.dropout": "0.5"}, overrides="seed=0 +model.dropout=0.5")
    c.params["seed"] = "1"
    assert data.swept_params([c, d]) == ["model.dropout", "seed"]
    # A global config-group choice (conf/adversarial/<option>.yaml) sets the keys of its file.
    method = "train.adversarial.method"
    e = _run_data("e", {**base, method: "nfgsm"}, overrides="adversarial@_global_=nfgsm seed=0")
    f = _run_data("f", {**base, method: "pgd"}, overrides="adversarial@_global_=pgd seed=0")
    assert data.swept_params([e, f]) == [method]


def test_older_metric_names_and_run_info_are_read(
    migrated_store_template: Path, tmp_path: Path
) -> None:
    uri, client = _new_store(migrated_store_template, tmp_path)
    exp = client.create_experiment("one", artifact_location=str(tmp_path / "artifacts"))
    (legacy,) = [old for old, new in naming.LEGACY_METRICS.items() if new == naming.VAL_PGD_ACC]
    run_id = _log_run(client, exp, "r", verdict="pass", history={legacy: [0.3, 0.2]})
    facts = {naming.VERSION_INFO: "9.8.7", naming.COMMAND_INFO: "python -m advlab seed=42"}
    client.log_text(run_id, json.dumps(facts), naming.RUN_INFO_JSON)
    (run,) = gather(tracking_uri=uri, experiment="one", runs=None).runs
    assert list(run.history[naming.VAL_PGD_ACC]) == [0.3, 0.2] and legacy not in run.history
    assert run.info[naming.VERSION_INFO] == "9.8.7"
    flat = _flat(build_report(tracking_uri=uri, experiment="one", runs=None, out_dir=tmp_path))
    assert "9.8.7" in flat and "python -m advlab seed=42" in flat


CO_REASON = "catastrophic_overfitting: PGD validation accuracy collapsed in epoch 3"


@pytest.fixture
def defence_store(migrated_store_template: Path, tmp_path: Path) -> str:
    """Standard and FGSM-RS training, two seeds each; FGSM-RS seed 1 overfitted catastrophically."""
    uri, client = _new_store(migrated_store_template, tmp_path / "store")
    exp = client.create_experiment("defences", artifact_location=str(tmp_path / "artifacts"))
    for seed in (0, 1):
        _log_run(client, exp, f"std{seed}", seed=seed, method="none", pgd8=0.05,
                 verdict="pass", train_seconds=60.0)  # fmt: skip
    _log_run(client, exp, "fgsm0", seed=0, method="fgsm_rs", pgd8=0.40, verdict="pass",
             train_seconds=120.0)  # fmt: skip
    flagged = _log_run(client, exp, "fgsm1", seed=1, method="fgsm_rs", pgd8=0.30,
                       verdict="warn", reason=CO_REASON, train_seconds=180.0)  # fmt: skip
    client.set_tag(flagged, naming.check_tag("catastrophic_overfitting"), "warn")
    for run in client.search_runs([exp]):
        client.log_metric(run.info.run_id, naming.CONSTANT_ACC, 0.55)
    return uri


def test_first_page_compares_defences_with_training_time_and_overfitting_events(
    defence_store: str, tmp_path: Path
) -> None:
    pdf = build_report(
        tracking_uri=defence_store, experiment="defences", runs=None, out_dir=tmp_path
    )
    first = _first_page(pdf)
    assert "train time" in first and "CO" in first
    # ranked by PGD at 8/255: FGSM-RS first, its two seeds' mean training time, one CO event
    mean = fmt_spread(0.35, statistics.stdev([0.40, 0.30]))
    assert f"{mean} 2.5 min 1 of 2" in first
    assert "1.0 min 0 of 2" in first
    assert "catastrophic_overfitting check did not pass" in first


def test_results_table_compares_defences_with_the_constant_answer(
    defence_store: str, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", defence_store)
    spec = importlib.util.spec_from_file_location(
        "results_table", PROJECT_ROOT / "scripts" / "results_table.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["defences"])
    header, _rule, *rows = capsys.readouterr().out.strip().splitlines()
    assert "| worst case 8/255 | constant answer | train time | CO events |" in header
    (fgsm,) = [r for r in rows if "adv. training=fgsm_rs" in r]
    assert "| 55.0% ± 0.0% | 2.5 min | 1 of 2 |" in fgsm
    (standard,) = [r for r in rows if "adv. training=none" in r]
    assert "| 55.0% ± 0.0% | 1.0 min | 0 of 2 |" in standard
