"""Layers shared by the model zoo. :class:`Normalize` is the first layer of every advlab model."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from advlab.errors import ConfigError


class Normalize(nn.Module):
    """Per-channel standardisation inside the model: ``(x - mean) / std``.

    Input: float (N, C, H, W) pixels in [0, 1]. ``mean``/``std`` are per channel, in the same pixel
    units (computed on the training split). Keeping this inside the model means attacks perturb and
    clip raw [0, 1] pixels, so eps is measured in pixel units, never in normalised units.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean_t = torch.as_tensor([float(m) for m in mean], dtype=torch.float32)
        std_t = torch.as_tensor([float(s) for s in std], dtype=torch.float32)
        if mean_t.numel() != std_t.numel() or mean_t.numel() == 0:
            raise ConfigError(
                f"Normalize: mean {list(mean)} and std {list(std)} must be non-empty and the same "
                "length (one value per channel)"
            )
        if bool((std_t <= 0).any()):
            raise ConfigError(f"Normalize: std {list(std)} must be > 0 for every channel")
        # Buffers (not parameters): saved with the state dict, moved by .to(), never trained.
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1))
        self.register_buffer("std", std_t.view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        mean = ", ".join(f"{v:.4f}" for v in self.mean.flatten().tolist())
        std = ", ".join(f"{v:.4f}" for v in self.std.flatten().tolist())
        return f"mean=({mean}), std=({std})"


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv + batch norm, identity (or 1x1 projection) shortcut.

    Shapes: (N, in_ch, H, W) -> (N, out_ch, H / stride, W / stride).
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut: nn.Module
        if stride != 1 or in_ch != out_ch:
            # Projection shortcut ("option B" of He et al.) when the shape changes.
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))
