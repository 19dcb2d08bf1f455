"""python -m advlab.audit: the same FGSM and PGD from torchattacks, ART and Foolbox on a real run.

One tiny quickstart run of the real pipeline (eval.cascade=false, so advlab's own FGSM figure at
each eps is the independent one the audit computes), audited by run directory and by run id.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from advlab.audit.compare import NOISE_LEVEL, allowed_gap, compare_row, sign_test_p
from advlab.config import PROJECT_ROOT
from tests.conftest import TINY_OVERRIDES, compose_config

pytest.importorskip("art", reason="the audit extra: pip install -e '.[audit]'")
pytest.importorskip("foolbox", reason="the audit extra: pip install -e '.[audit]'")

LIBRARIES = ("torchattacks", "art", "foolbox", "worst")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A finished tiny run: its directory, MLflow run id and the overrides that reach its store."""
    from advlab.pipeline import run
    from advlab.tracking import open_client

    root = tmp_path_factory.mktemp("audit")
    base = [
        f"paths.runs_dir={root / 'runs'}",
        f"paths.cache_dir={root / 'cache'}",
        f"tracking.uri=sqlite:///{root / 'mlflow.db'}",
        f"tracking.artifact_root={root / 'mlartifacts'}",
        f"report.dir={root / 'reports'}",
    ]
    # Smaller than TINY_OVERRIDES: one epoch, no grids; the audit needs a model, not a good one.
    shrink = ["train.epochs=1", "eval.grid_eps=null", "eval.sanity.convergence_n=16"]
    overrides = [*base, *TINY_OVERRIDES, *shrink, "eval.cascade=false", "report.enabled=false"]
    run(compose_config(overrides))
    client = open_client(f"sqlite:///{root / 'mlflow.db'}")
    (found,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return {
        "root": root,
        "base": base,
        "run_id": found.info.run_id,
        "run_dir": Path(found.data.tags["advlab.run_dir"]),
        "client": client,
    }


def _audit(store: dict, *overrides: str) -> dict:
    from advlab.audit import run_audit

    cfg = compose_config([*store["base"], *overrides])
    return run_audit(cfg, work_dir=store["root"] / "audit-work")


@pytest.mark.slow
@pytest.mark.e2e
def test_audit_of_a_run_directory_logs_writes_and_reports(store: dict) -> None:
    from pypdf import PdfReader

    payload = _audit(store, f"audit.run={store['run_dir']}")
    assert payload["run_id"] == store["run_id"]
    assert payload["clean_acc"] == payload["run_clean_acc"]  # the same model on the same points
    fgsm = [row for row in payload["rows"] if row["attack"] == "fgsm"]
    assert [row["eps"] for row in fgsm] == [0.0, 4.0, 16.0]
    for row in fgsm:
        # deterministic: the three libraries agree on every point, and equal advlab's own FGSM
        assert row["disagree"] == 0 and row["verdict"] == "pass"
        assert len(set(row["robust_acc"].values())) == 1
        assert row["robust_acc"]["torchattacks"] == pytest.approx(row["run_robust_acc"])
    assert fgsm[-1]["robust_acc"]["torchattacks"] < payload["clean_acc"]  # the attack did bite
    for row in payload["rows"]:
        assert row["robust_acc"]["worst"] == min(row["robust_acc"].values())

    written = json.loads((store["run_dir"] / "results" / "audit.json").read_text())
    assert written == payload
    run = store["client"].get_run(store["run_id"])
    for library in LIBRARIES:
        for attack in ("fgsm", "pgd"):
            for eps in ("0", "4", "16"):
                key = f"audit/{library}/{attack}/eps_{eps}"
                expected = next(
                    r["robust_acc"][library]
                    for r in payload["rows"]
                    if r["attack"] == attack and r["eps"] == float(eps)
                )
                assert run.data.metrics[key] == pytest.approx(expected)
    assert run.data.metrics["audit/art/pgd/seconds"] > 0
    assert run.data.tags["advlab.audit"] == payload["verdict"]
    artifacts = {a.path for a in store["client"].list_artifacts(store["run_id"], "results")}
    assert "results/audit.json" in artifacts

    (pdf_artifact,) = store["client"].list_artifacts(store["run_id"], "report")
    local = store["client"].download_artifacts(
        store["run_id"], pdf_artifact.path, str(store["root"])
    )
    text = " ".join(page.extract_text() for page in PdfReader(local).pages)
    assert "Audit: the same attacks from three libraries" in text
    assert "Foolbox" in text and "disagree" in text


@pytest.mark.slow
@pytest.mark.e2e
def test_audit_by_run_id_finds_the_run_directory(store: dict) -> None:
    payload = _audit(store, f"audit.run={store['run_id']}", "audit.report=false")
    assert payload["run_dir"] == str(store["run_dir"])
    assert all(r["disagree"] == 0 for r in payload["rows"] if r["attack"] == "fgsm")


def _python(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """``python *args`` in a fresh interpreter that also imports ``tmp_path``'s modules."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(PROJECT_ROOT)])}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env
    )


def test_without_the_extra_the_audit_says_how_to_install_it(tmp_path: Path) -> None:
    # Python imports sitecustomize at start-up: it makes `import foolbox` raise ImportError in
    # that interpreter only, as if the extra were not installed.
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['foolbox'] = None\n")
    args = ["-m", "advlab.audit", "audit.run=nowhere", f"paths.runs_dir={tmp_path}"]
    done = _python(tmp_path, *args)
    assert done.returncode == 2, done.stderr
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "foolbox" in lines[0] and 'pip install -e ".[audit]"' in lines[0]


def test_the_main_path_never_imports_art_or_foolbox(tmp_path: Path) -> None:
    code = (
        "import sys, advlab.pipeline, advlab.report.single, advlab.audit\n"
        "assert 'art' not in sys.modules and 'foolbox' not in sys.modules, 'imported'\n"
    )
    done = _python(tmp_path, "-c", code)
    assert done.returncode == 0, done.stderr


# --------------------------------------------------------------------------- the verdict's numbers
def test_sign_test_and_its_allowed_gap() -> None:
    assert sign_test_p(0, 0) == 1.0
    assert sign_test_p(10, 0) == pytest.approx(2 / 2**10)
    assert sign_test_p(3, 5) == sign_test_p(5, 3)
    for m in (1, 7, 20, 101):
        gap = allowed_gap(m)
        assert sign_test_p((m + gap) // 2, (m - gap) // 2) >= NOISE_LEVEL
        if gap + 2 <= m:
            assert sign_test_p((m + gap + 2) // 2, (m - gap - 2) // 2) < NOISE_LEVEL


def test_pgd_warns_on_a_one_sided_split_and_fgsm_on_any_difference() -> None:
    import numpy as np

    base = np.ones(100, dtype=bool)
    weaker = base.copy()
    weaker[:12] = False  # 12 points fall under one library only: no random start does that
    robust = {"torchattacks": base, "art": weaker, "foolbox": base}
    row = compare_row("pgd", 8.0, robust)
    assert row["verdict"] == "warn" and row["disagree"] == 12
    assert row["robust_acc"]["worst"] == pytest.approx(0.88)
    mixed = base.copy()
    mixed[:2] = False
    other = base.copy()
    other[2:4] = False
    assert compare_row("pgd", 8.0, {"a": mixed, "b": other})["verdict"] == "pass"
    one = base.copy()
    one[0] = False
    assert compare_row("fgsm", 8.0, {"a": base, "b": one})["verdict"] == "warn"
