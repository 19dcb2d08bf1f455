"""Export of adversarial sets (``eval.save_adversarial``): one .npz per attack x eps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from advlab import naming
from advlab.attacks.outcome import Clean, Outcome
from advlab.fileio import atomic_path


def save_adversarial(
    out_dir: Path,
    name: str,
    eps: float,
    x_adv: torch.Tensor,
    out: Outcome,
    labels: np.ndarray,
    clean: Clean,
    indices: np.ndarray,
) -> Path:
    """adversarial/<attack>_eps_<e>.npz: float32 images in [0, 1] plus what reusing them needs."""
    path = out_dir / naming.ADVERSARIAL_DIR / f"{name}_eps_{naming.format_eps(eps)}.npz"
    # np.savez appends .npz to a name without it, so the temporary file keeps that ending.
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(
            tmp,
            x_adv=x_adv.detach().cpu().numpy().astype(np.float32),  # (N, C, H, W), [0, 1]
            labels=labels,
            clean_pred=clean.pred,
            adv_pred=out.pred,
            attacked=clean.correct,  # points not attacked keep their clean image
            test_index=indices,  # rows of the test split
            eps=np.float64(eps),  # 1/255 units
        )
    return path
