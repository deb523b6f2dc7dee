"""Class names: COCO's 80 by default, or one name per line from a file."""

from __future__ import annotations

import os

from .errors import InputError
from .io import read_limited

#: a names file is read up to this many bytes (1 MiB: ~10^5 class names); a larger file is refused
MAX_NAMES_BYTES = 1 << 20

COCO = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)


def class_names(nc: int, path: str | os.PathLike | None = None) -> tuple[str, ...]:
    """``nc`` names: from ``path`` (one per line), else COCO when nc == 80, else ``class0``, ``class1``, ..."""
    if path is not None:
        data = read_limited(path, MAX_NAMES_BYTES, "names file")
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise InputError(f"{path}: the names file is not UTF-8 text (byte 0x{data[e.start]:02x} at offset "
                             f"{e.start}); save it as UTF-8") from None
        names = tuple(ln.strip() for ln in text.splitlines() if ln.strip())
        if len(names) != nc:
            raise InputError(f"{path}: {len(names)} names for a model with {nc} classes")
        return names
    return COCO if nc == len(COCO) else tuple(f"class{i}" for i in range(nc))
