"""The task heads' figures of the int8 agreement (:func:`onnx_headcut.check.int8.agreement`), over matched pairs:
the angle error of OBB detections under the rotated box's equivalent names, and the IoU of segment detections'
masks, each side's from its own coefficients and prototypes. Reported, never gating
(:class:`~onnx_headcut.check.results.AgreementCheck` says why)."""

from __future__ import annotations

import math

import numpy as np

from ..heads import Geometry
from ..heads.tasks.segment import mask_iou, masks

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


#: matched pairs whose masks are built at once (input-sized masks: a chunk bounds the memory)
_MASK_CHUNK = 16


def pair_mask_ious(det: np.ndarray, ref: np.ndarray, pairs: list[tuple[int, int]], det_protos: np.ndarray,
                   ref_protos: np.ndarray, shape) -> np.ndarray:
    """Per matched pair ``(i, j)``, the IoU of the mask of ``det[i]`` (its coefficients on ``det_protos``) and the
    mask of ``ref[j]`` (its coefficients on ``ref_protos``), both at the input size ``shape`` (H, W), as
    :func:`onnx_headcut.heads.tasks.segment.masks` builds them."""
    out = []
    for k in range(0, len(pairs), _MASK_CHUNK):
        chunk = pairs[k:k + _MASK_CHUNK]
        a = masks(det[[i for i, _ in chunk]], det_protos, None, shape)
        b = masks(ref[[j for _, j in chunk]], ref_protos, None, shape)
        out.append(mask_iou(a, b))
    return np.concatenate(out) if out else np.zeros(0)


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
