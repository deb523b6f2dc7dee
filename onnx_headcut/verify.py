"""Prove a cut exact, in three layers that a wrong cut cannot pass.

The original runs once in onnxruntime with its prediction-conv outputs added as extra graph
outputs (:func:`with_outputs`, on the serialized bytes: nothing of the user's file changes), the
raw model runs beside it, and per input:

1. **layout** — the raw outputs must *be* the prediction convs' values, rearranged: numpy lays the
   conv outputs out as the metadata says (:func:`expected_raw`) and the raw outputs must equal them
   exactly. Only what the chosen layout keeps in the graph (``--keep-sigmoid``, ``--keep-dfl``) is
   computed, and those columns are allowed a few ulps. This proves the cut itself.
2. **decode** — the numpy decode of the raw outputs must equal the original's output element by
   element within ``atol + rtol·|original|``, where ``atol`` is fixed by the *input size* and the
   dtype (``tol`` px per 640 px of input for boxes, ``tol`` for scores) and ``rtol`` is the dtype's
   rounding (1e-5 for float32). No value in the output can widen the tolerance of another; the worst
   element is reported with its row, level and column. This proves the recorded geometry.
3. **detections** — class-aware NMS on both sides at the requested ``conf`` (never lowered), with
   no top-k cap that could split ties; every detection must have a same-class partner with
   IoU >= :data:`MIN_IOU`. This proves what a user sees.

Graph optimisations are off on both sides so that onnxruntime's own fusions can neither hide nor
cause a difference. Any layer failing is a :class:`~onnx_headcut.errors.VerificationError` (exit 3).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from .decode import canonical, letterbox, original_output, sigmoid, to_input
from .errors import UsageError, VerificationError
from .heads import Geometry, Head
from .heads.anchor_grid import KIND as ANCHOR_GRID

#: box error allowed per 640 px of input size (pixels), and score error allowed (absolute)
DEFAULT_TOL = 1e-3
DEFAULT_CONF = 0.25
DEFAULT_IOU = 0.45
#: a detection and its partner on the other side must overlap at least this much
MIN_IOU = 0.99
_BOX_SCALE = 640.0
#: relative term of layer 2 (the dtype's rounding through a decode of a few ops)
_RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float16): 4e-3}


def check_options(tol: float = DEFAULT_TOL, conf: float = DEFAULT_CONF, iou: float = DEFAULT_IOU) -> None:
    """Refuse tolerances and thresholds outside their meaningful range (:class:`UsageError`, exit 2).

    ``tol`` must be finite, > 0 and <= 1 (scores live in [0, 1]: a larger tolerance checks nothing);
    ``conf`` and ``iou`` must lie in [0, 1].
    """
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and 0 < tol <= 1):
        raise UsageError(f"--tol must be a finite number in (0, 1], not {tol!r}")
    for name, v in (("--conf", conf), ("--iou", iou)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and 0 <= v <= 1):
            raise UsageError(f"{name} must be in [0, 1], not {v!r}")


# --------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Allowed:
    """Layer 2's tolerance: ``|a - b| <= atol + rtol * |a|`` per element, ``atol`` fixed by the input size."""

    box_atol: float
    score_atol: float
    rtol: float

    @classmethod
    def for_input(cls, input_shape, dtype, tol: float = DEFAULT_TOL) -> "Allowed":
        dt = np.dtype(dtype)
        side = float(max(int(d) for d in input_shape[-2:]))
        box, score = tol * max(1.0, side / _BOX_SCALE), tol
        if dt == np.float16:  # the original's own decode rounds to half precision at each op
            box = max(box, 4 * float(np.spacing(np.float16(side))))
            score = max(score, 4 * float(np.spacing(np.float16(1.0))))
        return cls(box, score, _RTOL.get(dt, 1e-5))

    def __str__(self) -> str:
        return f"{self.box_atol:.2g} px boxes, {self.score_atol:.2g} scores, + {self.rtol:.0e}·|value|"


@dataclass(frozen=True)
class LayoutCheck:
    """Layer 1: the raw outputs against the prediction convs' values laid out in numpy."""

    max_abs_err: float
    values: int  # how many values were compared
    exact_values: int  # of which pure data movement (allowed error 0)
    worst: str  # where the largest violation is ("" when none)
    ok: bool

    def __str__(self) -> str:
        computed = self.values - self.exact_values
        what = (f"{self.values} values = the prediction convs' outputs rearranged" +
                (f" ({computed} computed in the graph: sigmoid/DFL, a few ulps allowed)" if computed else ""))
        exact = " (exact)" if self.max_abs_err == 0 else ""
        return f"{what}: max abs error {self.max_abs_err:.3g}{exact}" + ("" if self.ok else f"; {self.worst}")


@dataclass(frozen=True)
class DecodeCheck:
    """Layer 2: the numpy decode of the raw outputs against the original's output."""

    max_abs_err_boxes: float
    max_abs_err_scores: float
    allowed: Allowed
    worst: str
    ok: bool

    @property
    def max_abs_err(self) -> float:
        return max(self.max_abs_err_boxes, self.max_abs_err_scores)

    def __str__(self) -> str:
        return (f"max abs error {self.max_abs_err:.3g} (boxes {self.max_abs_err_boxes:.3g} px, scores "
                f"{self.max_abs_err_scores:.3g}); allowed {self.allowed}" + ("" if self.ok else f"; {self.worst}"))


@dataclass(frozen=True)
class DetectionCheck:
    """Layer 3: detections after class-aware NMS on both sides, paired by anchor row."""

    conf: float
    iou: float
    n_ref: int
    n_got: int
    matched: int  # kept on both sides from the same anchor row, same class, IoU >= MIN_IOU
    min_iou: float  # over the matched pairs (1.0 when there are none)
    borderline: int = 0  # rows whose score is within the score tolerance of conf on one side only

    @property
    def ok(self) -> bool:
        return self.n_ref == self.n_got == self.matched

    def __str__(self) -> str:
        head = f"conf {self.conf:g}, NMS IoU {self.iou:g}: {self.n_ref} vs {self.n_got} detections"
        edge = (f"; {self.borderline} row(s) within the score tolerance of conf on one side only left out"
                if self.borderline else "")
        if self.n_ref == self.n_got == 0:
            return head + f" (no score reaches {self.conf:g} on either side){edge}"
        return head + f", {self.matched} matched (same anchor and class, IoU >= {MIN_IOU}), min IoU {self.min_iou:.4f}{edge}"


@dataclass(frozen=True)
class Check:
    """The three layers on one input."""

    input: str  # "random(seed=0)" or an image path
    layout: LayoutCheck | None  # None: the candidate is a decoded model (nothing to lay out)
    decode: DecodeCheck
    detections: DetectionCheck
    engine: str = "ort"

    @property
    def ok(self) -> bool:
        return (self.layout is None or self.layout.ok) and self.decode.ok and self.detections.ok

    @property
    def max_abs_err(self) -> float:
        return self.decode.max_abs_err

    @property
    def max_abs_err_boxes(self) -> float:
        return self.decode.max_abs_err_boxes

    @property
    def max_abs_err_scores(self) -> float:
        return self.decode.max_abs_err_scores

    @property
    def tolerance(self) -> float:
        return self.decode.allowed.box_atol

    def failure(self) -> str | None:
        """One sentence naming the first layer that failed, or None."""
        if self.layout is not None and not self.layout.ok:
            return f"layer 1 (raw = conv outputs): {self.layout}"
        if not self.decode.ok:
            return f"layer 2 (decode = original): {self.decode}"
        if not self.detections.ok:
            return f"layer 3 (detections): {self.detections}"
        return None


@dataclass(frozen=True)
class Verification:
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def max_abs_err(self) -> float:
        return max(c.max_abs_err for c in self.checks)

    @property
    def tolerance(self) -> float:
        return min(c.tolerance for c in self.checks)

    def raise_if_failed(self) -> None:
        for c in self.checks:
            why = c.failure()
            if why:
                raise VerificationError(f"verification failed on {c.input}: {why}; nothing written")


# ------------------------------------------------------------------------------------- onnxruntime side


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


def session(model, threads: int = 1, external_folder: str | None = None):
    """An onnxruntime CPU session on a path or serialized bytes, with graph optimisations off.

    ``external_folder`` is where a model given as bytes finds its external data files.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = threads
    so.log_severity_level = 4  # headcut reports failures itself, in one line
    if external_folder is not None:
        so.add_session_config_entry("session.model_external_initializers_file_folder_path", external_folder)
    src = os.fspath(model) if isinstance(model, (str, os.PathLike)) else model
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(buf, i: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


_GRAPH_FIELD = 7  # ModelProto.graph
_OUTPUT_FIELD = 12  # GraphProto.output


def _fields(buf: memoryview, start: int = 0, end: int | None = None):
    """(field number, wire type, field start, value start, value end) of each field of a message."""
    i, end = start, len(buf) if end is None else end
    while i < end:
        at = i
        key, i = _read_varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, j = _read_varint(buf, i)
            yield field, wire, at, i, j
        elif wire == 1:
            j = i + 8
            yield field, wire, at, i, j
        elif wire == 5:
            j = i + 4
            yield field, wire, at, i, j
        elif wire == 2:
            n, i = _read_varint(buf, i)
            j = i + n
            yield field, wire, at, i, j
        else:
            raise ValueError(f"unexpected protobuf wire type {wire}")
        i = j


def with_outputs(model_bytes: bytes, outputs: list[onnx.ValueInfoProto]) -> bytes:
    """The serialized model with ``outputs`` appended to its graph's outputs, edited at the wire level.

    Protobuf concatenates repeated fields, so the new outputs are appended to the graph message and
    only the graph's length prefix changes: the weights are copied once, never parsed. Names that
    already are graph outputs are not added again.
    """
    buf = memoryview(model_bytes)
    for field, wire, at, i, j in _fields(buf):
        if field != _GRAPH_FIELD or wire != 2:
            continue
        have = set()
        for f, w, _, a, b in _fields(buf, i, j):
            if f == _OUTPUT_FIELD and w == 2:
                have.add(onnx.ValueInfoProto.FromString(bytes(buf[a:b])).name)
        extra = b"".join(_varint(_OUTPUT_FIELD << 3 | 2) + _varint(len(v)) + v
                         for v in (o.SerializeToString() for o in outputs if o.name not in have))
        graph = bytes(buf[i:j]) + extra
        return bytes(buf[:at]) + _varint(_GRAPH_FIELD << 3 | 2) + _varint(len(graph)) + graph + bytes(buf[j:])
    raise ValueError("the model has no graph")


def reference_session(original, extra_outputs: list[onnx.ValueInfoProto]):
    """A session on ``original`` (path or bytes) that also returns the tensors named in ``extra_outputs``.

    The outputs are added to the serialized bytes in memory (:func:`with_outputs`); external data
    is read from the original's own folder. The user's files are only read.
    """
    folder = None
    if isinstance(original, (str, os.PathLike)):
        folder = str(Path(original).resolve().parent)
        original = Path(original).read_bytes()
    return session(with_outputs(original, extra_outputs), external_folder=folder)


def conv_outputs(head: Head) -> list[onnx.ValueInfoProto]:
    """Graph-output declarations (name only: onnxruntime infers type and shape) for the decoded tensor
    of ``head`` (an inner tensor in an end-to-end export) and every prediction conv."""
    names = dict.fromkeys([head.output_name] + [b.tensor for lv in head.levels for b in lv.branches])
    return [onnx.ValueInfoProto(name=n) for n in names]


# ------------------------------------------------------------------------------------------- layer 1


def expected_raw(convs: dict[str, np.ndarray], head: Head, g: Geometry) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The raw outputs the metadata ``g`` promises, built in numpy from the conv values: (values, exact masks).

    Each mask is True where the value is pure data movement (must match exactly) and False where
    the layout computes it in the graph (sigmoid, DFL expectation).
    """
    per_level, masks = [], []
    for lv in head.levels:
        by_role = {b.role: convs[b.tensor] for b in lv.branches}
        parts, exact = [], []
        if head.kind is ANCHOR_GRID:  # one conv (B, na*no, h, w) → (B, na, h*w, no), sigmoid on [4:] if asked
            x = by_role["pred"]
            bsz, _, h, w = x.shape
            no = head.num_classes + 5
            if g.layout == "levels":
                per_level.append(x)
                masks.append(np.ones(x.shape, bool))
                continue
            y = x.reshape(bsz, head.na, no, h * w).transpose(0, 1, 3, 2).reshape(bsz, head.na * h * w, no)
            m = np.ones(y.shape, bool)
            if g.activated("obj"):
                y = np.concatenate([y[..., :4], sigmoid(y[..., 4:])], -1)
                m[..., 4:] = False
            per_level.append(y)
            masks.append(m)
            continue
        for role, size, sig in g.channels:
            if role == "reg" and "dfl" in by_role:  # DFL kept in the graph: distances from the bins
                x = by_role["dfl"]
                bsz, c, h, w = x.shape
                v = _dfl(x.reshape(bsz, 4, c // 4, h, w)).astype(x.dtype)
                parts.append(v)
                exact.append(np.zeros(v.shape, bool))
                continue
            x = by_role["dfl" if role == "dfl" else role]
            if x.shape[1] != size:
                raise VerificationError(f"the metadata says block '{role}' has {size} channels, the conv has {x.shape[1]}")
            parts.append(sigmoid(x) if sig else x)
            exact.append(np.full(x.shape, not sig))
        cat, msk = np.concatenate(parts, 1), np.concatenate(exact, 1)
        if g.layout == "levels":
            per_level.append(cat)
            masks.append(msk)
        else:
            bsz, c, h, w = cat.shape
            per_level.append(cat.reshape(bsz, c, h * w).transpose(0, 2, 1))
            masks.append(msk.reshape(bsz, c, h * w).transpose(0, 2, 1))
    if g.layout == "levels":
        return per_level, masks
    return [np.concatenate(per_level, 1)], [np.concatenate(masks, 1)]


def _dfl(bins: np.ndarray) -> np.ndarray:
    """(B, 4, R, h, w) bin logits → (B, 4, h, w) distances: softmax over the R bins, then sum_i p_i * i."""
    b = bins.astype(np.float32)
    e = np.exp(b - b.max(2, keepdims=True))
    p = e / e.sum(2, keepdims=True)
    return (p * np.arange(b.shape[2], dtype=np.float32)[None, None, :, None, None]).sum(2)


#: ulps of a computed value (sigmoid, DFL expectation) its graph version may differ by in layer 1
COMPUTED_ULPS = 16


def layout_check(raw: list[np.ndarray], expected: list[np.ndarray], exact: list[np.ndarray],
                 atol: float = 0.0, rtol: float = 0.0) -> LayoutCheck:
    """Compare raw outputs with :func:`expected_raw`: exact values must match to within ``atol``/``rtol``
    (0 for onnxruntime: bit for bit), computed values within a few ulps of their dtype more."""
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
        allowed = atol + rtol * np.abs(np.nan_to_num(a)) + np.where(m, 0.0, COMPUTED_ULPS * ulp)
        values += err.size
        n_exact += int(m.sum())
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
    with np.errstate(invalid="ignore"):
        limit = atol + allowed.rtol * np.where(np.isfinite(a), np.abs(a), 0.0)
    excess = err - limit
    boxes = float(err[..., :4].max()) if err.size else 0.0
    scores = float(err[..., 4:].max()) if err[..., 4:].size else 0.0
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


def match_detections(ref: np.ndarray, got: np.ndarray, min_iou: float = MIN_IOU) -> tuple[int, float]:
    """(matched pairs, min IoU over them): each reference detection, best score first, takes its
    best unmatched same-class partner; a pair counts when its IoU >= ``min_iou``."""
    ref, got = np.asarray(ref, np.float64).reshape(-1, 6), np.asarray(got, np.float64).reshape(-1, 6)
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


def _scored(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(xyxy boxes, scores, classes) of decoded rows (N, 5+nc) = [cx, cy, w, h, obj or 1, cls...]."""
    r = rows.astype(np.float64)
    cls = r[:, 5:].argmax(1)
    score = r[:, 4] * r[np.arange(len(r)), 5 + cls]
    boxes = np.concatenate([r[:, 0:2] - r[:, 2:4] / 2, r[:, 0:2] + r[:, 2:4] / 2], 1)
    return boxes, score, cls


def detection_check(ref_rows: np.ndarray, got_rows: np.ndarray, conf: float, iou: float,
                    score_atol: float = DEFAULT_TOL) -> DetectionCheck:
    """Layer 3 on two decoded ``(B, N, 5+nc)`` row tensors (see :func:`~onnx_headcut.decode.canonical`), first image.

    Both sides keep the rows whose score reaches ``conf`` and run class-aware greedy NMS with their
    own boxes, with no cap on the count. The visiting order is the reference's (score descending,
    then row) on both sides, so that tied scores — common where sigmoids saturate at 1.0 — cannot be
    broken differently by rounding. The kept rows must be the same, each pair of the same class and
    IoU >= :data:`MIN_IOU`. A row whose score is within ``score_atol`` of ``conf`` on one side only is
    left out of both (and counted); any other disagreement about a row fails the check.
    """
    from .decode import nms

    rb, rs, rc = _scored(ref_rows[0])
    gb, gs, gc = _scored(got_rows[0])
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
        span = float(np.abs(b[np.isfinite(b)]).max(initial=0.0)) + 1.0
        k = nms(np.nan_to_num(b + cls[idx, None] * span), rank[idx], iou)
        return np.sort(idx[k])

    kr, kg = kept(pr, rb, rc), kept(pg, gb, gc)
    both = np.intersect1d(kr, kg)
    same = both[rc[both] == gc[both]]
    ious = np.array([_iou_one(rb[i], gb[i:i + 1])[0] for i in same]) if len(same) else np.ones(0)
    good = ious >= MIN_IOU
    return DetectionCheck(conf, iou, len(kr), len(kg), int(good.sum()), float(ious.min(initial=1.0)), int(edge.sum()))


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


def deterministic_input(shape, dtype=np.float32, seed: int = 0) -> np.ndarray:
    """Uniform [0, 1) noise shaped like the input: every anchor gets a different value."""
    return np.random.default_rng(seed).random(tuple(shape), dtype=np.float32).astype(dtype)


def image_input(path: str | os.PathLike, shape, dtype=np.float32) -> np.ndarray:
    """An image file letterboxed to the model's input, as NCHW floats in [0, 1]."""
    from .images import read_rgb

    img, _, _ = letterbox(read_rgb(path), tuple(shape[-2:]))
    return to_input(img).astype(dtype)


def check_outputs(label: str, ref_out: np.ndarray, convs: dict[str, np.ndarray] | None, raw: list[np.ndarray],
                  head: Head, meta, allowed: Allowed, conf: float, iou: float, engine: str = "ort",
                  layout_atol: float = 0.0, layout_rtol: float = 0.0) -> Check:
    """The three layers for one input: ``raw`` are the candidate's outputs, ``convs`` the original's
    prediction-conv values (None when the candidate is a decoded model), ``ref_out`` its output."""
    g_orig = Geometry.of(head)
    with np.errstate(all="ignore"):  # inf/nan in a broken model's output is reported, not warned about
        if convs is None:  # a decoded candidate (an original converted as is): compare directly
            got = raw[0].reshape(ref_out.shape) if raw[0].size == ref_out.size else raw[0]
            lay = None
        else:
            g = Geometry.of(meta)
            expected, exact = expected_raw(convs, head, g)
            raw = [r.reshape(e.shape) if r.shape != e.shape and r.size == e.size else r for r, e in zip(raw, expected)]
            lay = layout_check(raw, expected, exact, layout_atol, layout_rtol)
            try:
                got = original_output(raw if g.layout == "levels" else raw[0], g)
            except ValueError as e:
                got = np.full((1,), np.nan)
                lay = LayoutCheck(math.inf, 0, 0, str(e), False)
        dec = decode_check(ref_out, got, allowed, g_orig)
        if got.shape == ref_out.shape:
            det = detection_check(canonical(ref_out, g_orig), canonical(got, g_orig), conf, iou, allowed.score_atol)
        else:
            det = DetectionCheck(conf, iou, 0, 0, 0, 0.0)
    return Check(label, lay, dec, det, engine)


def verify(original, raw, head: Head, meta, images: tuple = (), tol: float = DEFAULT_TOL, seed: int = 0,
           batches: tuple = (1,), conf: float = DEFAULT_CONF, iou: float = DEFAULT_IOU,
           conv_source=None) -> Verification:
    """Run ``original`` and ``raw`` (paths or bytes) and apply the three layers on each input.

    ``head`` is the located head (its branch tensors name the prediction convs in ``original``);
    ``meta`` is the raw model's head JSON. Each batch size in ``batches`` gets its own deterministic
    input (dynamic-batch models); each path in ``images`` is letterboxed to the input.
    ``conv_source`` (bytes), when given, is the graph layer 1 reads the conv values from (the folded
    graph the head was located on, when folding renamed the convs' tensors in ``original``).
    """
    check_options(tol, conf, iou)
    g = Geometry.of(meta)
    extra = conv_outputs(head)
    names = [o.name for o in extra[1:]]
    try:
        s_orig = reference_session(original, extra[:1] if conv_source is not None else extra)
        s_conv = reference_session(conv_source, extra[1:]) if conv_source is not None else None
    except Exception as e:
        raise VerificationError(f"onnxruntime cannot run the original model, so the cut cannot be checked "
                                f"({_first_line(e)}); use --no-verify to skip the check") from None
    try:
        s_raw = session(raw)
    except Exception as e:  # a bug in the cut, not in the input
        raise VerificationError(f"onnxruntime cannot load the raw model ({_first_line(e)})") from None
    inp = s_orig.get_inputs()[0]
    np_dtype = np.float16 if "float16" in inp.type else np.float32
    allowed = Allowed.for_input(g.input_shape, np_dtype, tol)
    feeds = [(f"random(seed={seed})" + (f", batch {n}" if n != 1 else ""),
              deterministic_input((n, *g.input_shape[1:]), np_dtype, seed)) for n in batches]
    feeds += [(str(Path(p)), image_input(p, g.input_shape, np_dtype)) for p in images]
    out_name = head.output_name
    checks = []
    for label, x in feeds:
        try:
            if s_conv is None:
                ys = s_orig.run([out_name, *names], {inp.name: x})
            else:
                ys = s_orig.run([out_name], {inp.name: x}) + s_conv.run(names, {s_conv.get_inputs()[0].name: x})
        except Exception as e:  # the input file is not a runnable model
            raise VerificationError(f"onnxruntime cannot run the original model on {label} ({_first_line(e)}); "
                                    "nothing written") from None
        try:
            r = s_raw.run(None, {s_raw.get_inputs()[0].name: x})
        except Exception as e:
            raise VerificationError(f"onnxruntime cannot run the raw model ({_first_line(e)}); nothing written") from None
        checks.append(check_outputs(label, ys[0], dict(zip(names, ys[1:])), r, head, meta, allowed, conf, iou))
    return Verification(tuple(checks))

