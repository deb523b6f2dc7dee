"""The task heads' figures of the int8 agreement (:func:`onnx_headcut.check.int8.agreement`), over matched pairs:
the angle error of OBB detections under the rotated box's equivalent names, and the IoU of segment detections'
masks, each side's from its own coefficients and prototypes. Reported, never gating
(:class:`~onnx_headcut.check.results.AgreementCheck` says why)."""

from __future__ import annotations

import math

import numpy as np

from ..heads import Geometry
from ..heads.tasks.segment import _axis_weights

#: :func:`angle_error`: two namings of a rotated box pair its sides as well as each other when their side mismatches
#: differ by at most this share of the reference box's w + h (a near-square box's orientation is ambiguous by pi/2)
SIDE_TOL = 0.1


def angle_error(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per pair, the angle error (radians, in [0, pi/2]) between xywhr boxes ``a`` (reference) and ``b`` (K, 5).

    A rotated box has four names: ``(w, h, t)`` = ``(w, h, t + pi)`` = ``(h, w, t + pi/2)`` = ``(h, w, t - pi/2)``.
    Of ``b``'s names, those whose sides pair best with ``a``'s (``|w_a - w| + |h_a - h|`` the least, or within
    :data:`SIDE_TOL` of ``a``'s ``w + h`` of the least) are candidates, and the error is the smallest
    ``|t_a - t|`` among them, modulo pi (in [0, pi/2]). So a box turned by pi, or named with its sides swapped and its
    angle by pi/2, is no error; an elongated box turned by pi/2 is an error of pi/2 whichever way it is named (its
    sides cannot pair both ways); a near-square box, whose sides pair either way, takes the nearer angle."""
    a, b = np.asarray(a, np.float64).reshape(-1, 5), np.asarray(b, np.float64).reshape(-1, 5)
    same = np.abs(a[:, 2] - b[:, 2]) + np.abs(a[:, 3] - b[:, 3])
    swapped = np.abs(a[:, 2] - b[:, 3]) + np.abs(a[:, 3] - b[:, 2])
    slack = np.minimum(same, swapped) + SIDE_TOL * (a[:, 2] + a[:, 3])
    out = np.full(len(a), np.inf)
    for k, fits in enumerate((same <= slack, swapped <= slack)):  # k = 1: (h, w, t + pi/2), + pi: the same box
        d = np.abs(np.remainder(a[:, 4] - b[:, 4] - k * math.pi / 2 + math.pi / 2, math.pi) - math.pi / 2)
        out = np.where(fits, np.minimum(out, d), out)
    return out


def _mask_window(row: np.ndarray, p: np.ndarray, shape, ys: slice, xs: slice) -> np.ndarray:
    """The mask of detection ``row`` on prototypes ``p`` (nm, h, w) at input ``shape``, rows ``ys`` and columns ``xs``
    of it only: :func:`onnx_headcut.heads.tasks.segment.masks`, step for step, on a window."""
    nm, mh, mw = p.shape
    ih, iw = shape
    m = (row[None, 6:6 + nm] @ p.reshape(nm, -1)).reshape(mh, mw)
    x1, y1, x2, y2 = row[:4] * np.array([mw / iw, mh / ih, mw / iw, mh / ih], np.float32)
    r, c = np.arange(mw, dtype=np.float32), np.arange(mh, dtype=np.float32)
    m = m * (((r >= x1) & (r < x2))[None, :] & ((c >= y1) & (c < y2))[:, None])
    lo, hi, wy = (v[ys] for v in _axis_weights(mh, ih))
    m = m[lo] * (1 - wy)[:, None] + m[hi] * wy[:, None]
    lo, hi, wx = (v[xs] for v in _axis_weights(mw, iw))
    return (m[:, lo] * (1 - wx)[None, :] + m[:, hi] * wx[None, :]) > 0


def _window(a: np.ndarray, b: np.ndarray, shape, cells: tuple[float, float]) -> tuple[slice, slice]:
    """The input rows and columns outside which both boxes' masks are empty: the boxes' union widened by two
    prototype cells (a cropped mask is zero beyond its box's cells, and bilinear reads one cell further); the whole
    input when a box is not finite."""
    ih, iw = shape
    lo, hi = np.minimum(a[:2], b[:2]), np.maximum(a[2:4], b[2:4])
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        return slice(0, ih), slice(0, iw)
    pad = np.array([2 * cells[1] + 1, 2 * cells[0] + 1])  # x, y
    (x0, y0), (x1, y1) = np.floor(lo - pad).astype(int), np.ceil(hi + pad).astype(int)
    return slice(max(0, min(y0, ih)), max(0, min(y1, ih))), slice(max(0, min(x0, iw)), max(0, min(x1, iw)))


def pair_mask_ious(det: np.ndarray, ref: np.ndarray, pairs: list[tuple[int, int]], det_protos: np.ndarray,
                   ref_protos: np.ndarray, shape) -> np.ndarray:
    """Per matched pair ``(i, j)``, the IoU of the mask of ``det[i]`` (its coefficients on ``det_protos``) and the
    mask of ``ref[j]`` (its coefficients on ``ref_protos``), both at the input size ``shape`` (H, W), as
    :func:`onnx_headcut.heads.tasks.segment.masks` builds them (1.0 where both are empty, as
    :func:`~onnx_headcut.heads.tasks.segment.mask_iou`). Each pair's masks are built only on the window around its
    two boxes, outside which both are empty (300 random pairs at 640x640: 0.17 s, 4 s built whole); a pixel whose
    value rounds to either side of 0 may differ from a batch of masks built at once (float rounding of the sums)."""
    pd, pr = (np.asarray(p, np.float32) for p in (det_protos, ref_protos))
    pd, pr = (p[0] if p.ndim == 4 else p for p in (pd, pr))
    ih, iw = (int(v) for v in shape)
    cells = (ih / pd.shape[1], iw / pd.shape[2])  # input pixels per prototype cell (rows, columns)
    out = np.ones(len(pairs))
    for k, (i, j) in enumerate(pairs):
        a, b = np.asarray(det[i], np.float32), np.asarray(ref[j], np.float32)
        ys, xs = _window(a, b, (ih, iw), cells)
        ma, mb = _mask_window(a, pd, (ih, iw), ys, xs), _mask_window(b, pr, (ih, iw), ys, xs)
        union = int((ma | mb).sum())
        if union:
            out[k] = int((ma & mb).sum()) / union
    return out


def segment_rows(rows: np.ndarray, coefficients: np.ndarray | None) -> np.ndarray:
    """A YOLOv6 seg original's decoded rows with its coefficient output's coefficients after them (the output is
    per row [level index, coefficients]); ``rows`` as they are for an Ultralytics one (``coefficients`` None)."""
    return rows if coefficients is None else np.concatenate([rows, coefficients[..., 1:]], -1)


def paired_protos(got: list | None, ref: list | None, shapes) -> list | None:
    """:func:`agreement`'s ``protos``: per input (int8 prototypes, fp32 prototypes, input (H, W)), or None when
    either side has none (not a segment head)."""
    if got is None or ref is None:
        return None
    return [(a, b, tuple(int(v) for v in hw)) for a, b, hw in zip(got, ref, shapes)]


def task_options(head) -> dict:
    """:func:`agreement`'s task arguments for ``head`` (a Head, a record or a Geometry) besides the prototypes:
    ``kpt_dims`` for a pose head, ``obb`` for an OBB head."""
    g = Geometry.of(head)
    return {"kpt_dims": g.kpt_dims if g.task == "pose" else 0, "obb": g.task == "obb"}
