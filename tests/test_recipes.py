"""docs/recipes.md: every Python block runs, in order, in one namespace, as a reader pastes them."""

from __future__ import annotations

import re

import pytest

from advlab import naming
from advlab.config import PROJECT_ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RECIPES = PROJECT_ROOT / "docs" / "recipes.md"


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", RECIPES.read_text(), flags=re.M | re.S)


def test_the_recipes_page_has_its_python_blocks() -> None:
    assert len(python_blocks()) >= 3


def test_every_python_recipe_runs_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADVLAB_NO_PROGRESS", "1")
    namespace: dict[str, object] = {"__name__": "recipes"}
    for number, block in enumerate(python_blocks(), start=1):
        code = compile(block, f"{RECIPES.name}, Python block {number}", "exec")
        exec(code, namespace)  # noqa: S102 - the documented code is what is under test
    assert 0.0 <= namespace["metrics"][naming.CLEAN_ACC] <= 1.0
    assert (namespace["work"] / "runs.csv").is_file()
