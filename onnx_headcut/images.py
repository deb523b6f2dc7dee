"""Image reading for ``--image`` (Pillow)."""

from __future__ import annotations

import os

import numpy as np

from .errors import InputError


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as an HWC uint8 RGB array, or raise :class:`InputError`."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a dependency
        raise InputError(f"{path}: reading images needs Pillow (pip install pillow)") from None
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such image file") from None
    except Exception as e:
        raise InputError(f"{path}: not a readable image ({type(e).__name__})") from None
