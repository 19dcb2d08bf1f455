"""A run's per-epoch metrics, written to MLflow in the background and at most every
``EPOCH_WRITE_INTERVAL_S`` seconds.

One database write per epoch cost a course CNN fit with 0.7 s epochs 3-5% of its time on 2
cores (`python -m benchmarks.run_all --only train`, "without MLflow" row); epochs that end sooner
after the last write wait for the next one, or for :meth:`EpochWriter.flush` when the run ends.
Every write refreshes the run's heartbeat (:mod:`advlab.tracking.liveness`).
"""

from __future__ import annotations

import time
from typing import Any

from advlab.tracking.liveness import heartbeat

# An epoch reaches MLflow at most this many seconds after it ends, or when the run ends.
EPOCH_WRITE_INTERVAL_S = 5.0


def heartbeat_tags() -> list:
    """The heartbeat as MLflow ``RunTag`` entities, for a ``log_batch``."""
    from mlflow.entities import RunTag

    return [RunTag(k, v) for k, v in heartbeat().items()]


class EpochWriter:
    """Holds epoch metrics (MLflow ``Metric`` entities) and queues them with MLflow's
    asynchronous ``log_batch``; ``pending`` are the queued writes, awaited by :meth:`flush`."""

    def __init__(self) -> None:
        self.pending: list[Any] = []
        self._held: list[Any] = []
        self._last_write = time.monotonic()

    def add(self, client: Any, run_id: str, metrics: list) -> None:
        """Hold ``metrics``; write everything held once the interval since the last write is up."""
        self._held.extend(metrics)
        if time.monotonic() - self._last_write >= EPOCH_WRITE_INTERVAL_S:
            self.write(client, run_id)

    def write(self, client: Any, run_id: str) -> None:
        """Queue one background write of what is held (none when nothing is)."""
        held, self._held = self._held, []
        self._last_write = time.monotonic()
        if held:
            operation = client.log_batch(
                run_id, metrics=held, tags=heartbeat_tags(), synchronous=False
            )
            self.pending.append(operation)

    def flush(self, client: Any, run_id: str) -> None:
        """Write what is held, then wait for every queued write (raises the first error, e.g. a
        store that went away)."""
        self.write(client, run_id)
        pending, self.pending = self.pending, []
        for operation in pending:
            if operation is not None:
                operation.wait()
