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
from advlab.validate import check_leaderboard, validate_config

DOCUMENTS = [
    PROJECT_ROOT / "README.md",
    *sorted((PROJECT_ROOT / "docs").glob("*.md")),
    *sorted((CONF_DIR / "experiment").glob("*.yaml")),
]
COMMAND = re.compile(
    r"python -m advlab(?:\.report|\.search|\.leaderboard)?(?=[\s`'\"]|$)(?P<args>[^`\n]*)"
)
FLAGS = {"-m", "--multirun", "--cfg", "job", "--help"}
TEMPLATES = ("NAME",)  # +experiment=NAME in prose; "data.root=..." stays (a string value)
RUN_ID = "0123456789abcdef0123456789abcdef"  # stands for the docs' <run id>
SHAPES = ("+experiment=NAME", "key=value")  # the shape of a command in prose, not one to run


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
                if any(shape in args for shape in SHAPES):
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
    if "advlab.leaderboard" in where:  # it trains nothing: only its own keys are checked
        check_leaderboard(cfg.leaderboard)
        return
    if refused:
        with pytest.raises(ConfigError):
            validate_config(cfg)
    else:
        validate_config(cfg)


# ------------------------------------------------------------------------ the pages themselves
# The pages this suite holds to the writing rules: README and every docs page except the
# generated reference (its length is the schema's; tests/test_config_reference.py checks it).
OTHER_OWNERS = {"config.md"}
PAGES = [
    PROJECT_ROOT / "README.md",
    *(p for p in sorted((PROJECT_ROOT / "docs").glob("*.md")) if p.name not in OTHER_OWNERS),
]
WORD_LIMITS = {"README.md": 1200}
PAGE_WORD_LIMIT = 2000
# Words that speak of how the project was made rather than of what it does.
OFF_TOPIC = re.compile(r"session|this tree|machines? [AB]\b|issue [0-9#]", re.IGNORECASE)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
BARE_COMMAND = re.compile(r"(?<![/\w.])python -m advlab|(?<![/\w.])python scripts/")
ACTIVATE = "source .venv/bin/activate"
PAGE_IDS = [str(p.relative_to(PROJECT_ROOT)) for p in PAGES]


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces -> '-'."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)  # no code blocks
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, flags=re.M)}


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_page_stays_short(page) -> None:
    words = len(page.read_text().split())  # what `wc -w` counts
    assert words <= WORD_LIMITS.get(page.name, PAGE_WORD_LIMIT), f"{page.name}: {words} words"


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_page_speaks_of_advlab_only(page) -> None:
    found = [
        f"line {n}: {m.group(0)!r}"
        for n, line in enumerate(page.read_text().splitlines(), start=1)
        for m in OFF_TOPIC.finditer(line)
    ]
    assert not found, f"{page.name}: {found}"


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_page_links_and_pictures_resolve(page) -> None:
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+://|mailto:", target):
            continue  # the web is not checked offline
        file_part, _, anchor = target.partition("#")
        linked = (page.parent / file_part).resolve() if file_part else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            broken.append(f"{target}: no heading with that anchor")
    assert not broken, f"{page.name}: {broken}"


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_page_says_how_its_bare_commands_run(page) -> None:
    """`python -m advlab` runs from a fresh clone only inside the venv `make run` made: a page
    showing it without `.venv/bin/` says once to activate that venv."""
    text = page.read_text()
    if BARE_COMMAND.search(text):
        assert ACTIVATE in text, f"{page.name}: bare `python` commands but no `{ACTIVATE}`"


def test_readme_picture_is_committed_small() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    pictures = re.findall(r"!\[[^\]]*\]\(([^)\s]+\.png)\)", readme)
    assert pictures, "README shows no picture"
    for picture in pictures:
        size = (PROJECT_ROOT / picture).stat().st_size
        assert size < 100 * 1024, f"{picture}: {size} bytes"


SCRIPT = re.compile(r"(?<![\w/.])(scripts/[\w/.-]+\.(?:py|sh))")
MAKE_TARGET = re.compile(r"(?:^|`)make ([a-z][a-z-]*)", flags=re.M)  # commands, not prose


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_page_names_scripts_and_make_targets_that_exist(page) -> None:
    text = page.read_text()
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, flags=re.M))
    missing = [s for s in SCRIPT.findall(text) if not (PROJECT_ROOT / s).is_file()]
    missing += [f"make {t}" for t in MAKE_TARGET.findall(text) if t not in targets]
    assert not missing, f"{page.name}: {sorted(set(missing))}"
