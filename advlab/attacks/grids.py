"""Adversarial-example grids: clean image | amplified perturbation | adversarial image, per example.

Composed with Pillow rather than matplotlib: a grid is 3n upscaled images and some text, and
matplotlib spent 0.5-0.7 s per 8-row grid on axes, layout and text it does not need here (Pillow:
0.06-0.08 s), which made the grids a fifth of a short evaluation's time. The text uses the
DejaVu Sans font that matplotlib ships, so it looks the same on every machine.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

TILE_PX = 160  # images are upscaled (nearest neighbour) to at least this size
GAP_PX = 24  # between columns, so long titles can spill over a tile's width
MARGIN_PX = 12
FONT_PX = 12
LINE_PX = 15
BLACK, CRIMSON, WHITE = (0, 0, 0), (220, 20, 60), (255, 255, 255)


@cache
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        import matplotlib

        ttf = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        return ImageFont.truetype(str(ttf), size)
    except (ImportError, OSError):  # no matplotlib font: Pillow's own
        return ImageFont.load_default(size)


def _to_uint8(image: np.ndarray, scale: int) -> Image.Image:
    """(C, H, W) float in [0, 1] -> a greyscale or RGB image upscaled ``scale`` times."""
    pixels = np.rint(np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0) * 255).astype(np.uint8)
    pixels = pixels.repeat(scale, axis=1).repeat(scale, axis=2)
    if pixels.shape[0] == 1:
        return Image.fromarray(pixels[0]).convert("RGB")
    return Image.fromarray(np.ascontiguousarray(np.transpose(pixels, (1, 2, 0))))


def perturbation_scale(delta: np.ndarray) -> float:
    """Amplification that maps the largest |delta| to 0.5, so ``0.5 + scale * delta`` fills [0, 1].

    Returns 1.0 for an all-zero perturbation (nothing to amplify).
    """
    largest = float(np.abs(delta).max()) if np.size(delta) else 0.0
    return 0.5 / largest if largest > 0 else 1.0


def _centred_lines(
    draw: ImageDraw.ImageDraw, centre_x: int, top: int, lines: Sequence[str], colour: tuple
) -> None:
    font = _font(FONT_PX)
    for k, line in enumerate(lines):
        width = draw.textlength(line, font=font)
        draw.text((centre_x - width / 2, top + k * LINE_PX), line, fill=colour, font=font)


def save_grid(
    path: Path,
    clean: np.ndarray,
    adversarial: np.ndarray,
    labels: np.ndarray,
    clean_pred: np.ndarray,
    clean_conf: np.ndarray,
    adv_pred: np.ndarray,
    adv_conf: np.ndarray,
    class_names: Sequence[str],
    title: str,
) -> Path:
    """Write a PNG grid with one row per example and three columns.

    ``clean``, ``adversarial``: float (n, C, H, W) in [0, 1] (C = 1 or 3); ``labels``,
    ``clean_pred``, ``adv_pred``: int (n,); ``clean_conf``, ``adv_conf``: softmax probability of the
    *predicted* class (n,). The middle column shows ``0.5 + s * (adv - clean)`` with one
    amplification ``s`` for the whole grid, stated in its title together with the largest |delta|
    in 1/255 units. A fooled example's adversarial title is crimson.
    """
    clean = np.asarray(clean, dtype=np.float32)
    adversarial = np.asarray(adversarial, dtype=np.float32)
    n, _, height, width = clean.shape
    delta = adversarial - clean
    scale = perturbation_scale(delta)
    largest = float(np.abs(delta).max()) * 255 if delta.size else 0.0

    upscale = max(1, -(-TILE_PX // max(height, width)))  # ceil: never shrink below the tile
    tile_w, tile_h = width * upscale, height * upscale
    header = 2 * LINE_PX + MARGIN_PX
    row_h = 2 * LINE_PX + 4 + tile_h + MARGIN_PX
    canvas = Image.new(
        "RGB",
        (3 * tile_w + 2 * GAP_PX + 2 * MARGIN_PX, MARGIN_PX + header + max(n, 1) * row_h),
        WHITE,
    )
    draw = ImageDraw.Draw(canvas)
    _centred_lines(
        draw,
        canvas.width // 2,
        MARGIN_PX,
        [title, f"perturbation amplified x{scale:.1f} (max |delta| = {largest:.2f}/255)"],
        BLACK,
    )
    for i in range(n):
        true = class_names[int(labels[i])]
        fooled = int(adv_pred[i]) != int(labels[i])
        cells = (
            (
                clean[i],
                [
                    f"clean  true: {true}",
                    f"pred: {class_names[int(clean_pred[i])]} ({clean_conf[i]:.0%})",
                ],
                BLACK,
            ),
            (0.5 + scale * delta[i], [f"perturbation x{scale:.1f}", "(0.5 = no change)"], BLACK),
            (
                adversarial[i],
                [
                    f"adversarial  true: {true}",
                    f"pred: {class_names[int(adv_pred[i])]} ({adv_conf[i]:.0%})",
                ],
                CRIMSON if fooled else BLACK,
            ),
        )
        top = MARGIN_PX + header + i * row_h
        for j, (image, lines, colour) in enumerate(cells):
            left = MARGIN_PX + j * (tile_w + GAP_PX)
            _centred_lines(draw, left + tile_w // 2, top, lines, colour)
            image_top = top + 2 * LINE_PX + 4
            canvas.paste(_to_uint8(image, upscale), (left, image_top))
            draw.rectangle(
                (left - 1, image_top - 1, left + tile_w, image_top + tile_h), outline=BLACK
            )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    canvas.save(tmp, format="PNG")
    os.replace(tmp, path)  # a reader never sees half a PNG
    return path
