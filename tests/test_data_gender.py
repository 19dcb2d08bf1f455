"""The course's binary gender format: reading, every malformed-file error, the real files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from advlab.config import experiment_names
from advlab.data import load_data
from advlab.data.gender import read_pair
from advlab.errors import ConfigError, DataError
from tests.conftest import GENDER_DIR, compose_config, require


def write_pair(root: Path, tag: str, n: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """data_<tag>.bin (n x 2304 uint8) and gender_<tag>.bin (n x 2 float32 one-hot)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 48, 48), dtype=np.uint8)
    labels = rng.integers(0, 2, size=n)
    one_hot = np.eye(2, dtype="<f4")[labels]
    root.mkdir(parents=True, exist_ok=True)
    images.tofile(root / f"data_{tag}.bin")
    one_hot.tofile(root / f"gender_{tag}.bin")
    return images, labels


def _cfg(root: Path, train: str = "12", test: str = "t5", *extra: str):
    return compose_config(
        ["data=gender", f"data.root={root}", f"data.train={train}", f"data.test={test}", *extra]
    ).data


def _error(root: Path, *, train: str = "12", test: str = "t5") -> str:
    with pytest.raises(DataError) as info:
        read_pair(root, train)
        read_pair(root, test)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_reads_images_row_major_and_labels_from_the_one_hot_column(tmp_path: Path) -> None:
    images, labels = write_pair(tmp_path, "12", 12)
    write_pair(tmp_path, "t5", 5, seed=1)
    data = read_pair(tmp_path, "12")
    assert data.images.dtype == np.uint8 and data.images.shape == (12, 1, 48, 48)
    assert np.array_equal(data.images[:, 0], images)  # row-major 48x48, no header
    assert np.array_equal(data.labels, labels)


def test_load_data_gives_splits_with_the_configured_class_names(tmp_path: Path) -> None:
    write_pair(tmp_path, "12", 12)
    write_pair(tmp_path, "t5", 5, seed=1)
    splits = load_data(
        _cfg(tmp_path, "12", "t5", "data.val_fraction=0.25"), seed=0, cache_dir=tmp_path
    )
    assert (len(splits.train), len(splits.val), len(splits.test)) == (9, 3, 5)
    assert splits.channels == 1 and splits.image_size == (48, 48)
    assert splits.class_names == ["male", "female"]
    renamed = load_data(
        _cfg(tmp_path, "12", "t5", "data.class_names=[female,male]"), seed=0, cache_dir=tmp_path
    )
    assert renamed.class_names == ["female", "male"]


def test_missing_file_names_it_and_lists_the_tags_present(tmp_path: Path) -> None:
    write_pair(tmp_path, "12", 12)
    write_pair(tmp_path, "t5", 5)
    message = _error(tmp_path, train="100k")
    assert str(tmp_path / "data_100k.bin") in message
    assert "tags present" in message and "12, t5" in message
    (tmp_path / "gender_t5.bin").unlink()
    message = _error(tmp_path, train="12", test="t5")
    assert "gender_t5.bin" in message and "12" in message


def test_image_file_size_must_be_a_multiple_of_2304(tmp_path: Path) -> None:
    write_pair(tmp_path, "12", 12)
    with open(tmp_path / "data_12.bin", "ab") as handle:
        handle.write(b"\x00" * 100)
    message = _error(tmp_path)
    assert "data_12.bin" in message and "2304" in message


def test_label_file_size_must_be_a_multiple_of_8(tmp_path: Path) -> None:
    write_pair(tmp_path, "12", 12)
    with open(tmp_path / "gender_12.bin", "ab") as handle:
        handle.write(b"\x00" * 4)
    message = _error(tmp_path)
    assert "gender_12.bin" in message and " 8 " in message


def test_image_and_label_counts_must_agree(tmp_path: Path) -> None:
    write_pair(tmp_path, "12", 12)
    np.eye(2, dtype="<f4")[[0, 1, 0]].tofile(tmp_path / "gender_12.bin")
    message = _error(tmp_path)
    assert "gender_12.bin" in message and "3 label rows" in message and "12 images" in message


def test_label_rows_must_be_one_hot(tmp_path: Path) -> None:
    write_pair(tmp_path, "12", 12)
    labels = np.eye(2, dtype="<f4")[np.zeros(12, dtype=int)]
    labels[7] = [0.5, 0.5]  # sums to 1 but is not one-hot
    labels.tofile(tmp_path / "gender_12.bin")
    message = _error(tmp_path)
    assert "gender_12.bin" in message and "not one-hot" in message and "row 7" in message
    labels[7] = [1, 1]
    labels.tofile(tmp_path / "gender_12.bin")
    assert "row 7" in _error(tmp_path)


def test_nan_labels_are_reported(tmp_path: Path) -> None:
    write_pair(tmp_path, "12", 12)
    labels = np.eye(2, dtype="<f4")[np.zeros(12, dtype=int)]
    labels[3, 1] = np.nan
    labels.tofile(tmp_path / "gender_12.bin")
    message = _error(tmp_path)
    assert "gender_12.bin" in message and "NaN" in message and "row 3" in message


def test_empty_file_and_missing_folder_and_wrong_class_names(tmp_path: Path) -> None:
    (tmp_path / "data_0.bin").write_bytes(b"")
    (tmp_path / "gender_0.bin").write_bytes(b"")
    assert "data_0.bin" in _error(tmp_path, train="0")
    with pytest.raises(DataError, match="folder not found"):
        load_data(_cfg(tmp_path / "nope"), seed=0, cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="class_names"):
        load_data(
            _cfg(tmp_path, "12", "t5", "data.class_names=[a,b,c]"), seed=0, cache_dir=tmp_path
        )


def test_real_files_from_shared_data() -> None:
    require(GENDER_DIR / "data_5k.bin")
    small, big = read_pair(GENDER_DIR, "1k"), read_pair(GENDER_DIR, "5k")
    assert len(small) == 1000 and len(big) == 5000
    # the shared README: 1k is the first 1000 rows of 5k; about 45% male (column 0)
    assert np.array_equal(small.images, big.images[:1000])
    assert np.array_equal(small.labels, big.labels[:1000])
    assert 0.40 < float(np.mean(big.labels == 0)) < 0.50
    assert 60 < big.images.mean() < 200 and big.images.std() > 20  # real faces, not blank


def test_relative_root_is_resolved_against_the_project(tmp_path: Path) -> None:
    require(GENDER_DIR / "data_1k.bin")
    # "../shared/data/gender" is relative to the project root, wherever Hydra's cwd is
    cfg = _cfg(Path("../shared/data/gender"), "1k", "test1k", "data.limit_test=100")
    splits = load_data(cfg, seed=0, cache_dir=tmp_path)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (900, 100, 100)
    assert 0.3 < splits.mean[0] < 0.7 and 0.1 < splits.std[0] < 0.4


@pytest.mark.parametrize("experiment", experiment_names(data="gender"))
def test_the_course_folder_works_with_no_tag_overrides(tmp_path: Path, experiment: str) -> None:
    # The course ships data_1k/10k/100k.bin and data_test10k.bin: a student gives data.root only.
    for tag, n in (("1k", 10), ("10k", 40), ("test10k", 20)):
        write_pair(tmp_path, tag, n)
    cfg = compose_config([f"+experiment={experiment}", f"data.root={tmp_path}"])
    splits = load_data(cfg.data, seed=0, cache_dir=tmp_path)
    assert len(splits.train) + len(splits.val) == 40 and len(splits.test) == 20
