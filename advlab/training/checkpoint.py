"""Training checkpoints: written atomically every epoch, loaded with ``weights_only=True``.

``run_dir/checkpoints/last.pt`` holds everything needed to continue exactly where the run stopped:
model, optimizer, scheduler, early-stopping state, the best weights so far, every RNG state
(torch CPU/CUDA, NumPy, Python, the batch-order/augmentation generator and the adversarial
generator), the epoch and the metric history. ``best.pt`` holds the best epoch's model weights and
metrics. Everything is stored as tensors or built-in types so no pickled code runs on load.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from advlab.errors import ConfigError
from advlab.models.io import atomic_torch_save

FORMAT_VERSION = 1
LAST = "last.pt"
BEST = "best.pt"


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (plus a format version) to ``path`` atomically (temp file + os.replace)."""
    atomic_torch_save({"format": FORMAT_VERSION, **state}, Path(path))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``)."""
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # corrupt, truncated, or holds objects weights_only refuses
        raise ConfigError(f"train.resume={path}: cannot read the checkpoint ({exc})") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise ConfigError(f"train.resume={path}: not an advlab training checkpoint")
    return state


def resolve_resume(resume: str | Path) -> Path:
    """``train.resume`` -> the checkpoint file: a file as given, or ``last.pt`` inside a run
    directory (``<run_dir>/checkpoints/last.pt``) or a checkpoints directory."""
    path = Path(str(resume)).expanduser()
    if path.is_file():
        return path.resolve()
    if path.is_dir():
        for candidate in (checkpoint_dir(path) / LAST, path / LAST):
            if candidate.is_file():
                return candidate.resolve()
        raise ConfigError(
            f"train.resume={resume}: no checkpoint in that directory "
            f"(looked for checkpoints/{LAST} and {LAST})"
        )
    raise ConfigError(f"train.resume={resume}: no such file or directory")


# ------------------------------------------------------------------------------------ RNG state
def rng_state(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    """Every RNG state as tensors and plain types: torch (CPU + CUDA), NumPy, Python, and the
    named ``generators``."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "name": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": int(py_version), "internal": list(py_internal), "gauss": py_gauss},
        "generators": {name: g.get_state() for name, g in generators.items()},
    }


def set_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    """Restore what :func:`rng_state` saved (generators matched by name)."""
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["name"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
    for name, g in generators.items():
        if name in state["generators"]:
            g.set_state(state["generators"][name].cpu())
