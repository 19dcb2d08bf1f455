"""Adversarial-example grids: clean image | amplified perturbation | adversarial image, per example.

Composed with Pillow rather than matplotlib: a grid is 3n upscaled images and some text, and
matplotlib spent 0.5-0.7 s per 8-row grid on axes, layout and text it does not need here (Pillow:
0.06-0.08 s), which made the grids a fifth of a short evaluation's time. The text uses the
DejaVu Sans font that matplotlib ships, so it looks the same on every machine.

:func:`grid_rows` picks the examples shown; :func:`attack_grid` draws one attack's grid from an
evaluation; :func:`save_grid` is the drawing itself (arrays in, a PNG out).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from advlab import naming
from advlab.attacks.outcome import Outcome
from advlab.attacks.runner import AttackRunner
from advlab.fileio import atomic_path

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


@dataclass(frozen=True)
class _Layout:
    """Pixel geometry of a grid of ``n`` rows of (C, H, W) images."""

    upscale: int
    tile_w: int
    tile_h: int
    header: int
    row_h: int
    size: tuple[int, int]

    @classmethod
    def of(cls, n: int, height: int, width: int) -> _Layout:
        upscale = max(1, -(-TILE_PX // max(height, width)))  # ceil: never shrink below the tile
        tile_w, tile_h = width * upscale, height * upscale
        header = 2 * LINE_PX + MARGIN_PX
        row_h = 2 * LINE_PX + 4 + tile_h + MARGIN_PX
        size = (3 * tile_w + 2 * GAP_PX + 2 * MARGIN_PX, MARGIN_PX + header + max(n, 1) * row_h)
        return cls(upscale, tile_w, tile_h, header, row_h, size)


def _draw_row(
    canvas: Image.Image,
    draw: ImageDraw.ImageDraw,
    layout: _Layout,
    i: int,
    cells: Sequence[tuple[np.ndarray, list[str], tuple]],
) -> None:
    """Row ``i``: each cell's two title lines above its framed, upscaled image."""
    top = MARGIN_PX + layout.header + i * layout.row_h
    for j, (image, lines, colour) in enumerate(cells):
        left = MARGIN_PX + j * (layout.tile_w + GAP_PX)
        _centred_lines(draw, left + layout.tile_w // 2, top, lines, colour)
        image_top = top + 2 * LINE_PX + 4
        canvas.paste(_to_uint8(image, layout.upscale), (left, image_top))
        draw.rectangle(
            (left - 1, image_top - 1, left + layout.tile_w, image_top + layout.tile_h),
            outline=BLACK,
        )


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
    largest = float(np.abs(delta).max()) * naming.PIXEL_LEVELS if delta.size else 0.0

    layout = _Layout.of(n, height, width)
    canvas = Image.new("RGB", layout.size, WHITE)
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
        clean_lines = [
            f"clean  true: {true}",
            f"pred: {class_names[int(clean_pred[i])]} ({clean_conf[i]:.0%})",
        ]
        adv_lines = [
            f"adversarial  true: {true}",
            f"pred: {class_names[int(adv_pred[i])]} ({adv_conf[i]:.0%})",
        ]
        cells = (
            (clean[i], clean_lines, BLACK),
            (0.5 + scale * delta[i], [f"perturbation x{scale:.1f}", "(0.5 = no change)"], BLACK),
            (adversarial[i], adv_lines, CRIMSON if fooled else BLACK),
        )
        _draw_row(canvas, draw, layout, i, cells)
    with atomic_path(path) as tmp:  # a reader never sees half a PNG
        canvas.save(tmp, format="PNG")
    return Path(path)


def grid_rows(clean_correct: np.ndarray, labels: np.ndarray, grid_n: int) -> np.ndarray:
    """Rows shown in the grids: clean-correct points first (the ones an attack can flip), taken
    round-robin over the classes so that a test set stored class by class still shows them all."""
    picked: list[int] = []
    for pool in (clean_correct, ~clean_correct):
        queues = [np.flatnonzero(pool & (labels == c)) for c in np.unique(labels)]
        depth = 0
        while len(picked) < grid_n and any(depth < len(q) for q in queues):
            picked.extend(int(q[depth]) for q in queues if depth < len(q))
            depth += 1
    return np.asarray(picked[:grid_n], dtype=np.int64)


def attack_grid(
    out_dir: Path,
    runner: AttackRunner,
    name: str,
    eps: float,
    rows: np.ndarray,
    adv: torch.Tensor,
    out: Outcome,
    class_names: Sequence[str],
) -> Path:
    """grids/<attack>_eps_<e>.png under ``out_dir``: the evaluated points ``rows`` of ``runner``
    and their adversarial images ``adv`` (len(rows), C, H, W) with outcome ``out``."""
    clean = runner.clean
    sel = torch.from_numpy(rows).to(runner.x.device)
    with torch.no_grad():
        clean_conf = torch.softmax(clean.logits[sel], dim=1).max(dim=1).values.cpu().numpy()
        # Confidence of the adversarial prediction: recomputed from the images shown (n rows).
        adv_logits = runner.model(adv).float()
        adv_conf = torch.softmax(adv_logits, dim=1).max(dim=1).values.cpu().numpy()
    return save_grid(
        out_dir / naming.GRIDS_DIR / f"{name}_eps_{naming.format_eps(eps)}.png",
        runner.x[sel].cpu().numpy(),
        adv.cpu().numpy(),
        runner.y[sel].cpu().numpy(),
        clean.pred[rows],
        clean_conf,
        out.pred,
        adv_conf,
        class_names,
        f"{name} at eps {naming.format_eps(eps)}/255",
    )
