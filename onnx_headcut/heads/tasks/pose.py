"""``pose``: Ultralytics ``Pose`` (YOLOv8 / YOLO11 -pose): ``Detect`` plus a keypoint branch ``cv4`` per level.

The keypoint conv has ``nk = count x dims`` channels (17 x 3 upstream: x, y, visibility per keypoint,
interleaved; 17 x 2 without visibility). The export's ``kpts_decode`` (8.x, ``export=True``)::

    y = kpts.view(bs, count, dims, N)
    x, y = (y[:, :, :2] * 2.0 + (anchors - 0.5)) * strides      # anchors = cell + 0.5: (raw * 2 + cell) * s
    visibility = sigmoid(y[:, :, 2:3])                             # dims == 3
    output (1, 4 + nc + nk, N) = cat([dbox, sigmoid(cls), keypoints], 1)

Raw block ``kpt``: the conv's ``nk`` values per row, as the conv writes them (before * 2, grid, stride, sigmoid).
Located by structure: the conv whose decode multiplies it by 2, adds the cells and multiplies by the strides
(and with 3 dims a Sigmoid); ``count`` and ``dims`` are read from the decode's Reshape to (1, count, dims, N).
"""

from __future__ import annotations

import numpy as np

from ...graph import is_static
from ...numeric import sigmoid
from .._match import Group, MatchContext, Reject, located, matcher
from ..base import Geometry, Head, Rejection
from ..dist_anchor import KIND
from ..families import ultralytics_family
from ._ultralytics import check_constants, decode_consumers, downstream, levels_of

TASK = "pose"
ROLE = "kpt"
#: how :func:`onnx_headcut.heads.refusals.extra_branch` names such an export when :func:`match_pose` refuses it
LABEL = "Ultralytics pose export"

FORMULA = ("keypoint k of a row (stride s, cell gx, gy), raw kpt block [x_0, y_0(, v_0), x_1, ...]: "
           "x = (x_k * 2 + gx) * s, y = (y_k * 2 + gy) * s (Ultralytics: (raw * 2 + anchor - 0.5) * stride, "
           "anchor = cell + 0.5), visibility = sigmoid(v_k); the decoded row appends them after the classes")

#: COCO's 17-keypoint skeleton as Ultralytics draws it (``utils/plotting.py``, 1-based keypoint indices)
SKELETON = ((16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8), (7, 9), (8, 10),
            (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7))


def _is_kpt(ops: set[str]) -> bool:
    return {"Mul", "Add"} <= ops and not ops & {"Softmax", "Sin", "Cos", "Exp"}


def _shape(ctx: MatchContext, t: str, nk: int) -> tuple[int, int] | None:
    """(count, dims) from the decode's Reshape of the keypoint values to (1, count, dims, N), or None."""
    for c in decode_consumers(ctx, t, lambda c: c.op_type in ("Reshape", "Concat", "Identity")):
        if c.op_type == "Reshape":
            v = ctx.ix.const_value(c.input[1])
            s = ctx.shapes.get(c.output[0])
            dims = [int(d) for d in v] if v is not None else list(s) if is_static(s) else []
            if len(dims) == 4 and dims[1] * dims[2] == nk and dims[2] in (2, 3):
                return dims[1], dims[2]
    return None


@matcher("Ultralytics Pose (YOLOv8 / YOLO11 -pose: Detect + keypoint branch, channel-first output)", rows=False)
def match_pose(ctx: MatchContext, groups: list[Group], no: Reject) -> Head | Rejection:
    """Per level a DFL box conv, a cls conv and a keypoint conv; output ``(1, 4 + nc + count * dims, N)``."""
    found = levels_of(ctx, groups, no, ROLE, _is_kpt)
    if isinstance(found, Rejection):
        return found
    levels, nc, nk, box_ch = found
    kpt = levels[0].branches[2].tensor
    shape = _shape(ctx, kpt, nk)
    if shape is None:
        return no(f"the {nk}-channel keypoint branch is not reshaped to (1, count, 2 or 3, N) in the decode")
    count, dims = shape
    if ("Sigmoid" in downstream(ctx, kpt)) != (dims == 3):
        return no(f"keypoints of {dims} values but the keypoint branch {'is not' if dims == 3 else 'is'} read "
                  "through a Sigmoid (the visibility)")
    seen = check_constants(ctx, levels, no, {("Mul", 2.0): "keypoint offsets * 2", ("Div", 2.0): "halving",
                                             ("Mul", 0.5): "halving"}, kpt_anchors=True)
    if isinstance(seen, Rejection):
        return seen
    for need in ("keypoint offsets * 2", "keypoint anchors (anchor points - 0.5 = the cell)", "per-row strides"):
        if need not in seen:
            return no(f"the keypoint decode lacks its {need.split(' (')[0]}")
    fam = ultralytics_family(ctx.ix, levels[0].branches[0].tensor, levels[0].branches[1].tensor, box_ch // 4)
    reasons = (
        f"{len(levels)} levels of 3 prediction convs (box {box_ch} = 4 x {box_ch // 4} DFL bins, cls {nc}, "
        f"keypoints {nk} = {count} x {dims})",
        ctx.grids_text(levels),
        "output channel-first (1, 4 + nc + nk, N); the keypoint branch is multiplied by 2, offset by the cells "
        "and scaled by the strides" + (", its visibility read through a Sigmoid" if dims == 3 else ""),
        "constants: " + ", ".join(seen),
        *fam.reasons,
        ctx.ops_text(),
    )
    return located(ctx, KIND, fam.name, fam.version, nc, levels, reasons, reg_max=box_ch // 4 - 1,
                   ones_column=False, channel_first=True, task=TASK, keypoints=(count, dims))


def decode(flat: np.ndarray, g: Geometry, cells: np.ndarray, strides: np.ndarray) -> np.ndarray:
    """The decoded keypoints, (B, K, nk): per keypoint x, y in input pixels ((raw * 2 + cell) * stride) and, with
    3 dims, the visibility probability."""
    dt = flat.dtype.type
    k = flat[..., g.columns()[ROLE]]
    k = k.reshape(*k.shape[:-1], -1, g.kpt_dims)
    xy = (k[..., :2] * dt(2) + cells[:, None, :]) * strides[:, None, :]
    out = np.concatenate([xy, sigmoid(k[..., 2:3])], -1) if g.kpt_dims == 3 else xy
    return out.reshape(*k.shape[:-2], -1).astype(flat.dtype)


def atol(g: Geometry, box_atol: float, score_atol: float) -> np.ndarray:
    """Layer 2's tolerance of each keypoint column: pixels as boxes, visibility as scores."""
    per = [box_atol, box_atol, score_atol][:g.kpt_dims]
    cols = g.columns()[ROLE]
    return np.tile(np.asarray(per, np.float64), (cols.stop - cols.start) // g.kpt_dims)


def pixels(g: Geometry) -> np.ndarray:
    """Which keypoint columns are pixels (x, y; reported with the boxes) rather than probabilities."""
    cols = g.columns()[ROLE]
    return np.tile(np.asarray([True, True, False][:g.kpt_dims]), (cols.stop - cols.start) // g.kpt_dims)


def to_json(det: np.ndarray, g: Geometry, scale) -> dict:
    """The ``keypoints`` of one detection row for ``detect --json``: [[x, y(, visibility)], ...] in image pixels
    (``scale`` maps (n, 2) input pixels to the image's)."""
    k = det[6:].reshape(-1, g.kpt_dims)
    xy = scale(k[:, :2].astype(np.float64))
    pts = [[round(float(x), 2), round(float(y), 2)] + ([round(float(v), 4)] if g.kpt_dims == 3 else [])
           for (x, y), v in zip(xy, k[:, -1])]
    return {"keypoints": pts}
