"""advlab.models.sources: the saved model an eval.transfer_from entry names (real files, a real
SQLite MLflow store); the attacks find it without loading the tracking package."""

from __future__ import annotations

import subprocess
import sys

import pytest

from advlab import naming
from advlab.errors import ConfigError
from advlab.models.sources import resolve_checkpoint, resolve_sources


def test_a_file_and_a_run_directory_resolve_to_their_model_file(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / naming.MODEL_DIR).mkdir(parents=True)
    model = run_dir / naming.MODEL_ARTIFACT
    model.write_bytes(b"weights")
    loose = tmp_path / "loose"
    loose.mkdir()
    (loose / naming.MODEL_FILE).write_bytes(b"weights")
    assert resolve_checkpoint(str(model)) == model
    assert resolve_checkpoint(str(run_dir)) == model
    found = resolve_sources([str(run_dir), str(loose)])
    assert found == {str(run_dir): model, str(loose): loose / naming.MODEL_FILE}


def test_a_directory_without_a_model_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=f"without {naming.MODEL_ARTIFACT}") as err:
        resolve_checkpoint(str(tmp_path))
    assert "\n" not in str(err.value)


def test_a_run_id_in_a_store_that_does_not_exist_is_refused_and_creates_nothing(tmp_path):
    db = tmp_path / "mlflow.db"
    with pytest.raises(ConfigError, match=f"no MLflow store at {db}") as err:
        resolve_checkpoint("a" * 32, tracking_uri=f"sqlite:///{db}")
    assert "\n" not in str(err.value)
    assert not db.exists()


def test_importing_the_attacks_and_training_does_not_load_the_tracking_package():
    code = (
        "import sys, advlab.attacks.transfer, advlab.attacks.evaluate, advlab.training.fit, "
        "advlab.models.sources; "
        "print(sorted(m for m in sys.modules if m.startswith('advlab.tracking')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
