"""``obb``: Ultralytics ``OBB`` (YOLOv8 / YOLO11 -obb): ``Detect`` plus a one-channel angle branch ``cv4`` per level.

The export (8.x, ``export=True``; ``utils/tal.py`` ``dist2rbox``)::

    angle = (sigmoid(raw_angle) - 0.25) * pi                       # [-pi/4, 3pi/4)
    lt, rb = dfl(boxes).split(2);  cos, sin = cos(angle), sin(angle)
    xf, yf = (rb - lt) / 2;  x, y = xf * cos - yf * sin, xf * sin + yf * cos
    dbox = cat([[x, y] + anchors, lt + rb]) * strides                # cx, cy, w, h of the rotated box
    output (1, 4 + nc + 1, N) = cat([dbox, sigmoid(cls), angle], 1)

Raw block ``angle``: the angle conv's one value per row, the logit. Detections are NMSed with Ultralytics'
``nms_rotated`` (fast NMS on ``batch_probiou``, ``utils/metrics.py``), class-aware by offsetting the centres.
"""

from __future__ import annotations

import math

import numpy as np

from ...numeric import dfl_expectation, sigmoid
from .._match import Group, MatchContext, Reject, located, matcher
from ..base import Geometry, Head, Rejection
from ..dist_anchor import KIND
from ..families import ultralytics_family
from ._ultralytics import check_constants, downstream, levels_of

TASK = "obb"
ROLE = "angle"
#: how :func:`onnx_headcut.heads.refusals.extra_branch` names such an export when :func:`match_obb` refuses it
LABEL = "Ultralytics OBB export"

FORMULA = ("angle = (sigmoid(angle logit) - 0.25) * pi; with l, t, r, b the row's distances: "
           "xf = (r - l) / 2, yf = (b - t) / 2, cx = (xf * cos(angle) - yf * sin(angle) + gx + 0.5) * s, "
           "cy = (xf * sin(angle) + yf * cos(angle) + gy + 0.5) * s, w = (l + r) * s, h = (t + b) * s "
           "(Ultralytics' dist2rbox); the decoded row is [cx, cy, w, h, (1,) scores, angle]")

#: Ultralytics' class offset of rotated NMS (``non_max_suppression(max_wh=7680)``)
MAX_WH = 7680.0


def _is_angle(ops: set[str]) -> bool:
    return {"Sin", "Cos", "Sigmoid"} <= ops and "Softmax" not in ops


@matcher("Ultralytics OBB (YOLOv8 / YOLO11 -obb: Detect + angle branch, rotated boxes, channel-first output)",
         rows=False)
def match_obb(ctx: MatchContext, groups: list[Group], no: Reject) -> Head | Rejection:
    """Per level a DFL box conv, a cls conv and a 1-channel angle conv read through Sigmoid, Sin and Cos."""
    found = levels_of(ctx, groups, no, ROLE, _is_angle)
    if isinstance(found, Rejection):
        return found
    levels, nc, ne, box_ch = found
    if ne != 1:
        return no(f"the angle branch has {ne} channels, not 1")
    ops = downstream(ctx, levels[0].branches[0].tensor)
    if {"Sin", "Cos"} & ops:
        return no("the box branch reaches Sin/Cos itself")
    seen = check_constants(ctx, levels, no, {("Sub", 0.25): "angle offset 0.25", ("Mul", math.pi): "angle * pi",
                                             ("Div", 2.0): "halving", ("Mul", 0.5): "halving"})
    if isinstance(seen, Rejection):
        return seen
    for need in ("angle offset 0.25", "angle * pi", "per-row strides"):
        if need not in seen:
            return no(f"the rotated-box decode lacks its {need}")
    fam = ultralytics_family(ctx.ix, levels[0].branches[0].tensor, levels[0].branches[1].tensor, box_ch // 4)
    reasons = (
        f"{len(levels)} levels of 3 prediction convs (box {box_ch} = 4 x {box_ch // 4} DFL bins, cls {nc}, angle 1)",
        ctx.grids_text(levels),
        "output channel-first (1, 4 + nc + 1, N); the angle branch is read through Sigmoid, - 0.25, * pi and "
        "rotates the box offsets through Sin and Cos (dist2rbox)",
        "constants: " + ", ".join(seen),
        *fam.reasons,
        ctx.ops_text(),
    )
    return located(ctx, KIND, fam.name, fam.version, nc, levels, reasons, reg_max=box_ch // 4 - 1,
                   ones_column=False, channel_first=True, task=TASK)


def boxes(flat: np.ndarray, g: Geometry, cells: np.ndarray, strides: np.ndarray) -> np.ndarray:
    """The rotated boxes' cx, cy, w, h (B, K, 4) in input pixels (dist2rbox): they replace the detection decode's
    axis-aligned columns 0-3."""
    dt = flat.dtype.type
    cols = g.columns()
    d = dfl_expectation(flat[..., cols["dfl"]], g.reg_max) if "dfl" in cols else flat[..., cols["reg"]]
    d = d.astype(flat.dtype)
    angle = decode(flat, g, cells, strides)
    cos, sin = np.cos(angle), np.sin(angle)
    lt, rb = d[..., 0:2], d[..., 2:4]
    half = (rb - lt) / dt(2)
    xf, yf = half[..., 0:1], half[..., 1:2]
    xy = np.concatenate([xf * cos - yf * sin, xf * sin + yf * cos], -1) + (cells + dt(0.5))
    return (np.concatenate([xy, lt + rb], -1) * strides).astype(flat.dtype)


def decode(flat: np.ndarray, g: Geometry, cells: np.ndarray, strides: np.ndarray) -> np.ndarray:
    """The extra column: the angle in radians, ``(sigmoid(logit) - 0.25) * pi`` (B, K, 1)."""
    dt = flat.dtype.type
    return ((sigmoid(flat[..., g.columns()[ROLE]]) - dt(0.25)) * dt(math.pi)).astype(flat.dtype)


def atol(g: Geometry, box_atol: float, score_atol: float) -> np.ndarray:
    """Layer 2's tolerance of the angle column, in radians: pi x the score tolerance (the angle is pi x a sigmoid)."""
    return np.asarray([math.pi * score_atol])


def pixels(g: Geometry) -> np.ndarray:
    """The angle column is radians, not pixels (reported with the scores)."""
    return np.asarray([False])


# --------------------------------------------------------------------- rotated IoU and NMS (utils/metrics.py)


def _covariance(b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``_get_covariance_matrix``: (a, b, c) of the Gaussian of each xywhr box, shapes (N, 1)."""
    a, bb, c = b[:, 2:3] ** 2 / 12, b[:, 3:4] ** 2 / 12, b[:, 4:5]
    cos, sin = np.cos(c), np.sin(c)
    return a * cos ** 2 + bb * sin ** 2, a * sin ** 2 + bb * cos ** 2, (a - bb) * cos * sin


def probiou(obb1: np.ndarray, obb2: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """``batch_probiou``: (N, M) probabilistic IoU of xywhr boxes ``obb1`` (N, 5) and ``obb2`` (M, 5)."""
    o1, o2 = np.asarray(obb1, np.float64), np.asarray(obb2, np.float64)
    x1, y1 = o1[:, 0:1], o1[:, 1:2]
    x2, y2 = o2[:, 0][None], o2[:, 1][None]
    a1, b1, c1 = _covariance(o1)
    a2, b2, c2 = (v[:, 0][None] for v in _covariance(o2))
    den = (a1 + a2) * (b1 + b2) - (c1 + c2) ** 2 + eps
    t1 = (((a1 + a2) * (y1 - y2) ** 2 + (b1 + b2) * (x1 - x2) ** 2) / den) * 0.25
    t2 = (((c1 + c2) * (x2 - x1) * (y1 - y2)) / den) * 0.5
    root = np.sqrt(np.clip(a1 * b1 - c1 ** 2, 0, None) * np.clip(a2 * b2 - c2 ** 2, 0, None))
    t3 = np.log(((a1 + a2) * (b1 + b2) - (c1 + c2) ** 2) / (4 * root + eps) + eps) * 0.5
    bd = np.clip(t1 + t2 + t3, eps, 100.0)
    return 1 - np.sqrt(1.0 - np.exp(-bd) + eps)


def nms_rotated(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Ultralytics' ``nms_rotated``: fast NMS (a box goes when any better-scored box overlaps it by ``iou`` or
    more, kept or not), probiou; kept indices, best score first."""
    order = np.argsort(-scores, kind="stable")
    if not len(order):
        return order.astype(np.int64)
    ious = np.triu(probiou(boxes[order], boxes[order]), 1)
    return order[ious.max(0) < iou].astype(np.int64)


def rotated(d: np.ndarray, nc: int) -> np.ndarray:
    """(N, 5) xywhr boxes of decoded rows (N, 5 + nc + 1)."""
    return np.concatenate([d[:, 0:4], d[:, 5 + nc:6 + nc]], 1)


def enclosing(r: np.ndarray) -> np.ndarray:
    """(N, 4) x1, y1, x2, y2 of the axis-aligned box enclosing each xywhr box."""
    cos, sin = np.abs(np.cos(r[:, 4])), np.abs(np.sin(r[:, 4]))
    hw = (r[:, 2] * cos + r[:, 3] * sin) / 2
    hh = (r[:, 2] * sin + r[:, 3] * cos) / 2
    return np.stack([r[:, 0] - hw, r[:, 1] - hh, r[:, 0] + hw, r[:, 1] + hh], 1)


def postprocess(d: np.ndarray, nc: int, conf: float, iou: float, max_det: int) -> np.ndarray:
    """Detections ``(K, 11)`` = ``[x1, y1, x2, y2, score, class, cx, cy, w, h, angle]`` of decoded rows
    ``(N, 5 + nc + 1)`` of ``nc`` classes: columns 0-3 the axis-aligned box enclosing the rotated one; rotated
    NMS as upstream."""
    cls_id = d[:, 5:5 + nc].argmax(1)
    score = d[:, 4] * d[np.arange(len(d)), 5 + cls_id]
    keep = score >= conf
    d, score, cls_id = d[keep], score[keep], cls_id[keep]
    r = rotated(d, nc)
    shifted = np.concatenate([r[:, :2] + cls_id[:, None] * MAX_WH, r[:, 2:]], 1)
    k = nms_rotated(shifted, score, iou)[:max_det]
    return np.concatenate([enclosing(r[k]), score[k, None], cls_id[k, None].astype(np.float32), r[k]],
                          1).astype(np.float32)


def to_json(det: np.ndarray, g: Geometry, scale) -> dict:
    """The rotated box of one detection row for ``detect --json``: centre and size in image pixels (``scale``
    maps (n, 2) input pixels to the image's; the letterbox scales both sides alike), angle in radians, corners."""
    cx, cy, w, h, a = (float(v) for v in det[6:11])
    corners = _corners(cx, cy, w, h, a)
    (c,) = scale(np.asarray([[cx, cy]]))
    gain = float(np.linalg.norm(scale(np.asarray([[1.0, 0.0]])) - scale(np.asarray([[0.0, 0.0]]))))
    pts = scale(corners)
    return {"rotated_box": {"cx": round(float(c[0]), 2), "cy": round(float(c[1]), 2), "w": round(w * gain, 2),
                            "h": round(h * gain, 2), "angle": round(a, 5),
                            "corners": [[round(float(x), 2), round(float(y), 2)] for x, y in pts]}}


def _corners(cx: float, cy: float, w: float, h: float, a: float) -> np.ndarray:
    """(4, 2) corners of a xywhr box (Ultralytics' ``xywhr2xyxyxyxy``)."""
    cos, sin = math.cos(a), math.sin(a)
    v1, v2 = np.array([w / 2 * cos, w / 2 * sin]), np.array([-h / 2 * sin, h / 2 * cos])
    c = np.array([cx, cy])
    return np.stack([c + v1 + v2, c + v1 - v2, c - v1 - v2, c - v1 + v2])


def corners(det: np.ndarray) -> np.ndarray:
    """(4, 2) corners of a detection row's rotated box (input pixels)."""
    return _corners(*(float(v) for v in det[6:11]))
