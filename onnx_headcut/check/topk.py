"""The three layers for an NMS-free (top-k) export, whose output ``(1, k, 6)`` is a selection of its decode.

The original runs with its decoded tensor ``D`` (1, 4+nc, N) as an extra output beside its ``(1, k, 6)``
output ``O``; ``D_np`` is the numpy decode of the raw outputs (:func:`~onnx_headcut.decode.corners`).

1. layout: as for every head (the raw outputs are the prediction convs laid out).
2. decode: ``select_topk(D) == O`` bit for bit (the tail is the recorded selection, ties included: it
   runs on the very values the original selected from); ``D_np`` equals ``D`` element for element within
   the tolerance; and the ``(1, k, 6)`` rows built from ``D_np`` at the selected (anchor, class) pairs
   equal ``O`` within the tolerance.
3. detections: ``O``'s rows whose score reaches ``conf`` against those of ``select_topk(D_np)``, paired
   by (anchor, class): the same pairs, IoU >= :data:`MIN_IOU`; no NMS on either side, as upstream.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from ..decode import corners, select_topk
from ..heads import Geometry, Head
from .layers import _iou_one, decode_check, expected_raw, layout_check
from .results import MIN_IOU, Allowed, Check, DecodeCheck, DetectionCheck, LayoutCheck


def _tail_check(original: np.ndarray, selected: np.ndarray, allowed: Allowed) -> DecodeCheck | None:
    """None when the original's output is exactly the recorded selection of its own decoded tensor."""
    same = (original == selected) | (np.isnan(original) & np.isnan(selected))
    if original.shape == selected.shape and bool(same.all()):
        return None
    if original.shape != selected.shape:
        return DecodeCheck(np.inf, np.inf, allowed, f"the original's output {list(original.shape)} is not the "
                                                    f"recorded selection's {list(selected.shape)}", False)
    _, row, col = np.unravel_index(int(np.argmax(~same)), same.shape)
    why = (f"the original's top-k output is not the recorded selection of its own decoded tensor: row {row}, "
           f"column {col}: {original[0, row, col]:.6g} vs {selected[0, row, col]:.6g}")
    return DecodeCheck(np.inf, np.inf, allowed, why, False)


def decode_topk(original: np.ndarray, decoded: np.ndarray, raw_rows: np.ndarray, allowed: Allowed, g: Geometry
                ) -> tuple[DecodeCheck, np.ndarray, np.ndarray]:
    """Layer 2 (see the module): the check, and the original's selected (anchors, classes)."""
    rows = decoded.transpose(0, 2, 1)  # (1, N, 4+nc) = [x1, y1, x2, y2, scores]
    sel, anchors, classes = select_topk(rows, g.topk)
    tail = _tail_check(original, sel, allowed)
    if tail is not None:
        return tail, anchors, classes
    full = decode_check(decoded, raw_rows.transpose(0, 2, 1), allowed, g)
    b = np.arange(raw_rows.shape[0])[:, None]
    at = np.concatenate([raw_rows[b, anchors, :4], raw_rows[b, anchors, 4 + classes][..., None],
                         classes[..., None].astype(raw_rows.dtype)], -1)
    picked = decode_check(original, at, allowed, replace(g, channel_first=False))
    worst = "" if full.ok and picked.ok else ("decoded tensor: " + full.worst if not full.ok
                                              else "selected rows: " + picked.worst)
    return (DecodeCheck(max(full.max_abs_err_boxes, picked.max_abs_err_boxes),
                        max(full.max_abs_err_scores, picked.max_abs_err_scores), allowed, worst,
                        full.ok and picked.ok), anchors, classes)


def detections_topk(original: np.ndarray, anchors: np.ndarray, classes: np.ndarray, raw_rows: np.ndarray,
                    k: int, conf: float, iou: float, score_atol: float) -> DetectionCheck:
    """Layer 3 (see the module), first image."""
    got, ga, gc = select_topk(raw_rows, k)
    ref = {(int(a), int(c)): r for a, c, r in zip(anchors[0], classes[0], original[0])}
    mine = {(int(a), int(c)): r for a, c, r in zip(ga[0], gc[0], got[0])}
    # each pair's score on either side; a pair one side did not select is read from the decode of all rows
    score = {key: raw_rows[0, key[0], 4 + key[1]] for key in mine} | {key: r[4] for key, r in ref.items()}
    theirs = {key: raw_rows[0, key[0], 4 + key[1]] for key in ref} | {key: r[4] for key, r in mine.items()}
    pr = {key for key in ref if ref[key][4] >= conf}
    pg = {key for key in mine if mine[key][4] >= conf}
    edge = {key for key in pr ^ pg if abs(float(score[key]) - conf) <= score_atol
            or abs(float(theirs[key]) - conf) <= score_atol}
    pr, pg = pr - edge, pg - edge
    both = sorted(pr & pg)
    ious = np.array([_iou_one(ref[key][:4].astype(np.float64), mine[key][None, :4].astype(np.float64))[0]
                     for key in both])
    good = int((ious >= MIN_IOU).sum()) if len(both) else 0
    return DetectionCheck(conf, iou, len(pr), len(pg), good, float(ious.min(initial=1.0)), len(edge), nms=False)


def check_topk(label: str, ref_out, convs, raw, head: Head, meta, allowed: Allowed, conf: float, iou: float,
                engine: str, layout_atol: float, layout_rtol: float) -> Check:
    """:func:`check_outputs` for an NMS-free export: ``ref_out`` is (its (1, k, 6) output, its decoded tensor)."""
    original, decoded = ref_out
    g_orig = Geometry.of(head)
    with np.errstate(all="ignore"):
        if convs is None:  # a converted original: its (1, k, 6) output against the original's
            got = raw[0].reshape(original.shape) if raw[0].size == original.size else raw[0]
            dec = decode_check(original, got, allowed, replace(g_orig, channel_first=False))
            return Check(label, None, dec, DetectionCheck(conf, iou, 0, 0, 0, 1.0, nms=False), engine)
        g = Geometry.of(meta)
        expected, exact = expected_raw(convs, head, g)
        raw = [r.reshape(e.shape) if r.shape != e.shape and r.size == e.size else r for r, e in zip(raw, expected)]
        lay = layout_check(raw, expected, exact, layout_atol, layout_rtol)
        try:
            rows = corners(raw if g.layout == "levels" else raw[0], g)
        except ValueError as e:
            lay = LayoutCheck(math.inf, 0, 0, str(e), False)
            return Check(label, lay, DecodeCheck(math.inf, math.inf, allowed, str(e), False),
                         DetectionCheck(conf, iou, 0, 0, 0, 0.0, nms=False), engine)
        dec, anchors, classes = decode_topk(original, decoded, rows, allowed, g_orig)
        det = detections_topk(original, anchors, classes, rows, g_orig.topk, conf, iou, allowed.score_atol)
    return Check(label, lay, dec, det, engine)
