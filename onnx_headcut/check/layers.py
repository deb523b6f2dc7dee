"""The three layers, as functions of arrays: raw outputs against the conv values laid out (1), the
decode against the original's output (2), detections after NMS on both sides (3)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from ..decode import canonical, class_span, nms, original_coefficients, original_output
from ..errors import VerificationError
from ..heads import Geometry, Head
from ..heads.anchor_grid import KIND as ANCHOR_GRID
from ..heads.base import PER_LEVEL, SPLIT, part_of
from ..heads.tasks import obb
from ..heads.tasks import task as task_of
from ..numeric import sigmoid
from .results import DEFAULT_CONF, DEFAULT_TOL, MIN_IOU, Allowed, Check, DecodeCheck, DetectionCheck, LayoutCheck


def expected_raw(convs: dict[str, np.ndarray], head: Head, g: Geometry) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The raw outputs the metadata ``g`` promises, built in numpy from the conv values: (values, ulps allowed).

    Each ulps array is 0 where the value is pure data movement (must match exactly) and the ulps of
    its dtype it may differ by where the layout computes it in the graph (sigmoid, DFL expectation:
    :data:`COMPUTED_ULPS`; the score sum, a sum of ``nc`` sigmoids: ``nc`` times that).
    """
    per_level: list[list[tuple[np.ndarray, np.ndarray]]] = []  # per level, one (values, ulps) per output part
    for lv in head.levels:
        by_role = {b.role: convs[b.tensor] for b in lv.branches}
        if head.kind is ANCHOR_GRID:
            per_level.append(_anchor_parts(by_role["pred"], head, g))
            continue
        groups: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {p: [] for p in g.parts}
        for role, size, sig in g.channels:
            if role == "reg" and "dfl" in by_role:  # DFL kept in the graph: distances from the bins
                x = by_role["dfl"]
                bsz, c, h, w = x.shape
                v = _dfl(x.reshape(bsz, 4, c // 4, h, w)).astype(x.dtype)
                groups[part_of(role) if g.layout in SPLIT else ""].append((v, np.full(v.shape, COMPUTED_ULPS)))
                continue
            x = by_role["dfl" if role == "dfl" else role]
            if x.shape[1] != size:
                raise VerificationError(f"the metadata says block '{role}' has {size} channels, "
                                        f"the conv has {x.shape[1]}")
            groups[part_of(role) if g.layout in SPLIT else ""].append(
                (sigmoid(x) if sig else x, np.full(x.shape, COMPUTED_ULPS if sig else 0)))
        if g.score_sum:
            x = by_role["cls"]
            v = np.clip(sigmoid(x).sum(1, keepdims=True, dtype=x.dtype), 0, 1)
            groups["sum"] = [(v, np.full(v.shape, COMPUTED_ULPS * (x.shape[1] + 1)))]
        per_level.append([(np.concatenate([v for v, _ in parts], 1), np.concatenate([m for _, m in parts], 1))
                          for parts in groups.values()])
    if g.layout in PER_LEVEL:
        pairs = [p for level in per_level for p in level]
    else:  # each part's (B, C, h, w) (anchor heads: already rows) flattened to rows, levels concatenated
        rows = [[v if v.ndim == 3 else v.reshape(*v.shape[:2], -1).transpose(0, 2, 1) for v in p]
                for level in per_level for p in level]
        n = len(g.parts)
        pairs = [(np.concatenate([r[0] for r in rows[k::n]], 1), np.concatenate([r[1] for r in rows[k::n]], 1))
                 for k in range(n)]
    if head.protos:  # the prototypes output, kept as it is: equal to the original's, bit for bit
        p = convs[head.protos[0]]
        pairs.append((p, np.zeros(p.shape)))
    return [v for v, _ in pairs], [m for _, m in pairs]


def _anchor_parts(x: np.ndarray, head: Head, g: Geometry) -> list[tuple[np.ndarray, np.ndarray]]:
    """An anchor head's conv (B, na·no, h, w) laid out as the level's parts (``levels``: the conv; flat:
    rows (B, na·h·w, no); split: per anchor (B, na·4, h, w) box and (B, na·(1+nc), h, w) scores; flat-split:
    those as rows), with sigmoid on the scores when the metadata says so."""
    bsz, _, h, w = x.shape
    na, no = head.na, head.num_classes + 5
    if g.layout == "levels":
        return [(x, np.zeros(x.shape))]
    y = x.reshape(bsz, na, no, h * w)
    if g.layout != "split":
        y = y.transpose(0, 1, 3, 2)  # (B, na, h·w, no)
    ax = 2 if g.layout == "split" else 3
    box, cls = np.split(y, [4], axis=ax)
    m_box, m_cls = np.zeros(box.shape), np.full(cls.shape, COMPUTED_ULPS if g.activated("obj") else 0)
    if g.activated("obj"):
        cls = sigmoid(cls)
    if g.layout == "split":
        shape = lambda a: a.reshape(bsz, -1, h, w)  # noqa: E731
    else:
        shape = lambda a: a.reshape(bsz, na * h * w, -1)  # noqa: E731
    if g.layout in SPLIT:
        return [(shape(box), shape(m_box)), (shape(cls), shape(m_cls))]
    return [(shape(np.concatenate([box, cls], -1)), shape(np.concatenate([m_box, m_cls], -1)))]


def _dfl(bins: np.ndarray) -> np.ndarray:
    """(B, 4, R, h, w) bin logits → (B, 4, h, w) distances: softmax over the R bins, then sum_i p_i * i."""
    b = bins.astype(np.float32)
    e = np.exp(b - b.max(2, keepdims=True))
    p = e / e.sum(2, keepdims=True)
    return (p * np.arange(b.shape[2], dtype=np.float32)[None, None, :, None, None]).sum(2)


#: ulps of a computed value (sigmoid, DFL expectation) its graph version may differ by in layer 1
COMPUTED_ULPS = 16


def layout_check(raw: list[np.ndarray], expected: list[np.ndarray], exact: list[np.ndarray],
                 atol: float = 0.0, rtol: float = 0.0, grown: list[np.ndarray] | None = None) -> LayoutCheck:
    """Compare raw outputs with :func:`expected_raw`: exact values must match to within ``atol``/``rtol``
    (0 for onnxruntime: bit for bit), computed values within a few ulps of their dtype more. ``exact``
    holds per value the ulps allowed (0: exact), or True where exact (a bool mask: :data:`COMPUTED_ULPS` elsewhere).
    ``grown``: per raw output, what a float16 engine may differ by more on its exact values
    (:mod:`onnx_headcut.check.half`)."""
    if len(raw) != len(expected):
        return LayoutCheck(math.inf, 0, 0, f"{len(raw)} raw outputs, the metadata describes {len(expected)}", False)
    worst, err_max, values, n_exact, ok = "", 0.0, 0, 0, True
    for k, (r, e, m) in enumerate(zip(raw, expected, exact)):
        r = np.asarray(r)
        if r.shape != e.shape:
            return LayoutCheck(math.inf, values, n_exact, f"raw output {k} has shape {list(r.shape)}, the convs laid "
                                                           f"out give {list(e.shape)}", False)
        a, b = e.astype(np.float64), r.astype(np.float64)
        with np.errstate(invalid="ignore"):
            err = np.where((a == b) | (np.isnan(a) & np.isnan(b)), 0.0, np.abs(a - b))
        err = np.nan_to_num(err, nan=math.inf)
        ulp = np.spacing(np.maximum(np.abs(a), 1.0).astype(e.dtype)).astype(np.float64)
        m = np.where(m, 0.0, COMPUTED_ULPS) if m.dtype == bool else np.asarray(m, np.float64)
        allowed = atol + rtol * np.abs(np.nan_to_num(a)) + m * ulp
        if grown is not None and k < len(grown) and np.shape(grown[k]) == a.shape:
            allowed = allowed + np.where(m == 0, np.asarray(grown[k], np.float64), 0.0)
        values += err.size
        n_exact += int((m == 0).sum())
        if err.size:
            err_max = max(err_max, float(err.max()))
            bad = err > allowed
            if bad.any() and ok:
                i = np.unravel_index(int(np.argmax(np.where(bad, err - allowed, -np.inf))), err.shape)
                worst = (f"raw output {k} at {list(map(int, i))}: {b[i]:.6g}, the conv value laid out is {a[i]:.6g}")
                ok = False
    return LayoutCheck(err_max, values, n_exact, worst, ok)


# ------------------------------------------------------------------------------------------- layer 2


def _where(head: Head | None, g: Geometry, row: int) -> str:
    """'row r (level l, cell x=.., y=..)' for a row of the original's (N, C) output."""
    at = 0
    for k, ((h, w), s) in enumerate(zip(g.grids, g.strides)):
        n = h * w * g.na
        if row < at + n:
            i = (row - at) % (h * w)
            return f"row {row} (level {k}, stride {s}, cell x={i % w} y={i // w})"
        at += n
    return f"row {row}"


def pixel_columns(g: Geometry, width: int) -> slice:
    """The original's columns (of ``width``) of a task's extra block that hold pixels: a face head's landmarks."""
    if g.task != "face":
        return slice(width, width)
    at = g.extra_at if g.extra_at >= 0 else width - g.part_width("lmk")
    return slice(at, at + g.part_width("lmk"))


def _column(g: Geometry, col: int, channel_first: bool) -> str:
    names = ["cx", "cy", "w", "h"]
    if col < 4:
        return f"column {col} ({names[col]})"
    return f"column {col}"


def decode_check(original_out: np.ndarray, decoded: np.ndarray, allowed: Allowed, g: Geometry) -> DecodeCheck:
    """Element-wise comparison of the original's output with the decode of the raw outputs (same layout)."""
    if original_out.shape != decoded.shape:
        return DecodeCheck(math.inf, math.inf, allowed, f"the decode gives shape {list(decoded.shape)}, the original "
                                                        f"{list(original_out.shape)}", False)
    a = original_out.astype(np.float64)
    b = decoded.astype(np.float64)
    if g.channel_first:  # (B, C, N) → (B, N, C): boxes are columns 0-3
        a, b = a.transpose(0, 2, 1), b.transpose(0, 2, 1)
    with np.errstate(invalid="ignore"):
        same = (a == b) | (np.isnan(a) & np.isnan(b))  # equal infinities count as equal
        err = np.where(same, 0.0, np.abs(a - b))
    err = np.nan_to_num(err, nan=math.inf)
    atol = np.full(a.shape[-1], allowed.score_atol)
    atol[:4] = allowed.box_atol
    atol[pixel_columns(g, a.shape[-1])] = allowed.box_atol  # a task's extra columns in pixels (landmarks)
    px = np.zeros(a.shape[-1], bool)
    px[:4] = True
    px[pixel_columns(g, a.shape[-1])] = True  # landmarks count with the boxes (pixels)
    if (t := task_of(g.task)) is not None and hasattr(t, "atol"):  # after the classes: keypoints px, angle rad
        extra = t.atol(g, allowed.box_atol, allowed.score_atol)
        atol[a.shape[-1] - len(extra):] = extra
        px[a.shape[-1] - len(extra):] = t.pixels(g)
    with np.errstate(invalid="ignore"):
        limit = atol + allowed.rtol * np.where(np.isfinite(a), np.abs(a), 0.0)
    excess = err - limit
    boxes = float(err[..., px].max()) if err.size else 0.0
    scores = float(err[..., ~px].max()) if err[..., ~px].size else 0.0
    bad = excess > 0
    if not bad.any():
        return DecodeCheck(boxes, scores, allowed, "", True)
    bi, row, col = np.unravel_index(int(np.argmax(np.where(bad, excess, -np.inf))), err.shape)
    n_bad = int(bad.any(-1).sum())
    worst = (f"worst at {_where(None, g, int(row))}, {_column(g, int(col), g.channel_first)}: original "
             f"{a[bi, row, col]:.6g}, decoded {b[bi, row, col]:.6g}; {n_bad} of {a.shape[0] * a.shape[1]} rows differ")
    return DecodeCheck(boxes, scores, allowed, worst, False)


# ------------------------------------------------------------------------------------------- layer 3


def _iou_one(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    iw = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    ih = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = iw * ih
    area = lambda b: np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)  # noqa: E731
    union = area(box) + area(boxes) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 1.0)


def _six(d) -> np.ndarray:
    """Detections as (K, 6) float64 ``[x1, y1, x2, y2, score, class]``: a task's extra columns left out."""
    a = np.asarray(d, np.float64)
    return a.reshape(-1, a.shape[-1])[:, :6] if a.ndim == 2 else a.reshape(-1, 6)


def match_detections(ref: np.ndarray, got: np.ndarray, min_iou: float = MIN_IOU) -> tuple[int, float]:
    """(matched pairs, min IoU over them): each reference detection, best score first, takes its
    best unmatched same-class partner; a pair counts when its IoU >= ``min_iou``."""
    ref, got = _six(ref), _six(got)
    free = np.ones(len(got), bool)
    matched, worst = 0, 1.0
    for r in ref[np.argsort(-ref[:, 4], kind="stable")]:
        cand = np.flatnonzero(free & (got[:, 5] == r[5]))
        if not cand.size:
            continue
        ious = _iou_one(r, got[cand])
        j = int(np.argmax(ious))
        if ious[j] >= min_iou:
            free[cand[j]] = False
            matched += 1
            worst = min(worst, float(ious[j]))
    return matched, worst


def _scored(rows: np.ndarray, nc: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(xyxy boxes, scores, classes) of decoded rows (N, 5+nc) = [cx, cy, w, h, obj or 1, cls...]; with ``nc``
    the columns after the classes (a task head's) are left out."""
    r = rows.astype(np.float64)
    cls = r[:, 5:5 + nc if nc is not None else None].argmax(1)
    score = r[:, 4] * r[np.arange(len(r)), 5 + cls]
    boxes = np.concatenate([r[:, 0:2] - r[:, 2:4] / 2, r[:, 0:2] + r[:, 2:4] / 2], 1)
    return boxes, score, cls


def _same_class_if_tied(rows: np.ndarray, cls: np.ndarray, ref_cls: np.ndarray, score_atol: float) -> np.ndarray:
    """``cls`` with the reference's class wherever that class scores within ``score_atol`` of the best one on
    this side: two classes that near-tie (random weights, or saturated sigmoids) are not a disagreement about
    the detection, since layer 2 already holds every score to that tolerance."""
    r = rows.astype(np.float64)
    at = np.arange(len(r))
    tied = (cls != ref_cls) & (r[at, 5 + cls] - r[at, 5 + ref_cls] <= score_atol)
    return np.where(tied, ref_cls, cls)


def detection_check(ref_rows: np.ndarray, got_rows: np.ndarray, conf: float, iou: float,
                    score_atol: float = DEFAULT_TOL, g: Geometry | None = None) -> DetectionCheck:
    """Layer 3 on two decoded ``(B, N, 5+nc)`` row tensors (see :func:`~onnx_headcut.decode.canonical`), first image.

    Both sides keep the rows whose score reaches ``conf`` and run class-aware greedy NMS with their
    own boxes, with no cap on the count. The visiting order is the reference's (score descending,
    then row) on both sides, so that tied scores — common where sigmoids saturate at 1.0 — cannot be
    broken differently by rounding. The kept rows must be the same, each pair of the same class and
    IoU >= :data:`MIN_IOU`. A row whose score is within ``score_atol`` of ``conf`` on one side only is
    left out of both (and counted), and a row whose best two classes tie within ``score_atol`` takes the
    reference's class on both sides; any other disagreement about a row fails the check.

    With an OBB head's geometry ``g`` (rows ``(B, N, 5 + nc + 1)``, the angle last) both sides run Ultralytics'
    rotated NMS (:func:`~onnx_headcut.heads.tasks.obb.nms_rotated`, probiou, centres offset by class) on their
    rotated boxes and the pairs are held to probiou >= :data:`MIN_IOU`.
    """
    rotated = g is not None and g.task == "obb"
    nc = g.num_classes if g is not None and rotated else None
    rb, rs, rc = _scored(ref_rows[0], nc)
    gb, gs, gc = _scored(got_rows[0], nc)
    if rotated:
        assert nc is not None
        rb, gb = obb.rotated(ref_rows[0].astype(np.float64), nc), obb.rotated(got_rows[0].astype(np.float64), nc)
    gc = _same_class_if_tied(got_rows[0], gc, rc, score_atol)
    pr, pg = rs >= conf, gs >= conf
    edge = (pr != pg) & (np.abs(rs - conf) <= score_atol)
    pr, pg = pr & ~edge, pg & ~edge
    rows = np.flatnonzero(pr | pg)
    order = rows[np.lexsort((rows, -rs[rows]))]
    rank = np.empty(len(rs))
    rank[order] = np.arange(len(order), 0, -1)

    def kept(passed, boxes, cls):
        idx = order[passed[order]]
        if not len(idx):
            return idx
        b = boxes[idx]
        if rotated:
            shifted = np.concatenate([b[:, :2] + cls[idx, None] * obb.MAX_WH, b[:, 2:]], 1)
            return np.sort(idx[obb.nms_rotated(np.nan_to_num(shifted), rank[idx], iou)])
        k = nms(np.nan_to_num(b + cls[idx, None] * class_span(b)), rank[idx], iou)
        return np.sort(idx[k])

    kr, kg = kept(pr, rb, rc), kept(pg, gb, gc)
    both = np.intersect1d(kr, kg)
    same = both[rc[both] == gc[both]]
    pair = (lambda i: obb.probiou(rb[i:i + 1], gb[i:i + 1])[0, 0]) if rotated else \
        (lambda i: _iou_one(rb[i], gb[i:i + 1])[0])
    ious = np.array([pair(i) for i in same]) if len(same) else np.ones(0)
    good = ious >= MIN_IOU
    return DetectionCheck(conf, iou, len(kr), len(kg), int(good.sum()), float(ious.min(initial=1.0)), int(edge.sum()))


def _with_coefficients(dec: DecodeCheck, ref: np.ndarray, raw: list[np.ndarray], g: Geometry,
                       allowed: Allowed) -> DecodeCheck:
    """Layer 2 of a YOLOv6 seg head: ``dec`` (the detections output) and the coefficient output
    ``(B, N, 1 + nm)`` = [level index, coefficients] rebuilt from the raw outputs."""
    got = original_coefficients(raw, g)
    if got.shape != ref.shape:
        return replace(dec, worst=f"the coefficients output: the decode gives {list(got.shape)}, the original "
                                  f"{list(ref.shape)}", ok=False)
    err = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    limit = allowed.score_atol + allowed.rtol * np.abs(ref.astype(np.float64))
    worst = float(err.max()) if err.size else 0.0
    if (err > limit).any():
        r, c = np.unravel_index(int(np.argmax(err - limit)), err.shape[1:]) if err.ndim == 3 else (0, 0)
        return replace(dec, max_abs_err_scores=max(dec.max_abs_err_scores, worst), ok=False,
                       worst=f"the coefficients output at {_where(None, g, int(r))}, column {int(c)}: original "
                             f"{ref[0, r, c]:.6g}, decoded {got[0, r, c]:.6g}")
    return replace(dec, max_abs_err_scores=max(dec.max_abs_err_scores, worst))


def mask_agreement(ref_rows: np.ndarray, got_rows: np.ndarray, ref_protos: np.ndarray, got_protos: np.ndarray,
                   g: Geometry, conf: float, iou: float) -> float:
    """Layer 3 for a segment head: the min IoU of the masks of matched detections (each side its own rows'
    coefficients and prototypes; pairs by row, same class), 1.0 when there are none."""
    from ..decode import postprocess
    from ..heads.tasks.segment import mask_iou, masks

    ref = postprocess(ref_rows[:1], conf, iou, 10 ** 6, g.num_classes)
    got = postprocess(got_rows[:1], conf, iou, 10 ** 6, g.num_classes)
    if not len(ref) or not len(got):
        return 1.0
    pairs = [(i, int(np.argmax(_iou_one(r, got)))) for i, r in enumerate(ref)]
    pairs = [(i, j) for i, j in pairs if got[j, 5] == ref[i, 5] and _iou_one(ref[i], got[j:j + 1])[0] >= MIN_IOU]
    if not pairs:
        return 1.0
    worst = 1.0
    for k in range(0, len(pairs), _MASK_CHUNK):  # input-sized masks: a chunk at a time bounds the memory
        chunk = pairs[k:k + _MASK_CHUNK]
        a = masks(ref[[i for i, _ in chunk]], ref_protos[:1], g)
        b = masks(got[[j for _, j in chunk]], got_protos[:1], g)
        worst = min(worst, float(mask_iou(a, b).min()))
    return worst


#: detections whose masks layer 3 builds at once
_MASK_CHUNK = 16


def gap_threshold(scores, conf: float = DEFAULT_CONF, k: int = 20, gap: float = 1e-3) -> float:
    """A detection threshold that at least ``k`` of ``scores`` reach: ``conf`` when they do, else one in
    the middle of a gap of at least ``gap`` (relative) between consecutive scores, so that rounding
    cannot move a candidate across it.

    For models with random weights, whose scores are all tiny. headcut never applies it on its own:
    a caller passes the result as ``conf`` explicitly, and every report prints the threshold used.
    """
    s = np.sort(np.asarray(scores, np.float64).ravel())[::-1]
    if len(s) == 0 or np.sum(s >= conf) >= k:
        return conf
    for i in range(k - 1, len(s) - 1):
        if s[i] - s[i + 1] >= gap * max(s[i], 1e-6):
            return float((s[i] + s[i + 1]) / 2)
    return float(s[-1]) / 2


# ---------------------------------------------------------------------------------------------- driver


def check_outputs(label: str, ref_out: np.ndarray, convs: dict[str, np.ndarray] | None, raw: list[np.ndarray],
                  head: Head, meta, allowed: Allowed, conf: float, iou: float, engine: str = "ort",
                  layout_atol: float = 0.0, layout_rtol: float = 0.0, mags: dict | None = None) -> Check:
    """The three layers for one input: ``raw`` are the candidate's outputs, ``convs`` the original's
    prediction-conv values (None when the candidate is a decoded model), ``ref_out`` its output. ``mags``: for a
    float16 engine, each conv's ``Σ |w|·|x| + |b|`` (:mod:`onnx_headcut.check.half`), which layer 1's allowance
    grows with."""
    g_orig = Geometry.of(head)
    if g_orig.topk:
        from .topk import check_topk  # it builds on this module's layers

        return check_topk(label, ref_out, convs, raw, head, meta, allowed, conf, iou, engine, layout_atol,
                          layout_rtol)
    with np.errstate(all="ignore"):  # inf/nan in a broken model's output is reported, not warned about
        if convs is None:  # a decoded candidate (an original converted as is): compare directly
            got = raw[0].reshape(ref_out.shape) if raw[0].size == ref_out.size else raw[0]
            lay = None
        else:
            g = Geometry.of(meta)
            expected, exact = expected_raw(convs, head, g)
            raw = [r.reshape(e.shape) if r.shape != e.shape and r.size == e.size else r for r, e in zip(raw, expected)]
            lay = layout_check(raw, expected, exact, layout_atol, layout_rtol, _grown(mags, head, g))
            try:
                got = original_output(raw, g)
            except ValueError as e:
                got = np.full((1,), np.nan)
                lay = LayoutCheck(math.inf, 0, 0, str(e), False)
        dec = decode_check(ref_out, got, allowed, g_orig)
        if head.coefficients and convs is not None and lay is not None and lay.ok:
            dec = _with_coefficients(dec, convs[head.coefficients[0]], raw, g, allowed)
        if got.shape == ref_out.shape:
            cols = 5 + g_orig.num_classes  # a task's extra columns are not scores
            ref_rows, got_rows = canonical(ref_out, g_orig), canonical(got, g_orig)
            if g_orig.task == "obb":  # rotated NMS and probiou on the rows with their angle
                det = detection_check(ref_rows, got_rows, conf, iou, allowed.score_atol, g_orig)
            else:
                det = detection_check(ref_rows[..., :cols], got_rows[..., :cols], conf, iou, allowed.score_atol)
            if head.coefficients and convs is not None:  # YOLOv6 seg: the coefficients from their own output
                ref_rows = np.concatenate([ref_rows, convs[head.coefficients[0]][..., 1:]], -1)
                got_rows = np.concatenate([got_rows, original_coefficients(raw, g)[..., 1:]], -1)
            if head.protos and convs is not None:
                det = replace(det, mask_iou=mask_agreement(ref_rows, got_rows, convs[head.protos[0]], raw[-1],
                                                           g_orig, conf, iou))
        else:
            det = DetectionCheck(conf, iou, 0, 0, 0, 0.0)
    return Check(label, lay, dec, det, engine)


def _grown(mags: dict | None, head: Head, g: Geometry) -> list[np.ndarray] | None:
    """The float16 allowance on each raw value laid out like the raw outputs (``HALF_GROWTH · u · M``), or None."""
    if not mags:
        return None
    from .half import HALF_GROWTH, U16

    laid, _ = expected_raw(mags, head, g)  # computed values get nonsense here: layout_check uses exact ones only
    return [HALF_GROWTH * U16 * np.asarray(v, np.float64) for v in laid]


def check_split_outputs(label: str, originals: list[np.ndarray], convs: dict[str, np.ndarray], raw: list[np.ndarray],
                        head: Head, meta, engine: str = "ort", layout_atol: float = 0.0,
                        layout_rtol: float = 0.0, mags: dict | None = None) -> Check:
    """Layer 1 for a head whose original outputs already are the raw head split per level, 5-D
    ``(B, na, h, w, no)`` (``head.split_outputs``): the raw outputs must equal the prediction convs laid
    out *and* the original's outputs rearranged, element for element. There is no decoded original, so
    layers 2 and 3 are not run (the :class:`Check` says so; they never count as passed)."""
    g = Geometry.of(meta)
    with np.errstate(all="ignore"):
        expected, exact = expected_raw(convs, head, g)
        raw = [r.reshape(e.shape) if r.shape != e.shape and r.size == e.size else r for r, e in zip(raw, expected)]
        grown = _grown(mags, head, g)
        lay = layout_check(raw, expected, exact, layout_atol, layout_rtol, grown)
        as_convs = {}  # (B, na, h, w, no) → (B, na·no, h, w): the conv value the 5-D output is a view of
        for lv, o in zip(head.levels, originals):
            b, na, h, w, no = o.shape
            as_convs[lv.branches[0].tensor] = o.transpose(0, 1, 4, 2, 3).reshape(b, na * no, h, w)
        exp_o, exact_o = expected_raw(as_convs, head, g)
        outs = replace(layout_check(raw, exp_o, exact_o, layout_atol, layout_rtol, grown),
                       source=f"the original's {len(originals)} raw outputs")
    return Check(label, lay, None, None, engine, outputs=outs)
