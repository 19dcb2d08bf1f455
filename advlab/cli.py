"""What every ``python -m advlab...`` entry point shares: composition errors as one line.

Hydra prints a composition error (a typo'd key, an unknown option, a value of the wrong type) over
four to eight lines, with a hint about stack traces. advlab promises one line naming the key and
what is wrong, exit status 2, the same as its own :class:`~advlab.errors.AdvlabError` refusals.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from hydra.errors import ConfigCompositionException, OverrideParseException
from omegaconf.errors import OmegaConfBaseException

COMPOSITION_ERRORS = (ConfigCompositionException, OverrideParseException, OmegaConfBaseException)


def one_line(error: BaseException) -> str:
    """The first line of an error and of its cause, plus the options Hydra lists, on one line.

    ``model=resnet9000`` -> ``In 'config': Could not find 'model/resnet9000'; options in 'model':
    course_cnn, lenet5, ...``; a typo'd key -> ``Could not override 'model.dropuot': Key 'dropuot'
    not in 'CourseCnnConf'``. Hydra's hints about ``+key=`` and stack traces are left out: they
    mislead for a typo, and the key is what the user needs.
    """
    parts = []
    for err in (error, error.__cause__):
        lines = [line.strip() for line in str(err or "").splitlines() if line.strip()]
        if not lines:
            continue
        head = lines[0].split(". To append", 1)[0].rstrip(".")
        options = _listed_options(lines[1:])
        parts.append(f"{head}; {options}" if options else head)
    return ": ".join(dict.fromkeys(parts)) or type(error).__name__


def _listed_options(lines: list[str]) -> str:
    """``Available options in 'model':`` and the option lines after it, as one phrase."""
    for i, line in enumerate(lines):
        if line.startswith("Available options in"):
            label = line.removeprefix("Available ").rstrip(":")
            names = []
            for name in lines[i + 1 :]:
                if name.startswith("Config search path"):
                    break
                names.append(name)
            return f"{label}: {', '.join(names)}"
    return ""


# A reader of the store (the report, the leaderboard) writes its own files only: without these,
# Hydra would leave a run directory with its .hydra/ files and a log file behind every call, even
# one refused in a second.
_NO_FILES = {
    "hydra.output_subdir": "hydra.output_subdir=null",
    "hydra.run.dir": "hydra.run.dir=.",
    "hydra/job_logging": "hydra/job_logging=stdout",
}


def quiet_argv(argv: list[str]) -> list[str]:
    """``argv`` with the overrides that keep Hydra from writing files, unless the user set them."""
    given = {arg.split("=", 1)[0].lstrip("+~") for arg in argv[1:]}
    return [*argv, *(arg for key, arg in _NO_FILES.items() if key not in given)]


HELP_FLAGS = ("--help", "-h", "--hydra-help")


@contextmanager
def one_repository_per_help() -> Iterator[None]:
    """Build Hydra's config repository once while it writes a help text.

    Hydra's help lists the options of every config group with one lookup per group and kind
    (about 120), and each lookup builds a new repository, a deep copy of every stored schema:
    that was 3.7 of the 4.2 s ``python -m advlab --help`` took. The lookups of one help read the
    same search path and overrides, so one repository per (config name, overrides) serves them
    all; the patch is undone when the help is written.
    """
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    build = ConfigLoaderImpl._parse_overrides_and_create_caching_repo
    built: dict[tuple[int, Any, tuple[str, ...]], Any] = {}

    def once(self: Any, config_name: Any, overrides: list[str]) -> Any:
        key = (id(self), config_name, tuple(overrides))
        if key not in built:
            built[key] = build(self, config_name, overrides)
        return built[key]

    ConfigLoaderImpl._parse_overrides_and_create_caching_repo = once
    try:
        yield
    finally:
        ConfigLoaderImpl._parse_overrides_and_create_caching_repo = build


def run_hydra_app(app: Callable[[], Any]) -> None:
    """Run a ``@hydra.main`` function; a composition error is one line on stderr and exit 2.

    With ``HYDRA_FULL_ERROR=1`` already set (someone debugging) Hydra's own reporting is kept.
    """
    if any(flag in sys.argv[1:] for flag in HELP_FLAGS):
        with one_repository_per_help():
            _run(app)
    else:
        _run(app)


def _run(app: Callable[[], Any]) -> None:
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        app()
        return
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra then raises instead of printing several lines
    try:
        app()
    except COMPOSITION_ERRORS as error:
        sys.stderr.write(f"advlab: error: {one_line(error)}\n")
        sys.exit(2)
