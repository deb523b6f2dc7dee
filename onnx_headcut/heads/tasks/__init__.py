"""Task heads: a detection head plus one extra branch per level (see :mod:`._branch`).

==========================  =====================================================  ==========================
module                      heads                                                  extra block (role)
==========================  =====================================================  ==========================
:mod:`.segment`             Ultralytics YOLOv8 / YOLO11 ``Segment``, YOLOv6 0.4.1  mask coefficients (mask)
:mod:`.face`                YOLOv6 0.3.1 face                                      landmark offsets (lmk)
:mod:`.pose`                Ultralytics YOLOv8 / YOLO11 ``Pose``                   keypoints (kpt)
:mod:`.obb`                 Ultralytics YOLOv8 / YOLO11 ``OBB``                    angle logit (angle)
==========================  =====================================================  ==========================

Each module has ``TASK``, ``ROLE``, how its branch is located (``match``; pose and OBB: matchers in
:data:`PATTERNS`, tried after the detection heads'), and the decode of its extra columns (``decode``), plus its
post-processing. Optional hooks: ``boxes`` (the task's cx, cy, w, h replace the detection decode's: OBB's rotated
boxes), ``postprocess(rows, nc, conf, iou, max_det)`` (its own NMS: OBB's rotated one), ``atol`` / ``pixels``
(layer 2's tolerance of its columns and which are pixels).
"""

from __future__ import annotations

import numpy as np

from ..base import Geometry
from . import face, obb, pose, segment

#: every task module
TASKS = (segment, face, pose, obb)
#: the task matchers that locate a whole head (detection branches and the extra one), after the detection heads'
PATTERNS = (pose.match_pose, obb.match_obb)


def task(name: str):
    """The task module recorded as ``name`` (None for "detect"); :class:`ValueError` for an unknown one."""
    if name == "detect":
        return None
    for t in TASKS:
        if t.TASK == name:
            return t
    raise ValueError(f"unknown task {name!r} (known: detect, {', '.join(t.TASK for t in TASKS)})")


def extra_columns(flat: np.ndarray, g: Geometry, cells: np.ndarray, strides: np.ndarray) -> list[np.ndarray]:
    """The decoded extra columns of the task whose block the geometry has (none for a detection head)."""
    cols = g.columns()
    return [t.decode(flat, g, cells, strides) for t in TASKS if t.ROLE in cols]


def task_boxes(flat: np.ndarray, g: Geometry, cells: np.ndarray, strides: np.ndarray) -> np.ndarray | None:
    """The cx, cy, w, h columns a task decodes itself (OBB: the rotated boxes), replacing the detection decode's;
    None when the head's task keeps the detection boxes."""
    t = task(g.task)
    return t.boxes(flat, g, cells, strides) if t is not None and hasattr(t, "boxes") else None


__all__ = ["PATTERNS", "TASKS", "extra_columns", "face", "obb", "pose", "segment", "task", "task_boxes"]
