"""YOLOv5 (v7.0 ``Detect``) and YOLOv7 (``export.py --grid``) decoded exports, as the legacy exporter
writes them with a fixed input size (shape reads folded to constants)::

    Conv (1,3·no,h,w) ─► Reshape (1,3,no,h,w) ─► Transpose(0,1,3,4,2) ─► Sigmoid ─► Split(2,2,nc+1)
      v5: xy ─► Mul 2 ─► Add grid−0.5 ─► Mul s      wh ─► Mul 2 ─► Pow 2 ─► Mul anchor_grid (1,3,h,w,2)
      v7: xy ─► Mul 2s ─► Add s·(grid−0.5)           wh ─► Pow 2 ─► Mul 4·anchors (1,3,1,1,2)
    ─► Concat(xy, wh, conf) ─► Reshape (1,3·h·w,no) (v7: (1,-1,no)) ─► Concat(levels) ─► output
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from ._common import backbone, cell_grid, check_size, finish
from .builder import Builder

ANCHORS_V5 = (((10, 13), (16, 30), (33, 23)), ((30, 61), (62, 45), (59, 119)), ((116, 90), (156, 198), (373, 326)))
ANCHORS_V7 = (((12, 16), (19, 36), (40, 28)), ((36, 75), (76, 55), (72, 146)), ((142, 110), (192, 243), (459, 401)))


def detect_bias(na: int, nc: int, stride: int) -> np.ndarray:
    """The prediction conv's bias as upstream ``Detect._initialize_biases`` sets it: (na * (nc + 5),)."""
    bias = np.zeros((na, nc + 5), np.float32)
    bias[:, 4] = np.log(8 / (640 / stride) ** 2)
    bias[:, 5:] = np.log(0.6 / (nc - 0.99))
    return bias


def yolov5(nc: int = 80, size: tuple[int, int] = (320, 320), width: int = 8, v7: bool = False, opset: int = 12,
           simplify: bool = False, seed: int = 0) -> onnx.ModelProto:
    """A YOLOv5 (or, with ``v7=True``, YOLOv7) decoded export: input 'images', output 'output0' ('output' for v7)."""
    H, W = check_size(size)
    b = Builder(seed)
    no, na = nc + 5, 3
    anchors = ANCHORS_V7 if v7 else ANCHORS_V5
    feats = backbone(b, "images", width)
    outs = []
    for i, (f, c) in enumerate(feats):
        s = 8 * 2 ** i
        h, w = H // s, W // s
        bias = detect_bias(na, nc, s)
        p = b.conv(f, c, na * no, 1, 1, f"model.24.m.{i}", std=0.01, bias=bias.ravel())
        y = b.node("Reshape", [p, b.const(np.array([1, na, no, h, w], np.int64), scope="/model.24")], scope="/model.24")
        y = b.node("Sigmoid", [b.node("Transpose", [y], scope="/model.24", perm=[0, 1, 3, 4, 2])], scope="/model.24")
        parts = [y + f"_{k}" for k in ("xy", "wh", "conf")]
        if opset >= 13:
            b.nodes.append(helper.make_node("Split",
                                            [y, b.const(np.array([2, 2, nc + 1], np.int64), scope="/model.24")],
                                            parts, name=f"/model.24/Split_{i}", axis=4))
        else:
            b.nodes.append(helper.make_node("Split", [y], parts, name=f"/model.24/Split_{i}", axis=4,
                                            split=[2, 2, nc + 1]))
        grid = cell_grid(h, w)[None, None] - 0.5
        a = np.asarray(anchors[i], np.float32).reshape(1, na, 1, 1, 2)
        if v7:  # xy * (2 * stride) + stride * (grid - 0.5); wh ** 2 * (4 * anchor_grid)
            xy = b.node("Add", [b.node("Mul", [parts[0], b.const(np.array(2.0 * s, np.float32), scope="/model.24")],
                                       scope="/model.24"), b.const((s * grid).astype(np.float32), scope="/model.24")],
                        scope="/model.24")
            wh = b.node("Mul", [b.node("Pow", [parts[1], b.const(np.array(2.0, np.float32), scope="/model.24")],
                                       scope="/model.24"), b.const(4 * a, scope="/model.24")], scope="/model.24")
        else:  # (xy * 2 + grid) * stride; (wh * 2) ** 2 * anchor_grid
            two = b.node("Mul", [parts[0], b.const(np.array(2.0, np.float32), scope="/model.24")], scope="/model.24")
            xy = b.node("Mul", [b.node("Add", [two, b.const(np.broadcast_to(grid, (1, na, h, w, 2)).astype(np.float32),
                                                            scope="/model.24")], scope="/model.24"),
                                b.const(np.array(float(s), np.float32), scope="/model.24")], scope="/model.24")
            wh2 = b.node("Mul", [parts[1], b.const(np.array(2.0, np.float32), scope="/model.24")], scope="/model.24")
            wh = b.node("Mul", [b.node("Pow", [wh2, b.const(np.array(2.0, np.float32), scope="/model.24")],
                                       scope="/model.24"),
                                b.const(np.broadcast_to(a, (1, na, h, w, 2)).astype(np.float32), scope="/model.24")],
                        scope="/model.24")
        y = b.node("Concat", [xy, wh, parts[2]], scope="/model.24", axis=4)
        rows = -1 if v7 else na * h * w  # v7 writes view(bs, -1, no)
        outs.append(b.node("Reshape", [y, b.const(np.array([1, rows, no], np.int64), scope="/model.24")],
                           scope="/model.24"))
    out = "output" if v7 else "output0"
    b.nodes.append(helper.make_node("Concat", outs, [out], name="/model.24/Concat_out", axis=1))
    n = na * sum((H // s) * (W // s) for s in (8, 16, 32))
    return finish(b, "images", [1, 3, H, W], [(out, [1, n, no])], opset, simplify=simplify)
