"""Each upstream project's own image preprocessing: letterbox, channel order and input scale.

A detector gives the scores it was trained for only on the input its project's predict feeds it,
so ``detect`` and ``verify --image`` reproduce that preprocessing; which one a head uses is recorded
in its metadata (``"preprocess"``, see :meth:`Preprocess.to_json`) and chosen from the family:

=====================  ========================================================================
Ultralytics (YOLOv8,   ``r = min(h / h0, w / w0)``; resize to ``(round(w0 r), round(h0 r))`` with
YOLO11), YOLOv5/v7,    ``cv2.INTER_LINEAR``; pad 114 centred, ``top, bottom = round(dh - 0.1),
YOLOv6                 round(dh + 0.1)`` (``dh`` half the vertical padding; the same for left,
                       right); RGB; ``/ 255``.
YOLOX                  resize to ``(int(w0 r), int(h0 r))`` with ``cv2.INTER_LINEAR``; image at the
                       top left, padded 114 on the bottom and the right; BGR; 0–255 (no scaling).
=====================  ========================================================================

:func:`resize_linear` is OpenCV's ``INTER_LINEAR`` for uint8 images written in numpy, bit for bit
with its fixed-point arithmetic (11-bit coefficients, horizontal pass then vertical pass), so no
OpenCV is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Preprocess", "ULTRALYTICS", "YOLOX", "letterbox", "resize_linear", "scale_boxes", "to_input"]

_PADS = ("center", "bottom_right")
_CHANNELS = ("rgb", "bgr")
_SIZES = ("round", "floor")


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes the model's input: letterbox (``size`` rounding of the resized image,
    ``pad`` placement, pad ``value``), channel order and the ``scale`` applied to 0–255 pixels."""

    scale: float = 1 / 255
    pad: str = "center"  # "center" (Ultralytics, YOLOv5/6/7) or "bottom_right" (YOLOX: image at the top left)
    value: int = 114
    channels: str = "rgb"
    size: str = "round"  # how the resized size is rounded: round() (Ultralytics) or int() (YOLOX)

    def to_json(self) -> dict[str, Any]:
        return {"scale": self.scale, "pad": self.pad, "value": self.value, "channels": self.channels,
                "size": self.size}

    @classmethod
    def from_json(cls, d: Any) -> Preprocess:
        """A recorded ``"preprocess"`` object; :class:`ValueError` says which field is wrong."""
        if not isinstance(d, dict):
            raise ValueError("preprocess must be an object")
        scale = d.get("scale", 1 / 255)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale <= 1:
            raise ValueError(f"preprocess.scale must be a number in (0, 1], not {scale!r}"[:200])
        value = d.get("value", 114)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
            raise ValueError(f"preprocess.value must be an integer in [0, 255], not {value!r}"[:200])
        for key, allowed in (("pad", _PADS), ("channels", _CHANNELS), ("size", _SIZES)):
            if d.get(key, allowed[0]) not in allowed:
                raise ValueError(f"preprocess.{key} must be one of {', '.join(allowed)}, not {d.get(key)!r}"[:200])
        return cls(float(scale), d.get("pad", "center"), value, d.get("channels", "rgb"), d.get("size", "round"))

    @classmethod
    def for_family(cls, family: str | None) -> Preprocess:
        """The preprocessing of ``family``'s own predict (YOLOX's, or the Ultralytics/YOLOv5/v6/v7 one)."""
        return YOLOX if family == "YOLOX" else ULTRALYTICS

    @classmethod
    def of(cls, head) -> Preprocess:
        """The preprocessing of a located head or a head record: the record's ``"preprocess"`` when it
        has one (records written before it existed: the family's)."""
        if isinstance(head, dict):
            return cls.from_json(head["preprocess"]) if "preprocess" in head else cls.for_family(head.get("family"))
        return cls.for_family(getattr(head, "family", None))


#: Ultralytics' predict (``LetterBox(auto=False, center=True)``), also YOLOv5, YOLOv6 and YOLOv7
ULTRALYTICS = Preprocess()
#: YOLOX's ``preproc`` (``legacy=False``): top-left placement, BGR, 0–255
YOLOX = Preprocess(scale=1.0, pad="bottom_right", value=114, channels="bgr", size="floor")

_COEF_BITS = 11  # OpenCV's INTER_RESIZE_COEF_BITS
_ONE = 1 << _COEF_BITS


def _coefficients(n_src: int, n_dst: int, clamp: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices (i0, i1) and fixed-point weights (a0, a1) of each destination pixel, as
    OpenCV computes them: half-pixel centres, ``f`` in float32, weights ``round(w * 2048)`` (to even).

    Along x (``clamp``) a centre left of the first or right of the last source pixel takes that pixel
    with weight 1; along y OpenCV keeps the fractional weights and clamps only the row indices."""
    f = ((np.arange(n_dst, dtype=np.float64) + 0.5) * (n_src / n_dst) - 0.5).astype(np.float32)
    s = np.floor(f)
    f = (f - s).astype(np.float32)
    s = s.astype(np.int64)
    if clamp:
        low, high = s < 0, s >= n_src - 1
        f[low | high] = 0
        s[low] = 0
        s[high] = n_src - 1
    a1 = np.rint(f * np.float32(_ONE)).astype(np.int32)
    a0 = np.rint((np.float32(1) - f) * np.float32(_ONE)).astype(np.int32)
    return np.clip(s, 0, n_src - 1), np.clip(s + 1, 0, n_src - 1), a0, a1


def resize_linear(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)`` for an HWC uint8 image.

    The horizontal pass sums ``pixel * weight`` in integers (weights scaled by 2048); the vertical
    pass is OpenCV's vectorised one: ``((S0 >> 4) * b0 >> 16) + ((S1 >> 4) * b1 >> 16)``, rounded
    ``(+ 2) >> 2`` and saturated to 0–255. Only the source rows the output reads are computed.
    """
    h0, w0 = image.shape[:2]
    x0, x1, a0, a1 = _coefficients(w0, width, clamp=True)
    y0, y1, b0, b1 = _coefficients(h0, height, clamp=False)
    used, inverse = np.unique(np.concatenate([y0, y1]), return_inverse=True)
    src = image[used].astype(np.int32)
    if src.ndim == 2:
        src = src[..., None]
    rows = src[:, x0] * a0[None, :, None] + src[:, x1] * a1[None, :, None]  # (rows used, width, C) int32
    r0, r1 = rows[inverse[:height]], rows[inverse[height:]]
    out = ((((r0 >> 4) * b0[:, None, None]) >> 16) + (((r1 >> 4) * b1[:, None, None]) >> 16) + 2) >> 2
    out = np.clip(out, 0, 255).astype(np.uint8)
    return out.reshape(height, width, *image.shape[2:])


def letterbox(image: np.ndarray, size: tuple[int, int], pre: Preprocess = ULTRALYTICS
              ) -> tuple[np.ndarray, float, tuple[float, float]]:
    """Resize an HWC uint8 image keeping its aspect ratio and pad it to ``size`` = (h, w), as ``pre`` says.

    Returns ``(padded, ratio, (pad_x, pad_y))`` with ``ratio = min(h / h0, w / w0)`` and the left
    and top padding; a box in the padded image maps back with :func:`scale_boxes` (Ultralytics'
    ``scale_boxes`` does the same). The image is not resampled when its size does not change.
    """
    h0, w0 = image.shape[:2]
    h, w = size
    r = min(h / h0, w / w0)
    rnd = round if pre.size == "round" else int
    nw, nh = min(w, max(1, rnd(w0 * r))), min(h, max(1, rnd(h0 * r)))
    resized = image if (nh, nw) == (h0, w0) else resize_linear(image, nw, nh)
    if pre.pad == "center":
        dh, dw = (h - nh) / 2, (w - nw) / 2
        top, left = round(dh - 0.1), round(dw - 0.1)  # bottom and right take the rest: round(d + 0.1)
    else:  # the image at the top left, padding on the bottom and the right
        top, left = 0, 0
    out = np.full((h, w, *image.shape[2:]), pre.value, dtype=np.uint8)
    out[top:top + nh, left:left + nw] = resized
    return out, r, (float(left), float(top))


def to_input(image: np.ndarray, pre: Preprocess = ULTRALYTICS) -> np.ndarray:
    """HWC uint8 RGB → NCHW float32 in the channel order and scale ``pre`` says (RGB / 255 by default)."""
    if pre.channels == "bgr":
        image = image[..., ::-1]
    x = np.ascontiguousarray(image.transpose(2, 0, 1)[None], dtype=np.float32)
    inverse = 1 / pre.scale
    return x / np.float32(inverse) if inverse == round(inverse) else x * np.float32(pre.scale)


def scale_boxes(boxes: np.ndarray, ratio: float, pad: tuple[float, float]) -> np.ndarray:
    """Map xyxy boxes from the letterboxed input back to the original image:
    ``(x - pad_x) / ratio``, ``(y - pad_y) / ratio``."""
    out = boxes.copy()
    out[:, [0, 2]] = (out[:, [0, 2]] - pad[0]) / ratio
    out[:, [1, 3]] = (out[:, [1, 3]] - pad[1]) / ratio
    return out
