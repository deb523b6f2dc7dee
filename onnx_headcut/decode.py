"""The reference decode of headcut's raw outputs, in numpy, written to be ported line by line to C++.

Everything here reads the head geometry recorded by ``strip`` (the JSON in the raw model's
``metadata_props["headcut"]`` or the ``*.head.json`` sidecar), or a :class:`~onnx_headcut.head.Head`.

Raw layout (decode ``grid_exp_obj``: YOLOv6 0.1.0, YOLOX), one row per anchor::

    row r of level L (stride s, grid h x w, rows first_row .. first_row + h*w - 1):
        i = r - first_row;  gy = i // w;  gx = i % w
        [dx, dy, dw, dh, obj, cls_0 .. cls_{nc-1}]        (logits: no sigmoid, exp, grid or stride)

    cx = (dx + gx) * s        w = exp(dw) * s
    cy = (dy + gy) * s        h = exp(dh) * s
    score_c = sigmoid(obj) * sigmoid(cls_c)

A C++ port should threshold before decoding: ``sigmoid`` is monotonic, so a row can be skipped when
``obj < logit(conf)`` without computing anything else (see :func:`detect`).
"""

from __future__ import annotations

import numpy as np

from .head import GRID_EXP_OBJ, Geometry

__all__ = ["anchor_grid", "decode", "detect", "letterbox", "nms", "scale_boxes", "sigmoid"]


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically safe logistic function, computed in the input's dtype."""
    x = np.asarray(x)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def anchor_grid(head) -> tuple[np.ndarray, np.ndarray]:
    """Per-row cell indices ``(N, 2)`` as (gx, gy) and strides ``(N, 1)``, levels stride ascending."""
    g = Geometry.of(head)
    cells, strides = [], []
    for s, (h, w) in zip(g.strides, g.grids):
        gy, gx = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
        cells.append(np.stack([gx.ravel(), gy.ravel()], -1))
        strides.append(np.full((h * w, 1), s, dtype=np.float32))
    return np.concatenate(cells), np.concatenate(strides)


def decode(raw: np.ndarray, head) -> np.ndarray:
    """Decode a raw ``(B, N, C)`` tensor into the original model's output layout.

    For ``grid_exp_obj`` the result is ``(B, N, 5 + nc)`` = ``[cx, cy, w, h, sigmoid(obj), sigmoid(cls)]``
    in input pixels, exactly what the original decoded export returns.
    """
    g = Geometry.of(head)
    if g.decode != GRID_EXP_OBJ:
        raise ValueError(f"unknown decode kind {g.decode!r}")
    raw = np.asarray(raw)
    cells, strides = anchor_grid(g)
    if raw.ndim != 3 or raw.shape[1] != len(cells) or raw.shape[2] != 5 + g.num_classes:
        raise ValueError(f"raw tensor {raw.shape} does not match the head: (B, {len(cells)}, {5 + g.num_classes})")
    dt = raw.dtype
    xy = (raw[..., 0:2] + cells.astype(dt)) * strides.astype(dt)
    wh = np.exp(raw[..., 2:4]) * strides.astype(dt)
    return np.concatenate([xy, wh, sigmoid(raw[..., 4:])], -1)


def letterbox(image: np.ndarray, size: tuple[int, int], color: int = 114) -> tuple[np.ndarray, float, tuple[float, float]]:
    """Resize an HWC uint8 image keeping its aspect ratio and pad it to ``size`` = (h, w).

    Returns ``(padded, ratio, (pad_x, pad_y))``; a box in the padded image maps back with
    :func:`scale_boxes`. Nearest-neighbour resampling keeps this dependency-free.
    """
    h0, w0 = image.shape[:2]
    h, w = size
    r = min(h / h0, w / w0)
    nh, nw = max(1, round(h0 * r)), max(1, round(w0 * r))
    ys = np.minimum((np.arange(nh) + 0.5) / r, h0 - 1).astype(np.int64)
    xs = np.minimum((np.arange(nw) + 0.5) / r, w0 - 1).astype(np.int64)
    resized = image[ys][:, xs]
    out = np.full((h, w, image.shape[2]), color, dtype=image.dtype)
    top, left = (h - nh) // 2, (w - nw) // 2
    out[top:top + nh, left:left + nw] = resized
    return out, r, (float(left), float(top))


def to_input(image: np.ndarray) -> np.ndarray:
    """HWC uint8 RGB → NCHW float32 in [0, 1], as YOLOv6's exporter expects."""
    return np.ascontiguousarray(image.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0


def scale_boxes(boxes: np.ndarray, ratio: float, pad: tuple[float, float]) -> np.ndarray:
    """Map xyxy boxes from the letterboxed input back to the original image."""
    out = boxes.copy()
    out[:, [0, 2]] = (out[:, [0, 2]] - pad[0]) / ratio
    out[:, [1, 3]] = (out[:, [1, 3]] - pad[1]) / ratio
    return out


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy NMS on xyxy ``boxes``; returns kept indices, best score first."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes.T
    area = np.maximum(0, x2 - x1) * np.maximum(0, y2 - y1)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        iw = np.maximum(0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        ih = np.maximum(0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = iw * ih
        ov = inter / np.maximum(area[i] + area[rest] - inter, 1e-9)
        order = rest[ov <= iou]
    return np.asarray(keep, dtype=np.int64)


def detect(raw: np.ndarray, head, conf: float = 0.25, iou: float = 0.45, max_det: int = 300) -> np.ndarray:
    """Detections ``(K, 6)`` = ``[x1, y1, x2, y2, score, class]`` for the first image of a raw tensor.

    Candidates are chosen on logits first (``obj >= logit(conf)``), so only they are decoded; then
    class-aware NMS (boxes offset by class so different classes never suppress each other).
    """
    g = Geometry.of(head)
    r = np.asarray(raw)[0].astype(np.float32)
    cells, strides = anchor_grid(g)
    logit_conf = np.log(conf / (1 - conf))
    cand = np.nonzero(r[:, 4] >= logit_conf)[0]  # score <= sigmoid(obj): a cheap exact pre-filter
    r, cells, strides = r[cand], cells[cand], strides[cand]
    cls_p = sigmoid(r[:, 5:])
    cls_id = cls_p.argmax(1)
    score = sigmoid(r[:, 4]) * cls_p[np.arange(len(r)), cls_id]
    ok = score >= conf
    r, cells, strides, score, cls_id = r[ok], cells[ok], strides[ok], score[ok], cls_id[ok]
    xy = (r[:, 0:2] + cells) * strides
    wh = np.exp(r[:, 2:4]) * strides
    boxes = np.concatenate([xy - wh / 2, xy + wh / 2], 1)
    span = float(np.abs(boxes).max()) + 1.0 if len(boxes) else 1.0
    offset = cls_id[:, None].astype(np.float32) * span
    keep = nms(boxes + offset, score, iou)[:max_det]
    return np.concatenate([boxes[keep], score[keep, None], cls_id[keep, None].astype(np.float32)], 1)
