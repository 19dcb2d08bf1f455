"""``python -m advlab.leaderboard``: every run of the store ranked by its worst case at one eps.

    python -m advlab.leaderboard                                   every experiment of the store
    python -m advlab.leaderboard leaderboard.experiments=challenge leaderboard.min_clean=0.7
    python -m advlab.leaderboard tracking.uri=http://teacher:5000 leaderboard.eps=4

Keys: ``leaderboard.experiments`` (a name or a list; null = every experiment),
``leaderboard.eps`` (null = the report's headline eps), ``leaderboard.escalation``,
``leaderboard.min_clean``, ``leaderboard.top``, ``leaderboard.dir`` (absolute or relative to the
project root); the store is ``tracking.uri`` resolved as for a run, and is only read. Prints the
table and writes ``<dir>/leaderboard-<experiments>.{csv,md,pdf}``.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig

import advlab.config  # noqa: F401  (registers the structured-config schemas)
from advlab.cli import quiet_argv, run_hydra_app
from advlab.config import PROJECT_ROOT
from advlab.errors import AdvlabError

log = logging.getLogger("advlab.leaderboard")


def make_leaderboard(cfg: DictConfig) -> tuple[str, dict[str, Path]]:
    """The terminal table of the composed config's leaderboard, and the files written."""
    from advlab.leaderboard import build, output_stem, write
    from advlab.leaderboard.render import terminal
    from advlab.tracking import resolve_tracking_uri
    from advlab.validate import check_leaderboard

    board_cfg = cfg.leaderboard
    check_leaderboard(board_cfg)  # bad keys are refused before the store is read
    names = board_cfg.experiments
    experiments = None if names is None else [names] if isinstance(names, str) else list(names)
    out_dir = Path(str(board_cfg.dir)).expanduser()
    if not out_dir.is_absolute():
        out_dir = PROJECT_ROOT / out_dir  # never Hydra's per-run working directory
    board = build(
        resolve_tracking_uri(cfg.tracking, cfg.paths),
        experiments,
        eps=None if board_cfg.eps is None else float(board_cfg.eps),
        escalation=bool(board_cfg.escalation),
        min_clean=float(board_cfg.min_clean),
        top=None if board_cfg.top is None else int(board_cfg.top),
    )
    return terminal(board), write(board, out_dir, output_stem(experiments))


@hydra.main(config_path="../../conf", config_name="leaderboard_app", version_base="1.3")
def main(cfg: DictConfig) -> None:
    started = time.perf_counter()
    try:
        table, paths = make_leaderboard(cfg)
    except AdvlabError as error:
        # A user-fixable problem (unknown experiment, missing store, bad key): one line.
        log.error("%s", error)
        sys.exit(2)
    print(table, flush=True)
    log.info("written: %s", ", ".join(str(p) for p in paths.values()))
    log.info("leaderboard in %.1f s", time.perf_counter() - started)


if __name__ == "__main__":
    sys.argv = quiet_argv(sys.argv)
    run_hydra_app(main)
