"""Ultralytics YOLOv8 -pose and -obb decoded exports, as ``model.export(format="onnx")`` writes them (legacy
exporter, onnxslim, opset 18): YOLOv8's ``Detect`` (see :mod:`.yolov8`) plus a ``cv4`` branch per level
(``Conv 3x3 → Conv 3x3 → Conv2d 1x1``), its values concatenated over the levels and decoded::

    Pose   kpt conv (1,nk,h,w) ─► Reshape (1,nk,-1) ─► Concat(levels) ─► Reshape (1,count,dims,N)
               ─► Slice [:2] on axis 2 ─► Mul 2 ─► Add (anchors - 0.5) (2,N) ─► Mul strides (1,N) ─┐
               ─► Slice [2:3] ─► Sigmoid ───────────────────────────────────────────── Concat(axis 2)
               ─► Reshape (1,nk,-1);  output0 = Concat([dbox, sigmoid(cls), kpts]) (1, 4+nc+nk, N)
    OBB    angle conv (1,1,h,w) ─► Reshape ─► Concat ─► Sigmoid ─► Sub 0.25 ─► Mul pi ─► Cos, Sin
           DFL distances (1,4,N) ─► Split lt, rb ─► (rb - lt) / 2 ─► Split xf, yf
               ─► [xf·cos − yf·sin, xf·sin + yf·cos] + anchors ─► Concat with lt + rb ─► Mul strides
           output0 = Concat([dbox, sigmoid(cls), angle]) (1, 4+nc+1, N)

``kpt_bias`` spreads the keypoint offsets (random heads otherwise put every keypoint at its cell).
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper

from ._common import backbone, cell_grid, check_size, finish
from .builder import Builder
from .ultralytics_blocks import c2f

REG_MAX = 16


def _levels(b: Builder, feats, H: int, W: int, nc: int, extra: int, std: float):
    """Per level the box, cls and cv4 convs (YOLOv8 ``Detect`` + ``cv4``), their (1, C, -1) views concatenated."""
    sc = "/model.22"
    c2, c4 = max(16, feats[0][1] // 4, REG_MAX * 4), max(feats[0][1] // 4, extra)
    views: dict[str, list[str]] = {"box": [], "cls": [], "extra": []}
    grids = []
    for i, (f, c) in enumerate(feats):
        s = 8 * 2 ** i
        grids.append((s, H // s, W // s))
        x = b.silu(b.conv(f, c, c2, 3, 1, f"model.22.cv2.{i}.0.conv"), f"{sc}/cv2.{i}/act0")
        box = b.conv(x, c2, 4 * REG_MAX, 1, 1, f"model.22.cv2.{i}.2", std=0.05, bias=1.0)
        x = b.silu(b.conv(f, c, c, 3, 1, f"model.22.cv3.{i}.0.conv"), f"{sc}/cv3.{i}/act0")
        cls = b.conv(x, c, nc, 1, 1, f"model.22.cv3.{i}.2", std=0.3, bias=-1.0)
        x = b.silu(b.conv(f, c, c4, 3, 1, f"model.22.cv4.{i}.0.conv"), f"{sc}/cv4.{i}/act0")
        x = b.silu(b.conv(x, c4, c4, 3, 1, f"model.22.cv4.{i}.1.conv"), f"{sc}/cv4.{i}/act1")
        ext = b.conv(x, c4, extra, 1, 1, f"model.22.cv4.{i}.2", std=std)
        for key, t, ch in (("box", box, 4 * REG_MAX), ("cls", cls, nc), ("extra", ext, extra)):
            views[key].append(b.node("Reshape", [t, b.const(np.array([1, ch, -1], np.int64), scope=sc)], scope=sc,
                                     allowzero=0))
    return views, grids


def _distances(b: Builder, box: str, n: int) -> str:
    """The DFL expectation of the concatenated box logits: (1, 4, N)."""
    sc = "/model.22"
    y = b.node("Reshape", [box, b.const(np.array([1, 4, REG_MAX, n], np.int64), scope=f"{sc}/dfl")], scope=f"{sc}/dfl",
               allowzero=0)
    y = b.node("Softmax", [b.node("Transpose", [y], scope=f"{sc}/dfl", perm=[0, 2, 1, 3])], scope=f"{sc}/dfl", axis=1)
    proj = b.init("model.22.dfl.conv.weight", np.arange(REG_MAX, dtype=np.float32).reshape(1, REG_MAX, 1, 1))
    y = b.node("Conv", [y, proj], scope=f"{sc}/dfl/conv", kernel_shape=[1, 1], pads=[0, 0, 0, 0], strides=[1, 1],
               dilations=[1, 1], group=1)
    return b.node("Reshape", [y, b.const(np.array([1, 4, n], np.int64), scope=f"{sc}/dfl")], scope=f"{sc}/dfl",
                  allowzero=0)


def _rows(grids) -> tuple[np.ndarray, np.ndarray]:
    """(anchor points (N, 2) = cell + 0.5, strides (N,))."""
    anchors = np.concatenate([cell_grid(h, w).reshape(-1, 2) + 0.5 for _, h, w in grids]).astype(np.float32)
    return anchors, np.concatenate([np.full(h * w, s, np.float32) for s, h, w in grids])


def _model(nc: int, size, width: int, opset: int, seed: int, extra: int, std: float):
    H, W = check_size(size)
    b = Builder(seed)
    (p3, c3), (p4, c4), (p5, c5) = backbone(b, "images", width)
    head_rng, b.rng = b.rng, np.random.default_rng(seed + 1)
    p4 = c2f(b, p4, c4, "model.6", opset)
    b.rng = head_rng
    views, grids = _levels(b, [(p3, c3), (p4, c4), (p5, c5)], H, W, nc, extra, std)
    sc = "/model.22"
    box = b.node("Concat", views["box"], scope=sc, axis=-1)
    cls = b.node("Concat", views["cls"], scope=sc, axis=-1)
    ext = b.node("Concat", views["extra"], scope=sc, axis=2)
    n = sum(h * w for _, h, w in grids)
    return b, box, cls, ext, grids, n, H, W


def yolov8_pose(nc: int = 1, kpt_shape: tuple[int, int] = (17, 3), size: tuple[int, int] = (256, 256), width: int = 8,
                opset: int = 18, seed: int = 0, slim: bool = False) -> onnx.ModelProto:
    """A YOLOv8-pose decoded export: 'images' → 'output0' (1, 4 + nc + count·dims, N); ``slim``: passed through
    onnxslim once more (the pattern above is what it leaves)."""
    count, dims = kpt_shape
    nk = count * dims
    b, box, cls, kpt, grids, n, H, W = _model(nc, size, width, opset, seed, nk, 0.3)
    sc = "/model.22"
    d = _distances(b, box, n)
    y = b.node("Reshape", [kpt, b.const(np.array([1, count, dims, -1], np.int64), scope=sc)], scope=sc, allowzero=0)
    i64 = lambda v: b.const(np.array([v], np.int64), scope=sc)  # noqa: E731
    xy = b.node("Slice", [y, i64(0), i64(2), i64(2), i64(1)], scope=sc)
    anchors, strides = _rows(grids)
    xy = b.node("Mul", [xy, b.const(np.array(2.0, np.float32), scope=sc)], scope=sc)
    xy = b.node("Add", [xy, b.const((anchors - 0.5).T.copy(), scope=sc)], scope=sc)
    xy = b.node("Mul", [xy, b.const(strides[None], scope=sc)], scope=sc)
    if dims == 3:
        vis = b.node("Sigmoid", [b.node("Slice", [y, i64(2), i64(3), i64(2), i64(1)], scope=sc)], scope=sc)
        xy = b.node("Concat", [xy, vis], scope=sc, axis=2)
    kpts = b.node("Reshape", [xy, b.const(np.array([1, nk, -1], np.int64), scope=sc)], scope=sc, allowzero=0)
    dbox = _xywh(b, d, anchors, strides)
    b.nodes.append(helper.make_node("Concat", [dbox, b.node("Sigmoid", [cls], scope=sc), kpts], ["output0"],
                                    name=f"{sc}/Concat_out", axis=1))
    return finish(b, "images", [1, 3, H, W], [("output0", [1, 4 + nc + nk, n])], opset, slim=slim)


def _xywh(b: Builder, d: str, anchors: np.ndarray, strides: np.ndarray) -> str:
    """``dist2bbox(xywh=True) * strides`` as the export writes it (Slice lt/rb, Sub/Add anchors, /2, Mul)."""
    sc = "/model.22"
    zero, two, four, one = (b.const(np.array([v], np.int64), scope=sc) for v in (0, 2, 4, 1))
    lt = b.node("Slice", [d, zero, two, one], scope=sc)
    rb = b.node("Slice", [d, two, four, one], scope=sc)
    x1y1 = b.node("Sub", [b.const(anchors.T[None].copy(), scope=sc), lt], scope=sc)
    x2y2 = b.node("Add", [b.const(anchors.T[None].copy(), scope=sc), rb], scope=sc)
    c_xy = b.node("Div", [b.node("Add", [x1y1, x2y2], scope=sc), b.const(np.array(2.0, np.float32), scope=sc)],
                  scope=sc)
    wh = b.node("Sub", [x2y2, x1y1], scope=sc)
    return b.node("Mul", [b.node("Concat", [c_xy, wh], scope=sc, axis=1), b.const(strides[None], scope=sc)], scope=sc)


def yolov8_obb(nc: int = 3, size: tuple[int, int] = (256, 256), width: int = 8, opset: int = 18,
               seed: int = 0, angle_offset: float = 0.25, slim: bool = False) -> onnx.ModelProto:
    """A YOLOv8-obb decoded export: 'images' → 'output0' (1, 4 + nc + 1, N). ``angle_offset`` is upstream's 0.25
    (another value makes a variant headcut must refuse)."""
    b, box, cls, ang, grids, n, H, W = _model(nc, size, width, opset, seed, 1, 0.5)
    sc = "/model.22"
    ang = b.node("Sigmoid", [ang], scope=sc)
    ang = b.node("Mul", [b.node("Sub", [ang, b.const(np.array(angle_offset, np.float32), scope=sc)], scope=sc),
                         b.const(np.array(math.pi, np.float32), scope=sc)], scope=sc)
    d = _distances(b, box, n)
    lt, rb = _split(b, d, [2, 2], sc)
    cos, sin = b.node("Cos", [ang], scope=sc), b.node("Sin", [ang], scope=sc)
    half = b.node("Div", [b.node("Sub", [rb, lt], scope=sc), b.const(np.array(2.0, np.float32), scope=sc)], scope=sc)
    xf, yf = _split(b, half, [1, 1], sc)
    x = b.node("Sub", [b.node("Mul", [xf, cos], scope=sc), b.node("Mul", [yf, sin], scope=sc)], scope=sc)
    y = b.node("Add", [b.node("Mul", [xf, sin], scope=sc), b.node("Mul", [yf, cos], scope=sc)], scope=sc)
    anchors, strides = _rows(grids)
    xy = b.node("Add", [b.node("Concat", [x, y], scope=sc, axis=1), b.const(anchors.T[None].copy(), scope=sc)],
                scope=sc)
    dbox = b.node("Mul", [b.node("Concat", [xy, b.node("Add", [lt, rb], scope=sc)], scope=sc, axis=1),
                          b.const(strides[None], scope=sc)], scope=sc)
    b.nodes.append(helper.make_node("Concat", [dbox, b.node("Sigmoid", [cls], scope=sc), ang], ["output0"],
                                    name=f"{sc}/Concat_out", axis=1))
    return finish(b, "images", [1, 3, H, W], [("output0", [1, 5 + nc, n])], opset, slim=slim)


def _split(b: Builder, x: str, sizes: list[int], scope: str) -> list[str]:
    outs = [b.name(f"{scope}/Split") + f"_output_{i}" for i in range(len(sizes))]
    b.nodes.append(helper.make_node("Split", [x, b.const(np.array(sizes, np.int64), scope=scope)], outs,
                                    name=outs[0][: -len("_output_0")], axis=1))
    return outs
