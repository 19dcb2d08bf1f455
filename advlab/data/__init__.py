"""Datasets: one module per family (gender, cifar10, mnist, folder) + the shared uint8 dataset.

:func:`load_data` is the only entry point the pipeline needs: it calls the loader named by
``cfg.data.loader``, applies ``data.limit_train`` / ``data.limit_test``, carves the validation split
with the seed and computes the normalisation statistics on the training split.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from hydra.utils import get_method
from omegaconf import DictConfig

from advlab.data.base import (
    DataSplits,
    ImageSet,
    RawData,
    batches,
    channel_stats,
    check_class_names,
    empty_like,
    split_rng,
    stratified_holdout,
    to_float,
)
from advlab.errors import ConfigError, DataError
from advlab.validate import check_data

__all__ = ["DataSplits", "ImageSet", "RawData", "batches", "load_data", "to_float"]

log = logging.getLogger(__name__)

# independent random streams per purpose, all derived from cfg.seed
_LIMIT_TRAIN, _LIMIT_TEST, _VAL = 1, 2, 3


def _limit(data: ImageSet, limit: int | None, seed: int, purpose: int) -> ImageSet:
    """A seeded random ``limit`` images (seeded shuffle, then the first ``limit``)."""
    if limit is None or limit >= len(data):
        return data
    keep = split_rng(seed, purpose).permutation(len(data))[:limit]
    # sorted: same set of images, read in memory order
    return data.subset(np.sort(keep))


def _carve_val(train: ImageSet, fraction: float, seed: int) -> tuple[ImageSet, ImageSet]:
    """Split a stratified, seeded ``fraction`` of ``train`` off as the validation split.

    The rest is compacted in place inside the train array (no second full-size copy: 100k
    48x48 images stay under the memory budget); the train images keep their original order.
    """
    if fraction <= 0 or len(train) < 2:
        return train, empty_like(train.images)
    val_idx = stratified_holdout(train.labels, fraction, split_rng(seed, _VAL))
    if len(val_idx) >= len(train):
        raise DataError(
            f"data.val_fraction={fraction} leaves no training images out of {len(train)}"
        )
    val = train.subset(val_idx)
    mask = np.ones(len(train), dtype=bool)
    mask[val_idx] = False
    keep = np.flatnonzero(mask)
    images, labels = train.images, train.labels
    if not images.flags.writeable or not labels.flags.writeable:
        return ImageSet(images[keep], labels[keep]), val
    # keep is ascending and keep[j] >= j, so rows read later are never overwritten earlier
    chunk = 4096
    for start in range(0, len(keep), chunk):
        sel = keep[start : start + chunk]
        images[start : start + len(sel)] = images[sel]
        labels[start : start + len(sel)] = labels[sel]
    return ImageSet(images[: len(keep)], labels[: len(keep)]), val


def load_data(cfg_data: DictConfig, *, seed: int, cache_dir: Path) -> DataSplits:
    """Read the dataset named by ``cfg_data`` and return its train/val/test splits.

    Steps: check the config (:func:`advlab.validate.check_data`, the pipeline's own check, so a
    Python caller gets the same refusals), call ``cfg_data.loader``
    (``load(cfg_data, *, seed, cache_dir) -> RawData``), keep a seeded ``limit_train`` /
    ``limit_test`` subset, carve the stratified seeded validation split (``val_fraction``) from
    the training data, and compute the per-channel mean/std (pixel units in [0, 1]) on the
    resulting train split. Images stay uint8.
    """
    check_data(cfg_data)
    try:
        loader = get_method(str(cfg_data.loader))
    except Exception as err:  # hydra wraps import errors in several types
        raise ConfigError(f"data.loader={cfg_data.loader} cannot be imported: {err}") from err
    raw = loader(cfg_data, seed=seed, cache_dir=Path(cache_dir))
    train_full, test, class_names = RawData(*raw)
    where = f"data={cfg_data.get('name', cfg_data.loader)}"
    class_names = check_class_names(class_names, where)
    if train_full.shape != test.shape:
        raise DataError(
            f"{where}: train images are {train_full.shape} but test images are {test.shape} "
            f"(C, H, W)"
        )
    for split_name, split in (("train", train_full), ("test", test)):
        if len(split) == 0:
            raise DataError(f"{where}: the {split_name} split is empty")
        lo, hi = int(split.labels.min()), int(split.labels.max())
        if lo < 0 or hi >= len(class_names):
            raise DataError(
                f"{where}: {split_name} labels span {lo}..{hi} but there are "
                f"{len(class_names)} class names"
            )

    train_full = _limit(train_full, cfg_data.limit_train, seed, _LIMIT_TRAIN)
    test = _limit(test, cfg_data.limit_test, seed, _LIMIT_TEST)
    train, val = _carve_val(train_full, float(cfg_data.val_fraction), seed)
    mean, std = channel_stats(train.images)
    splits = DataSplits(
        name=str(cfg_data.get("name", "data")),
        train=train,
        val=val,
        test=test,
        class_names=class_names,
        mean=mean,
        std=std,
        augment=cfg_data.get("augment"),
    )
    log.info(
        "data=%s: %d train, %d val, %d test images of %s, %d classes",
        splits.name,
        len(train),
        len(val),
        len(test),
        "x".join(map(str, train.shape)),
        splits.num_classes,
    )
    return splits
