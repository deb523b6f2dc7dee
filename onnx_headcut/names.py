"""Class names: COCO's 80 by default, or one name per line from a file."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import InputError

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
        try:
            names = tuple(ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip())
        except OSError as e:
            raise InputError(f"{path}: cannot read the names file ({e.strerror})") from None
        if len(names) != nc:
            raise InputError(f"{path}: {len(names)} names for a model with {nc} classes")
        return names
    return COCO if nc == len(COCO) else tuple(f"class{i}" for i in range(nc))
