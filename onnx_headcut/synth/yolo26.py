"""Ultralytics 8.4 YOLO26 and YOLOv10 exports: the one-to-many head and the NMS-free (top-k) end-to-end one,
node for node as the legacy exporter writes them (opset 12 or 18, then onnxslim's folding)::

    box conv (1,4·reg_max,h,w) ─► Reshape (1,4·reg_max,-1) ─► Concat(levels) [─► DFL] ─► Slice lt/rb
        ─► Sub/Add anchors (1,2,N) ─► one-to-many: (x1y1+x2y2)/2, x2y2−x1y1 │ end-to-end: Concat(x1y1, x2y2)
        ─► Mul strides (1,N) ─► Concat([dbox, Sigmoid(cls)], axis 1) ─► D (1, 4+nc, N)
    end-to-end: D ─► Transpose ─► Split(4, nc) ─► ReduceMax ─► TopK(k) ─► Unsqueeze ─► Tile ─► GatherElements
        ─► Flatten ─► TopK(k) ─► Div/Mod nc ─► Gather/GatherElements ─► Concat ─► output0 (1, k, 6)

``tail="8.4"`` is ``Detect.get_topk_index`` (the boxes gathered once, through the first selection's indices),
``tail="v10"`` THU-MIG/yolov10's ``v10postprocess`` (boxes and scores gathered after the first TopK).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from ._common import backbone, cell_grid, check_size, finish
from .builder import Builder

SC = "/model.23"


def _i64(b: Builder, *v: int) -> str:
    return b.const(np.array(v, np.int64), scope=SC)


def _unsqueeze(b: Builder, x: str, axis: int, opset: int) -> str:
    if opset >= 13:
        return b.node("Unsqueeze", [x, _i64(b, axis)], scope=SC)
    return b.node("Unsqueeze", [x], scope=SC, axes=[axis])


def _dfl(b: Builder, box: str, reg_max: int, n: int, opset: int) -> str:
    """DFL: Reshape (1,4,R,N), Transpose, Softmax over the bins, the fixed 0..R-1 1x1 conv, Reshape (1,4,N).

    Below opset 13 Softmax flattens the axes from ``axis`` on, so torch writes it on the last axis
    between two Transposes (perm 0,3,1,2 and 0,3,2,1)."""
    sc = f"{SC}/dfl"
    y = b.node("Reshape", [box, _i64(b, 1, 4, reg_max, n)], scope=sc)
    if opset >= 13:
        y = b.node("Softmax", [b.node("Transpose", [y], scope=sc, perm=[0, 2, 1, 3])], scope=sc, axis=1)
    else:
        y = b.node("Softmax", [b.node("Transpose", [y], scope=sc, perm=[0, 3, 1, 2])], scope=sc, axis=3)
        y = b.node("Transpose", [y], scope=sc, perm=[0, 3, 2, 1])
    proj = b.init("model.23.dfl.conv.weight", np.arange(reg_max, dtype=np.float32).reshape(1, reg_max, 1, 1))
    y = b.node("Conv", [y, proj], scope=f"{SC}/dfl/conv", kernel_shape=[1, 1], pads=[0, 0, 0, 0], strides=[1, 1],
               dilations=[1, 1], group=1)
    return b.node("Reshape", [y, _i64(b, 1, 4, n)], scope=f"{SC}/dfl")


def _topk_tail(b: Builder, dec: str, nc: int, k: int, tail: str, opset: int, out: str) -> None:
    """Ultralytics ``Detect.postprocess`` (``tail="8.4"``) or YOLOv10 ``v10postprocess`` (``"v10"``) after ``dec``."""
    y = b.node("Transpose", [dec], scope=SC, perm=[0, 2, 1])
    split = b.name(f"{SC}/Split")
    outs = [f"{split}_output_0", f"{split}_output_1"]
    if opset >= 13:
        b.nodes.append(helper.make_node("Split", [y, _i64(b, 4, nc)], outs, name=split, axis=-1))
        best = b.node("ReduceMax", [outs[1], _i64(b, -1)], scope=SC, keepdims=0)
    else:
        b.nodes.append(helper.make_node("Split", [y], outs, name=split, axis=-1, split=[4, nc]))
        best = b.node("ReduceMax", [outs[1]], scope=SC, axes=[-1], keepdims=0)
    boxes, scores = outs

    def topk(x: str) -> tuple[str, str]:
        name = b.name(f"{SC}/TopK")
        vi = [f"{name}_output_0", f"{name}_output_1"]
        b.nodes.append(helper.make_node("TopK", [x, _i64(b, k)], vi, name=name, axis=-1, largest=1, sorted=1))
        return vi[0], vi[1]

    _, first = topk(best)
    first = _unsqueeze(b, first, -1, opset)
    nc_c = b.const(np.array(nc, np.int64), scope=SC)
    if tail == "v10":
        boxes = b.node("GatherElements", [boxes, b.node("Tile", [first, _i64(b, 1, 1, 4)], scope=SC)], scope=SC, axis=1)
    picked = b.node("GatherElements", [scores, b.node("Tile", [first, _i64(b, 1, 1, nc)], scope=SC)], scope=SC, axis=1)
    score, index = topk(b.node("Flatten", [picked], scope=SC, axis=1))
    row = b.node("Div", [index, nc_c], scope=SC)
    cls = b.node("Cast", [_unsqueeze(b, b.node("Mod", [index, nc_c], scope=SC, fmod=0), -1, opset)], scope=SC, to=1)
    if tail == "v10":
        at = _unsqueeze(b, row, -1, opset)
    else:  # ori_index[arange(bs)[..., None], index // nc]: the anchors of the first selection, flattened, gathered
        at = b.node("Gather", [b.node("Flatten", [first], scope=SC, axis=2), row], scope=SC, axis=0)
    sel = b.node("GatherElements", [boxes, b.node("Tile", [at, _i64(b, 1, 1, 4)], scope=SC)], scope=SC, axis=1)
    b.nodes.append(helper.make_node("Concat", [sel, _unsqueeze(b, score, -1, opset), cls], [out],
                                    name=f"{SC}/Concat_out", axis=-1))


def yolo26(nc: int = 80, size: tuple[int, int] = (320, 320), width: int = 8, end2end: bool = False,
           reg_max: int = 1, k: int = 300, tail: str = "8.4", opset: int = 18, seed: int = 0,
           anchor_shift: float = 0.0) -> onnx.ModelProto:
    """A YOLO26 (``reg_max`` 1) or YOLOv10 (``reg_max`` 16) export: 'images' → 'output0'; ``end2end``:
    the NMS-free ``(1, k, 6)`` output, else the one-to-many ``(1, 4+nc, N)``. ``anchor_shift`` moves the
    anchor-point constant (a broken export, for the tests)."""
    H, W = check_size(size)
    b = Builder(seed)
    feats = backbone(b, "images", width)
    pre = "one2one_" if end2end else ""
    boxes, clss, grids = [], [], []
    for i, (f, c) in enumerate(feats):
        s = 8 * 2 ** i
        h, w = H // s, W // s
        grids.append((s, h, w))
        x = b.silu(b.conv(f, c, 16, 3, 1, f"model.23.{pre}cv2.{i}.0.conv"), f"{SC}/{pre}cv2.{i}/act0")
        box = b.conv(x, 16, 4 * reg_max, 1, 1, f"model.23.{pre}cv2.{i}.2", std=0.05, bias=1.0)
        x = f
        for j, cin in enumerate((c, 16)):  # DWConv → Conv, twice
            wdw = b.init(f"model.23.{pre}cv3.{i}.{j}.0.conv.weight", b.rng.normal(0, 0.3, (cin, 1, 3, 3)))
            x = b.node("Conv", [x, wdw], scope=f"{SC}/{pre}cv3.{i}", kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                       strides=[1, 1], dilations=[1, 1], group=cin)
            x = b.silu(x, f"{SC}/{pre}cv3.{i}/dw{j}")
            x = b.silu(b.conv(x, cin, 16, 1, 1, f"model.23.{pre}cv3.{i}.{j}.1.conv"), f"{SC}/{pre}cv3.{i}/act{j}")
        cls = b.conv(x, 16, nc, 1, 1, f"model.23.{pre}cv3.{i}.2", std=0.3, bias=float(np.log(5 / nc / (640 / s) ** 2)))
        zero = {"allowzero": 0} if opset >= 14 else {}
        boxes.append(b.node("Reshape", [box, _i64(b, 1, 4 * reg_max, -1)], scope=SC, **zero))
        clss.append(b.node("Reshape", [cls, _i64(b, 1, nc, -1)], scope=SC, **zero))
    n = sum(h * w for _, h, w in grids)
    d = b.node("Concat", boxes, scope=SC, axis=-1)
    if reg_max > 1:
        d = _dfl(b, d, reg_max, n, opset)
    lt = b.node("Slice", [d, _i64(b, 0), _i64(b, 2), _i64(b, 1)], scope=SC)
    rb = b.node("Slice", [d, _i64(b, 2), _i64(b, 4), _i64(b, 1)], scope=SC)
    anchors = np.concatenate([cell_grid(h, w).reshape(-1, 2) + 0.5 for _, h, w in grids]).T[None] + anchor_shift
    strides = np.concatenate([np.full(h * w, s, np.float32) for s, h, w in grids])[None]  # (1, N)
    x1y1 = b.node("Sub", [b.const(anchors.astype(np.float32), scope=SC), lt], scope=SC)
    x2y2 = b.node("Add", [b.const(anchors.astype(np.float32), scope=SC), rb], scope=SC)
    if end2end:  # dist2bbox(xywh=False)
        dbox = b.node("Concat", [x1y1, x2y2], scope=SC, axis=1)
    else:
        c_xy = b.node("Div", [b.node("Add", [x1y1, x2y2], scope=SC), b.const(np.array(2.0, np.float32), scope=SC)],
                      scope=SC)
        dbox = b.node("Concat", [c_xy, b.node("Sub", [x2y2, x1y1], scope=SC)], scope=SC, axis=1)
    dbox = b.node("Mul", [dbox, b.const(strides, scope=SC)], scope=SC)
    cls = b.node("Sigmoid", [b.node("Concat", clss, scope=SC, axis=-1)], scope=SC)
    if not end2end:
        b.nodes.append(helper.make_node("Concat", [dbox, cls], ["output0"], name=f"{SC}/Concat_out", axis=1))
        return finish(b, "images", [1, 3, H, W], [("output0", [1, 4 + nc, n])], opset)
    dec = b.node("Concat", [dbox, cls], scope=SC, axis=1)
    _topk_tail(b, dec, nc, k, tail, opset, "output0")
    return finish(b, "images", [1, 3, H, W], [("output0", [1, k, 6])], opset)


def yolov10(nc: int = 80, size: tuple[int, int] = (320, 320), width: int = 8, k: int = 300, tail: str = "v10",
            opset: int = 12, seed: int = 0) -> onnx.ModelProto:
    """A YOLOv10 NMS-free export (DFL, 16 bins; THU-MIG's ``v10postprocess`` tail by default)."""
    return yolo26(nc, size, width, end2end=True, reg_max=16, k=k, tail=tail, opset=opset, seed=seed)
