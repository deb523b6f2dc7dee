"""The reference decode of headcut's raw outputs, in numpy, written to be ported line by line to C++.

Everything here reads the head geometry recorded by ``strip`` (the JSON in the raw model's
``metadata_props["headcut"]`` or the ``*.head.json`` sidecar), or a :class:`~onnx_headcut.heads.Head`.
Rows are ordered level by level (stride ascending), row-major over (y, x) inside a level::

    row r of a level (stride s, grid h x w, rows first_row .. first_row + h*w - 1):
        i = r - first_row;  gy = i // w;  gx = i % w

Each decode kind's formula is written out in its module, :mod:`onnx_headcut.heads.grid_exp_obj`
(YOLOv6 0.1.0, YOLOX), :mod:`~onnx_headcut.heads.dist_anchor` (YOLOv6 >= 0.2, YOLOv8/11, DFL or not)
and :mod:`~onnx_headcut.heads.anchor_grid` (YOLOv5/v7); this module holds what they share: the row
geometry, NMS and the ordering of candidates; the letterbox of each project is in
:mod:`onnx_headcut.preprocess`.

A record with ``dynamic_hw`` (a raw graph that keeps the input's symbolic height and width) gives
its levels at ``input.shape``; at another input size H x W each level's grid is (H / stride, W / stride).
:func:`decode`, :func:`original_output` and :func:`detect` take ``input_size=(H, W)`` for that (the
levels layout needs none: the output shapes give the grids).

Where the metadata says a block has "sigmoid applied" the graph already did it. A C++ port should
threshold before decoding: ``sigmoid`` is monotonic, so a row is skipped when its best logit is
below ``logit(conf)`` without computing anything else (see :func:`detect`).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .heads import Geometry, kind
from .heads.base import TASK_ROLES
from .heads.tasks import extra_columns, segment, task_boxes
from .heads.tasks import task as task_of
from .numeric import cell_grid, dfl_expectation, sigmoid
from .preprocess import letterbox, scale_boxes, to_input  # noqa: F401  (re-exported: the image side of a decode)

__all__ = ["anchor_grid", "canonical", "corners", "decode", "detect", "dfl_expectation", "flatten_levels", "letterbox",
           "masks", "nms", "original_coefficients", "original_output", "postprocess", "protos", "raw_outputs",
           "scale_boxes", "select_topk", "selected", "sigmoid", "sized", "to_input"]


def anchor_grid(head) -> tuple[np.ndarray, np.ndarray]:
    """Per-row cell indices ``(N, 2)`` as (gx, gy) and strides ``(N, 1)``, in the raw output's row order.

    Levels stride ascending, row-major (y, x) inside a level; anchor heads (YOLOv5/v7) repeat each
    level's cells once per anchor (rows: level, anchor, y, x).
    """
    cells, strides, _ = _rows(Geometry.of(head))
    return cells, strides


@lru_cache(maxsize=32)
def _rows(g: Geometry) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(cells (N, 2), strides (N, 1), anchor sizes (N, 2) in pixels or None) per raw row."""
    cells, strides, sizes = [], [], []
    for i, (s, (h, w)) in enumerate(zip(g.strides, g.grids)):
        c = cell_grid(h, w)
        for a in range(g.na):
            cells.append(c)
            strides.append(np.full((h * w, 1), s, dtype=np.float32))
            if g.anchors:
                sizes.append(np.tile(np.asarray(g.anchors[i][a], np.float32), (h * w, 1)))
    return np.concatenate(cells), np.concatenate(strides), (np.concatenate(sizes) if sizes else None)


def sized(head, raw=None, input_size=None) -> Geometry:
    """The geometry of ``head`` at ``input_size`` (H, W), or, for a dynamic head's levels layout, at the size
    the level outputs ``raw`` imply; else as recorded. :class:`ValueError` for a size the head cannot take."""
    g = Geometry.of(head)
    if input_size is not None:
        return g.at(input_size)
    if g.dynamic and isinstance(raw, (list, tuple)) and raw and np.ndim(raw[0]) == 4:
        s = g.strides[0]
        return g.at((np.shape(raw[0])[2] * s, np.shape(raw[0])[3] * s))
    return g


def raw_outputs(raw, head) -> list[np.ndarray]:
    """The raw outputs as a checked list: ``raw`` is what a session returns (the list of outputs, in
    order) or, for the one-output flat layout, that output alone. :class:`ValueError` (one line) when
    the count or a shape is not what the recorded layout has."""
    g = Geometry.of(head)
    expected = g.output_shapes()
    listed = isinstance(raw, (list, tuple))
    if not listed and len(expected) > 1:
        raise ValueError(f"the {g.layout} layout has {len(expected)} outputs; pass the list of session outputs "
                         "(session.run(None, ...)), not one array")
    outs = [np.asarray(r) for r in raw] if listed else [np.asarray(raw)]
    if g.protos and len(outs) == len(expected) - 1:  # the raw outputs without the prototypes kept after them
        expected = expected[:-1]
    if len(outs) != len(expected):
        raise ValueError(f"{len(outs)} raw outputs given, the {g.layout} layout of this head has {len(expected)}")
    batch = outs[0].shape[0] if outs[0].ndim else 0
    for k, (o, e) in enumerate(zip(outs, expected)):
        if o.shape != (batch, *e[1:]):
            at = "x".join(map(str, g.input_shape[-2:]))
            hint = f" at {at}; pass input_size=(H, W) for another input size" if g.dynamic else ""
            raise ValueError(f"raw output {k} has shape {list(o.shape)}, the {g.layout} layout of this head gives "
                             f"{[batch, *e[1:]]}{hint}")
    return outs


def flatten_levels(raw, head) -> np.ndarray:
    """Any layout's raw outputs (see :func:`raw_outputs`) as the flat (B, N, C) layout.

    ``levels``: each (B, na·C, h, w) → rows (level, anchor, y, x); ``split``: per level the box and cls
    outputs (B, na·k, h, w) joined per anchor on the channel axis first (the score sum is left out);
    ``flat-split``: the (B, N, box) and (B, N, scores) outputs joined on the last axis.
    """
    g = Geometry.of(head)
    outs = raw_outputs(raw, g)
    if g.protos:  # the prototypes kept after the raw outputs are not rows
        outs = outs[:len(g.output_shapes()) - 1]
    if g.layout == "flat":
        return outs[0]
    j = g.joined_parts  # box, cls (, a task's extra block); not the score sum
    if g.layout == "flat-split":
        return np.concatenate(outs[:j], -1)
    if g.layout == "split":  # per level [box, cls(, extra)(, sum)]: (B, na·k, h, w) → (B, na, k, h·w), joined on k
        n = len(g.parts)
        outs = [np.concatenate([o.reshape(o.shape[0], g.na, -1, o.shape[2] * o.shape[3]) for o in outs[k:k + j]], 2)
                .reshape(outs[k].shape[0], -1, *outs[k].shape[2:]) for k in range(0, len(outs), n)]
    if g.na > 1:  # anchor heads: (B, na*no, h, w) per level → rows (level, anchor, y, x)
        return np.concatenate([o.reshape(o.shape[0], g.na, -1, o.shape[2] * o.shape[3]).transpose(0, 1, 3, 2)
                               .reshape(o.shape[0], -1, o.shape[1] // g.na) for o in outs], 1)
    return np.concatenate([o.reshape(o.shape[0], o.shape[1], -1).transpose(0, 2, 1) for o in outs], 1)


def decode(raw, head, input_size=None) -> np.ndarray:
    """Decode the raw outputs (the list a session returns; the flat layout's one ``(B, N, C)`` array may
    be passed alone) into the original layout (:class:`ValueError` for outputs the layout does not have).

    ``grid_exp_obj`` → ``(B, N, 5 + nc)`` = ``[cx, cy, w, h, sigmoid(obj), sigmoid(cls)]``;
    ``dist_anchor`` → ``(B, N, 5 + nc)`` = ``[cx, cy, w, h, 1, sigmoid(cls)]``, in input pixels,
    exactly what the original decoded export returns. ``input_size`` (H, W): the input the raw output
    was computed at, for a head with ``dynamic_hw`` (see :func:`sized`).
    """
    g = sized(head, raw, input_size)
    flat = flatten_levels(raw, g)
    rows = _rows(g)
    if flat.ndim != 3 or flat.shape[1] != len(rows[0]) or flat.shape[2] != g.width:
        at = "x".join(map(str, g.input_shape[-2:]))
        hint = f" at {at}; pass input_size=(H, W) for another input size" if g.dynamic else ""
        raise ValueError(f"raw tensor {flat.shape} does not match the head: (B, {len(rows[0])}, {g.width}){hint}")
    cells, strides = rows[0].astype(flat.dtype), rows[1].astype(flat.dtype)
    sizes = None if rows[2] is None else rows[2].astype(flat.dtype)
    return _decoded(flat, g, cells, strides, sizes)


def _decoded(flat: np.ndarray, g: Geometry, cells: np.ndarray, strides: np.ndarray, sizes) -> np.ndarray:
    """The kind's decoded rows, then the task's extra columns (:mod:`onnx_headcut.heads.tasks`) when it has one;
    a task that decodes its own boxes (OBB: rotated cx, cy, w, h) replaces columns 0-3."""
    out = kind(g.decode).decode(flat, g, cells, strides, sizes)
    if (box := task_boxes(flat, g, cells, strides)) is not None:
        out = np.concatenate([box, out[..., 4:]], -1)
    extra = extra_columns(flat, g, cells, strides)
    return np.concatenate([out, *extra], -1) if extra else out


def corners(raw, head) -> np.ndarray:
    """Decoded rows ``(B, N, 4 + nc)`` = ``[x1, y1, x2, y2, class scores]`` (input pixels) of a raw output
    of the ``dist_anchor`` kind: the tensor an NMS-free Ultralytics export selects from."""
    g = Geometry.of(head)
    flat = flatten_levels(raw, g)
    cells, strides, _ = _rows(g)
    if flat.ndim != 3 or flat.shape[1] != len(cells) or flat.shape[2] != g.width:
        raise ValueError(f"raw tensor {flat.shape} does not match the head: (B, {len(cells)}, {g.width})")
    return kind(g.decode).corners(flat, g, cells.astype(flat.dtype), strides.astype(flat.dtype))


def _topk(v: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest of ``v``, largest first, ties to the lower index: onnxruntime's TopK
    (``largest=1, sorted=1``), checked element for element in ``tests/heads/test_topk.py``."""
    return np.argsort(-v, kind="stable")[:k]


def select_topk(rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The NMS-free selection of Ultralytics ``Detect.postprocess`` (YOLOv10 ``v10postprocess``), in numpy.

    ``rows`` ``(B, N, 4 + nc)`` = ``[x1, y1, x2, y2, scores]``. Per image: the ``k`` anchors with the best
    class score (TopK of the max over classes), their ``k * nc`` scores flattened (anchor-major), the ``k``
    best of those; class = index % nc, anchor = first[index // nc]. Returns ``(out (B, k, 6) = [x1, y1,
    x2, y2, score, class], anchors (B, k), classes (B, k))``. The export fixes ``k`` = ``max_det``; with
    fewer anchors upstream's Python inference takes ``min(max_det, N)``, as here.
    """
    boxes, scores = rows[..., :4], rows[..., 4:]
    nc = scores.shape[-1]
    outs, anchors, classes = [], [], []
    for b in range(rows.shape[0]):
        first = _topk(scores[b].max(-1), min(k, scores.shape[1]))
        cand = scores[b][first].reshape(-1)
        pick = _topk(cand, k)
        a, c = first[pick // nc], pick % nc
        outs.append(np.concatenate([boxes[b][a], cand[pick][:, None], c[:, None].astype(rows.dtype)], 1))
        anchors.append(a)
        classes.append(c)
    return np.stack(outs), np.stack(anchors), np.stack(classes)


def selected(out: np.ndarray, conf: float) -> np.ndarray:
    """Detections ``(K, 6)`` of a top-k output ``(1, k, 6)``: the rows whose score reaches ``conf``, in the
    output's order, without NMS (what Ultralytics' predict does with an end-to-end model)."""
    d = np.asarray(out, dtype=np.float32)[0]
    return d[d[:, 4] >= conf]


def original_output(raw, head, input_size=None) -> np.ndarray:
    """What the original export returns for this raw output: :func:`decode`, in the original's layout.

    YOLOv8/11 outputs are channel-first without the ones column; an undecoded YOLOX export returns
    the raw rows with sigmoid on objectness and classes; an NMS-free export (``topk``) the top-k
    selection ``(B, k, 6)`` of the x1, y1, x2, y2 rows (:func:`select_topk`). ``input_size`` as for
    :func:`decode`.
    """
    g = sized(head, raw, input_size)
    if g.topk:
        return select_topk(corners(raw, g), g.topk)[0]
    if g.xyxy:
        return corners(raw, g).transpose(0, 2, 1) if g.channel_first else corners(raw, g)
    if not g.original_decoded:
        flat = flatten_levels(raw, g).copy()
        cols = g.columns()
        for role in ("obj", "cls"):
            if not g.activated(role):
                flat[..., cols[role]] = sigmoid(flat[..., cols[role]])
        return flat
    out = decode(raw, g)
    if g.coefficients:  # YOLOv6 seg: the coefficients are an output of their own (original_coefficients)
        out = out[..., :out.shape[-1] - _extra_width(g)]
    if not g.ones_column:
        out = np.concatenate([out[..., :4], out[..., 5:]], -1)
    if g.extra_at >= 0:  # the task's extra block sits inside the original's row (YOLOv6 face: after the box)
        e = out.shape[-1] - g.extra_at - _extra_width(g)
        out = np.concatenate([out[..., :g.extra_at], out[..., -_extra_width(g):], out[..., g.extra_at:e + g.extra_at]],
                             -1)
    return out.transpose(0, 2, 1) if g.channel_first else out


def original_coefficients(raw, head) -> np.ndarray:
    """What a YOLOv6 seg export's coefficient output holds for this raw output: ``(B, N, 1 + nm)`` = per row
    [level index, mask coefficients]."""
    g = Geometry.of(head)
    flat = flatten_levels(raw, g)
    level = np.concatenate([np.full(h * w * g.na, i, flat.dtype) for i, (h, w) in enumerate(g.grids)])
    idx = np.broadcast_to(level[None, :, None], (flat.shape[0], len(level), 1))
    return np.concatenate([idx, flat[..., g.columns()["mask"]]], -1)


def _extra_width(g: Geometry) -> int:
    """Columns of the task's extra block in a decoded row (0 for a detection head)."""
    return sum(n for r, n, _ in g.channels if r in TASK_ROLES)


def canonical(original_out: np.ndarray, head) -> np.ndarray:
    """An original export's output as decoded rows ``(B, N, 5 + nc)`` = [cx, cy, w, h, obj or 1, cls]."""
    g = Geometry.of(head)
    if not g.original_decoded:
        cols = g.columns()
        probs = original_out.copy()
        for role in ("obj", "cls"):  # the export applied them; decode expects what the head says
            if not g.activated(role):
                probs[..., cols[role]] = np.log(np.clip(probs[..., cols[role]], 1e-12, 1 - 1e-7)
                                                / np.clip(1 - probs[..., cols[role]], 1e-12, None))
        return decode(probs, g)
    if g.topk:
        raise ValueError("a top-k output holds detections, not decoded rows; see selected()")
    y = original_out.transpose(0, 2, 1) if g.channel_first else original_out
    if g.extra_at >= 0:  # the extra block back after the classes
        a, n = g.extra_at, _extra_width(g)
        y = np.concatenate([y[..., :a], y[..., a + n:], y[..., a:a + n]], -1)
    if g.xyxy:  # x1, y1, x2, y2 → cx, cy, w, h
        y = np.concatenate([(y[..., 0:2] + y[..., 2:4]) / 2, y[..., 2:4] - y[..., 0:2], y[..., 4:]], -1)
    if not g.ones_column:
        y = np.concatenate([y[..., :4], np.ones((*y.shape[:2], 1), y.dtype), y[..., 4:]], -1)
    return y


def class_span(boxes: np.ndarray) -> float:
    """The offset per class id that keeps boxes of different classes apart in a class-aware NMS:
    ``2 * max |coordinate| + 1``. Boxes lie in [-M, M], so class c's offset boxes lie in
    [c*S - M, c*S + M] and class c+1's start at c*S + M + 1 (``M + 1`` would let a box with negative
    coordinates of class c+1 overlap one of class c and suppress it)."""
    finite = boxes[np.isfinite(boxes)]
    return 2.0 * float(np.abs(finite).max(initial=0.0)) + 1.0


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


def detect(raw, head, conf: float = 0.25, iou: float = 0.45, max_det: int = 300, input_size=None) -> np.ndarray:
    """Detections ``(K, 6)`` = ``[x1, y1, x2, y2, score, class]`` for the first image of the raw outputs
    (the list a session returns, or the flat layout's one output; :class:`ValueError` for anything else).

    Candidates are chosen before decoding: a row's score is at most ``sigmoid(obj)`` (or its best
    ``sigmoid(cls)``), so rows whose logit is below ``logit(conf)`` are dropped first and only the
    rest are decoded. Then class-aware NMS (boxes offset by class so classes never suppress each other).
    Pass a :class:`~onnx_headcut.heads.Geometry` (``Geometry.of(meta)``) when calling it in a loop;
    ``input_size`` as for :func:`decode`.
    """
    g = sized(head, raw, input_size)
    flat = flatten_levels(raw, g)
    rows = np.asarray(flat[0], dtype=np.float32)  # a view when the output is already float32
    cols = g.columns()
    gate_role = kind(g.decode).gate
    gate = rows[:, cols[gate_role]]
    threshold = conf if g.activated(gate_role) else float(np.log(conf / (1 - conf)))
    hits = np.flatnonzero(gate >= np.float32(threshold))  # flat indices: cheaper than .any(1) on a strided view
    cand = np.unique(hits // gate.shape[1]) if gate.shape[1] > 1 else hits
    return postprocess(_decode_rows(rows[cand][None], g, cand)[None], conf, iou, max_det, g.num_classes, g.task)


def postprocess(decoded: np.ndarray, conf: float = 0.25, iou: float = 0.45, max_det: int = 300,
                num_classes: int | None = None, task: str = "detect") -> np.ndarray:
    """Detections ``(K, 6 + E)`` = ``[x1, y1, x2, y2, score, class, extras]`` from a decoded ``(1, N, 5 + nc + E)``
    output.

    Works on what every decoded YOLOv6/YOLOX export returns, ``[cx, cy, w, h, obj_or_1, cls scores]``:
    score = column 4 × best class score, then class-aware NMS. With ``num_classes`` the columns after the
    classes are a task's extras (segment: mask coefficients), carried into the detections as they are. A ``task``
    with its own post-processing (OBB: rotated NMS; its detections ``[x1, y1, x2, y2, score, class, cx, cy, w, h,
    angle]``, the box enclosing the rotated one) uses it.
    """
    d = np.asarray(decoded, dtype=np.float32)[0]
    nc = d.shape[1] - 5 if num_classes is None else num_classes
    if (t := task_of(task)) is not None and hasattr(t, "postprocess"):
        return t.postprocess(d, nc, conf, iou, max_det)
    extras = d[:, 5 + nc:]
    cls_id = d[:, 5:5 + nc].argmax(1)
    score = d[:, 4] * d[np.arange(len(d)), 5 + cls_id]
    keep = score >= conf
    d, score, cls_id, extras = d[keep], score[keep], cls_id[keep], extras[keep]
    boxes = np.concatenate([d[:, 0:2] - d[:, 2:4] / 2, d[:, 0:2] + d[:, 2:4] / 2], 1)
    k = nms(boxes + cls_id[:, None].astype(np.float32) * class_span(boxes), score, iou)[:max_det]
    return np.concatenate([boxes[k], score[k, None], cls_id[k, None].astype(np.float32), extras[k]], 1)


def protos(raw, head) -> np.ndarray:
    """The prototypes ``(B, nm, h, w)`` of a segmentation head: the output kept after the raw ones."""
    g = Geometry.of(head)
    if not g.protos or not isinstance(raw, (list, tuple)) or len(raw) != len(g.output_shapes()):
        raise ValueError("no prototypes: pass every session output (session.run(None, ...)) of a segment head")
    return np.asarray(raw[-1])


def masks(dets: np.ndarray, protos: np.ndarray, head, shape=None) -> np.ndarray:
    """``(K, H, W)`` bool masks of segment detections (see :func:`onnx_headcut.heads.tasks.segment.masks`)."""
    return segment.masks(dets, protos, head, shape)


def _decode_rows(rows: np.ndarray, g: Geometry, index: np.ndarray) -> np.ndarray:
    """:func:`decode` restricted to the rows ``index`` of the flat layout: returns (K, 5 + nc)."""
    cells, strides, sizes = _rows(g)
    return _decoded(rows, g, cells[index], strides[index], None if sizes is None else sizes[index])[0]
