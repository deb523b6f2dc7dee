"""``face``: face detection with landmarks — YOLOv6 0.3.1 face (``yolov6-face``).

Upstream (``yolov6/models/effidehead.py`` of the face release): the anchor-free ``Detect`` head (per level a
``reg`` conv of 4 distances and a ``cls`` conv) plus ``lmks_preds``, a conv of 10 channels on the reg branch: 5
landmarks x (x, y) in stride units from the anchor point. The export decodes each landmark as
``(raw + anchor point) * stride`` and writes the row ``[cx, cy, w, h, lmk x 10, 1, cls]`` (1, N, 15 + nc).

Located by structure: per level one conv, beside reg and cls, that is not read through a Sigmoid and reaches the
output through layout ops and exactly one Add of the anchor points (cell + 0.5, repeated per landmark) and one
Mul of the row strides; its columns' place in the output row is read from the output's Concat.

Decode, per landmark k::

    x_k = (raw[2k] + gx + 0.5) * s,  y_k = (raw[2k + 1] + gy + 0.5) * s
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ...numeric import cell_grid
from .._match import Group, MatchContext, feeds_sigmoid, rejecter
from ..base import Geometry, Head, Rejection
from ._branch import detection_context, forward_ops, with_extra

TASK = "face"
ROLE = "lmk"
#: what the landmark branch may pass through between its conv and the output: layout, the anchor Add, the stride Mul
_PATH = frozenset({"Reshape", "Transpose", "Concat", "Identity", "Flatten", "Add", "Mul"})

_no = rejecter("face (landmark branch per level)")


def _landmark_path(ix, t: str, output: str) -> bool:
    ops = forward_ops(ix, t, output)
    return ops is not None and ops <= _PATH and {"Add", "Mul"} <= ops


def _branch_nodes(ix, convs: list[str], output: str):
    """The nodes between the landmark convs and the output's Concat, in graph order, and the Concat input they feed."""
    nodes, stack, seen, into = [], list(convs), set(), set()
    out_node = ix.producer.get(output)
    while stack:
        x = stack.pop()
        for c in ix.consumers.get(x, []):
            if c is out_node:
                into.add(x)
                continue
            if id(c) not in seen:
                seen.add(id(c))
                nodes.append(c)
                stack.extend(c.output)
    return nodes, into


def candidates(ctx: MatchContext, groups: list[Group]) -> list[str] | str | None:
    """Per level, the one conv that is neither the cls conv (read through a Sigmoid) nor the box conv: the one whose
    way to the output only adds and multiplies constants; None when no level has one (not a face head), or why
    not every level has exactly one."""
    out = [[t for t in convs if not feeds_sigmoid(ctx.ix, t) and _landmark_path(ctx.ix, t, ctx.region.output)]
           for _, _, convs in groups]
    if not any(out):
        return None
    for (_, (h, w), _), hits in zip(groups, out):
        if len(hits) != 1:
            return f"the {h}x{w} level has {len(hits)} convs decoded as (raw + anchor point) * stride alone, expected 1"
    return [hits[0] for hits in out]


def match(ctx: MatchContext, patterns) -> Head | Rejection | None:
    """The detection head of ``ctx`` plus one landmark conv per level; None when the levels have no such third conv
    (not a face head), a Rejection when it is not what the face decode does."""
    if isinstance(ctx.groups, str) or not ctx.groups or any(len(c) != 3 for _, _, c in ctx.groups):
        return None
    found = candidates(ctx, ctx.groups)
    if found is None:
        return None
    if isinstance(found, str):
        return _no(found)
    ix, shapes = ctx.ix, ctx.shapes
    c = shapes[found[0]][1]
    if c % 2 or any(shapes[t][1] != c for t in found):
        return _no(f"landmark convs of {[shapes[t][1] for t in found]} channels, not the same even count (x, y each)")
    out = tuple(ctx.out_shape or ())
    rows = sum(h * w for _, (h, w), _ in ctx.groups)
    if len(out) != 3 or out[1] != rows:
        return _no(f"output {list(out)} is not (1, {rows}, C)")
    nodes, into = _branch_nodes(ix, found, ctx.region.output)
    cat = ix.producer.get(ctx.region.output)
    if cat is None or cat.op_type != "Concat" or len(into) != 1:
        return _no("the landmarks do not enter the output's Concat as one input")
    (lmk_in,) = into
    at = 0
    for i in cat.input:
        if i == lmk_in:
            break
        at += shapes[i][-1]
    if (why := _constants(ix, nodes, ctx.groups, c // 2)) is not None:
        return _no(why)
    groups = [(s, hw, [t for t in convs if t not in found]) for s, hw, convs in ctx.groups]
    det = detection_context(ctx, groups, c, 2)
    keep = {id(n) for n in nodes}
    region = replace(ctx.region, nodes=tuple(n for n in ctx.region.nodes if id(n) not in keep),
                     frontier=tuple(t for t in ctx.region.frontier if t not in found))
    det = replace(det, region=region)
    reasons = []
    for pattern in patterns:
        r = pattern(det)
        if isinstance(r, Head):
            return with_extra(r, ctx, ROLE, found, c, task=TASK, landmarks=c // 2, extra_at=at,
                              version=f"{r.version}, face",
                              reasons=(*r.reasons, f"per level a third conv of {c} channels = {c // 2} landmarks "
                                                   "(x, y) decoded as (raw + anchor point) * stride",
                                       f"landmark columns {at} .. {at + c - 1} of the output row"))
        reasons.append(str(r))
    return _no("the detection head beside the landmark branch is not recognised: " + "; ".join(reasons))


def _constants(ix, nodes, groups: list[Group], k: int) -> str | None:
    """Why the landmark branch's Add / Mul constants are not the anchor points and strides per row, or None."""
    cells = np.concatenate([cell_grid(h, w) for _, (h, w), _ in groups]) + 0.5
    strides = np.concatenate([np.full(h * w, s, np.float32) for s, (h, w), _ in groups])
    seen = {"Add": False, "Mul": False}
    for n in nodes:
        if n.op_type not in seen:
            continue
        consts = [v for i in n.input if (v := ix.const_value(i)) is not None]
        if len(consts) != 1:
            return f"a {n.op_type} on the landmarks has {len(consts)} constant operands, expected 1"
        v = consts[0].astype(np.float64)
        if n.op_type == "Add":
            ok = v.size == cells.size * k and np.array_equal(v.reshape(-1, k, 2), np.repeat(cells[:, None], k, 1))
            what = "the anchor points (cell + 0.5) repeated per landmark"
        else:
            ok = v.size == strides.size and np.array_equal(v.reshape(-1), strides)
            what = "the row strides"
        if not ok or seen[n.op_type]:
            return f"the landmarks' {n.op_type} constant {list(v.shape)} is not {what} (once)"
        seen[n.op_type] = True
    return None if all(seen.values()) else "the landmarks are not both offset by the anchor points and scaled"


def decode(flat: np.ndarray, g: Geometry, cells: np.ndarray, strides: np.ndarray) -> np.ndarray:
    """The landmarks in input pixels: ``(raw + cell + 0.5) * stride`` for each (x, y)."""
    raw = flat[..., g.columns()[ROLE]]
    k = raw.shape[-1] // 2
    anchors = np.tile(cells + flat.dtype.type(0.5), (1, k))
    return (raw + anchors) * strides
