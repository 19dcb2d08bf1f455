"""``python -m advlab.leaderboard`` on real MLflow stores.

Most tests log runs the way the pipeline leaves them (the params, metrics and tags of
:mod:`advlab.naming`) into a fresh SQLite store, which takes a fraction of a second per run; one
slow test reads the runs of the real pipeline (the session fixture ``pipeline_store``) and checks
that the leaderboard pools the same seeds as :func:`advlab.seed_groups.seed_groups`; another
reads a real ``mlflow server`` over HTTP, as a teacher does.
"""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mlflow")
pytest.importorskip("pypdf")

from mlflow.entities import Metric, Param  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from pypdf import PdfReader  # noqa: E402

from advlab import naming  # noqa: E402
from advlab.config import PROJECT_ROOT  # noqa: E402
from advlab.errors import AdvlabError  # noqa: E402
from advlab.leaderboard import build, output_stem, write  # noqa: E402
from advlab.leaderboard.render import csv_text, markdown, terminal  # noqa: E402
from advlab.report.format import fmt_pct, fmt_spread  # noqa: E402
from tests.conftest import PipelineStore  # noqa: E402
from tests.test_mlflow_server import mlflow_server  # noqa: E402, F401  (a fixture)

WORST = naming.WORST_CASE


def _log_run(
    client: MlflowClient,
    experiment_id: str,
    setting: str,
    *,
    seed: int = 0,
    clean: float = 0.8,
    worst8: float = 0.5,
    failed: tuple[str, ...] = (),
    warned: tuple[str, ...] = (),
    escalation: bool = True,
    eps: tuple[float, ...] = (0.0, 8.0),
    dropout: float = 0.0,
    status: str = "FINISHED",
) -> str:
    """A run as the pipeline records it: run name ``<setting>-s<seed>``, the params of its
    config (plus ``facts.*`` that differ by seed, as a seeded split makes them), the headline
    metrics at every eps of ``eps`` and the verdict with one tag per check that did not pass."""
    tags = {
        naming.DATASET_TAG: "gender",
        naming.MODEL_TAG: "vgg_small",
        naming.ADVERSARIAL_TRAINING_TAG: "none",
        naming.SEED_TAG: str(seed),
        naming.VERDICT_TAG: "fail" if failed else "warn" if warned else "pass",
        **{naming.check_tag(name): "fail" for name in failed},
        **{naming.check_tag(name): "warn" for name in warned},
    }
    run = client.create_run(experiment_id, run_name=f"{setting}-s{seed}", tags=tags)
    params = {
        "seed": seed,
        "data.name": "gender",
        "model.dropout": dropout,
        "eval.eps": str(list(eps)),
        "eval.grid_eps": 8.0,
        "eval.attacks": "['fgsm', 'pgd']",
        "eval.escalation.enabled": escalation,
        "tracking.run_name": setting,  # bookkeeping: never splits a seed group
        "facts.n_train": 5000 - seed,  # measured, not set: never splits a seed group
    }
    values = {naming.CLEAN_ACC: clean, naming.TRAIN_SECONDS: 42.0}
    for e in eps:
        values[naming.robust_acc_key(WORST, e)] = clean if e == 0 else worst8
        values[naming.certified_acc_key(e)] = clean if e == 0 else worst8 / 2
    client.log_batch(
        run.info.run_id,
        metrics=[Metric(k, v, 0, 0) for k, v in values.items()],
        params=[Param(k, str(v)) for k, v in params.items()],
    )
    client.set_terminated(run.info.run_id, status)
    return run.info.run_id


@pytest.fixture
def challenge(fresh_store: Path) -> str:
    """A class challenge: two students' seed groups, a single run, and runs that must not be
    ranked (a fail verdict, the escalation off, another eps grid, a crashed run, a weak model)."""
    uri = f"sqlite:///{fresh_store}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("challenge")
    for seed, worst in enumerate((0.50, 0.60, 0.70)):  # mean 60.0% ± 10.0%
        warned = ("pgd_le_fgsm",) if seed == 1 else ()  # one seed's warning is the row's
        _log_run(client, exp, "alice", seed=seed, clean=0.85, worst8=worst, warned=warned)
    # a seed that failed its verdict: listed apart, and counted on alice's row
    _log_run(client, exp, "alice", seed=3, clean=0.85, worst8=0.9, failed=("training_diverged",))
    for seed in (0, 1):  # the same config as alice's: still a row of its own
        _log_run(client, exp, "bob", seed=seed, clean=0.8, worst8=0.4)
    _log_run(client, exp, "carol", clean=0.9, worst8=0.65)
    _log_run(client, exp, "dave", worst8=0.99, failed=("clean_above_chance",))
    _log_run(client, exp, "erin", worst8=0.95, escalation=False)
    _log_run(client, exp, "frank", worst8=0.9, eps=(0.0, 4.0))
    _log_run(client, exp, "grace", clean=0.3, worst8=0.29)
    _log_run(client, exp, "heidi", worst8=0.97, status="FAILED")
    return uri


def test_ranked_by_worst_case_with_the_others_apart_and_said_why(challenge: str) -> None:
    board = build(challenge, ["challenge"], min_clean=0.5)
    assert board.threat_model.eps == 8.0  # the runs' eval.grid_eps
    assert [(r.rank, r.label) for r in board.ranked] == [(1, "carol-s0"), (2, "alice"), (3, "bob")]
    reasons = {r.label: r.reason for r in board.apart}
    assert reasons == {
        "alice-s3": "verdict fail: training_diverged",
        "dave-s0": "verdict fail: clean_above_chance",
        "erin-s0": "another threat model: escalation off",
        "frank-s0": "another threat model: not attacked at 8/255 (eps 0/255, 4/255)",
        "grace-s0": "clean 30.0% below the floor 50.0%",
        "heidi-s0": "run FAILED",
    }
    text = terminal(board)
    ranking, _, apart = text.partition("Not ranked (6):")
    for name in ("dave", "erin", "frank", "grace", "heidi"):
        assert name not in ranking and f"{name}-s0" in apart
    assert "ranked by worst case at 8/255 (L-inf, escalation on)" in text


def test_a_seed_group_is_one_row_with_mean_and_std(challenge: str) -> None:
    board = build(challenge, ["challenge"])
    alice = next(r for r in board.ranked if r.label == "alice")
    assert (alice.n_seeds, alice.seeds) == (3, ["0", "1", "2"])
    assert alice.stat("worst")["mean"] == pytest.approx(0.6)
    assert alice.verdict == "warn" and alice.checks == {"pgd_le_fgsm": "warn"}
    line = next(line for line in terminal(board).splitlines() if line.startswith("2  alice"))
    assert fmt_spread(0.6, 0.1) in line and "3 (0, 1, 2)" in line
    assert "warn (pgd_le_fgsm)" in line and fmt_pct(0.85) in line
    assert alice.apart_seeds == 1 and "3 (0, 1, 2) + 1 not ranked" in line


def test_csv_markdown_and_pdf_say_the_same(challenge: str, tmp_path: Path) -> None:
    board = build(challenge, ["challenge"], min_clean=0.5)
    paths = write(board, tmp_path / "out", output_stem(["challenge"]))
    assert {p.name for p in paths.values()} == {
        "leaderboard-challenge.csv",
        "leaderboard-challenge.md",
        "leaderboard-challenge.pdf",
    }
    rows = list(csv.DictReader(io.StringIO(paths["csv"].read_text())))
    assert paths["csv"].read_text() == csv_text(board)
    ranked = [(r["rank"], r["run"], r["n_seeds"]) for r in rows if r["ranked"] == "yes"]
    assert ranked == [("1", "carol-s0", "1"), ("2", "alice", "3"), ("3", "bob", "2")]
    alice = next(r for r in rows if r["run"] == "alice")
    assert float(alice["worst_case_mean"]) == pytest.approx(0.6)
    assert float(alice["certified_mean"]) == pytest.approx(0.3)
    assert len(alice["run_ids"].split()) == 3 and "#/experiments/" in alice["mlflow_link"]
    dave = next(r for r in rows if r["run"] == "dave-s0")
    assert dave["ranked"] == "no"
    assert dave["not_ranked_because"] == "verdict fail: clean_above_chance"

    page = paths["md"].read_text()
    assert page == markdown(board)
    ranking, _, apart = page.partition("## Not ranked (6)")
    assert "| 2 | alice: [s0](" in ranking and "dave" not in ranking
    assert "another threat model: escalation off" in apart

    pdf = PdfReader(str(paths["pdf"]))
    text = " ".join(" ".join(p.extract_text() or "" for p in pdf.pages).split())
    assert "carol-s0" in text and "Not ranked (6)" in text
    assert fmt_spread(0.6, 0.1) in text and "verdict fail: clean_above_chance" in text
    links = [a["/A"]["/URI"] for p in pdf.pages for a in p.get("/Annots") or []]
    assert any(board.ranked[0].first.run_id in link for link in links)


def test_top_and_an_eps_of_the_grid(challenge: str) -> None:
    board = build(challenge, ["challenge"], eps=0, top=1)
    assert board.threat_model.eps == 0.0
    assert [r.label for r in board.ranked] == ["carol-s0"] and board.hidden == 4
    assert "and 4 more ranked (leaderboard.top)" in terminal(board)
    # At 0/255 frank's grid (0, 4) is comparable: only the escalation, the verdict and the
    # crash keep runs apart.
    assert {r.label for r in board.apart} == {"alice-s3", "dave-s0", "erin-s0", "heidi-s0"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"experiments": ["nope"]}, "experiment 'nope' not found"),
        ({"eps": 3.0}, "leaderboard.eps=3: no run was attacked at 3/255; evaluated: 0, 4, 8"),
    ],
)
def test_bad_input_is_one_line(challenge: str, kwargs: dict, message: str) -> None:
    with pytest.raises(AdvlabError) as error:
        build(challenge, **kwargs)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_missing_store_is_one_line_and_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(AdvlabError) as error:
        build(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert "no MLflow store at" in str(error.value)
    assert list(tmp_path.iterdir()) == []


def _app(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "advlab.leaderboard", *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_app_prints_the_ranking_and_refuses_bad_keys_in_one_line(
    challenge: str, tmp_path: Path
) -> None:
    out_dir = tmp_path / "boards"
    ok = _app(f"tracking.uri={challenge}", f"leaderboard.dir={out_dir}")
    assert ok.returncode == 0, ok.stdout[-2000:] + ok.stderr[-2000:]
    assert "1  carol-s0" in ok.stdout and "Not ranked (5):" in ok.stdout
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "leaderboard-all.csv",
        "leaderboard-all.md",
        "leaderboard-all.pdf",
    ]
    for args, message in (
        (["leaderboard.min_clean=70"], "leaderboard.min_clean=70.0: must be in [0, 1]"),
        (["leaderboard.eps=3"], "leaderboard.eps=3: no run was attacked at 3/255"),
        (["leaderboard.tpo=3"], "leaderboard.tpo"),
    ):
        bad = _app(f"tracking.uri={challenge}", f"leaderboard.dir={out_dir}", *args)
        said = (bad.stdout + bad.stderr).strip()
        assert bad.returncode == 2 and message in said, said
        assert len(said.splitlines()) == 1 and "Traceback" not in said


@pytest.mark.slow
def test_pipeline_runs_pool_the_seeds_the_report_pools(pipeline_store: PipelineStore) -> None:
    from advlab import results
    from advlab.seed_groups import seed_groups

    store = pipeline_store
    board = build(store.uri, ["sweep", "demo"])
    rows = board.ranked + [r for r in board.apart if not r.reason.startswith("run ")]
    pooled = {frozenset(e.run_id for e in r.entries) for r in rows}
    frame = results.load("sweep", tracking_uri=store.uri)
    expected = {frozenset(ids) for ids in seed_groups(frame, tracking_uri=store.uri)["run_ids"]}
    assert expected <= pooled
    assert any(len(group) == 1 + len(store.extra_seeds) for group in pooled)
    failed = next(r for r in board.apart if r.first.run_id == store.failed)
    assert failed.reason.startswith("run FAILED: ") and "training broke on purpose" in failed.reason


@pytest.mark.slow
def test_a_teacher_ranks_the_runs_of_a_tracking_server(mlflow_server) -> None:  # noqa: F811
    url, _ = mlflow_server
    client = MlflowClient(tracking_uri=url)
    exp = client.create_experiment("challenge")
    for seed in (0, 1):
        _log_run(client, exp, "alice", seed=seed, worst8=0.4 + 0.1 * seed)
    _log_run(client, exp, "bob", worst8=0.6)
    board = build(url, ["challenge"])
    assert [(r.label, r.n_seeds) for r in board.ranked] == [("bob-s0", 1), ("alice", 2)]
    assert csv_text(board).count(f"{url}/#/experiments/{exp}/runs/") == 2  # links to the server
