"""python -m advlab.search: real Optuna studies, real MLflow stores, real (tiny) trials.

What users rely on: bad input is one line before any training; every trial's runs are children of
one search run; a fail verdict is infeasible, never best; a search killed with SIGKILL resumes with
the same command up to ``search.n_trials`` in total without repeating a finished trial; two
workers on one SQLite study lose and duplicate no trial.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from advlab import naming
from advlab.config import PROJECT_ROOT
from advlab.errors import ConfigError
from advlab.search import run as search_run
from advlab.search import study as search_study
from advlab.search.summary import Row, pareto_front
from tests.conftest import compose_config

# A trial in ~10 s on two cores: the smoke sizes, no escalation, certification, model or PDF.
TRIAL = [
    "train.epochs=1",
    "data.limit_train=600",
    "data.limit_test=64",
    "eval.n_examples=64",
    "eval.eps=[0,8]",
    "eval.grid_n=2",
    "eval.sanity.convergence_n=16",
    "attacks.pgd.steps=2",
    "eval.escalation.enabled=false",
    "eval.certify=none",
    "report.enabled=false",
    "tracking.log_model=false",
    "threads=1",
]
LR_SPACE = "+search.space={optimizer.lr:{type:categorical,choices:[1e-9,0.003]}}"


def _store(tmp_path: Path) -> list[str]:
    return [
        f"paths.runs_dir={tmp_path / 'runs'}",
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
        f"tracking.artifact_root={tmp_path / 'mlartifacts'}",
        f"report.dir={tmp_path / 'reports'}",
    ]


def _command(tmp_path: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "advlab.search", *_store(tmp_path), *TRIAL, *extra]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return {**env, "PYTHONPATH": str(PROJECT_ROOT)}


def _study(tmp_path: Path, name: str = "quickstart") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'optuna.db'}")


def _runs(tmp_path: Path) -> list:
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("quickstart")
    return client.search_runs([experiment.experiment_id], max_results=1000)


def _check_nesting(tmp_path: Path, n_trials: int, seeds: int = 1) -> None:
    """One FINISHED search run; each complete trial's runs are its children, one per seed."""
    runs = _runs(tmp_path)
    (search,) = [r for r in runs if r.data.tags.get(naming.SEARCH_PARENT_TAG) == "true"]
    assert search.info.status == "FINISHED"
    assert search.info.run_name == naming.search_run_name("quickstart")
    children = [r for r in runs if r is not search]
    assert all(r.data.tags[naming.MLFLOW_PARENT_TAG] == search.info.run_id for r in children)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    complete = _study(tmp_path).get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == n_trials
    for trial in complete:
        ids = trial.user_attrs["run_ids"]
        assert len(ids) == seeds
        finished = {r.info.run_id for r in children if r.info.status == "FINISHED"}
        assert set(ids) <= finished
    assert search.data.metrics[naming.SEARCH_TRIALS] == n_trials


# ------------------------------------------------------------------------- bad input, fast
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("+search.space={model.dropuot:{type:float,low:0,high:0.5}}", "Key 'dropuot' not in"),
        ("+search.space={model.dropout:{type:float,low:0.6,high:0.5}}", "low=0.6 is above"),
        ("+search.space={model.dropout:{type:float,low:0,high:1.5}}", "model.dropout=1.5"),
        ("+search.space={optimizer.lr:{type:float,low:0,high:0.1,log:true}}", "needs low > 0"),
        ("+search.space={seed:{type:int,low:0,high:3}}", "cannot be searched"),
        ("+search.space={model:{type:categorical,choices:[nosuchnet]}}", "nosuchnet"),
        ("search.n_trials=0", "search.n_trials=0: must be >= 1"),
        ("search.min_clean=2", "search.min_clean=2"),
        ("search.objective=robust_acc/pgd/eps_3", "search.objective=robust_acc/pgd/eps_3"),
    ],
)
def test_bad_input_is_refused_in_one_line_naming_the_key(override: str, message: str) -> None:
    cfg = compose_config([override])
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as caught:
        search_run.prepare(cfg, [override])
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("storage", "message"),
    [("foo://x", "backend 'foo' is not one of"), ("not a url", "not a storage URL")],
)
def test_a_storage_url_not_understood_is_refused(storage: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        search_study.storage_url(storage, "sqlite:////tmp/mlflow.db")


def test_the_default_storage_is_beside_the_mlflow_store_and_needs_sqlite() -> None:
    url = search_study.storage_url(None, "sqlite:////data/runs/mlflow.db")
    assert url == "sqlite:////data/runs/optuna.db"
    with pytest.raises(ConfigError, match="search.storage=null"):
        search_study.storage_url(None, "http://mlflow.example.org:5000")


def test_the_command_line_refuses_a_bad_space_with_exit_2_before_training(tmp_path) -> None:
    bad = "+search.space={model.dropout:{type:float,low:0.6,high:0.5}}"
    done = subprocess.run(
        _command(tmp_path, bad), env=_env(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    errors = [line for line in (done.stdout + done.stderr).splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "search.space.model.dropout: low=0.6 is above high=0.5" in errors[0]
    assert not (tmp_path / "optuna.db").exists()  # refused before the study was opened


def test_every_search_option_composes_into_a_valid_space() -> None:
    for option in sorted(p.stem for p in (PROJECT_ROOT / "conf" / "search").glob("*.yaml")):
        extra = ["+experiment=gender_cnn", "data.root=/nowhere"] if option == "faces" else []
        cfg = compose_config([f"search={option}", *extra])
        params, _ = search_run.prepare(cfg, [f"search={option}", *extra])
        assert params


def test_the_pareto_front_keeps_the_trials_no_other_beats_on_both_axes() -> None:
    def row(number: int, clean: float, value: float) -> Row:
        return Row(number, {}, value, None, clean, None, True, ("pass",), None)

    rows = [row(0, 0.9, 0.1), row(1, 0.8, 0.3), row(2, 0.7, 0.2), row(3, 0.6, 0.4)]
    assert [r.number for r in pareto_front(rows)] == [3, 1, 0]


# ---------------------------------------------------------------------- real searches, slow
@pytest.mark.slow
def test_a_fail_verdict_is_infeasible_and_never_best(tmp_path: Path) -> None:
    # lr 1e-9 learns nothing: clean accuracy at chance is the verdict fail (clean_above_chance).
    overrides = [*_store(tmp_path), *TRIAL, "train.epochs=2", LR_SPACE, "search.n_trials=2"]
    overrides += ["search.min_clean=0"]
    cfg = compose_config(overrides)
    opened = search_study.open_study(f"sqlite:///{tmp_path / 'optuna.db'}", "quickstart", "tpe", 0)
    for lr in (1e-9, 0.003):  # both settings, in this order (Optuna's queue)
        opened.enqueue_trial({"optimizer.lr": lr})
    result = search_run.run_search(cfg, overrides, tmp_path / "work")
    assert result.finished and result.pdf is not None and result.pdf.stat().st_size > 10_000
    by_lr = {t.params["optimizer.lr"]: t for t in _study(tmp_path).get_trials()}
    assert by_lr[1e-9].user_attrs["verdicts"] == ["fail"]
    assert not search_study.feasible(by_lr[1e-9])
    assert by_lr[1e-9].constraints[search_study.VERDICT_CONSTRAINT] == 1.0
    best = (tmp_path / "runs" / "search" / "quickstart" / naming.SEARCH_BEST_JSON).read_text()
    assert f'"trial": {by_lr[1e-9].number}' not in best
    _check_nesting(tmp_path, 2)
    # A trial's run records the command that reruns it alone.
    (run,) = [r for r in _runs(tmp_path) if r.info.run_id == by_lr[0.003].user_attrs["run_ids"][0]]
    assert run.data.tags[naming.SEARCH_TRIAL_TAG] == str(by_lr[0.003].number)


def _wait_for(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.5)


def _states(tmp_path: Path) -> list[TrialState]:
    try:
        return [t.state for t in _study(tmp_path).get_trials()]
    except (KeyError, optuna.exceptions.StorageInternalError):
        return []  # the study does not exist yet


@pytest.mark.slow
def test_a_search_killed_with_sigkill_resumes_to_its_total_without_repeating(tmp_path) -> None:
    # The second trial trains 150 epochs of 600 images, ~15 s (the first, one), so the kill lands
    # while it trains on any machine: a one-epoch trial can finish between two polls of the study.
    epochs = "+search.space={train.epochs:{type:categorical,choices:[1,150]}}"
    no_stop = "train.early_stopping.enabled=false"
    command = _command(tmp_path, "search.n_trials=2", "search.min_clean=0", epochs, no_stop)
    opened = search_study.open_study(f"sqlite:///{tmp_path / 'optuna.db'}", "quickstart", "tpe", 0)
    for n in (1, 150):  # Optuna's queue: trial 0 short, trial 1 long
        opened.enqueue_trial({"train.epochs": n})
    proc = subprocess.Popen(
        command,
        env=_env(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Killed while its second trial's run trains, after the first trial finished.
        _wait_for(lambda: _states(tmp_path)[:2] == [TrialState.COMPLETE, TrialState.RUNNING], 150)
        _wait_for(lambda: len(_runs(tmp_path)) == 3, 60)  # the search run and two trial runs
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    first = _study(tmp_path).trials[0]
    again = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    trials = _study(tmp_path).trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 2
    assert complete[0].number == first.number and complete[0].datetime_complete == (
        first.datetime_complete
    )  # kept, not run again
    killed = trials[1]
    assert killed.params["train.epochs"] == 150 and killed.state == TrialState.FAIL
    (retry,) = [t for t in complete if t.user_attrs.get(search_study.RETRY_ATTR) == killed.number]
    assert retry.params == killed.params  # the killed trial's settings, run once more
    _check_nesting(tmp_path, 2)
    states = {r.info.status for r in _runs(tmp_path)}
    assert "KILLED" in states  # the killed trial's run, ended by the reaper


@pytest.mark.slow
def test_two_workers_share_one_sqlite_study_without_losing_or_duplicating(tmp_path) -> None:
    command = _command(tmp_path, "search.n_trials=3", "search.workers=2", "search.min_clean=0")
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-2000:]
    trials = _study(tmp_path).trials
    assert [t.number for t in trials] == [0, 1, 2]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 3
    pids = {t.user_attrs[naming.PID_TAG] for t in trials}
    assert len(pids) == 2  # both workers ran trials
    _check_nesting(tmp_path, 3)
