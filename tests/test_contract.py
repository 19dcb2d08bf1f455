"""The recorded contract has one home: advlab/naming.py.

Every artifact path, run-directory file, ``advlab.*`` tag and metric name a run writes or a
reader reads is defined there; a string literal spelling one anywhere else under ``advlab/`` or
``scripts/`` is a second copy that can drift (as the per-epoch metric list once did). This test
parses every module and fails on each such literal, naming file, line and the constant to use.
Docstrings are prose and exempt; so are log and error messages that merely mention a name
inside a longer sentence (only whole-string matches and name-building fragments count).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from advlab import naming
from advlab.config import PROJECT_ROOT

SCANNED = ("advlab", "scripts")
HOME = PROJECT_ROOT / "advlab" / "naming.py"
# Values too generic to be recognised as recorded names when spelled alone: directory names that
# are also config groups or words ("model", "config", "results", "report"), "verdict" (a field of
# several JSON payloads), and the learning rate "lr", which is also an optimizer key.
GENERIC = {
    naming.CONFIG_DIR,
    naming.CONFIG_FILE,
    naming.HYDRA_DIR,
    naming.RESULTS_DIR,
    naming.GRIDS_DIR,
    naming.MODEL_DIR,
    naming.MODEL_FILE,
    naming.CHECKPOINTS_DIR,
    naming.LR,
    naming.MARGIN,
    naming.VERDICT_KEY,  # also a JSON field of the audit, the verdict and report rows
    naming.REPORT_ARTIFACT_DIR,  # also the config node `report`
    naming.ADVERSARIAL_DIR,  # also a config node and a word
}
# Fragments that build a recorded name by hand (f"robust_acc/{attack}/...", "results/x.json").
BUILDING = re.compile(
    r"^(robust_acc|asr|escalation|audit|certified_acc)/|^advlab\.(check|sanity)\.|"
    r"^(results|config|model|grids)/[\w./-]+$"
)


def _recorded_names() -> dict[str, str]:
    """value -> constant name of every recorded name naming.py defines."""
    out = {
        value: name
        for name, value in vars(naming).items()
        if name.isupper() and isinstance(value, str) and value not in GENERIC
    }
    out.update({old: "LEGACY_METRICS" for old in naming.LEGACY_METRICS})
    return out


def _module_names() -> set[str]:
    """Dotted names of advlab's modules: ``"advlab.audit"`` is a module as well as a tag."""
    root = PROJECT_ROOT / "advlab"
    names = set()
    for path in root.rglob("*.py"):
        parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
        names.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def _stray_literals(path: Path, names: dict[str, str], modules: set[str]) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    skip = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        is_text = isinstance(node, ast.Constant) and isinstance(node.value, str)
        if not is_text or id(node) in skip:
            continue
        value = node.value
        where = f"{path.relative_to(PROJECT_ROOT)}:{node.lineno}: {value!r}"
        if value in names and value not in modules:
            found.append(f"{where} is naming.{names[value]}")
        elif BUILDING.search(value):
            found.append(f"{where} builds a recorded name: use advlab.naming")
    return sorted(found, key=lambda line: int(line.split(":")[1]))


def test_no_recorded_name_is_spelled_outside_the_contract() -> None:
    names, modules = _recorded_names(), _module_names()
    stray = []
    for folder in SCANNED:
        for path in sorted((PROJECT_ROOT / folder).rglob("*.py")):
            if path != HOME:
                stray += _stray_literals(path, names, modules)
    assert not stray, "recorded names outside advlab/naming.py:\n" + "\n".join(stray)


def test_the_scan_recognises_a_stray_name(tmp_path: Path) -> None:
    # The scanner itself must be able to fail: a copy of the old per-epoch list is caught.
    module = PROJECT_ROOT / "advlab" / "_contract_probe.py"
    probe = tmp_path / "probe.py"
    probe.write_text(
        '"""doc: results/verdict.json is fine here."""\n'
        'METRICS = ("train_loss", "val_robust_acc")\n'
        'PATH = "results/verdict.json"\n'
        'def key(a, e):\n    return f"robust_acc/{a}/eps_{e}"\n'
    )
    module.write_bytes(probe.read_bytes())
    try:
        stray = _stray_literals(module, _recorded_names(), _module_names())
    finally:
        module.unlink()
    assert [line.split(": ", 1)[1] for line in stray] == [
        "'train_loss' is naming.TRAIN_LOSS",
        "'val_robust_acc' is naming.LEGACY_METRICS",
        "'results/verdict.json' is naming.VERDICT_JSON",
        "'robust_acc/' builds a recorded name: use advlab.naming",
    ]
