"""PDF reports built from runs of the real pipeline in a temporary SQLite store.

The runs come from the session fixture ``pipeline_store`` (tests/conftest.py): a tiny quickstart
run and a failed run in experiment "demo", a two-job sweep (model.dropout and
optimizer.weight_decay both differ) under its parent run in experiment "sweep". Tests extract the
PDF's text with pypdf and compare numbers with what MLflow holds, formatted the way the report
formats them (``fmt_pct``).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pypdf")
mlflow = pytest.importorskip("mlflow")

from mlflow.tracking import MlflowClient  # noqa: E402
from pypdf import PdfReader  # noqa: E402

from advlab import naming, results  # noqa: E402
from advlab.config import PROJECT_ROOT  # noqa: E402
from advlab.errors import AdvlabError  # noqa: E402
from advlab.report import build_report, report_path  # noqa: E402
from advlab.report.data import swept_params  # noqa: E402
from advlab.report.format import (  # noqa: E402
    attack_label,
    attack_list,
    fmt_eps,
    fmt_int,
    fmt_num,
    fmt_pct,
    fmt_pp,
)
from advlab.report.gather import gather  # noqa: E402
from advlab.report.summary import run_sentences  # noqa: E402
from tests.conftest import PipelineStore  # noqa: E402

EPS = [0.0, 8.0]  # eval.eps of the fixture's runs


def _text(pdf: Path) -> str:
    reader = PdfReader(str(pdf))
    return "\n".join(page.extract_text() or "" for page in reader.pages)


def _flat(pdf: Path) -> str:
    return " ".join(_text(pdf).split())


def _first_page(pdf: Path) -> str:
    return " ".join((PdfReader(str(pdf)).pages[0].extract_text() or "").split())


def _run(uri: str, run_id: str):
    return MlflowClient(tracking_uri=uri).get_run(run_id)


def _metrics(uri: str, run_id: str) -> dict[str, float]:
    return _run(uri, run_id).data.metrics


def _logged_checks(uri: str, run_id: str) -> list[dict]:
    """The evaluation's checks file as the run logged it (today's name, else the older one)."""
    logged = results.list_artifacts(run_id, naming.RESULTS_DIR, tracking_uri=uri)
    (path,) = [p for p in naming.artifact_candidates(naming.CHECKS_JSON) if p in logged][:1]
    return results.read_json(run_id, path, tracking_uri=uri)


def _run_info(uri: str, run_id: str) -> dict[str, str]:
    """The run's descriptive facts (attacks, versions, command) from results/run_info.json."""
    tags = _run(uri, run_id).data.tags
    return naming.run_info(tags, results.read_json(run_id, naming.RUN_INFO_JSON, tracking_uri=uri))


# --------------------------------------------------------------------------------- formatting
def test_percentages_have_one_decimal_everywhere() -> None:
    assert fmt_pct(0.9123) == "91.2%"
    assert fmt_pct(0.034) == "3.4%"
    assert fmt_pct(1.0) == "100.0%"
    assert fmt_pct(None) == "—" and fmt_pct(float("nan")) == "—"
    assert fmt_pp(0.123) == "12.3 points"
    assert fmt_eps(8.0) == "8/255" and fmt_eps(0.5) == "0.5/255"


def test_summary_sentence_quotes_the_tracked_numbers() -> None:
    import pandas as pd

    table = pd.DataFrame(
        [
            {"attack": "pgd", "eps": 0.0, "robust_acc": 0.912, "asr": 0.0},
            {"attack": "pgd", "eps": 8.0, "robust_acc": 0.034, "asr": 0.963},
        ]
    )
    lines = run_sentences(
        name="r",
        clean_acc=0.912,
        robustness=table,
        eps=None,
        best_epoch=3,
        stopped_epoch=5,
        max_epochs=12,
        gen_gap=0.123,
        sanity=None,
        status="FINISHED",
        error=None,
    )
    text = " ".join(lines)
    assert "PGD at 8/255 lowers accuracy from 91.2% to 3.4% (attack success rate 96.3%)" in text
    assert "epoch 5 of 12" in text and "epoch 3" in text
    assert "12.3 points" in text and "overfitting" in text


# ----------------------------------------------------------------------------------- gathering
def test_gather_reads_metrics_history_artifacts_and_typed_config(
    pipeline_store: PipelineStore,
) -> None:
    store = pipeline_store
    report = gather(tracking_uri=store.uri, experiment=None, runs=[store.good])
    (run,) = report.runs
    m = _metrics(store.uri, store.good)
    assert report.experiment == "demo"
    assert run.clean_acc == m[naming.CLEAN_ACC]
    assert list(run.history["epoch"]) == list(range(1, int(m[naming.STOPPED_EPOCH]) + 1))
    # Attacks in tag order, then the rows evaluation adds (escalation), worst case last.
    tagged = _run_info(store.uri, store.good)[naming.ATTACKS_INFO].split(",")
    rows = {naming.parse_eps_metric(k)[1] for k in m if naming.parse_eps_metric(k)}
    added = sorted(rows - {*tagged, naming.WORST_CASE})
    assert tagged == ["fgsm", "pgd"] and run.attacks == [*tagged, *added, naming.WORST_CASE]
    assert run.eps_grid == EPS
    row = run.robust("pgd", 8.0)
    assert row["robust_acc"] == m[naming.robust_acc_key("pgd", 8)]
    assert row["ci_low"] <= row["robust_acc"] <= row["ci_high"] and row["n"] == 200
    logged = _logged_checks(store.uri, store.good)
    assert [c["name"] for c in run.sanity] == [c["name"] for c in logged]
    grids = results.list_artifacts(store.good, naming.GRIDS_DIR, tracking_uri=store.uri)
    assert [p for p, _ in run.grids] == grids and grids
    # Settings come typed from config/config.json, not parsed back from param strings.
    assert run.setting("train.early_stopping.enabled") is True
    assert run.setting("eval.eps") == EPS and run.setting("train.epochs") == 2
    assert run.params["train.early_stopping.enabled"] == "True"  # what the params hold
    assert run.setting("no.such.key") is None


def test_sweep_parent_stands_for_its_children_and_swept_params_found(
    pipeline_store: PipelineStore,
) -> None:
    store = pipeline_store
    report = gather(tracking_uri=store.uri, experiment=None, runs=[store.sweep_parent])
    children = [*store.sweep, *store.extra_seeds]
    assert sorted(r.run_id for r in report.runs) == sorted(children)
    assert swept_params(report.runs) == ["model.dropout", "optimizer.weight_decay", "seed"]
    # All runs of the experiment: the parent (no results of its own) is left out.
    everything = gather(tracking_uri=store.uri, experiment="sweep", runs=None)
    assert len(everything.runs) == len(children) and everything.omitted_parents == 1


# ------------------------------------------------------------------------------------ one run
def _robustness_row(store: PipelineStore, attack: str, eps: float) -> str:
    """The robustness-table row of the good run as the PDF must print it, from MLflow alone."""
    m = _metrics(store.uri, store.good)
    rows = results.read_json(store.good, naming.ROBUSTNESS_JSON, tracking_uri=store.uri)
    (extra,) = [r for r in rows if r["attack"] == attack and r["eps"] == eps]
    return (
        f"{attack_label(attack)} {fmt_eps(eps)} {fmt_pct(m[naming.CLEAN_ACC])} "
        f"{fmt_pct(m[naming.robust_acc_key(attack, eps)])} "
        f"{fmt_pct(extra['ci_low'])} – {fmt_pct(extra['ci_high'])} "
        f"{fmt_pct(m[naming.asr_key(attack, eps)])} {fmt_int(extra['n'])}"
    )


def test_single_run_report_numbers_match_mlflow(
    pipeline_store: PipelineStore, tmp_path: Path
) -> None:
    store = pipeline_store
    pdf = build_report(
        tracking_uri=store.uri, experiment="demo", runs=[store.good], out_dir=tmp_path
    )
    assert pdf.parent == tmp_path and re.fullmatch(r"demo-\d{8}-\d{6}\.pdf", pdf.name)
    flat = _flat(pdf)
    for attack in ("fgsm", "pgd", naming.WORST_CASE):
        for eps in EPS:
            assert _robustness_row(store, attack, eps) in flat, (attack, eps)
    # The written summary tells the headline story from the same numbers.
    mlflow_run = _run(store.uri, store.good)
    m = mlflow_run.data.metrics
    assert (
        f"PGD at 8/255 lowers accuracy from {fmt_pct(m[naming.CLEAN_ACC])} to "
        f"{fmt_pct(m[naming.robust_acc_key('pgd', 8)])} "
        f"(attack success rate {fmt_pct(m[naming.asr_key('pgd', 8)])})" in flat
    )
    # Setup, early stopping, data, sanity evidence and versions come from config/params/tags.
    params, tags = mlflow_run.data.params, mlflow_run.data.tags
    best, stopped = int(m[naming.BEST_EPOCH]), int(m[naming.STOPPED_EPOCH])
    sanity = _logged_checks(store.uri, store.good)
    info = _run_info(store.uri, store.good)
    for expected in (
        f"patience 3 on val_loss; best {best} / stopped {stopped} of 2",
        f"dropout {fmt_num(params['model.dropout'])}",
        " ".join(
            [tags[naming.DATASET_TAG]]
            + [fmt_int(float(params[f"facts.{k}"])) for k in ("n_train", "n_val", "n_test")]
            + [params["facts.image_shape"]]
        ),
        f"params {fmt_int(m[naming.NUM_PARAMS])}",
        *(f"{c['name']} {c['status']}" for c in sanity),
        f"torchattacks {info[naming.TORCHATTACKS_VERSION_INFO]}",
        " ".join(info[naming.COMMAND_INFO].split()),
    ):
        assert expected in flat, expected


def test_pdf_is_a4_with_embedded_fonts(pipeline_store: PipelineStore, tmp_path: Path) -> None:
    store = pipeline_store
    pdf = build_report(tracking_uri=store.uri, experiment=None, runs=[store.good], out_dir=tmp_path)
    reader = PdfReader(str(pdf))
    assert len(reader.pages) >= 3
    for page in reader.pages:
        box = page.mediabox
        assert abs(float(box.width) - 595.28) < 1 and abs(float(box.height) - 841.89) < 1
    fonts = set()
    for page in reader.pages:
        for font in (page["/Resources"].get("/Font") or {}).values():
            font = font.get_object()
            descendant = font.get("/DescendantFonts")
            desc = (descendant[0].get_object() if descendant else font).get("/FontDescriptor")
            if desc is not None:
                desc = desc.get_object()
                assert "/FontFile2" in desc, f"font {font.get('/BaseFont')} is not embedded"
                fonts.add(str(font.get("/BaseFont")))
    assert any("DejaVuSans" in f for f in fonts)


def test_figures_dir_gets_every_figure_of_the_pdf_as_a_png(
    pipeline_store: PipelineStore, tmp_path: Path
) -> None:
    from PIL import Image

    store = pipeline_store
    figures = tmp_path / "figures"
    pdf = build_report(
        tracking_uri=store.uri,
        experiment=None,
        runs=[store.good],
        out_dir=tmp_path,
        figures_dir=figures,
    )
    pngs = sorted(figures.glob("*.png"))
    # the first page's worst-case curve, then the learning curves, numbered in page order
    assert len(pngs) >= 3 and pngs[0].name.startswith("01-accuracy-under-the-worst-case")
    assert pngs[1].name.startswith("02-solid-training")
    embedded = sum(len(page.images) for page in PdfReader(str(pdf)).pages)
    assert embedded >= len(pngs)  # the PDF holds these figures (and the example grids)
    with Image.open(pngs[0]) as image:
        assert image.format == "PNG" and image.width > 300


def test_two_reports_in_the_same_second_do_not_overwrite(
    pipeline_store: PipelineStore, tmp_path: Path
) -> None:
    store = pipeline_store
    # The failed run makes the smallest report: this test is about file names.
    first = build_report(
        tracking_uri=store.uri, experiment="demo", runs=[store.failed], out_dir=tmp_path
    )
    target = report_path(tmp_path, "demo")
    target.write_bytes(b"taken")  # the name the next report would get, already taken
    second = build_report(
        tracking_uri=store.uri, experiment="demo", runs=[store.failed], out_dir=tmp_path
    )
    assert second != first and second != target and second.read_bytes().startswith(b"%PDF")


# -------------------------------------------------------------------------- missing pieces
def test_failed_run_is_left_out_and_counted(pipeline_store: PipelineStore, tmp_path: Path) -> None:
    store = pipeline_store
    report = gather(tracking_uri=store.uri, experiment="demo", runs=None)
    assert [r.run_id for r in report.runs] == [store.good] and report.left_out == {"FAILED": 1}
    pdf = build_report(tracking_uri=store.uri, experiment="demo", runs=None, out_dir=tmp_path)
    flat = _flat(pdf)
    assert "1 failed run is left out of this report" in _first_page(pdf)
    assert _run(store.uri, store.failed).info.run_name not in flat
    assert _robustness_row(store, "pgd", 8.0) in flat  # the one reported run's table


def test_failed_run_alone(pipeline_store: PipelineStore, tmp_path: Path) -> None:
    store = pipeline_store
    pdf = build_report(
        tracking_uri=store.uri, experiment=None, runs=[store.failed], out_dir=tmp_path
    )
    flat = _flat(pdf)
    assert "FAILED" in flat and "No attack was evaluated in this run." in flat
    assert "No per-epoch metrics were logged (run FAILED)." in flat


def test_filter_string_selects_runs(pipeline_store: PipelineStore) -> None:
    store = pipeline_store
    report = gather(tracking_uri=store.uri, experiment="demo", runs="attributes.status = 'FAILED'")
    assert [r.run_id for r in report.runs] == [store.failed]


@pytest.mark.parametrize(
    ("experiment", "runs", "message"),
    [
        ("nope", None, "experiment 'nope' not found in"),
        ("demo", "params.model.dropout = '0.77'", "no runs match report.runs="),
        ("demo", "params.model.dropout >>> 1", "is not a valid MLflow filter"),
        (None, ["0" * 32], "report.runs: no MLflow run with id"),
        (None, None, "report.experiment is not set"),
    ],
)
def test_no_runs_is_a_clear_one_line_error(
    pipeline_store: PipelineStore, tmp_path: Path, experiment, runs, message: str
) -> None:
    with pytest.raises(AdvlabError) as info:
        build_report(
            tracking_uri=pipeline_store.uri,
            experiment=experiment,
            runs=runs,
            out_dir=tmp_path,
        )
    assert isinstance(info.value, AdvlabError)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert not list(tmp_path.glob("*.pdf")) and not list(tmp_path.glob(".report-*"))


# ---------------------------------------------------------------------------------- many runs
@pytest.mark.slow
def test_sweep_report_has_every_runs_numbers(pipeline_store: PipelineStore, tmp_path: Path) -> None:
    store = pipeline_store
    # The seed-0 jobs: a single-seed sweep, which the report shows run by run.
    pdf = build_report(
        tracking_uri=store.uri,
        experiment="sweep",
        runs="params.seed = '0'",
        out_dir=tmp_path,
        heatmap_eps=8,
    )
    flat = _flat(pdf)
    pgd8 = {}
    for rid in store.sweep:
        run = _run(store.uri, rid)
        m = run.data.metrics
        pgd8[rid] = m[naming.robust_acc_key("pgd", 8)]
        # The pivot row of each run: name, attack, clean acc, robust / ASR at each eps.
        cells = " ".join(
            f"{fmt_pct(m[naming.robust_acc_key('pgd', e)])} / "
            f"{fmt_pct(m[naming.asr_key('pgd', e)])}"
            for e in EPS
        )
        assert f"PGD {fmt_pct(m[naming.CLEAN_ACC])} {cells}" in flat, run.info.run_name
    assert "Sweep" in flat and "model.dropout" in flat and "optimizer.weight_decay" in flat
    best = max(store.sweep, key=pgd8.__getitem__)
    assert f"Highest PGD robust accuracy at 8/255: {_run(store.uri, best).info.run_name}" in flat
    # The sweep summary compares the swept values with the tracked means.
    dropout = {rid: d for rid, (d, _wd) in zip(store.sweep, store.sweep_settings, strict=True)}
    low = [pgd8[r] for r in store.sweep if dropout[r] == 0.0]
    high = [pgd8[r] for r in store.sweep if dropout[r] == 0.5]
    low_mean, high_mean = sum(low) / len(low), sum(high) / len(high)
    change = (
        "left unchanged"
        if high_mean == low_mean
        else ("raised" if high_mean > low_mean else "lowered")
    )
    assert (
        f"model.dropout = 0.5 instead of 0 {change} the PGD robust accuracy at 8/255 "
        f"from {fmt_pct(low_mean)} to {fmt_pct(high_mean)}" in flat
    )


@pytest.mark.slow
def test_hydra_app_builds_a_report_and_refuses_unknown_experiment(
    pipeline_store: PipelineStore, tmp_path: Path
) -> None:
    store = pipeline_store
    base = [
        sys.executable,
        "-m",
        "advlab.report",
        f"tracking.uri={store.uri}",
        f"paths.runs_dir={tmp_path / 'runs'}",
        f"report.dir={tmp_path / 'reports'}",
    ]
    ok = subprocess.run(
        [*base, "report.experiment=demo", f"report.runs=[{store.good}]"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert len(list((tmp_path / "reports").glob("demo-*.pdf"))) == 1
    bad = subprocess.run(
        [*base, "report.experiment=nope"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2
    assert "experiment 'nope' not found" in bad.stdout + bad.stderr
    assert "Traceback" not in bad.stdout + bad.stderr


# ------------------------------------------------------------------------------- the first page
def test_first_page_tells_the_story(pipeline_store: PipelineStore, tmp_path: Path) -> None:
    from advlab.report.facts import plain_verdict

    store = pipeline_store
    pdf = build_report(
        tracking_uri=store.uri, experiment="demo", runs=[store.good], out_dir=tmp_path
    )
    mlflow_run = _run(store.uri, store.good)
    m, params = mlflow_run.data.metrics, mlflow_run.data.params
    logged = results.read_json(store.good, naming.RESULTS_JSON, tracking_uri=store.uri)
    rows = results.read_json(store.good, naming.ROBUSTNESS_JSON, tracking_uri=store.uri)
    (worst_row,) = [r for r in rows if r["attack"] == naming.WORST_CASE and r["eps"] == 8]
    clean, worst = m[naming.CLEAN_ACC], m[naming.robust_acc_key(naming.WORST_CASE, 8)]
    clean_n = logged.get(naming.CLEAN_N, params["facts.n_test"])
    robust_n = logged.get(naming.ROBUST_N, worst_row["n"])
    (run,) = gather(tracking_uri=store.uri, experiment=None, runs=[store.good]).runs
    attacks = [a for a in run.attacks if a != naming.WORST_CASE]
    attacked = {naming.parse_eps_metric(k)[1] for k in m if naming.parse_eps_metric(k)}
    assert set(attacks) == attacked - {naming.WORST_CASE} and len(attacks) >= 2
    halves = [
        e for e in EPS if e > 0 and m[naming.robust_acc_key(naming.WORST_CASE, e)] < clean / 2
    ]
    end = f"halves at eps {fmt_eps(halves[0])}" if halves else "stays above half up to eps 8/255"
    sentence = (
        f"The model classifies {fmt_pct(clean)} of {fmt_int(float(clean_n))} test images "
        f"correctly; under the worst case of {attack_list(attacks)} at eps 8/255 it keeps "
        f"{fmt_pct(worst)} of {fmt_int(float(robust_n))} attacked images, and its accuracy {end}."
    )
    first = _first_page(pdf)
    assert sentence in first
    tags = mlflow_run.data.tags
    assert plain_verdict(tags[naming.VERDICT_TAG], tags.get(naming.VERDICT_REASON_TAG)) in first
    page = PdfReader(str(pdf)).pages[0]
    assert len(page.images) >= 2  # the worst-case curve and the logged example row
    # Versions and command lines come later, under "About these runs".
    info = _run_info(store.uri, store.good)
    assert f"torchattacks {info[naming.TORCHATTACKS_VERSION_INFO]}" not in first
    assert "About these runs" in _flat(pdf)


# -------------------------------------------------------------------- a store that does not exist
def test_report_on_a_missing_store_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(AdvlabError) as info:
        build_report(
            tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
            experiment="quickstart",
            runs=None,
            out_dir=tmp_path / "reports",
        )
    assert "no MLflow store at" in str(info.value) and "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_app_on_a_missing_store_exits_2_with_one_line_and_creates_no_file(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "advlab.report",
            f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
            f"paths.runs_dir={tmp_path / 'runs'}",
            f"report.dir={tmp_path / 'reports'}",
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    assert out.returncode == 2 and len(lines) == 1, lines
    assert "no MLflow store at" in lines[0]
    assert list(tmp_path.iterdir()) == []  # no store, no Hydra run directory, no PDF
