"""PDF reports built from real MLflow runs in a temporary SQLite store.

The fixture logs runs that follow docs/architecture.md ("What a run leaves in MLflow") with the
MLflow client: a realistic run (5 epochs, FGSM + PGD at eps 0/2/8, result artifacts, a grid), a
failed run without attacks, and a 6-run sweep over model.dropout x optimizer.weight_decay under a
parent run. Tests extract the PDF's text with pypdf and compare numbers with the tracked metrics,
formatted the way the report formats them (``fmt_pct``).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pypdf")
mlflow = pytest.importorskip("mlflow")

from mlflow.entities import Metric, Param  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from PIL import Image  # noqa: E402
from pypdf import PdfReader  # noqa: E402

from advlab import naming  # noqa: E402
from advlab.config import PROJECT_ROOT  # noqa: E402
from advlab.errors import AdvlabError  # noqa: E402
from advlab.report import build_report, report_path  # noqa: E402
from advlab.report.data import ReportError, gather, swept_params  # noqa: E402
from advlab.report.summary import fmt_eps, fmt_pct, fmt_pp, run_sentences  # noqa: E402
from advlab.tracking import flatten_config  # noqa: E402
from tests.conftest import compose_config  # noqa: E402

EPS = [0.0, 2.0, 8.0]
CLASSES = [str(i) for i in range(10)]


@dataclass
class Store:
    uri: str
    root: Path
    good: str  # run id of the realistic run (experiment "demo")
    failed: str  # run id of the failed run without attacks (experiment "demo")
    sweep_parent: str  # parent run of the sweep (experiment "sweep")
    sweep: list[str]  # the 6 sweep children


def _params(*overrides: str) -> dict[str, str]:
    """The params a real run logs: the composed config flattened as tracking flattens it."""
    cfg = compose_config(["eval.eps=[0,2,8]", *overrides])
    params = flatten_config(cfg)
    params.update(
        {
            "facts.n_train": "3600",
            "facts.n_val": "400",
            "facts.n_test": "1000",
            "facts.image_shape": "1x28x28",
        }
    )
    params.update(
        {f"facts.train_frac/{c}": f"{0.1 + (i - 4.5) * 0.002:.4f}" for i, c in enumerate(CLASSES)}
    )
    return params


def _tags(params: dict[str, str], **extra: str) -> dict[str, str]:
    tags = {
        "advlab.dataset": "mnist",
        "advlab.model": "course_cnn",
        "advlab.attacks": "fgsm,pgd",
        "advlab.controls": f"dropout={params['model.dropout']},early_stopping",
        "advlab.adversarial_training": "none",
        "advlab.seed": params["seed"],
        "advlab.git_commit": "0123abc",
        "advlab.git_dirty": "false",
        "advlab.version": "0.1.0",
        "advlab.torch_version": "2.13.0",
        "advlab.torchattacks_version": "3.5.1",
        "advlab.device": "cpu",
        "advlab.command": "python -m advlab " + " ".join(extra.pop("overrides", "").split()),
        "advlab.run_dir": "/tmp/runs/x",
    }
    tags.update(extra)
    return tags


def _robust_rows(clean: float, fgsm: list[float], pgd: list[float]) -> list[dict]:
    rows = []
    n = 500
    for attack, accs in (("fgsm", fgsm), ("pgd", pgd), ("worst_case", pgd)):
        for eps, acc in zip(EPS, accs, strict=True):
            half = 1.96 * (acc * (1 - acc) / n) ** 0.5
            rows.append(
                {
                    "attack": attack,
                    "eps": eps,
                    "robust_acc": acc,
                    "ci_low": max(0.0, acc - half),
                    "ci_high": min(1.0, acc + half),
                    "asr": 1 - acc / clean,
                    "n": n,
                    "n_clean_correct": round(clean * n),
                }
            )
    return rows


def _log_run(
    client: MlflowClient,
    exp_id: str,
    tmp: Path,
    *,
    name: str,
    params: dict[str, str],
    clean: float | None,
    fgsm: list[float] | None = None,
    pgd: list[float] | None = None,
    epochs: int = 5,
    status: str = "FINISHED",
    tags: dict[str, str] | None = None,
    artifacts: bool = True,
    parent: str | None = None,
) -> str:
    all_tags = _tags(params, **(tags or {}))
    if parent:
        all_tags["mlflow.parentRunId"] = parent
    run = client.create_run(exp_id, run_name=name, tags=all_tags)
    rid = run.info.run_id
    ts = 1_700_000_000_000
    metrics = []
    for epoch in range(1, epochs + 1):
        # Overfitting by design: training keeps improving, validation loss turns up after epoch 3.
        values = {
            "train_loss": 1.2 / epoch,
            "train_acc": min(0.99, 0.7 + 0.06 * epoch),
            "val_loss": 0.5 + 0.04 * (epoch - 3) ** 2,
            "val_acc": 0.86 + 0.01 * min(epoch, 3),
            "lr": 0.003,
            "epoch_seconds": 1.5,
            "images_per_s": 2400.0,
        }
        values["gen_gap"] = values["train_acc"] - values["val_acc"]
        metrics += [Metric(k, v, ts + epoch, epoch) for k, v in values.items()]
    if status == "FINISHED":  # a failed run never reaches the end of training
        metrics += [
            Metric(naming.BEST_EPOCH, 3.0, ts, 0),
            Metric(naming.STOPPED_EPOCH, float(epochs), ts, 0),
            Metric(naming.NUM_PARAMS, 1234.0, ts, 0),
            Metric("train_seconds", 7.5, ts, 0),
        ]
    rows: list[dict] = []
    if clean is not None:
        metrics.append(Metric(naming.CLEAN_ACC, clean, ts, 0))
    if clean is not None and fgsm is not None and pgd is not None:
        rows = _robust_rows(clean, fgsm, pgd)
        for row in rows:
            step = EPS.index(row["eps"])
            metrics.append(
                Metric(
                    naming.robust_acc_key(row["attack"], row["eps"]), row["robust_acc"], ts, step
                )
            )
            metrics.append(Metric(naming.asr_key(row["attack"], row["eps"]), row["asr"], ts, step))
    client.log_batch(rid, metrics=metrics, params=[Param(k, v) for k, v in params.items()])
    if rows and artifacts:
        out = tmp / rid
        (out / "results").mkdir(parents=True)
        (out / "grids").mkdir()
        (out / "results" / "robustness.json").write_text(json.dumps(rows))
        headline = {m.key: m.value for m in metrics if m.step == 0 or "/" in m.key}
        (out / "results" / "results.json").write_text(json.dumps(headline))
        sanity = [
            {"name": "linf_bound", "status": "pass", "evidence": "max |x_adv - x| = 8.00/255"},
            {"name": "eps0_is_clean", "status": "pass", "evidence": "eps 0: 91.2% = clean"},
            {"name": "pgd_le_fgsm", "status": "pass", "evidence": "PGD <= FGSM at all eps"},
            {"name": "pgd_converged", "status": "warn", "evidence": "20 steps moved acc 1.6 pts"},
        ]
        (out / "results" / "sanity.json").write_text(json.dumps(sanity))
        lines = ["attack,eps,class,robust_acc,n"]
        for row in rows:
            for k, c in enumerate(CLASSES):
                acc = min(1.0, row["robust_acc"] * (0.9 + 0.02 * k))
                lines.append(f"{row['attack']},{row['eps']},{c},{acc:.4f},50")
        (out / "results" / "per_class.csv").write_text("\n".join(lines) + "\n")
        eye = (np.eye(10, dtype=int) * 45 + 1).tolist()
        adv = (np.ones((10, 10), dtype=int) * 5).tolist()
        (out / "results" / "confusion.json").write_text(
            json.dumps({"clean": eye, "pgd/eps_8": adv, "fgsm/eps_8": adv})
        )
        img = (np.random.default_rng(0).random((120, 90, 3)) * 255).astype(np.uint8)
        Image.fromarray(img).save(out / "grids" / "pgd_eps_8.png")
        client.log_artifacts(rid, str(out / "results"), "results")
        client.log_artifacts(rid, str(out / "grids"), "grids")
    if status == "FAILED":
        client.set_tag(rid, "advlab.error", "TrainingError: loss became NaN at epoch 2")
    client.set_terminated(rid, status)
    return rid


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    root = tmp_path_factory.mktemp("report-store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    art = (root / "mlartifacts").as_uri()
    demo = client.create_experiment("demo", artifact_location=art + "/demo")
    good = _log_run(
        client,
        demo,
        root,
        name="mnist-course_cnn-do0.25-wd5e-4",
        params=_params("model.dropout=0.25"),
        clean=0.9123,
        fgsm=[0.9123, 0.702, 0.215],
        pgd=[0.9123, 0.655, 0.034],
        tags={"overrides": "model.dropout=0.25"},
    )
    failed = _log_run(
        client,
        demo,
        root,
        name="mnist-course_cnn-do0.9",
        params=_params("model.dropout=0.9"),
        clean=None,
        epochs=2,
        status="FAILED",
        tags={"advlab.attacks": ""},
    )
    sweep_exp = client.create_experiment("sweep", artifact_location=art + "/sweep")
    parent = client.create_run(
        sweep_exp, run_name="sweep-parent", tags={"advlab.sweep": "2024-01-01_12-00-00"}
    ).info.run_id
    client.set_terminated(parent, "FINISHED")
    children = []
    for dropout in (0.0, 0.25, 0.5):
        for wd in (0.0, 0.0001):
            clean = 0.95 - 0.04 * dropout - 100 * wd
            pgd8 = 0.02 + 0.06 * dropout + 50 * wd
            children.append(
                _log_run(
                    client,
                    sweep_exp,
                    root,
                    name=f"mnist-course_cnn-do{dropout:g}-wd{wd:g}",
                    params=_params(f"model.dropout={dropout}", f"optimizer.weight_decay={wd}"),
                    clean=clean,
                    fgsm=[clean, 0.7, pgd8 + 0.1],
                    pgd=[clean, 0.6, pgd8],
                    parent=parent,
                    artifacts=dropout == 0.5,
                    tags={
                        "advlab.sweep": "2024-01-01_12-00-00",
                        "overrides": f"model.dropout={dropout} optimizer.weight_decay={wd}",
                    },
                )
            )
    return Store(uri=uri, root=root, good=good, failed=failed, sweep_parent=parent, sweep=children)


def _text(pdf: Path) -> str:
    reader = PdfReader(str(pdf))
    return "\n".join(page.extract_text() or "" for page in reader.pages)


def _metrics(uri: str, run_id: str) -> dict[str, float]:
    return MlflowClient(tracking_uri=uri).get_run(run_id).data.metrics


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
def test_gather_reads_metrics_history_and_artifacts(store: Store) -> None:
    report = gather(tracking_uri=store.uri, experiment=None, runs=[store.good])
    (run,) = report.runs
    assert run.clean_acc == pytest.approx(0.9123)
    assert list(run.history["epoch"]) == [1, 2, 3, 4, 5]
    assert run.attacks == ["fgsm", "pgd", "worst_case"]
    assert run.eps_grid == EPS
    row = run.robust("pgd", 8.0)
    assert row["robust_acc"] == pytest.approx(0.034) and row["ci_low"] < 0.034 < row["ci_high"]
    assert run.sanity and run.sanity[-1]["status"] == "warn"
    assert [p for p, _ in run.grids] == ["grids/pgd_eps_8.png"]
    assert report.experiment == "demo"


def test_sweep_parent_stands_for_its_children_and_swept_params_found(store: Store) -> None:
    report = gather(tracking_uri=store.uri, experiment=None, runs=[store.sweep_parent])
    assert sorted(r.run_id for r in report.runs) == sorted(store.sweep)
    assert swept_params(report.runs)[:2] == ["model.dropout", "optimizer.weight_decay"]
    # All runs of the experiment: the parent (no results of its own) is left out.
    everything = gather(tracking_uri=store.uri, experiment="sweep", runs=None)
    assert len(everything.runs) == 6 and everything.omitted_parents == 1


# ------------------------------------------------------------------------------------ one run
def test_single_run_report_numbers_match_mlflow(store: Store, tmp_path: Path) -> None:
    pdf = build_report(
        tracking_uri=store.uri, experiment="demo", runs=[store.good], out_dir=tmp_path
    )
    assert pdf.parent == tmp_path and re.fullmatch(r"demo-\d{8}-\d{6}\.pdf", pdf.name)
    text = _text(pdf)
    m = _metrics(store.uri, store.good)
    for key in (
        naming.CLEAN_ACC,
        naming.robust_acc_key("pgd", 8),
        naming.asr_key("pgd", 8),
        naming.robust_acc_key("fgsm", 2),
        naming.asr_key("fgsm", 8),
    ):
        assert fmt_pct(m[key]) in text, key
    assert fmt_pct(m[naming.CLEAN_ACC]) == "91.2%"  # the fixture's number, formatted
    # The written summary tells the headline story from the same numbers.
    flat = " ".join(text.split())
    assert "PGD at 8/255 lowers accuracy from 91.2% to 3.4%" in flat
    # Setup, early stopping, data, sanity evidence and versions come from params/tags/artifacts.
    for expected in (
        "best 3 / stopped 5",
        "3,600",
        "1,234",
        "pgd_converged",
        "torchattacks",
        "3.5.1",
        "python -m advlab model.dropout=0.25",
    ):
        assert expected in flat, expected


def test_pdf_is_a4_with_embedded_fonts(store: Store, tmp_path: Path) -> None:
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


def test_two_reports_in_the_same_second_do_not_overwrite(store: Store, tmp_path: Path) -> None:
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
def test_failed_run_without_attacks_is_shown_not_a_crash(store: Store, tmp_path: Path) -> None:
    pdf = build_report(tracking_uri=store.uri, experiment="demo", runs=None, out_dir=tmp_path)
    flat = " ".join(_text(pdf).split())
    assert "FAILED" in flat and "loss became NaN at epoch 2" in flat
    assert "No attack results: mnist-course_cnn-do0.9 (FAILED)" in flat
    m = _metrics(store.uri, store.good)
    assert fmt_pct(m[naming.robust_acc_key("pgd", 8)]) in flat


def test_failed_run_alone(store: Store, tmp_path: Path) -> None:
    pdf = build_report(
        tracking_uri=store.uri, experiment=None, runs=[store.failed], out_dir=tmp_path
    )
    flat = " ".join(_text(pdf).split())
    assert "FAILED" in flat and "No attack was evaluated in this run." in flat


def test_filter_string_selects_runs(store: Store, tmp_path: Path) -> None:
    report = gather(tracking_uri=store.uri, experiment="demo", runs="attributes.status = 'FAILED'")
    assert [r.run_id for r in report.runs] == [store.failed]


@pytest.mark.parametrize(
    ("experiment", "runs", "message"),
    [
        ("nope", None, "report.experiment='nope': no such MLflow experiment"),
        ("demo", "params.model.dropout = '0.77'", "no runs match report.runs="),
        ("demo", "params.model.dropout >>> 1", "is not a valid MLflow filter"),
        (None, ["0" * 32], "report.runs: no MLflow run with id"),
        (None, None, "report.experiment is not set"),
    ],
)
def test_no_runs_is_a_clear_one_line_error(
    store: Store, tmp_path: Path, experiment, runs, message: str
) -> None:
    with pytest.raises(ReportError) as info:
        build_report(tracking_uri=store.uri, experiment=experiment, runs=runs, out_dir=tmp_path)
    assert isinstance(info.value, AdvlabError)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert not list(tmp_path.glob("*.pdf")) and not list(tmp_path.glob(".report-*"))


# ---------------------------------------------------------------------------------- many runs
@pytest.mark.slow
def test_sweep_report_has_every_runs_numbers(store: Store, tmp_path: Path) -> None:
    pdf = build_report(
        tracking_uri=store.uri, experiment="sweep", runs=None, out_dir=tmp_path, heatmap_eps=8
    )
    flat = " ".join(_text(pdf).split())
    for rid in store.sweep:
        m = _metrics(store.uri, rid)
        assert fmt_pct(m[naming.CLEAN_ACC]) in flat
        assert (
            f"{fmt_pct(m[naming.robust_acc_key('pgd', 8)])} / "
            f"{fmt_pct(m[naming.asr_key('pgd', 8)])}" in flat
        )
    assert "Sweep" in flat and "model.dropout" in flat and "optimizer.weight_decay" in flat
    # The sweep summary compares the swept values with the tracked means (dropout helps here).
    best = max(store.sweep, key=lambda r: _metrics(store.uri, r)[naming.robust_acc_key("pgd", 8)])
    assert fmt_pct(_metrics(store.uri, best)[naming.robust_acc_key("pgd", 8)]) in flat
    assert "model.dropout = 0.5 instead of 0 raised the PGD robust accuracy at 8/255" in flat


@pytest.mark.slow
def test_hydra_app_builds_a_report_and_refuses_unknown_experiment(
    store: Store, tmp_path: Path
) -> None:
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
    assert "no such MLflow experiment" in bad.stdout + bad.stderr
    assert "Traceback" not in bad.stdout + bad.stderr
