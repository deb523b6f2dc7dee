"""Ultralytics YOLOv8 / YOLO11 decoded exports, as ``model.export(format="onnx")`` writes them
(legacy exporter, then onnxslim; opset 18)::

    box conv (1,64,h,w) ─► Reshape (1,64,-1) ─┐ Concat(levels) ─► Reshape (1,4,16,N) ─► Transpose ─► Softmax
    cls conv (1,nc,h,w) ─► Reshape (1,nc,-1) ─┘ Concat(levels) ─► Sigmoid                            │
         ─► Conv(0..15) ─► Reshape (1,4,N) ─► Slice lt/rb ─► Sub/Add anchors (1,2,N)
         ─► (x1y1+x2y2)/2, x2y2−x1y1 ─► Mul strides (1,N)
    ─► Concat([dbox, cls], axis 1) ─► output0 (1, 4+nc, N)
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from ._common import backbone, cell_grid, check_size, finish
from .builder import Builder
from .ultralytics_blocks import c2f, c2psa, sppf

REG_MAX = 16


def yolov8(nc: int = 80, size: tuple[int, int] = (320, 320), width: int = 8, yolo11: bool = False,
           opset: int = 18, seed: int = 0) -> onnx.ModelProto:
    """A YOLOv8 (or YOLO11) decoded export: 'images' → 'output0'. The backbone carries what names the family
    (:mod:`.ultralytics_blocks`): a C2f on P4; YOLO11 adds an SPPF and C2PSA attention on P5 and its class
    branch is two depthwise + pointwise conv pairs."""
    H, W = check_size(size)
    b = Builder(seed)
    (p3, c3), (p4, c4), (p5, c5) = backbone(b, "images", width)
    head_rng, b.rng = b.rng, np.random.default_rng(seed + 1)  # the blocks draw apart: head weights as before
    p4 = c2f(b, p4, c4, "model.6", opset)  # YOLO11: C3k2 (c3k=False), the same graph
    if yolo11:
        p5 = c2psa(b, sppf(b, p5, c5, "model.9"), c5, (H // 32, W // 32), "model.10", opset)
    b.rng = head_rng
    feats = [(p3, c3), (p4, c4), (p5, c5)]
    sc = "/model.22"
    c2 = max(16, width * 2, REG_MAX * 4)
    boxes, clss, grids = [], [], []
    for i, (f, c) in enumerate(feats):
        s = 8 * 2 ** i
        h, w = H // s, W // s
        grids.append((s, h, w))
        x = b.silu(b.conv(f, c, c2, 3, 1, f"model.22.cv2.{i}.0.conv"), f"{sc}/cv2.{i}/act0")
        box = b.conv(x, c2, 4 * REG_MAX, 1, 1, f"model.22.cv2.{i}.2", std=0.05, bias=1.0)
        if yolo11:  # [DWConv 3x3 → Conv 1x1] x 2 in the cls branch, SiLU after each
            x = f
            for j in range(2):
                wdw = b.init(f"model.22.cv3.{i}.{j}.0.conv.weight", b.rng.normal(0, 0.3, (c, 1, 3, 3)))
                x = b.silu(b.node("Conv", [x, wdw], scope=f"{sc}/cv3.{i}", kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                                  strides=[1, 1], dilations=[1, 1], group=c), f"{sc}/cv3.{i}/dw{j}")
                x = b.silu(b.conv(x, c, c, 1, 1, f"model.22.cv3.{i}.{j}.1.conv"), f"{sc}/cv3.{i}/act{j}")
        else:
            x = b.silu(b.conv(f, c, c, 3, 1, f"model.22.cv3.{i}.0.conv"), f"{sc}/cv3.{i}/act0")
        cls = b.conv(x, c, nc, 1, 1, f"model.22.cv3.{i}.2", std=0.3, bias=float(np.log(5 / nc / (640 / s) ** 2)))
        boxes.append(b.node("Reshape", [box, b.const(np.array([1, 4 * REG_MAX, -1], np.int64), scope=sc)], scope=sc,
                            allowzero=0))
        clss.append(b.node("Reshape", [cls, b.const(np.array([1, nc, -1], np.int64), scope=sc)], scope=sc, allowzero=0))
    n = sum(h * w for _, h, w in grids)
    box = b.node("Concat", boxes, scope=sc, axis=-1)
    cls = b.node("Concat", clss, scope=sc, axis=-1)
    y = b.node("Reshape", [box, b.const(np.array([1, 4, REG_MAX, n], np.int64), scope=f"{sc}/dfl")], scope=f"{sc}/dfl",
               allowzero=0)
    y = b.node("Softmax", [b.node("Transpose", [y], scope=f"{sc}/dfl", perm=[0, 2, 1, 3])], scope=f"{sc}/dfl", axis=1)
    proj = b.init("model.22.dfl.conv.weight", np.arange(REG_MAX, dtype=np.float32).reshape(1, REG_MAX, 1, 1))
    y = b.node("Conv", [y, proj], scope=f"{sc}/dfl/conv", kernel_shape=[1, 1], pads=[0, 0, 0, 0], strides=[1, 1],
               dilations=[1, 1], group=1)
    d = b.node("Reshape", [y, b.const(np.array([1, 4, n], np.int64), scope=f"{sc}/dfl")], scope=f"{sc}/dfl",
               allowzero=0)
    zero, two, four, one = (b.const(np.array([v], np.int64), scope=sc) for v in (0, 2, 4, 1))
    lt = b.node("Slice", [d, zero, two, one], scope=sc)
    rb = b.node("Slice", [d, two, four, one], scope=sc)
    anchors = np.concatenate([cell_grid(h, w).reshape(-1, 2) + 0.5 for _, h, w in grids]).T[None]  # (1, 2, N)
    strides = np.concatenate([np.full(h * w, s, np.float32) for s, h, w in grids])[None]  # (1, N)
    a = b.const(anchors.astype(np.float32), scope=sc)
    x1y1 = b.node("Sub", [a, lt], scope=sc)
    x2y2 = b.node("Add", [b.const(anchors.astype(np.float32), scope=sc), rb], scope=sc)
    c_xy = b.node("Div", [b.node("Add", [x1y1, x2y2], scope=sc), b.const(np.array(2.0, np.float32), scope=sc)],
                  scope=sc)
    wh = b.node("Sub", [x2y2, x1y1], scope=sc)
    dbox = b.node("Mul", [b.node("Concat", [c_xy, wh], scope=sc, axis=1), b.const(strides, scope=sc)], scope=sc)
    b.nodes.append(helper.make_node("Concat", [dbox, b.node("Sigmoid", [cls], scope=sc)], ["output0"],
                                    name=f"{sc}/Concat_out", axis=1))
    return finish(b, "images", [1, 3, H, W], [("output0", [1, 4 + nc, n])], opset)
