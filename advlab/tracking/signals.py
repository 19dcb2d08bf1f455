"""SIGTERM as an exception, so a run (or a sweep's parent run) that is terminated ends KILLED.

Python's default SIGTERM kills the process without unwinding, which would leave the MLflow run
RUNNING. While a run is open its owner makes SIGTERM raise :class:`Terminated` instead.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Terminated(KeyboardInterrupt):
    """Raised by the SIGTERM handler a :class:`~advlab.tracking.Tracker` installs, so the run ends
    KILLED.

    A ``KeyboardInterrupt`` subclass: ``except Exception`` blocks in library code do not swallow it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by signal {signal.Signals(signum).name}")
        self.signum = signum


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated(signum)


def sigterm_raises() -> Any:
    """Make SIGTERM raise :class:`Terminated`; return the handler it replaces.

    Returns None (and changes nothing) off the main thread, where Python cannot set handlers
    (e.g. joblib's threading backend).
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)


def restore_sigterm(previous: Any) -> None:
    """Put back the handler :func:`sigterm_raises` returned (None: nothing was replaced)."""
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def sigterm_deferred() -> Iterator[list[int]]:
    """Hold SIGTERM while the block runs; yield the list of signals that arrived meanwhile.

    For the moment a run is being ended: a SIGTERM (scancel, a time limit) landing inside
    ``end_run`` would abort it and leave the run RUNNING. The caller delivers the held signal
    once the run has its terminal status. Off the main thread nothing is held (and the list
    stays empty), as Python cannot set handlers there.
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)
