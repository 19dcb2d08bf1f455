"""The cluster in a box (scripts/cluster/box.py) as a fixture, and the opt-in of these tests.

They need root, SLURM, munge and PostgreSQL, and start daemons: `make test-cluster` installs what
is missing and runs them with ``-m cluster``. Under plain ``pytest`` / `make test` (testpaths
include tests/) they are skipped, so the main suite keeps its time and needs nothing installed.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from scripts.cluster.box import ClusterBox, sigterm_interrupts

OPT_IN = "cluster"  # the -m expression `make test-cluster` passes


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("markexpr") == OPT_IN:
        return
    skip = pytest.mark.skip(reason="cluster tests start daemons: run them with make test-cluster")
    for item in items:
        if item.get_closest_marker("cluster"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def box() -> Iterator[ClusterBox]:
    """One-node SLURM + munge + PostgreSQL + ``mlflow server`` on it, stopped whatever happens
    (a failure, Ctrl-C, or SIGTERM to pytest)."""
    previous = sigterm_interrupts()
    try:
        with ClusterBox() as started:
            yield started
    finally:
        signal.signal(signal.SIGTERM, previous)
