"""Atomic file writes: a reader (or a run resumed after SIGKILL) sees the old file or the new one.

Every file advlab writes that another process may read while it is written (checkpoints, models,
results tables, grids, downloads, reports) goes through :func:`atomic_path`: the content is written
to a temporary file in the same folder, flushed to disk, then moved over the target with
``os.replace`` (atomic on POSIX within one filesystem). This module imports nothing heavy.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path, *, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it over ``path``, else delete it.

    ``suffix`` is the temporary file's ending, for writers that infer a format from the name
    (``np.savez`` appends ``.npz`` unless the name already ends with it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    tmp.chmod(0o644)  # mkstemp's 0600 would hide results and reports from the rest of a lab
    try:
        yield tmp
        with open(tmp, "rb+") as written:  # the bytes reach the disk before the rename does
            os.fsync(written.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; return ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; return ``path``."""
    return atomic_write_bytes(path, text.encode("utf-8"))
