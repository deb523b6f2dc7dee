"""YOLOX decoded exports (``tools/export_onnx.py``, opset 11, onnxsim applied), with
``decode_in_inference`` written as in-place slice writes, i.e. ScatterND::

    per level Concat([reg, Sigmoid(obj), Sigmoid(cls)]) ─► Reshape (1,5+nc,-1) ─► Concat(levels, axis 2)
    ─► Transpose ─► Slice xy ─► Add grids (1,N,2) ─► Mul strides (1,N,1) ─► ScatterND ─► Slice wh ─► Exp
    ─► Mul ─► ScatterND ─► output

``decode=False`` stops after the Transpose: the output is raw apart from the sigmoids.
"""

from __future__ import annotations

import numpy as np
import onnx

from ._common import backbone, cell_grid, check_size, finish
from .builder import Builder


def yolox(nc: int = 80, size: tuple[int, int] = (320, 320), width: int = 8, decode: bool = True, opset: int = 11,
          seed: int = 0) -> onnx.ModelProto:
    """A YOLOX export: 'images' → 'output' (1, N, 5+nc)."""
    H, W = check_size(size)
    b = Builder(seed)
    feats = backbone(b, "images", width)
    sc = "/head"
    prior = float(-np.log((1 - 1e-2) / 1e-2))
    flat, grids = [], []
    for i, (f, c) in enumerate(feats):
        s = 8 * 2 ** i
        h, w = H // s, W // s
        grids.append((s, h, w))
        stem = b.silu(b.conv(f, c, c, 1, 1, f"head.stems.{i}.conv"), f"{sc}/stems.{i}/act")
        cls_f = b.silu(b.conv(stem, c, c, 3, 1, f"head.cls_convs.{i}.0.conv"), f"{sc}/cls_convs.{i}/act")
        reg_f = b.silu(b.conv(stem, c, c, 3, 1, f"head.reg_convs.{i}.0.conv"), f"{sc}/reg_convs.{i}/act")
        cls = b.conv(cls_f, c, nc, 1, 1, f"head.cls_preds.{i}", std=0.05, bias=prior)
        reg = b.conv(reg_f, c, 4, 1, 1, f"head.reg_preds.{i}", std=0.05)
        obj = b.conv(reg_f, c, 1, 1, 1, f"head.obj_preds.{i}", std=0.05, bias=prior)
        y = b.node("Concat", [reg, b.node("Sigmoid", [obj], scope=sc), b.node("Sigmoid", [cls], scope=sc)], scope=sc,
                   axis=1)
        flat.append(b.node("Reshape", [y, b.const(np.array([1, 5 + nc, -1], np.int64), scope=sc)], scope=sc))
    n = sum(h * w for _, h, w in grids)
    y = b.node("Transpose", [b.node("Concat", flat, scope=sc, axis=2)], scope=sc, perm=[0, 2, 1])
    if decode:
        g = np.concatenate([cell_grid(h, w).reshape(-1, 2) for _, h, w in grids])[None]  # (1, N, 2)
        st = np.concatenate([np.full((h * w, 1), s, np.float32) for s, h, w in grids])[None]  # (1, N, 1)
        stride = b.const(st, scope=sc)

        def index(cols):  # (1, N, 2, 3): [batch, row, column] for each written element
            rows = np.arange(n)[:, None].repeat(2, 1)
            return np.stack([np.zeros_like(rows), rows, np.broadcast_to(np.array(cols), rows.shape)], -1)[None]

        zero, two, four, axis = (b.const(np.array([v], np.int64), scope=sc) for v in (0, 2, 4, 2))
        xy = b.node("Mul", [b.node("Add", [b.node("Slice", [y, zero, two, two,
                                                            b.const(np.array([1], np.int64), scope=sc)],
                                                  scope=sc), b.const(g.astype(np.float32), scope=sc)], scope=sc),
                            stride], scope=sc)
        y = b.node("ScatterND", [y, b.const(index([0, 1]).astype(np.int64), scope=sc), xy], scope=sc)
        wh = b.node("Mul", [b.node("Exp", [b.node("Slice", [y, two, four, axis,
                                                             b.const(np.array([1], np.int64), scope=sc)], scope=sc)],
                                   scope=sc), stride], scope=sc)
        y = b.node("ScatterND", [y, b.const(index([2, 3]).astype(np.int64), scope=sc), wh], scope=sc)
    b.nodes[-1].output[0] = "output"  # the last decode node writes the graph output directly
    return finish(b, "images", [1, 3, H, W], [("output", [1, n, 5 + nc])], opset)
