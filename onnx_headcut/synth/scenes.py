"""Synthetic detection scenes: a few flat shapes on textured backgrounds, boxes known exactly.

The trained sample (``samples/trained/``, made by ``scripts/train_sample.py``) learns from these
scenes and is measured on them; they also serve as calibration or held-out images when nothing
in-domain is at hand. numpy only, deterministic for a given seed.

A shape is a hard-edged mask (no anti-aliasing), so its box is the exact extent of its pixels:
``x1`` = first column, ``x2`` = last column + 1 (pixel edges, as ``[x1, y1, x2, y2]`` boxes in
Ultralytics). Shapes never touch each other, so no box is hidden behind another shape.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

#: the shape classes, in class-index order
CLASSES = ("circle", "square", "triangle", "cross", "ring")


@dataclass(frozen=True)
class Scene:
    """An HWC uint8 RGB ``image``, its ``boxes`` ``(K, 4)`` xyxy float32 pixels and ``classes`` ``(K,)`` int64."""

    image: np.ndarray
    boxes: np.ndarray
    classes: np.ndarray


def _weights(n_out: int, n_in: int) -> np.ndarray:
    """The ``(n_out, n_in)`` matrix of linear interpolation from ``n_in`` samples to ``n_out`` (ends aligned)."""
    pos = np.linspace(0, n_in - 1, n_out)
    i0 = np.minimum(pos.astype(int), n_in - 2)
    f = (pos - i0).astype(np.float32)
    m = np.zeros((n_out, n_in), np.float32)
    m[np.arange(n_out), i0] = 1 - f
    m[np.arange(n_out), i0 + 1] = f
    return m


def _upsample(grid: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear upsampling of a ``(gh, gw, c)`` grid to ``(h, w, c)`` (corners aligned)."""
    gh, gw, c = grid.shape
    rows = (_weights(h, gh) @ grid.reshape(gh, gw * c)).reshape(h, gw, c)
    return _weights(w, gw) @ rows


def background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A textured float32 ``(h, w, 3)`` background in 0–255: smooth colour noise, stripes, grain."""
    cells = int(rng.integers(2, 9))
    base = _upsample(rng.uniform(0, 255, (cells + 1, cells + 1, 3)).astype(np.float32), h, w)
    angle, period = rng.uniform(0, np.pi), rng.uniform(6, 40)
    k = 2 * np.pi / period
    phase = (np.arange(w, dtype=np.float32) * np.float32(k * np.cos(angle)))[None, :] \
        + (np.arange(h, dtype=np.float32) * np.float32(k * np.sin(angle)))[:, None]
    stripes = np.sin(phase)
    tint = rng.uniform(-1, 1, 3) * rng.uniform(0, 45)
    return base + stripes[..., None] * tint.astype(np.float32)


def _mask(kind: str, size: int, angle: float) -> np.ndarray:
    """The boolean mask of one shape, ``size`` pixels across before rotation by ``angle``."""
    n = int(np.ceil(size * 1.5)) | 1  # room for any rotation; odd so the centre is a pixel centre
    c = (n - 1) / 2
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64) - c
    u = xx * np.cos(angle) + yy * np.sin(angle)
    v = -xx * np.sin(angle) + yy * np.cos(angle)
    r, a = np.hypot(xx, yy), size / 2
    if kind == "circle":
        m = r <= a
    elif kind == "ring":
        m = (r <= a) & (r >= 0.55 * a)
    elif kind == "square":
        m = (np.abs(u) <= a / np.sqrt(2)) & (np.abs(v) <= a / np.sqrt(2))
    elif kind == "cross":
        t = a / 3
        m = ((np.abs(u) <= a) & (np.abs(v) <= t)) | ((np.abs(u) <= t) & (np.abs(v) <= a))
    elif kind == "triangle":  # equilateral, circumradius a
        m = np.ones_like(u, dtype=bool)
        for k in range(3):
            th = np.pi / 2 + k * 2 * np.pi / 3  # outward normals of the three sides
            m &= u * np.cos(th) + v * np.sin(th) <= a / 2
    else:
        raise ValueError(f"unknown shape {kind!r}")
    ys, xs = np.nonzero(m)
    return m[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


def scene(rng: np.random.Generator, size: tuple[int, int] = (320, 320), max_objects: int = 6,
          min_size: int = 14, max_size: int | None = None) -> Scene:
    """One scene of ``size`` = (h, w) with 1–``max_objects`` shapes, each ``min_size``–``max_size`` pixels."""
    h, w = size
    max_size = max_size or max(min_size + 1, min(h, w) // 3)
    img = background(rng, h, w)
    taken = np.zeros((h, w), dtype=bool)
    boxes, classes = [], []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        cls = int(rng.integers(len(CLASSES)))
        m = _mask(CLASSES[cls], int(rng.integers(min_size, max_size + 1)), float(rng.uniform(0, 2 * np.pi)))
        mh, mw = m.shape
        if mh >= h or mw >= w:
            continue
        for _try in range(20):  # a free spot: the box (grown by 3 px) touches no other shape's box
            y, x = int(rng.integers(0, h - mh + 1)), int(rng.integers(0, w - mw + 1))
            if not taken[max(0, y - 3):y + mh + 3, max(0, x - 3):x + mw + 3].any():
                break
        else:
            continue
        region = img[y:y + mh, x:x + mw]
        under = region[m].mean(0)
        colour = rng.uniform(0, 255, 3)
        for _try in range(20):  # visible: far enough from the background under it
            if np.abs(colour - under).sum() >= 150:
                break
            colour = rng.uniform(0, 255, 3)
        else:
            colour = np.where(under > 127, 0.0, 255.0)
        region[m] = colour
        taken[y:y + mh, x:x + mw] = True
        boxes.append([x, y, x + mw, y + mh])
        classes.append(cls)
    noise = rng.standard_normal(img.shape, dtype=np.float32)  # grain over shapes and background alike
    img += noise * np.float32(rng.uniform(2, 12))
    return Scene(np.clip(img, 0, 255).round().astype(np.uint8), np.asarray(boxes, np.float32).reshape(-1, 4),
                 np.asarray(classes, np.int64))


def scenes(seed: int, count: int, size: tuple[int, int] = (320, 320), **kw) -> Iterator[Scene]:
    """``count`` scenes from ``np.random.default_rng(seed)`` (the same seed gives the same scenes)."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        yield scene(rng, size, **kw)


#: the committed test images ``samples/images/<name>``: (seed, size = (h, w)) of the scene each shows
IMAGES: dict[str, tuple[int, tuple[int, int]]] = {
    "shapes-1.jpg": (20261201, (288, 384)),
    "shapes-2.jpg": (20261202, (320, 320)),
}


def image_scene(name: str) -> Scene:
    """The scene a committed test image of :data:`IMAGES` shows (shapes 20 px and up, at most 5)."""
    seed, size = IMAGES[name]
    return scene(np.random.default_rng(seed), size, max_objects=5, min_size=20, max_size=100)


def save_scenes(folder, seed: int, count: int, size: tuple[int, int] = (320, 320)) -> list:
    """Write ``count`` scenes of :func:`scenes` (``seed``) as PNG files ``000.png``... into ``folder``
    (made if missing): calibration or held-out images for ``verify --int8``. Returns the paths."""
    from pathlib import Path

    from PIL import Image

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, s in enumerate(scenes(seed, count, size)):
        paths.append(out / f"{i:03d}.png")
        Image.fromarray(s.image).save(paths[-1])
    return paths
