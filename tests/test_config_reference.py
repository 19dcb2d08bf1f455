"""docs/config.md is the reference of every config key, generated from the schemas: never stale."""

from __future__ import annotations

import importlib.util
import re

import pytest
from omegaconf import DictConfig

from advlab.config import PROJECT_ROOT
from tests.conftest import compose_config

SCRIPT = PROJECT_ROOT / "scripts" / "config_reference.py"
DOC = PROJECT_ROOT / "docs" / "config.md"


@pytest.fixture(scope="module")
def reference():
    spec = importlib.util.spec_from_file_location("config_reference", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _documented(text: str) -> set[str]:
    """Full key paths of the page: ``## `node` `` (or ``## `group=option` ``) + ``| `key` |``."""
    keys, node = set(), ""
    for line in text.splitlines():
        if line.startswith("## "):
            sub = re.search(r"\(`([\w.]+)`\)", line)
            head = re.match(r"## `([\w.]+)(?:=\w+)?`", line)
            node = sub.group(1) if sub else (head.group(1) if head else "")
        elif m := re.match(r"\| `(\w+)` \|", line):
            keys.add(f"{node}.{m.group(1)}" if node else m.group(1))
    return keys


def _leaves(cfg: DictConfig, prefix: str = "") -> set[str]:
    out = set()
    for key in cfg:
        child = cfg._get_node(key)
        path = f"{prefix}.{key}" if prefix else str(key)
        out |= _leaves(child, path) if isinstance(child, DictConfig) else {path}
    return out


def test_docs_config_md_is_generated_from_the_current_schemas(reference) -> None:
    text, missing = reference.render()
    assert not missing, f"schema fields without a comment saying what they mean: {missing}"
    assert DOC.read_text() == text, "docs/config.md is stale: run scripts/config_reference.py"


@pytest.mark.parametrize("overrides", [[], ["data=gender", "model=vgg_small", "optimizer=sgd"]])
def test_every_key_of_the_composed_config_is_documented(overrides: list[str]) -> None:
    documented = _documented(DOC.read_text())
    missing = sorted(_leaves(compose_config(overrides)) - documented)
    assert not missing, f"keys missing from docs/config.md: {missing}"


def test_bounds_are_read_from_the_checks(reference) -> None:
    bounds = dict(reference.bounds())
    assert bounds["train.epochs"] == ">= 1"
    assert bounds["model.dropout"] == "in [0, 1)"
    assert bounds["attacks.*.steps"] == ">= 1"  # from a loop over attack keys
    text = DOC.read_text()
    assert "| `p_init` | float | `0.8` |  | in (0, 1] |" in text
