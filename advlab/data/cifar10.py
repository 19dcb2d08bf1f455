"""CIFAR-10 from the official python archive (``data=cifar10``).

Looks under ``data.root`` (default: ``<cache_dir>/cifar10``) for an extracted
``cifar-10-batches-py/`` folder, else for ``cifar-10-python.tar.gz`` (read in place, nothing
extracted to disk). When neither is there and ``data.download`` is true, the archive is downloaded
from ``data.url`` to a temporary file in the same folder, its MD5 is checked against ``data.md5``,
and only then is it renamed into place, so an interrupted download never leaves a half file under
the real name.

The batches are Python-2 pickles. They are read with a restricted unpickler that resolves only the
globals a numpy array needs (array reconstruction and dtype); anything else, such as ``os.system``,
is refused before it can run.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import logging
import pickle
import posixpath
import tarfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from advlab.data.base import ImageSet, RawData, check_class_names, data_root
from advlab.errors import DataError
from advlab.fileio import atomic_path

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]

log = logging.getLogger(__name__)

ARCHIVE_NAME = "cifar-10-python.tar.gz"
FOLDER_NAME = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
NEEDED = (*TRAIN_BATCHES, TEST_BATCH, META)
SIDE = 32
PIXELS = 3 * SIDE * SIDE  # 3072: one image, channel-planar R, G, B
MAX_MEMBER_BYTES = 256 * 2**20  # a real batch is 31 MB; refuse anything absurd before reading it


# --------------------------------------------------------------------------- safe unpickling


def _latin1_encode(text: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
    # Python 3 writes bytes in protocol-2 pickles as _codecs.encode(text, "latin1"); allow only that
    # codec (others, e.g. zlib_codec, would let a pickle run decompressors).
    if str(encoding).lower().replace("_", "-") not in ("latin1", "latin-1", "iso-8859-1"):
        raise pickle.UnpicklingError(f"codec {encoding!r} is not allowed")
    return codecs.encode(text, "latin1", errors)


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
    ("builtins", "bytes"): bytes,
    ("__builtin__", "bytes"): bytes,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals needed for numpy arrays, dtypes and bytes."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing global {module}.{name} (only numpy arrays are allowed)"
            ) from None


def restricted_loads(payload: bytes) -> Any:
    """Unpickle ``payload`` (Python-2 byte strings stay bytes) allowing only numpy array globals.

    Raises pickle.UnpicklingError for any other global, before calling it.
    """
    return RestrictedUnpickler(io.BytesIO(payload), encoding="bytes").load()


# --------------------------------------------------------------------------------- reading


def _field(batch: dict, key: str) -> Any:
    if key.encode() in batch:
        return batch[key.encode()]
    return batch.get(key)


def _parse_batch(obj: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 3, 32, 32), labels int64 (N,)) from one unpickled batch dict."""
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a pickled dict, found {type(obj).__name__}")
    data, labels = _field(obj, "data"), _field(obj, "labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise DataError(f"{where}: 'data' is not a uint8 (N, {PIXELS}) array")
    if data.shape[1] != PIXELS:
        raise DataError(f"{where}: 'data' has {data.shape[1]} values per image, expected {PIXELS}")
    if labels is None:
        raise DataError(f"{where}: no 'labels' entry")
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(labels) != len(data):
        raise DataError(f"{where}: {len(data)} images but {len(labels)} labels")
    return data.reshape(-1, 3, SIDE, SIDE), labels


def _parse_meta(obj: Any, where: str) -> list[str]:
    names = _field(obj, "label_names") if isinstance(obj, dict) else None
    if not isinstance(names, list):
        raise DataError(f"{where}: no 'label_names' list")
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]


def _unpickle(payload: bytes, where: str) -> Any:
    try:
        return restricted_loads(payload)
    except pickle.UnpicklingError as err:
        raise DataError(f"{where}: unsafe or corrupt pickle refused ({err})") from err
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as err:
        raise DataError(f"{where}: corrupt pickle ({type(err).__name__}: {err})") from err


def _members_from_folder(folder: Path) -> dict[str, bytes]:
    out = {}
    for name in NEEDED:
        path = folder / name
        if path.stat().st_size > MAX_MEMBER_BYTES:
            raise DataError(
                f"{path}: {path.stat().st_size} bytes is too large for a CIFAR-10 batch"
            )
        out[name] = path.read_bytes()
    return out


def _members_from_archive(archive: Path) -> dict[str, bytes]:
    """The needed batch files' bytes, read in one streaming pass over the .tar.gz."""
    out: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:  # streaming: never seek back in the gzip stream
                parts = posixpath.normpath(member.name).split("/")
                if len(parts) < 2 or parts[-2] != FOLDER_NAME or parts[-1] not in NEEDED:
                    continue
                if not member.isfile():
                    continue
                if member.size > MAX_MEMBER_BYTES:
                    raise DataError(
                        f"{archive}: member {member.name} is too large ({member.size} B)"
                    )
                handle = tar.extractfile(member)
                if handle is not None:
                    out[parts[-1]] = handle.read()
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DataError(f"{archive}: cannot read the archive ({err})") from err
    missing = [n for n in NEEDED if n not in out]
    if missing:
        raise DataError(f"{archive}: missing {FOLDER_NAME}/{', '.join(missing)}")
    return out


def read_members(members: dict[str, bytes], where: str) -> RawData:
    """Decode the batch files (name -> pickled bytes) into train, test and class names."""
    train_parts = [
        _parse_batch(_unpickle(members[n], f"{where}:{n}"), f"{where}:{n}") for n in TRAIN_BATCHES
    ]
    test_images, test_labels = _parse_batch(
        _unpickle(members[TEST_BATCH], f"{where}:{TEST_BATCH}"), f"{where}:{TEST_BATCH}"
    )
    names = check_class_names(
        _parse_meta(_unpickle(members[META], f"{where}:{META}"), where), where
    )
    train = ImageSet(
        np.concatenate([p[0] for p in train_parts]), np.concatenate([p[1] for p in train_parts])
    )
    test = ImageSet(np.array(test_images, copy=True), test_labels)
    for split_name, split in (("train", train), ("test", test)):
        if split.labels.min() < 0 or split.labels.max() >= len(names):
            raise DataError(f"{where}: {split_name} labels outside 0..{len(names) - 1}")
    return RawData(train, test, names)


# -------------------------------------------------------------------------------- download


def _how_to_fix(url: str, md5: str, root: Path) -> str:
    return (
        f"download {ARCHIVE_NAME} (MD5 {md5}) from {url} and put it in {root} "
        f"(or set data.root to the folder that holds it)"
    )


def download(url: str, dest: Path, md5: str, *, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` atomically: temp file in the same folder, MD5 check, rename.

    Raises DataError (one line: what to download and where to put it) when offline, on an HTTP
    error or on a checksum mismatch; no partial file is left behind.
    """
    root = dest.parent
    digest = hashlib.md5(usedforsecurity=False)
    log.info("downloading %s to %s", url, dest)
    try:
        with atomic_path(dest, suffix=".part") as tmp:
            with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
                while block := response.read(1 << 20):
                    digest.update(block)
                    out.write(block)
            got = digest.hexdigest()
            if got != md5.lower():  # raised inside atomic_path: the partial file is deleted
                raise DataError(
                    f"{url}: MD5 {got} does not match data.md5={md5}; {_how_to_fix(url, md5, root)}"
                )
    except DataError:
        raise
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", None) or err
        raise DataError(
            f"CIFAR-10 is not in {root} and downloading {url} failed ({reason}); "
            f"{_how_to_fix(url, md5, root)}"
        ) from err
    log.info("downloaded %s (MD5 %s verified)", dest, md5)
    return dest


# ------------------------------------------------------------------------------------ load


def load(cfg_data: DictConfig, *, seed: int, cache_dir: Path) -> RawData:
    """CIFAR-10 train (50,000) and test (10,000) sets, 3 x 32 x 32 uint8, 10 classes.

    ``seed`` is unused: CIFAR-10 has an official train/test split.
    """
    del seed
    root = data_root(cfg_data, default=Path(cache_dir) / "cifar10")
    folder = root / FOLDER_NAME
    archive = root / ARCHIVE_NAME
    url, md5 = str(cfg_data.url), str(cfg_data.md5)  # defaults: the official archive (schema)
    if folder.is_dir() and all((folder / n).is_file() for n in NEEDED):
        log.info("cifar10: reading %s", folder)
        return read_members(_members_from_folder(folder), str(folder))
    if not archive.is_file():
        if folder.is_dir():
            missing = [n for n in NEEDED if not (folder / n).is_file()]
            raise DataError(f"{folder}: incomplete, missing {', '.join(missing)}")
        if not cfg_data.download:
            raise DataError(
                f"CIFAR-10 not found in {root} and data.download=false: "
                f"{_how_to_fix(url, md5, root)}"
            )
        download(url, archive, md5)
    log.info("cifar10: reading %s", archive)
    return read_members(_members_from_archive(archive), str(archive))
