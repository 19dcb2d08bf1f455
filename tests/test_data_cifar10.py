"""CIFAR-10: archive and folder layouts, atomic verified download, the restricted unpickler."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from advlab.data import load_data
from advlab.data.cifar10 import ARCHIVE_NAME, FOLDER_NAME, restricted_loads
from advlab.errors import DataError
from tests.conftest import CIFAR10_ARCHIVE, CIFAR10_SHARED_MD5, compose_config, require

PER_BATCH = 6
NAMES = [
    b"airplane",
    b"automobile",
    b"bird",
    b"cat",
    b"deer",
    b"dog",
    b"frog",
    b"horse",
    b"ship",
    b"truck",
]  # noqa: E501


def _batch(index: int) -> dict:
    """A batch dict like the official ones: byte-string keys, (N, 3072) uint8, list of labels.

    Pixel values encode (batch, image, channel) so the tests can check the channel-planar layout.
    """
    data = np.zeros((PER_BATCH, 3, 1024), dtype=np.uint8)
    for i in range(PER_BATCH):
        for c in range(3):
            data[i, c] = index * 30 + i * 3 + c
    labels = [(index + i) % 10 for i in range(PER_BATCH)]
    return {
        b"batch_label": f"batch {index}".encode(),
        b"labels": labels,
        b"data": data.reshape(PER_BATCH, 3072),
        b"filenames": [f"img_{index}_{i}.png".encode() for i in range(PER_BATCH)],
    }


def make_members(malicious: object | None = None) -> dict[str, bytes]:
    """The seven pickled files, protocol 2 as in the official archive."""
    members = {f"data_batch_{i}": pickle.dumps(_batch(i), protocol=2) for i in range(1, 6)}
    members["test_batch"] = pickle.dumps(_batch(0), protocol=2)
    meta = {b"num_cases_per_batch": PER_BATCH, b"label_names": NAMES, b"num_vis": 3072}
    members["batches.meta"] = pickle.dumps(meta, protocol=2)
    if malicious is not None:
        members["data_batch_3"] = pickle.dumps(malicious, protocol=2)
    return members


def make_archive(path: Path, malicious: object | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in make_members(malicious).items():
            info = tarfile.TarInfo(f"{FOLDER_NAME}/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


def _cfg(root: Path, *extra: str):
    return compose_config(["data=cifar10", f"data.root={root}", *extra]).data


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _check_tiny(splits) -> None:
    assert len(splits.train) + len(splits.val) == 5 * PER_BATCH and len(splits.test) == PER_BATCH
    assert splits.channels == 3 and splits.image_size == (32, 32) and splits.num_classes == 10
    assert splits.class_names[:3] == ["airplane", "automobile", "bird"]


class Exploit:
    """Unpickling this would run a shell command if the unpickler let it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# -------------------------------------------------------------------------------------- tests


def test_reads_the_archive_in_place_channel_planar(tmp_path: Path) -> None:
    make_archive(tmp_path / ARCHIVE_NAME)
    cfg = _cfg(tmp_path, "data.val_fraction=0", "data.download=false")
    splits = load_data(cfg, seed=0, cache_dir=tmp_path)
    _check_tiny(splits)
    images = splits.train.images
    # batch 1 image 2: channel c holds 1*30 + 2*3 + c everywhere (R, G, B planes)
    assert [int(images[2, c, 5, 7]) for c in range(3)] == [36, 37, 38]
    assert [int(images[PER_BATCH + 1, c, 31, 0]) for c in range(3)] == [63, 64, 65]  # batch 2
    assert splits.train.labels[:PER_BATCH].tolist() == [1, 2, 3, 4, 5, 6]
    assert not (tmp_path / FOLDER_NAME).exists()  # nothing extracted to disk


def test_reads_an_extracted_folder(tmp_path: Path) -> None:
    folder = tmp_path / FOLDER_NAME
    folder.mkdir()
    for name, payload in make_members().items():
        (folder / name).write_bytes(payload)
    _check_tiny(load_data(_cfg(tmp_path, "data.download=false"), seed=0, cache_dir=tmp_path))
    (folder / "test_batch").unlink()
    with pytest.raises(DataError, match="test_batch"):
        load_data(_cfg(tmp_path, "data.download=false"), seed=0, cache_dir=tmp_path)


def test_downloads_from_a_file_url_verifies_md5_and_renames(tmp_path: Path) -> None:
    source = make_archive(tmp_path / "mirror" / "c10.tar.gz")
    root = tmp_path / "cache" / "cifar10"
    cfg = _cfg(root, f"data.url={source.as_uri()}", f"data.md5={_md5(source)}")
    _check_tiny(load_data(cfg, seed=0, cache_dir=tmp_path))
    assert sorted(p.name for p in root.iterdir()) == [ARCHIVE_NAME]  # no temp file left
    assert _md5(root / ARCHIVE_NAME) == _md5(source)


def test_default_root_is_under_the_cache_dir(tmp_path: Path) -> None:
    source = make_archive(tmp_path / "mirror" / "c10.tar.gz")
    cfg = compose_config(
        [
            "data=cifar10",
            "data.root=null",
            f"data.url={source.as_uri()}",
            f"data.md5={_md5(source)}",
        ]
    ).data
    load_data(cfg, seed=0, cache_dir=tmp_path / "cache")
    assert (tmp_path / "cache" / "cifar10" / ARCHIVE_NAME).is_file()


def test_checksum_mismatch_leaves_no_file_and_says_what_to_do(tmp_path: Path) -> None:
    source = make_archive(tmp_path / "mirror" / "c10.tar.gz")
    root = tmp_path / "cifar10"
    cfg = _cfg(root, f"data.url={source.as_uri()}", "data.md5=0123456789abcdef0123456789abcdef")
    with pytest.raises(DataError) as info:
        load_data(cfg, seed=0, cache_dir=tmp_path)
    message = str(info.value)
    assert "MD5" in message and str(root) in message and ARCHIVE_NAME in message
    assert "\n" not in message
    assert list(root.iterdir()) == []  # the temp file is gone, nothing under the real name


def test_offline_or_download_disabled_is_one_clear_line(tmp_path: Path) -> None:
    url = (tmp_path / "nowhere.tar.gz").as_uri()
    with pytest.raises(DataError) as info:
        load_data(_cfg(tmp_path / "c", f"data.url={url}"), seed=0, cache_dir=tmp_path)
    message = str(info.value)
    assert "failed" in message and url in message and f"put it in {tmp_path / 'c'}" in message
    assert not any((tmp_path / "c").iterdir())
    with pytest.raises(DataError, match="data.download=false: download cifar-10-python.tar.gz"):
        load_data(_cfg(tmp_path / "d", "data.download=false"), seed=0, cache_dir=tmp_path)


def test_restricted_unpickler_refuses_os_system_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps(Exploit(marker), protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="posix.system|os.system|nt.system"):
        restricted_loads(payload)
    assert not marker.exists()
    pickle.loads(payload)  # the same bytes with the stock unpickler really do run the command
    assert marker.exists()


def test_malicious_batch_in_an_archive_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    make_archive(tmp_path / "root" / ARCHIVE_NAME, malicious=Exploit(marker))
    with pytest.raises(DataError, match="data_batch_3: unsafe or corrupt pickle refused"):
        load_data(_cfg(tmp_path / "root"), seed=0, cache_dir=tmp_path)
    assert not marker.exists()


def test_unpickler_allows_arrays_but_not_other_globals_or_codecs() -> None:
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    out = restricted_loads(pickle.dumps({b"data": arr, b"e": b""}, protocol=2))
    assert np.array_equal(out[b"data"], arr) and out[b"e"] == b""
    with pytest.raises(pickle.UnpicklingError):
        restricted_loads(pickle.dumps(eval, protocol=2))
    with pytest.raises(pickle.UnpicklingError):
        restricted_loads(pickle.dumps(np.float64(1.0), protocol=2))  # numpy scalar: not needed
    evil_codec = b"\x80\x02c_codecs\nencode\nq\x00X\x01\x00\x00\x00xX\n\x00\x00\x00zlib_codec\x86R."
    with pytest.raises(pickle.UnpicklingError, match="codec"):
        restricted_loads(evil_codec)


def test_real_archive_via_file_url_download(tmp_path: Path) -> None:
    """The shared 170 MB archive: downloaded through file:// with its own MD5, then read."""
    source = require(CIFAR10_ARCHIVE)
    root = tmp_path / "cifar10"
    cfg = _cfg(root, f"data.url={source.as_uri()}", f"data.md5={CIFAR10_SHARED_MD5}")
    splits = load_data(cfg, seed=0, cache_dir=tmp_path)
    assert (root / ARCHIVE_NAME).stat().st_size == source.stat().st_size
    assert (len(splits.train), len(splits.val), len(splits.test)) == (45000, 5000, 10000)
    assert splits.class_names == [n.decode() for n in NAMES]
    assert np.bincount(splits.test.labels).tolist() == [1000] * 10
    # the well-known CIFAR-10 channel means (R, G, B) ~ (0.491, 0.482, 0.447)
    assert splits.mean == pytest.approx((0.491, 0.482, 0.447), abs=0.01)
