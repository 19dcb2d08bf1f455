"""The scripts behind the docs: results_table.py --markdown (docs/results.md) and readme_figure.py
(the README's picture), on real runs of the pipeline in temporary stores."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest
from PIL import Image

from advlab import naming
from advlab.config import CONF_DIR, PROJECT_ROOT


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, PROJECT_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_results_table_covers_every_experiment_file() -> None:
    names = _script("results_table").default_experiments()
    assert names == sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
    assert "quickstart" in names


def test_results_table_names_the_machine_and_the_commit() -> None:
    module = _script("results_table")
    assert re.fullmatch(r".+, \d+ cores", module.machine())
    assert re.match(r"[0-9a-f]{7,}|unknown", module.commit())


@pytest.mark.slow
def test_results_table_markdown_heads_its_table_with_provenance(
    pipeline_store, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", pipeline_store.uri)
    monkeypatch.setattr("sys.argv", ["results_table.py", "--markdown", "sweep"])
    _script("results_table").main(["sweep"], as_markdown=True)
    lines = capsys.readouterr().out.splitlines()
    assert re.match(
        r"Read back from MLflow on \d{4}-\d\d-\d\d \d\d:\d\d UTC on .+, \d+ cores, ", lines[0]
    )
    assert lines[0].endswith("by `.venv/bin/python scripts/results_table.py --markdown sweep`.")
    assert "#### sweep" in lines
    runs = len(pipeline_store.sweep) + len(pipeline_store.extra_seeds)
    (facts,) = [line for line in lines if line.startswith("Runs: ")]
    assert facts.startswith(f"Runs: {runs} finished, ") and "device cpu" in facts
    table = [line for line in lines if line.startswith("| sweep |")]
    assert len(table) == len(pipeline_store.sweep_settings)  # one row per setting
    assert any(line.startswith("| experiment | settings | n seeds |") for line in lines)


@pytest.mark.slow
def test_readme_figure_draws_the_newest_quickstart_run(make_cfg, tmp_path: Path) -> None:
    from advlab.pipeline import run

    cfg = make_cfg("report.enabled=false", "tracking.experiment=quickstart")
    run(cfg)
    module = _script("readme_figure")
    uri = str(cfg.tracking.uri)
    run_dir = module.newest_run(uri)
    assert run_dir is not None and (Path(run_dir) / naming.MODEL_ARTIFACT).is_file()
    out = module.draw(run_dir, uri, eps=16, n=2, out=tmp_path / "examples.png")
    with Image.open(out) as image:
        width, height = image.size
    assert width > height / 2 and out.stat().st_size < 100 * 1024  # 2 rows of 3 tiles, small


def test_readme_figure_finds_no_run_in_an_empty_store(fresh_store: Path) -> None:
    assert _script("readme_figure").newest_run(f"sqlite:///{fresh_store}") is None
