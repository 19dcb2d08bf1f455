"""The shared dataset: ImageSet, batching, augmentation, limits, validation split, statistics."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from advlab.config import PROJECT_ROOT, AugmentConf
from advlab.data import DataSplits, ImageSet, RawData, batches, load_data, to_float
from advlab.data.augment import augment_batch, random_rotation, random_shift
from advlab.data.base import channel_stats, data_root
from advlab.errors import ConfigError, DataError

N_TRAIN, N_TEST = 200, 60


def _ids(n: int, offset: int = 0, shape: tuple[int, int, int] = (1, 6, 6)) -> ImageSet:
    """Images whose first two pixels encode a unique id, labels = id % 4 (balanced classes)."""
    rng = np.random.default_rng(offset)
    images = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    ids = np.arange(offset, offset + n)
    images[:, 0, 0, 0] = ids % 256
    images[:, 0, 0, 1] = ids // 256
    return ImageSet(images, ids % 4)


def image_ids(data: ImageSet) -> np.ndarray:
    pixels = data.images[:, 0, 0, :2].astype(np.int64)
    return pixels[:, 0] + 256 * pixels[:, 1]


def fake_loader(cfg_data, *, seed: int, cache_dir: Path) -> RawData:
    """A loader named by ``data.loader`` in these tests (ids 0..199 train, 1000.. test)."""
    return RawData(_ids(N_TRAIN), _ids(N_TEST, offset=1000), ["a", "b", "c", "d"])


def bad_label_loader(cfg_data, *, seed: int, cache_dir: Path) -> RawData:
    train = _ids(10)
    return RawData(ImageSet(train.images, train.labels + 3), _ids(4, 1000), ["a", "b", "c", "d"])


def _cfg(**overrides):
    base = {
        "name": "fake",
        "loader": "tests.test_data_base.fake_loader",
        "root": None,
        "val_fraction": 0.2,
        "limit_train": None,
        "limit_test": None,
        "augment": {"hflip": False, "shift": 0, "rotation": 0.0},
    }
    base.update(overrides)
    return OmegaConf.create(base)


# ------------------------------------------------------------------------------------ ImageSet


def test_imageset_rejects_float_images_and_mismatched_labels() -> None:
    with pytest.raises(DataError, match="uint8"):
        ImageSet(np.zeros((2, 1, 4, 4), dtype=np.float32), np.zeros(2, dtype=np.int64))
    with pytest.raises(DataError, match="2 images but 3 labels"):
        ImageSet(np.zeros((2, 1, 4, 4), dtype=np.uint8), np.zeros(3, dtype=np.int64))


def test_imageset_labels_become_int64_and_images_contiguous() -> None:
    images = np.zeros((3, 4, 4, 1), dtype=np.uint8).transpose(0, 3, 1, 2)  # not C-contiguous
    data = ImageSet(images, np.array([0, 1, 1], dtype=np.int32))
    assert data.labels.dtype == np.int64
    assert data.images.flags.c_contiguous
    assert data.shape == (1, 4, 4) and len(data) == 3


# ------------------------------------------------------------------------------------ batching


def test_to_float_maps_uint8_to_unit_interval() -> None:
    x = torch.tensor([0, 51, 255], dtype=torch.uint8)
    out = to_float(x)
    assert out.dtype == torch.float32
    assert torch.allclose(out, torch.tensor([0.0, 0.2, 1.0]))


def test_batches_cover_every_image_once_with_matching_labels() -> None:
    data = _ids(103)
    seen = []
    sizes = []
    for x, y in batches(data, 16, shuffle=True, generator=torch.Generator().manual_seed(0)):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape[1:] == (1, 6, 6)
        ids = (x[:, 0, 0, 0] * 255).round().long() + 256 * (x[:, 0, 0, 1] * 255).round().long()
        assert torch.equal(y, ids % 4)  # each label travels with its image
        seen.extend(ids.tolist())
        sizes.append(len(y))
    assert sorted(seen) == list(range(103))
    assert sizes == [16] * 6 + [7]


def test_batches_order_is_seeded_and_unshuffled_is_in_order() -> None:
    data = _ids(50)

    def order(seed: int | None, shuffle: bool) -> list[int]:
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        return [int(v) for _, y in batches(data, 7, shuffle=shuffle, generator=gen) for v in y]

    assert order(1, True) == order(1, True)
    assert order(1, True) != order(2, True)
    assert order(None, False) == (np.arange(50) % 4).tolist()


def test_augmentation_is_seeded_and_only_applied_when_asked() -> None:
    data = _ids(32)
    aug = AugmentConf(hflip=True, shift=2, rotation=10.0)

    def first(augment, seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return next(batches(data, 32, shuffle=False, generator=gen, augment=augment))[0]

    plain = to_float(torch.from_numpy(data.images))
    assert torch.equal(first(None, 0), plain)
    assert torch.equal(first(AugmentConf(), 0), plain)  # all options off = identity
    a, b, c = first(aug, 0), first(aug, 0), first(aug, 1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a, plain)
    assert a.min() >= 0 and a.max() <= 1


def test_hflip_flips_about_half_of_the_images_exactly() -> None:
    x = torch.rand(400, 1, 5, 7)
    out = augment_batch(x, AugmentConf(hflip=True), generator=torch.Generator().manual_seed(0))
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert bool((flipped | kept).all())
    assert 150 < int(flipped.sum()) < 250


def test_shift_is_an_integer_translation_with_zero_fill() -> None:
    s = 2
    x = torch.rand(64, 3, 8, 9) + 0.1  # strictly positive so zero fill is visible
    out = random_shift(x, s, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x, (s, s, s, s))
    offsets = set()
    for i in range(len(x)):
        matches = [
            (dy, dx)
            for dy in range(2 * s + 1)
            for dx in range(2 * s + 1)
            if torch.equal(out[i], padded[i, :, dy : dy + 8, dx : dx + 9])
        ]
        assert len(matches) == 1, f"image {i} is not a shifted copy"
        offsets.add(matches[0])
    assert len(offsets) > 5  # offsets really vary per image


def test_rotation_is_rigid_and_bounded_by_the_angle() -> None:
    # one bright 2x2 spot off centre: its distance to the centre survives any rotation
    x = torch.zeros(16, 1, 32, 32)
    x[:, :, 6:8, 20:22] = 1.0
    out = random_rotation(x, 30.0, torch.Generator().manual_seed(0))
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    c = 15.5

    def polar(img: torch.Tensor) -> tuple[float, float]:
        w = img[0] / img[0].sum()
        cy, cx = float((w * ys).sum()) - c, float((w * xs).sum()) - c
        return math.hypot(cy, cx), math.degrees(math.atan2(cy, cx))

    r0, a0 = polar(x[0])
    angles = []
    for img in out:
        r, a = polar(img)
        assert abs(r - r0) < 0.3
        assert abs(a - a0) <= 30.5
        angles.append(a - a0)
    assert max(angles) - min(angles) > 10  # angles vary per image


def test_tiny_rotation_is_close_to_identity() -> None:
    x = torch.rand(4, 3, 16, 16)
    out = random_rotation(x, 1e-4, torch.Generator().manual_seed(0))
    assert torch.allclose(out, x, atol=1e-3)


# ------------------------------------------------------------------------------------ load_data


def test_load_data_carves_a_disjoint_stratified_seeded_val_split() -> None:
    data = load_data(_cfg(), seed=0, cache_dir=Path("unused"))
    train_ids, val_ids = image_ids(data.train), image_ids(data.val)
    assert len(val_ids) == 40 and len(train_ids) == 160
    assert set(train_ids).isdisjoint(val_ids)
    assert sorted(np.concatenate([train_ids, val_ids])) == list(range(N_TRAIN))
    assert np.bincount(data.val.labels).tolist() == [10, 10, 10, 10]  # stratified
    assert np.array_equal(data.train.labels, train_ids % 4)  # labels stay with their images
    again = load_data(_cfg(), seed=0, cache_dir=Path("unused"))
    other = load_data(_cfg(), seed=1, cache_dir=Path("unused"))
    assert np.array_equal(image_ids(again.val), val_ids)
    assert not np.array_equal(image_ids(other.val), val_ids)
    assert sorted(image_ids(data.test)) == list(range(1000, 1000 + N_TEST))  # test untouched


def test_limits_keep_a_seeded_random_subset() -> None:
    cfg = _cfg(limit_train=50, limit_test=10, val_fraction=0.0)
    data = load_data(cfg, seed=3, cache_dir=Path("unused"))
    ids = image_ids(data.train)
    assert len(ids) == 50 and len(data.val) == 0 and len(data.test) == 10
    assert len(set(ids)) == 50 and ids.max() > 60  # a random subset, not the first 50
    assert np.array_equal(image_ids(load_data(cfg, seed=3, cache_dir=Path("x")).train), ids)
    assert not np.array_equal(image_ids(load_data(cfg, seed=4, cache_dir=Path("x")).train), ids)
    big = load_data(_cfg(limit_train=10_000), seed=0, cache_dir=Path("x"))
    assert len(big.train) + len(big.val) == N_TRAIN


def test_stats_are_computed_on_the_train_split_only() -> None:
    data = load_data(_cfg(), seed=0, cache_dir=Path("unused"))
    pixels = data.train.images.astype(np.float64) / 255
    assert data.mean == pytest.approx(pixels.mean(axis=(0, 2, 3)).tolist(), abs=1e-12)
    assert data.std == pytest.approx(pixels.std(axis=(0, 2, 3)).tolist(), abs=1e-9)
    everything = np.concatenate([data.train.images, data.test.images]).astype(np.float64) / 255
    assert data.mean[0] != pytest.approx(float(everything.mean()), abs=1e-9)


def test_channel_stats_are_exact_per_channel_and_across_chunks() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(37, 3, 5, 4), dtype=np.uint8)
    images[:, 2] = images[:, 2] // 4  # a darker third channel
    mean, std = channel_stats(images, chunk=8)
    ref = images.astype(np.float64) / 255
    assert mean == pytest.approx(ref.mean(axis=(0, 2, 3)).tolist(), abs=1e-12)
    assert std == pytest.approx(ref.std(axis=(0, 2, 3)).tolist(), abs=1e-9)
    _, const_std = channel_stats(np.full((3, 1, 2, 2), 7, dtype=np.uint8))
    assert const_std == (1.0,)  # never a zero std for Normalize to divide by


def test_splits_expose_shape_classes_and_facts() -> None:
    data = load_data(_cfg(), seed=0, cache_dir=Path("unused"))
    assert isinstance(data, DataSplits)
    assert data.channels == 1 and data.image_size == (6, 6) and data.num_classes == 4
    facts = data.facts()
    assert facts["n_train"] == 160 and facts["n_val"] == 40 and facts["n_test"] == N_TEST
    assert facts["image_shape"] == "1x6x6" and facts["num_classes"] == 4
    assert facts["train_frac/a"] == pytest.approx(0.25)
    assert sum(facts[f"test_frac/{c}"] for c in "abcd") == pytest.approx(1.0)
    assert facts["test_majority_acc"] == pytest.approx(15 / 60)
    assert data.augment.hflip is False


def test_bad_loader_and_bad_labels_are_one_line_errors() -> None:
    with pytest.raises(ConfigError, match="data.loader=nowhere.load"):
        load_data(_cfg(loader="nowhere.load"), seed=0, cache_dir=Path("x"))
    with pytest.raises(DataError, match="train labels span 3..6") as err:
        load_data(_cfg(loader="tests.test_data_base.bad_label_loader"), seed=0, cache_dir=Path("x"))
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="val_fraction"):
        load_data(_cfg(val_fraction=1.0), seed=0, cache_dir=Path("x"))


def test_relative_root_resolves_against_the_project_root() -> None:
    assert data_root(_cfg(root="data/x")) == (PROJECT_ROOT / "data" / "x").resolve()
    assert data_root(_cfg(root="/abs/y")) == Path("/abs/y")
    assert data_root(_cfg(root=None), default=Path("/cache/z")) == Path("/cache/z")
    with pytest.raises(ConfigError, match="data.root is required"):
        data_root(_cfg(root="???"))
