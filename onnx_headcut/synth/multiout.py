"""YOLOv7 exported without ``--grid``: the raw head split over three 5-D outputs, no decode.

``export.py`` sets ``Detect.export = not opt.grid``; ``forward`` then runs ``self.training |= self.export``
and returns ``x``, the list of per-level maps viewed and permuted (``IDetect.fuseforward`` after
``fuse()`` is the same code). The legacy exporter names the first output ``output`` (``output_names``
has one entry) and the other two by their tensor numbers::

    Conv (1,3·no,h,w) ─► Reshape (1,3,no,h,w) ─► Transpose(0,1,3,4,2) ─► output (1,3,h,w,no)   one per level

The anchors are buffers of the PyTorch model that this branch never reads: the graph holds none.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from ._common import backbone, check_size, finish
from .builder import Builder
from .yolov5 import detect_bias


def yolov7_raw(nc: int = 80, size: tuple[int, int] = (320, 320), width: int = 8, opset: int = 12,
               seed: int = 0, names: tuple[str, ...] = ("output", "286", "298")) -> onnx.ModelProto:
    """A YOLOv7 ``export.py`` export without ``--grid``: outputs ``names`` of shape (1, 3, h, w, nc+5)."""
    H, W = check_size(size)
    b = Builder(seed)
    no, na = nc + 5, 3
    feats = backbone(b, "images", width)
    outs = []
    for i, (f, c) in enumerate(feats):
        s = 8 * 2 ** i
        h, w = H // s, W // s
        bias = detect_bias(na, nc, s)
        p = b.conv(f, c, na * no, 1, 1, f"model.105.m.{i}", std=0.01, bias=bias.ravel())
        y = b.node("Reshape", [p, b.const(np.array([1, na, no, h, w], np.int64), scope="/model.105")],
                   scope="/model.105")
        b.nodes.append(helper.make_node("Transpose", [y], [names[i]], name=f"/model.105/Transpose_{i}",
                                        perm=[0, 1, 3, 4, 2]))
        outs.append((names[i], [1, na, h, w, no]))
    return finish(b, "images", [1, 3, H, W], outs, opset)
