"""Stores written by earlier releases keep working: their old names are read under today's.

The store here is a real MLflow SQLite store holding a run recorded the way earlier releases
recorded it (``val_robust_acc``, ``advlab.sanity.*`` tags, ``results/sanity.json``, descriptive
facts as tags) next to an adversarially trained run recorded today (``val_pgd_acc`` and the FGSM
validation curve ``val_fgsm_acc``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from advlab import naming, results

EPOCHS = (1, 2, 3)
OLD_TAGS = {
    "advlab.sanity": "warn",
    "advlab.sanity.bounds": "pass",
    "advlab.sanity.pgd_converged": "warn",
    naming.VERSION_INFO: "0.0.9",
    naming.COMMAND_INFO: "python -m advlab",
}


def _log_epochs(client, run_id: str, names: tuple[str, ...]) -> None:
    for epoch in EPOCHS:
        for i, name in enumerate(names):
            client.log_metric(run_id, name, 0.1 * i + 0.01 * epoch, step=epoch)


@pytest.fixture
def legacy_store(fresh_store: Path, tmp_path: Path) -> tuple[str, str, str]:
    from mlflow import MlflowClient

    uri = f"sqlite:///{fresh_store}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("legacy", artifact_location=str(tmp_path / "art"))
    old = client.create_run(experiment, tags=OLD_TAGS).info.run_id
    _log_epochs(client, old, ("train_loss", "val_acc", "val_robust_acc", naming.VAL_FGSM_ACC))
    checks = tmp_path / "sanity.json"
    checks.write_text(json.dumps([{"name": "bounds", "status": "pass", "evidence": "ok"}]))
    client.log_artifact(old, str(checks), naming.RESULTS_DIR)
    client.set_terminated(old)
    new = client.create_run(experiment).info.run_id
    _log_epochs(client, new, (naming.TRAIN_LOSS, naming.VAL_PGD_ACC, naming.VAL_FGSM_ACC))
    client.set_terminated(new)
    return uri, old, new


def test_adversarial_runs_epoch_table_has_the_fgsm_validation_curve(legacy_store) -> None:
    uri, _, new = legacy_store
    table = results.epoch_table(new, tracking_uri=uri)
    assert list(table["epoch"]) == list(EPOCHS)
    assert {naming.VAL_PGD_ACC, naming.VAL_FGSM_ACC} <= set(table.columns)
    assert table[naming.VAL_FGSM_ACC].tolist() == pytest.approx([0.21, 0.22, 0.23])


def test_old_metric_names_are_read_under_todays(legacy_store) -> None:
    uri, old, _ = legacy_store
    table = results.epoch_table(old, tracking_uri=uri)
    assert naming.VAL_PGD_ACC in table.columns and "val_robust_acc" not in table.columns
    assert table[naming.VAL_PGD_ACC].tolist() == pytest.approx([0.21, 0.22, 0.23])
    asked_by_old_name = results.metric_history(old, "val_robust_acc", tracking_uri=uri)
    assert set(asked_by_old_name["key"]) == {naming.VAL_PGD_ACC}
    frame = results.load("legacy", tracking_uri=uri)
    row = frame[frame.run_id == old].iloc[0]
    assert row[f"metrics.{naming.VAL_PGD_ACC}"] == pytest.approx(0.23)


def test_old_check_tags_checks_file_and_info_tags_are_read(legacy_store) -> None:
    uri, old, _ = legacy_store
    tags = results.load("legacy", tracking_uri=uri).set_index("run_id").loc[old]
    run_tags = {k.removeprefix("tags."): v for k, v in tags.items() if k.startswith("tags.")}
    assert naming.checks_from_tags(run_tags) == {"bounds": "pass", "pgd_converged": "warn"}
    info = naming.run_info(run_tags, None)
    assert info[naming.VERSION_INFO] == "0.0.9" and info[naming.COMMAND_INFO] == "python -m advlab"
    listed = results.list_artifacts(old, tracking_uri=uri)
    found = [p for p in naming.artifact_candidates(naming.CHECKS_JSON) if p in listed]
    assert found == ["results/sanity.json"]
    assert results.read_json(old, found[0], tracking_uri=uri)[0]["name"] == "bounds"
