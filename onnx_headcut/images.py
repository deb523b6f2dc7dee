"""Image reading for ``--image`` and ``detect`` (Pillow), with bounded memory.

An image file is read up to :data:`MAX_IMAGE_BYTES` (so ``/dev/zero`` or a FIFO cannot be read
forever) and decoded only when its header declares at most :data:`MAX_IMAGE_PIXELS` pixels (a
decompression bomb, a tiny PNG declaring 100 000 x 100 000 pixels, is refused before decoding).
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np

from .errors import InputError, OutputError
from .io import read_limited

#: an image file larger than this (128 MiB) is refused without being read to the end
MAX_IMAGE_BYTES = 128 << 20
#: the most pixels headcut decodes (8192 x 8192); also set as Pillow's decompression-bomb limit
MAX_IMAGE_PIXELS = 1 << 26


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as an HWC uint8 RGB array, or raise :class:`InputError`."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a dependency
        raise InputError(f"{path}: reading images needs Pillow (pip install pillow)") from None
    data = read_limited(path, MAX_IMAGE_BYTES, "image file")
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS  # explicit: a larger declared size raises, never decodes
    try:
        with warnings.catch_warnings():  # Pillow warns between 1x and 2x its limit; headcut refuses itself
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
        with im:
            w, h = im.size
            if w * h > MAX_IMAGE_PIXELS:
                raise InputError(f"{path}: the image declares {w}x{h} pixels, above headcut's limit of "
                                 f"{MAX_IMAGE_PIXELS} pixels")
            return np.asarray(im.convert("RGB"))
    except InputError:
        raise
    except Image.DecompressionBombError:
        raise InputError(f"{path}: the image declares more pixels than decoding allows, above headcut's limit of "
                         f"{MAX_IMAGE_PIXELS} pixels (a decompression bomb)") from None
    except Exception as e:
        raise InputError(f"{path}: not a readable image ({type(e).__name__})") from None


def image_format(path: str | os.PathLike) -> str:
    """The Pillow format an output image path's extension asks for, or :class:`InputError`
    (checked before any work is done: ``detect -o out.xyz`` fails at once, not after running the model)."""
    from pathlib import Path

    from PIL import Image

    ext = Path(path).suffix.lower()
    fmt = Image.registered_extensions().get(ext)
    if fmt is None or fmt not in Image.SAVE:
        known = ", ".join(sorted(e for e, f in Image.registered_extensions().items()
                                 if f in ("PNG", "JPEG", "BMP", "WEBP", "TIFF")))
        raise OutputError(f"{path}: unknown image extension {ext or '(none)'!r}; use one of {known}")
    return fmt
