"""``segment``: instance segmentation heads — Ultralytics YOLOv8 / YOLO11 ``Segment``, YOLOv6 0.4.1 seg.

YOLOv6 0.4.1 seg (``yolov6/models/heads/effidehead_fuseab_seg.py``, eval path) exports three outputs: the
anchor-free detections (1, N, 5 + nc), the prototypes and (1, N, 1 + nm) = per row [level index, coefficients]
(``seg_preds`` per level, concatenated with ``proto_no`` = the level index); the decode reproduces that output
(layer 2) and the raw model does not keep it (the coefficients are the raw row's last columns).

Upstream (``ultralytics/nn/modules/head.py``): a ``Detect`` head plus, per level, ``cv4`` = Conv 3x3 → Conv 3x3 →
Conv2d 1x1 of ``nm`` (32) mask coefficients, and ``Proto`` on P3 (Conv 3x3 → ConvTranspose 2x2 → Conv 3x3 →
Conv 1x1 of ``nm``, SiLU after each Conv). The export returns ``(cat([decoded, mc], 1), protos)``: ``output0``
``(1, 4 + nc + nm, N)`` whose last ``nm`` channels are the coefficients copied from the ``cv4`` convs, and the
prototypes ``(1, nm, H/4, W/4)``.

Located by structure: two outputs, one a 4-D ``(1, nm, h, w)`` tensor made by a Conv (through its activation),
outside the other's decode; per level one frontier conv of ``nm`` channels that reaches the decoded output
through layout ops only and fills its last columns. The prototypes output stays a graph output, untouched.

Decode (``ultralytics/utils/ops.py`` ``process_mask``, ``upsample=True``)::

    masks = (coefficients @ protos.reshape(nm, h * w)).reshape(K, h, w)
    crop to the box scaled to the prototype grid (x1 * w / W ... ; cell (r, c) kept when x1 <= r < x2, y1 <= c < y2)
    bilinear upsample to the input H x W (align_corners=False), mask = value > 0 (= sigmoid > 0.5)
"""

from __future__ import annotations

import numpy as np

from ...graph import is_static
from ...region import LAYOUT_OPS, decode_region
from .._match import MatchContext, group_levels, region_consts, rejecter
from ..base import Geometry, Head, Rejection
from ._branch import detection_context, last_columns, layout_only, split_extra, with_extra

TASK = "segment"
ROLE = "mask"
#: what a mask prototype output may go through after its last conv (the conv's activation)
_ACTIVATIONS = ("Mul", "Sigmoid", "Relu", "Identity", "Cast", "HardSwish", "LeakyRelu")

_no = rejecter("segmentation (mask coefficients per level + prototypes)")


def made_by_conv(ix, t: str) -> bool:
    """True when ``t`` is a Conv's output, through at most its activation (SiLU = x * sigmoid(x))."""
    node = ix.producer.get(t)
    for _ in range(4):
        if node is None:
            return False
        if node.op_type in ("Conv", "ConvTranspose"):
            return True
        if node.op_type not in _ACTIVATIONS:
            return False
        ins = [i for i in node.input if i and ix.producer.get(i) is not None]
        if not ins:
            return False
        node = ix.producer.get(ins[0])
    return False


def outputs(ix, shapes, names: list[str], input_shape) -> tuple[str, str] | None:
    """(decoded output, prototypes output) of a two-output export whose second kind of output is a static
    ``(1, nm, h, w)`` tensor made by a conv, and whose decode reads, on every level, one conv of ``nm`` channels
    through layout ops only (the coefficients); None for anything else."""
    if len(names) != 2:
        return None
    four = [n for n in names if len(s := shapes.get(n) or ()) == 4 and is_static(s) and s[0] == 1]
    three = [n for n in names if len(shapes.get(n) or ()) == 3]
    if len(four) != 1 or len(three) != 1 or not made_by_conv(ix, four[0]):
        return None
    region = decode_region(ix, three[0])
    groups = group_levels(shapes, region, input_shape)
    if isinstance(groups, str) or not groups:
        return None
    nm = shapes[four[0]][1]
    for _, _, convs in groups:
        if sum(shapes[t][1] == nm and layout_only(ix, t, three[0]) for t in convs) != 1:
            return None
    return three[0], four[0]


def separate_outputs(ix, shapes, names: list[str], input_shape) -> tuple[str, str, str] | None:
    """(decoded output, prototypes output, coefficient output) of a YOLOv6 0.4.1 seg export: three outputs, the
    prototypes ``(1, nm, h, w)`` made by a conv, and a ``(1, N, 1 + nm)`` output made, through layout ops only,
    of one conv of ``nm`` channels per level and a constant column; None for anything else."""
    if len(names) != 3:
        return None
    four = [n for n in names if len(s := shapes.get(n) or ()) == 4 and is_static(s) and s[0] == 1]
    if len(four) != 1 or not made_by_conv(ix, four[0]):
        return None
    nm = shapes[four[0]][1]
    three = [n for n in names if len(shapes.get(n) or ()) == 3 and is_static(shapes[n])]
    coefs = [n for n in three if shapes[n][2] == 1 + nm and _coefficient_output(ix, shapes, n, nm, input_shape)]
    if len(three) != 2 or len(coefs) != 1:
        return None
    det = next(n for n in three if n != coefs[0])
    return det, four[0], coefs[0]


def _coefficient_output(ix, shapes, name: str, nm: int, input_shape) -> bool:
    region = decode_region(ix, name)
    groups = group_levels(shapes, region, input_shape)
    return (not isinstance(groups, str) and bool(groups) and not region.blockers
            and set(region.ops) <= LAYOUT_OPS
            and all(len(c) == 1 and shapes[c[0]][1] == nm and layout_only(ix, c[0], name) for _, _, c in groups))


def match_separate(ctx: MatchContext, patterns, protos: str, coefs: str) -> Head | Rejection:
    """A YOLOv6 0.4.1 seg head: the detection head of ``ctx`` plus the coefficient convs of the ``coefs`` output,
    whose only constants must be, per level, a column of the level's index (upstream's ``proto_no``)."""
    ix, shapes = ctx.ix, ctx.shapes
    region = decode_region(ix, coefs)
    groups = group_levels(shapes, region, ctx.input_shape)
    assert not isinstance(groups, str)  # separate_outputs() checked it
    by_grid = {hw: c[0] for _, hw, c in groups}
    levels = [hw for _, hw, _ in groups]
    for n, _, v in region_consts(ix, region):
        flat = v.reshape(-1)
        k = next((i for i, (h, w) in enumerate(levels) if flat.size == h * w), None)
        if k is None or not bool((flat == k).all()):
            return _no(f"a {n.op_type} in the coefficient output '{coefs}' uses a constant {list(v.shape)} that is not "
                       "a level's index column")
    reasons = []
    for pattern in patterns:
        r = pattern(ctx)
        if isinstance(r, Head):
            if any(lv.grid not in by_grid for lv in r.levels):
                return _no(f"the coefficient convs' grids {levels} are not the detection levels'")
            nm = shapes[protos][1]
            pshape, cshape = tuple(shapes[protos]), tuple(shapes[coefs])
            return with_extra(r, ctx, ROLE, [by_grid[lv.grid] for lv in r.levels], nm, task=TASK,
                              protos=(protos, pshape), coefficients=(coefs, cshape),
                              reasons=(*r.reasons, f"per level a conv of {nm} mask coefficients, output '{coefs}' "
                                                   f"{list(cshape)} = [level index, coefficients] (layout ops only)",
                                       f"prototypes '{protos}' {list(pshape)} made by a conv, kept as an output"))
        reasons.append(str(r))
    return _no("the detection head beside the mask branch is not recognised: " + "; ".join(reasons))


def match(ctx: MatchContext, patterns, protos: str) -> Head | Rejection:
    """The detection head of ``ctx`` plus one mask-coefficient conv per level, or why not."""
    ix, shapes = ctx.ix, ctx.shapes
    if protos in {i for n in ctx.region.nodes for i in n.input}:
        return _no(f"the prototypes '{protos}' feed the decode of '{ctx.region.output}'")
    pshape = tuple(shapes[protos])
    nm = pshape[1]
    found = split_extra(ctx, nm, lambda t: layout_only(ix, t, ctx.region.output))
    if isinstance(found, str):
        return _no(f"{found} (mask coefficients, as many as the {nm} prototypes, copied into the output)")
    groups, convs = found
    if not last_columns(ix, ctx.region.output, convs):
        return _no("the mask-coefficient convs do not fill the output's last columns")
    out = tuple(ctx.out_shape or ())
    rows = sum(h * w for _, (h, w), _ in groups)
    if len(out) != 3 or rows not in out[1:]:
        return _no(f"output {list(out)} has no axis of the {rows} rows")
    axis = 1 if out[2] == rows else 2
    det_ctx = detection_context(ctx, groups, nm, axis)
    reasons = []
    for pattern in patterns:
        r = pattern(det_ctx)
        if isinstance(r, Head):
            ratio = ctx.input_shape[-1] // pshape[-1]
            return with_extra(r, ctx, ROLE, convs, nm, task=TASK, protos=(protos, pshape),
                              reasons=(*r.reasons, f"per level a conv of {nm} mask coefficients copied (layout ops "
                                                   f"only) into the output's last {nm} columns",
                                       f"prototypes '{protos}' {list(pshape)} made by a conv (1/{ratio} of the input), "
                                       "kept as an output"))
        reasons.append(str(r))
    return _no("the detection head beside the mask branch is not recognised: " + "; ".join(reasons))


def decode(flat: np.ndarray, g: Geometry, cells: np.ndarray, strides: np.ndarray) -> np.ndarray:
    """The extra columns of the decoded rows: the mask coefficients as they are."""
    return flat[..., g.columns()[ROLE]]


def masks(dets: np.ndarray, protos: np.ndarray, head, shape=None) -> np.ndarray:
    """``(K, H, W)`` bool masks of detections ``dets`` (K, 6 + nm) = [x1, y1, x2, y2, score, class, coefficients]
    in input pixels, from the prototypes ``(1, nm, h, w)`` (or ``(nm, h, w)``), as Ultralytics' ``process_mask``
    with ``upsample=True``: ``coefficients @ protos``, cropped to the box on the prototype grid, bilinear to the
    input size ``shape`` (H, W; default: the input of ``head``, which is then the only thing read of it), then > 0."""
    p = np.asarray(protos, np.float32)
    p = p[0] if p.ndim == 4 else p
    nm, mh, mw = p.shape
    ih, iw = (int(v) for v in (shape if shape is not None else Geometry.of(head).input_shape[-2:]))
    d = np.asarray(dets, np.float32).reshape(-1, np.shape(dets)[-1] if np.ndim(dets) else 6)
    if not len(d):
        return np.zeros((0, ih, iw), bool)
    if d.shape[1] < 6 + nm:
        raise ValueError(f"detections have {d.shape[1]} columns, masks need 6 + {nm} (the coefficients)")
    m = (d[:, 6:6 + nm] @ p.reshape(nm, -1)).reshape(-1, mh, mw)
    b = d[:, :4] * np.array([mw / iw, mh / ih, mw / iw, mh / ih], np.float32)
    r = np.arange(mw, dtype=np.float32)[None, None, :]
    c = np.arange(mh, dtype=np.float32)[None, :, None]
    x1, y1, x2, y2 = (b[:, k, None, None] for k in range(4))
    m = m * ((r >= x1) & (r < x2) & (c >= y1) & (c < y2))
    return _bilinear(m, ih, iw) > 0


def _axis_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower index, upper index and upper weight per output position: torch's bilinear, ``align_corners=False``."""
    x = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    x = np.clip(x, 0, None)
    lo = np.minimum(np.floor(x).astype(np.int64), n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, (x - lo).astype(np.float32)


def _bilinear(m: np.ndarray, oh: int, ow: int) -> np.ndarray:
    """(K, h, w) → (K, oh, ow) as ``F.interpolate(mode="bilinear", align_corners=False)``."""
    lo, hi, wy = _axis_weights(m.shape[1], oh)
    m = m[:, lo] * (1 - wy)[None, :, None] + m[:, hi] * wy[None, :, None]
    lo, hi, wx = _axis_weights(m.shape[2], ow)
    return m[:, :, lo] * (1 - wx)[None, None, :] + m[:, :, hi] * wx[None, None, :]


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per pair, the IoU of bool masks ``a`` and ``b`` (K, H, W) (1.0 where both are empty)."""
    inter = (a & b).reshape(len(a), -1).sum(1)
    union = (a | b).reshape(len(a), -1).sum(1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)
