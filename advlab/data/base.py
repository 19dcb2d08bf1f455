"""The shared in-memory dataset: uint8 images, int64 labels, splits, statistics and batching.

Images stay uint8 ``(N, C, H, W)`` in memory (a quarter of float32) and become float32 in [0, 1]
one batch at a time (:func:`batches`). The pipeline never normalises: the per-channel mean/std
computed here on the training split are handed to the model, whose first layer is ``Normalize``.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from advlab.config import PROJECT_ROOT
from advlab.errors import ConfigError, DataError

log = logging.getLogger(__name__)

_CPU = torch.device("cpu")


@dataclass(frozen=True, eq=False)  # arrays: equality by identity, not elementwise
class ImageSet:
    """Images and labels of one split.

    Attributes:
        images: uint8, shape (N, C, H, W), C-contiguous; pixel values 0..255.
        labels: int64, shape (N,); class indices 0..num_classes-1.
    """

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        images = np.ascontiguousarray(self.images)
        labels = np.ascontiguousarray(self.labels)
        if images.dtype != np.uint8 or images.ndim != 4:
            raise DataError(
                f"images must be uint8 of shape (N, C, H, W), got {images.dtype} {images.shape}"
            )
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise DataError(
                f"labels must be integers of shape (N,), got {labels.dtype} {labels.shape}"
            )
        if len(labels) != len(images):
            raise DataError(f"{len(images)} images but {len(labels)} labels")
        # frozen dataclass: normalise the fields once, here, so every consumer can rely on them
        object.__setattr__(self, "images", images)
        object.__setattr__(self, "labels", labels.astype(np.int64, copy=False))

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def subset(self, index: np.ndarray | slice) -> ImageSet:
        """The images at ``index`` (a copy for integer arrays, a view for slices)."""
        return ImageSet(self.images[index], self.labels[index])


class RawData(NamedTuple):
    """What every dataset module's ``load`` returns, before limits, validation split and stats."""

    train_full: ImageSet
    test: ImageSet
    class_names: list[str]


@dataclass(eq=False)
class DataSplits:
    """Train/val/test splits plus what the model needs from the data.

    ``mean``/``std`` are per channel, in pixel units in [0, 1], computed on the train split only.
    ``augment`` is ``cfg.data.augment`` (hflip, shift, rotation), for training batches only.
    """

    name: str
    train: ImageSet
    val: ImageSet
    test: ImageSet
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: Any = None

    @property
    def channels(self) -> int:
        return self.train.shape[0]

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) in pixels."""
        return self.train.shape[1], self.train.shape[2]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def facts(self) -> dict[str, int | float | str]:
        """Dataset facts for tracking: sizes, image shape, class balance, majority baseline.

        Keys: ``n_train``, ``n_val``, ``n_test``, ``image_shape`` ("CxHxW"), ``num_classes``,
        ``train_frac/<class>`` and ``test_frac/<class>`` (shares in [0, 1]), and
        ``test_majority_acc`` (accuracy of always predicting the most frequent test class:
        the number any model must beat).
        """
        c, h, w = self.train.shape
        facts: dict[str, int | float | str] = {
            "n_train": len(self.train),
            "n_val": len(self.val),
            "n_test": len(self.test),
            "image_shape": f"{c}x{h}x{w}",
            "num_classes": self.num_classes,
        }
        for split_name, split in (("train", self.train), ("test", self.test)):
            counts = np.bincount(split.labels, minlength=self.num_classes)
            total = max(int(counts.sum()), 1)
            for name, count in zip(self.class_names, counts, strict=False):
                facts[f"{split_name}_frac/{_key_safe(name)}"] = round(float(count) / total, 6)
            if split_name == "test":
                facts["test_majority_acc"] = round(float(counts.max()) / total, 6)
        return facts


def _key_safe(name: str) -> str:
    # MLflow keys allow alphanumerics, '_', '-', '.', ' ' and '/'; a folder class name may not.
    return re.sub(r"[^0-9A-Za-z_\-. ]", "_", name)


# ------------------------------------------------------------------------------------ config


def data_root(cfg_data: DictConfig, *, default: Path | None = None) -> Path:
    """``data.root`` as an absolute path; a relative root resolves against the project root.

    Raises ConfigError when the root is unset (``???`` or null) and no ``default`` is given.
    """
    missing = OmegaConf.is_missing(cfg_data, "root") if "root" in cfg_data else True
    root = None if missing else cfg_data.get("root")
    if root is None or str(root) == "":
        if default is not None:
            return Path(default).expanduser().resolve()
        name = cfg_data.get("name", "?")
        raise ConfigError(
            f"data.root is required for data={name}: pass the folder holding the data, "
            f"e.g. data.root=/path/to/folder"
        )
    path = Path(str(root)).expanduser()
    # Hydra changes the working directory per run: relative paths mean the project, not the run.
    return path if path.is_absolute() else (PROJECT_ROOT / path).resolve()


def split_rng(seed: int, purpose: int) -> np.random.Generator:
    """An independent, reproducible numpy generator per purpose (limit, val split, ...)."""
    return np.random.default_rng([int(seed) % 2**63, purpose])


def stratified_holdout(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of a random ``fraction`` of each class (at least one overall if > 0)."""
    perm = rng.permutation(len(labels))
    held: list[np.ndarray] = []
    for cls in np.unique(labels):
        members = perm[labels[perm] == cls]
        held.append(members[: int(round(fraction * len(members)))])
    out = np.concatenate(held) if held else np.empty(0, dtype=np.int64)
    if fraction > 0 and len(out) == 0 and len(labels) > 1:
        out = perm[:1]  # a tiny dataset: still hold out something rather than silently nothing
    return np.sort(out).astype(np.int64)


# ---------------------------------------------------------------------------------- statistics


def channel_stats(
    images: np.ndarray, chunk: int = 8192
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (population) of uint8 (N, C, H, W) images, in [0, 1] units.

    Exact: a 256-bin histogram per channel, counted over chunks straight from the uint8 data (no
    float copy of the whole array: 100k x 48 x 48 would be 1.8 GB in float64); every sum below
    stays an integer under 2**53, so float64 holds it exactly.
    """
    n, c = images.shape[:2]
    if n == 0:
        raise DataError("cannot compute normalisation statistics of an empty training split")
    with warnings.catch_warnings():
        # a read-only array (memmap, unpickled) is fine: it is only read here
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        data = torch.from_numpy(np.ascontiguousarray(images))
    hist = torch.zeros(c, 256, dtype=torch.float64)
    for start in range(0, n, chunk):
        for ch in range(c):
            values = data[start : start + chunk, ch].reshape(-1)
            hist[ch] += torch.bincount(values, minlength=256).to(torch.float64)
    levels = torch.arange(256, dtype=torch.float64)
    count = hist.sum(dim=1)
    mean_t = (hist * levels).sum(dim=1) / count
    var_t = ((hist * levels**2).sum(dim=1) / count - mean_t**2).clamp_min(0.0)
    mean, var = mean_t.numpy(), var_t.numpy()
    mean_px, std_px = mean / 255.0, np.sqrt(var) / 255.0
    if (std_px == 0).any():
        # a constant channel would make Normalize divide by zero
        log.warning("a channel of the training images is constant; using std = 1 for it")
        std_px = np.where(std_px == 0, 1.0, std_px)
    return tuple(float(m) for m in mean_px), tuple(float(s) for s in std_px)


# ------------------------------------------------------------------------------------ batching


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (any shape) -> float32 in [0, 1] (divided by 255)."""
    return images.to(torch.float32).div_(255.0)


def batches(
    data: ImageSet,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None,
    augment: Any = None,
    device: torch.device = _CPU,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(images, labels)`` batches: float32 (B, C, H, W) in [0, 1] and int64 (B,).

    ``shuffle`` draws the order from ``generator`` (a CPU ``torch.Generator``); ``augment``
    (an AugmentConf-like object with ``hflip``, ``shift``, ``rotation``) is applied per batch on the
    tensor, its randomness also from ``generator``. Pass ``augment`` for training batches only.
    The last batch may be smaller than ``batch_size``.
    """
    from advlab.data.augment import augment_batch, is_active

    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    n = len(data)
    if shuffle:
        order = torch.randperm(n, generator=generator).numpy()
    else:
        order = None
    active = is_active(augment)
    pin = torch.device(device).type == "cuda"
    for start in range(0, n, batch_size):
        if order is None:
            idx: np.ndarray | slice = slice(start, start + batch_size)
        else:
            idx = order[start : start + batch_size]
        # Fancy indexing already copies; a slice is a view and is copied once, so the tensor
        # always owns writable memory without a second copy.
        take = np.array if isinstance(idx, slice) else np.asarray
        x = torch.from_numpy(take(data.images[idx]))
        y = torch.from_numpy(take(data.labels[idx]))
        if pin:  # a pinned source lets the non-blocking copy overlap GPU compute
            x, y = x.pin_memory(), y.pin_memory()
        # move uint8 (4x smaller) before converting to float
        x = to_float(x.to(device, non_blocking=True))
        y = y.to(device, non_blocking=True)
        if active:
            x = augment_batch(x, augment, generator=generator)
        yield x, y


def empty_like(images: np.ndarray) -> ImageSet:
    """An ImageSet with zero images of the same (C, H, W)."""
    return ImageSet(np.empty((0, *images.shape[1:]), dtype=np.uint8), np.empty(0, dtype=np.int64))


def check_class_names(names: Sequence[str], where: str) -> list[str]:
    """At least two distinct class names, as plain strings."""
    out = [str(n) for n in names]
    if len(out) < 2:
        raise DataError(f"{where}: need at least 2 classes, found {len(out)} ({', '.join(out)})")
    if len(set(out)) != len(out):
        raise DataError(f"{where}: class names are not unique: {out}")
    return out
