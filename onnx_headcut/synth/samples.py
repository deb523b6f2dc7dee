"""The bundled sample models and ``headcut sample``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import onnx

from ..errors import HeadcutError
from ..io import save
from ..staging import Staging, check_outputs
from .yolov5 import yolov5
from .yolov6 import yolov6_af, yolov6_v1
from .yolov8 import yolov8
from .yolox import yolox

#: the bundled samples: file name -> generator keyword arguments
SAMPLES: dict[str, tuple[Callable[..., onnx.ModelProto], dict[str, Any]]] = {
    "yolov6-v0.1.0-320.onnx": (yolov6_v1, dict(nc=80, size=(320, 320), width=8)),
    "yolov6-v0.1.0-320-inplace.onnx": (yolov6_v1, dict(nc=80, size=(320, 320), width=8, inplace=True)),
    "yolov6n-v0.3-320.onnx": (yolov6_af, dict(nc=80, size=(320, 320), width=8)),
    "yolov6m-v0.3-dfl-320.onnx": (yolov6_af, dict(nc=80, size=(320, 320), width=8, reg_max=16)),
    "yolov6lite-192x320.onnx": (yolov6_af, dict(nc=80, size=(192, 320), width=4, levels=4, shuffle=True,
                                               simplify=True)),
    "yolox-320.onnx": (yolox, dict(nc=80, size=(320, 320), width=8)),
    "yolov5-320.onnx": (yolov5, dict(nc=80, size=(320, 320), width=8)),
    "yolov7-320.onnx": (yolov5, dict(nc=80, size=(320, 320), width=8, v7=True)),
    "yolov8-320.onnx": (yolov8, dict(nc=80, size=(320, 320), width=8)),
}


#: ``headcut sample --family``: which samples each family name selects
FAMILIES = {
    "yolov6-0.1.0": ("yolov6-v0.1.0-320.onnx", "yolov6-v0.1.0-320-inplace.onnx"),
    "yolov6-anchor-free": ("yolov6n-v0.3-320.onnx",),
    "yolov6-dfl": ("yolov6m-v0.3-dfl-320.onnx",),
    "yolov6-lite": ("yolov6lite-192x320.onnx",),
    "yolox": ("yolox-320.onnx",),
    "yolov5": ("yolov5-320.onnx",),
    "yolov7": ("yolov7-320.onnx",),
    "yolov8": ("yolov8-320.onnx",),
}


def write_samples(folder, family: str | None = None, force: bool = False) -> list:
    """(Re)generate the bundled sample models (all, or one family of :data:`FAMILIES`) into ``folder``.

    A sample file that already exists in ``folder`` is an error unless ``force``; all the files
    appear together, once every one is written.
    """
    if family is not None and family not in FAMILIES:
        raise HeadcutError(f"unknown family {family!r} (choose from {', '.join(FAMILIES)})")
    from pathlib import Path

    folder = Path(folder)
    chosen = [name for name in SAMPLES if family is None or name in FAMILIES[family]]
    targets = check_outputs([folder / name for name in chosen], force=force)
    with Staging(targets[0], targets=targets, force=force) as st:
        for name in chosen:
            make, kw = SAMPLES[name]
            save(make(**kw), st.path(name))
        return st.commit()
