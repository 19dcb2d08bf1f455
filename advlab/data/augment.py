"""Training-time augmentation on float batches: horizontal flip, shift with zero padding, rotation.

Everything works on a whole (B, C, H, W) tensor at once (no per-image Python loop) and draws its
randomness from the ``torch.Generator`` passed in, so a seeded run augments identically every time.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from advlab.errors import ConfigError


def _opts(augment: Any) -> tuple[bool, int, float]:
    hflip = bool(getattr(augment, "hflip", False))
    shift = int(getattr(augment, "shift", 0) or 0)
    rotation = float(getattr(augment, "rotation", 0.0) or 0.0)
    if shift < 0:
        raise ConfigError(f"data.augment.shift must be >= 0 pixels, got {shift}")
    if rotation < 0:
        raise ConfigError(f"data.augment.rotation must be >= 0 degrees, got {rotation}")
    return hflip, shift, rotation


def is_active(augment: Any) -> bool:
    """True when ``augment`` asks for any transformation."""
    if augment is None:
        return False
    hflip, shift, rotation = _opts(augment)
    return hflip or shift > 0 or rotation > 0


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, generator=generator) * (high - low) + low


def random_hflip(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Flip each image left-right with probability 0.5. x: (B, C, H, W)."""
    flip = (torch.rand(x.shape[0], generator=generator) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def random_shift(
    x: torch.Tensor, max_shift: int, generator: torch.Generator | None
) -> torch.Tensor:
    """Shift each image by integer (dy, dx) in [-max_shift, max_shift] pixels, filling with zeros.

    Equivalent to zero-padding by ``max_shift`` and taking a random crop of the original size.
    """
    b, _, h, w = x.shape
    s = max_shift
    padded = F.pad(x, (s, s, s, s))
    dy = torch.randint(0, 2 * s + 1, (b,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * s + 1, (b,), generator=generator).to(x.device)
    rows = dy[:, None] + torch.arange(h, device=x.device)[None, :]  # (B, H)
    cols = dx[:, None] + torch.arange(w, device=x.device)[None, :]  # (B, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    # advanced indices around a slice put their dims first: result is (B, H, W, C)
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def random_rotation(
    x: torch.Tensor, max_degrees: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Rotate each image about its centre by an angle in [-max_degrees, max_degrees].

    Bilinear interpolation; corners that come from outside the image are zero.
    """
    b, _, h, w = x.shape
    angle = _uniform(b, -max_degrees, max_degrees, generator) * (math.pi / 180.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # affine_grid works in normalised coordinates; the h/w factors keep the rotation rigid in
    # pixel space for non-square images.
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = cos
    theta[:, 0, 1] = sin * (h / w)
    theta[:, 1, 0] = -sin * (w / h)
    theta[:, 1, 1] = cos
    theta = theta.to(device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def augment_batch(
    x: torch.Tensor, augment: Any, *, generator: torch.Generator | None
) -> torch.Tensor:
    """Apply the options of ``augment`` (hflip, shift in pixels, rotation in degrees) to a float
    batch (B, C, H, W) in [0, 1]; returns a new tensor in [0, 1] of the same shape."""
    hflip, shift, rotation = _opts(augment)
    if hflip:
        x = random_hflip(x, generator)
    if shift > 0:
        x = random_shift(x, shift, generator)
    if rotation > 0:
        x = random_rotation(x, rotation, generator).clamp_(0.0, 1.0)
    return x
