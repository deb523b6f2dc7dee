"""``headcut verify``: run a model on an engine and compare its detections with the original in onnxruntime.

The candidate is either a raw model written by ``strip`` (then converted or not) — its output goes
through the numpy decode, with the head read from its metadata or its ``*.head.json`` — or a
decoded model (an original converted as is), whose output is compared directly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .decode import canonical, original_output, postprocess
from .engines import engine_for, run
from .head import Geometry
from .io import load
from .verify import DEFAULT_TOL, compare, deterministic_input, image_input, session

#: detections must overlap at least this much to count as the same
MIN_IOU = 0.99


@dataclass(frozen=True)
class EngineCheck:
    input: str
    engine: str
    max_abs_err_boxes: float
    max_abs_err_scores: float
    tolerance: float
    conf: float  # the score threshold the detections were compared at
    n_ref: int
    n_engine: int
    same_classes: bool
    min_iou: float

    @property
    def agree(self) -> bool:
        return self.n_ref == self.n_engine and self.same_classes and self.min_iou >= MIN_IOU

    @property
    def ok(self) -> bool:
        return self.agree and max(self.max_abs_err_boxes, self.max_abs_err_scores) <= self.tolerance


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 1.0


def match(ref: np.ndarray, got: np.ndarray) -> tuple[bool, float]:
    """(same classes, min IoU) pairing each reference detection with its best same-class partner."""
    if len(ref) != len(got):
        return False, 0.0
    used, worst, classes = set(), 1.0, True
    for r in ref:
        best, best_j = -1.0, None
        for j, g in enumerate(got):
            if j not in used and g[5] == r[5]:
                v = _iou(r, g)
                if v > best:
                    best, best_j = v, j
        if best_j is None:
            classes, best = False, 0.0
        else:
            used.add(best_j)
        worst = min(worst, best)
    return classes, worst


def head_for(candidate: str | os.PathLike) -> dict | None:
    """The head JSON of a raw model: its ONNX metadata, or ``<stem>.head.json`` beside it."""
    from .head import parse_metadata
    from .io import read_limited

    p = Path(candidate)
    side = p.with_name(p.stem + ".head.json")
    if side.exists():
        return parse_metadata(read_limited(side, 1 << 20, "head record"), str(side))
    if p.suffix.lower() == ".onnx":
        m = load(p)
        for prop in m.metadata_props:
            if prop.key == "headcut":
                return parse_metadata(prop.value, str(p))
    return None


def stable_conf(scores: np.ndarray, conf: float, k: int = 50, gap: float = 1e-3) -> float:
    """``conf``, or lower so that at least ``k`` candidates take part (random-weight models score low).

    A lowered threshold sits in the middle of a gap of at least ``gap`` between consecutive scores,
    so that tiny numeric differences cannot move a candidate across it.
    """
    s = np.sort(scores)[::-1]
    if len(s) == 0 or (np.sum(s >= conf) >= k):
        return conf
    for i in range(k - 1, len(s) - 1):
        if s[i] - s[i + 1] >= gap * max(s[i], 1e-6):
            return float((s[i] + s[i + 1]) / 2)
    return float(s[-1]) / 2


def verify_engine(original: str | os.PathLike, candidate: str | os.PathLike, engine: str | None = None,
                  images: tuple = (), conf: float = 0.25, iou: float = 0.45, tol: float = DEFAULT_TOL,
                  seed: int = 0) -> list[EngineCheck]:
    """Run ``original`` in onnxruntime and ``candidate`` on ``engine``; compare boxes, scores and detections."""
    from .strip import inspect

    engine = engine or engine_for(candidate)
    head = head_for(candidate)
    g_orig = Geometry.of(inspect(original).head)
    s = session(original)
    inp = s.get_inputs()[0]
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
    feeds = [(f"random(seed={seed})", deterministic_input(shape, np.float32, seed))]
    feeds += [(str(p), image_input(p, shape)) for p in images]
    xs = [x for _, x in feeds]
    refs = [s.run(None, {inp.name: x})[0] for x in xs]
    if head is not None:
        g = Geometry.of(head)
        in_name = head["input"]["name"]
        out_names = [o["name"] for o in head.get("raw_outputs", [])] or None
    else:
        g, in_name, out_names = None, inp.name, None
    if engine == "ncnn":
        from .convert import param_blobs

        ins, outs = param_blobs(candidate)
        in_name, out_names = ins[0], outs
    outs = run(candidate, xs, engine, in_name, out_names)
    checks = []
    for (label, _), ref, ys in zip(feeds, refs, outs):
        if g is not None:
            expected = [tuple(o["shape"]) for o in head.get("raw_outputs", [])]
            ys = [y.reshape(e) if e and y.size == int(np.prod(e)) else y for y, e in zip(ys, expected or [None] * len(ys))]
            got = original_output(ys if g.layout == "levels" else ys[0], g)
        else:
            got = ys[0].reshape(ref.shape) if ys[0].size == ref.size else ys[0]
        c = compare(ref, got, tol, label, g_orig.channel_first)
        ref_rows, got_rows = canonical(ref, g_orig), canonical(got, g_orig)
        ref_scores = ref_rows[0, :, 4] * ref_rows[0, :, 5:].max(-1)
        conf_eff = stable_conf(ref_scores, conf)
        d_ref, d_got = postprocess(ref_rows, conf_eff, iou), postprocess(got_rows, conf_eff, iou)
        same, worst = match(d_ref, d_got)
        checks.append(EngineCheck(label, engine, c.max_abs_err_boxes, c.max_abs_err_scores, c.tolerance,
                                  conf_eff, len(d_ref), len(d_got), same, worst))
    return checks
