"""Every command line that README, docs/ and the experiment files show composes and validates.

A documented command that no longer composes (a renamed key, a removed option) fails here, not in
a user's terminal. Commands are composed as ``--cfg job`` would (no run starts); placeholders such
as ``data.root=/path/to/DataBases`` are plain strings, which composition accepts. A sweep (``-m``,
``key=a,b``) is composed at its first point.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from advlab.config import CONF_DIR, PROJECT_ROOT
from advlab.errors import ConfigError
from advlab.validate import validate_config

DOCUMENTS = [
    PROJECT_ROOT / "README.md",
    *sorted((PROJECT_ROOT / "docs").glob("*.md")),
    *sorted((CONF_DIR / "experiment").glob("*.yaml")),
]
COMMAND = re.compile(r"python -m advlab(?:\.report)?(?=[\s`'\"]|$)(?P<args>[^`\n]*)")
FLAGS = {"-m", "--multirun", "--cfg", "job", "--help"}
TEMPLATES = ("NAME",)  # +experiment=NAME in prose; "data.root=..." stays (a string value)
RUN_ID = "0123456789abcdef0123456789abcdef"  # stands for the docs' <run id>


def _logical_lines(text: str) -> list[str]:
    """Lines with shell continuations (a trailing backslash) joined, YAML comment marks dropped."""
    text = re.sub(r"\\\n\s*(#\s*)?", " ", text)
    return [line.lstrip("# ").strip() for line in text.splitlines()]


def documented_commands() -> list[tuple[str, str, bool]]:
    found = []
    for path in DOCUMENTS:
        for line in _logical_lines(path.read_text()):
            for match in COMMAND.finditer(line):
                args = match.group("args").split("#", 1)[0].split("(", 1)[0].strip()
                if "+experiment=NAME" in args:
                    continue
                # a documented refusal (`python -m advlab eval.eps=[0,-1]`: refused, one line)
                refused = "refused" in line[match.end() :]
                where = f"{path.relative_to(PROJECT_ROOT)}: {match.group(0).strip()}"
                found.append((where, args.replace("<run id>", RUN_ID), refused))
    return found


def _first_sweep_point(overrides: list[str]) -> list[str]:
    parsed = OverridesParser.create().parse_overrides(overrides)
    point = []
    for override in parsed:
        if override.is_sweep_override():
            first = next(iter(override.sweep_string_iterator()))
            point.append(f"{override.get_key_element()}={first}")
        else:
            point.append(override.input_line)
    return point


COMMANDS = documented_commands()


@pytest.fixture(scope="module", autouse=True)
def _hydra() -> Iterator[None]:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        yield


def test_the_docs_show_commands_of_both_apps() -> None:
    assert len(COMMANDS) > 30
    assert any("advlab.report" in where for where, _, _ in COMMANDS)


@pytest.mark.parametrize(("where", "args", "refused"), COMMANDS, ids=[c[0] for c in COMMANDS])
def test_documented_command_composes_and_validates(where: str, args: str, refused: bool) -> None:
    words = [w for w in shlex.split(args) if w not in FLAGS and not w.startswith(TEMPLATES)]
    overrides = [w for w in words if "=" in w]
    assert len(overrides) == len(words), f"{where}: not an override in {words}"
    # hydra keys (hydra/launcher=slurm, hydra.launcher.n_jobs=4) need the hydra node
    cfg = compose("config", _first_sweep_point(overrides), return_hydra_config=True)
    if "advlab.report" in where:
        return
    if refused:
        with pytest.raises(ConfigError):
            validate_config(cfg)
    else:
        validate_config(cfg)
