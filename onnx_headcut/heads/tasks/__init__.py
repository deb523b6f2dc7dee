"""Task heads: a detection head plus one extra branch per level (see :mod:`._branch`).

==========================  =====================================================  ==========================
module                      heads                                                  extra block (role)
==========================  =====================================================  ==========================
:mod:`.segment`             Ultralytics YOLOv8 / YOLO11 ``Segment``, YOLOv6 0.4.1  mask coefficients (mask)
:mod:`.face`                YOLOv6 0.3.1 face                                      landmark offsets (lmk)
==========================  =====================================================  ==========================

Each module has ``TASK``, ``ROLE``, how its branch is located (``match``), and the decode of its extra columns
(``decode``), plus its post-processing.
"""

from __future__ import annotations

import numpy as np

from ..base import Geometry
from . import face, segment

#: every task module
TASKS = (segment, face)


def extra_columns(flat: np.ndarray, g: Geometry, cells: np.ndarray, strides: np.ndarray) -> list[np.ndarray]:
    """The decoded extra columns of the task whose block the geometry has (none for a detection head)."""
    cols = g.columns()
    return [t.decode(flat, g, cells, strides) for t in TASKS if t.ROLE in cols]


__all__ = ["TASKS", "extra_columns", "face", "segment"]
