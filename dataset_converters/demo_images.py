"""Procedural product images for the synthetic demo dataset.

Each image is a topic-coloured background with the topic's shape drawn on it.
Colours, position, size, rotation and pixel noise are jittered per image, and
some images get a small distractor blob, so a vision model has to learn the
topic (colour + shape) rather than memorise individual pictures.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageDraw

SHAPES = (
    "circle", "square", "triangle", "star", "stripes",
    "ring", "cross", "diamond", "hexagon", "checker",
)

JPEG_QUALITY = 90


def _jitter(rng: np.random.Generator, rgb, sd: float) -> tuple[int, int, int]:
    vals = np.clip(np.asarray(rgb, dtype=float) + rng.normal(0.0, sd, 3), 0, 255)
    return tuple(int(v) for v in vals)


def _polygon(cx, cy, radii, angle0) -> list[tuple[float, float]]:
    n = len(radii)
    return [
        (cx + r * math.cos(angle0 + 2 * math.pi * i / n),
         cy + r * math.sin(angle0 + 2 * math.pi * i / n))
        for i, r in enumerate(radii)
    ]


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, size: int, cx: float, cy: float,
                r: float, angle: float, colour, rng: np.random.Generator) -> None:
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.polygon(_polygon(cx, cy, [r * 1.2] * 4, angle), fill=colour)
    elif shape == "triangle":
        draw.polygon(_polygon(cx, cy, [r * 1.2] * 3, angle), fill=colour)
    elif shape == "star":
        draw.polygon(_polygon(cx, cy, [r * 1.2, r * 0.5] * 5, angle), fill=colour)
    elif shape == "diamond":
        draw.polygon(_polygon(cx, cy, [r * 1.25, r * 0.7] * 2, angle), fill=colour)
    elif shape == "hexagon":
        draw.polygon(_polygon(cx, cy, [r * 1.1] * 6, angle), fill=colour)
    elif shape == "ring":
        draw.ellipse(box, outline=colour, width=max(2, int(r * 0.35)))
    elif shape == "cross":
        w = r * 0.35
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=colour)
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=colour)
    elif shape == "stripes":
        # Stripes span the whole image; period and phase vary per image.
        period = max(6, int(size * rng.uniform(0.12, 0.22)))
        phase = int(rng.integers(0, period))
        horizontal = rng.random() < 0.5
        for p in range(-period + phase, size + period, period):
            if horizontal:
                draw.rectangle((0, p, size, p + period // 2), fill=colour)
            else:
                draw.rectangle((p, 0, p + period // 2, size), fill=colour)
    elif shape == "checker":
        cell = max(4, int(r * 0.5))
        for i in range(-2, 3):
            for j in range(-2, 3):
                if (i + j) % 2 == 0:
                    x0, y0 = cx + i * cell - cell / 2, cy + j * cell - cell / 2
                    draw.rectangle((x0, y0, x0 + cell, y0 + cell), fill=colour)
    else:  # pragma: no cover - SHAPES is closed
        raise ValueError(f"unknown shape {shape!r}")


def draw_item_image(rng: np.random.Generator, size: int, background, foreground,
                    shape: str) -> bytes:
    """Return JPEG bytes of one ``size`` x ``size`` product image."""
    img = Image.new("RGB", (size, size), _jitter(rng, background, 14.0))
    draw = ImageDraw.Draw(img)
    r = size * rng.uniform(0.18, 0.34)
    cx = rng.uniform(r, size - r)
    cy = rng.uniform(r, size - r)
    _draw_shape(draw, shape, size, cx, cy, r, rng.uniform(0, 2 * math.pi),
                _jitter(rng, foreground, 22.0), rng)
    if rng.random() < 0.4:
        dr = size * rng.uniform(0.05, 0.1)
        dx, dy = rng.uniform(dr, size - dr, 2)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw.ellipse((dx - dr, dy - dr, dx + dr, dy + dr), fill=colour)
    arr = np.asarray(img, dtype=np.float32)
    arr = arr * rng.uniform(0.88, 1.12) + rng.normal(0.0, 8.0, arr.shape)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()
