"""``anchor_grid``: YOLOv5 / YOLOv7 — three anchors per cell, sigmoid on everything.

One conv per level with na·(5+nc) channels, viewed (1, na, 5+nc, h, w). Raw row
``[tx, ty, tw, th, obj, cls...]`` of anchor a (w_a, h_a in pixels), rows ordered level, anchor, y, x::

    p = sigmoid(t);  cx = (2 * px - 0.5 + gx) * s,  cy = (2 * py - 0.5 + gy) * s
    w = (2 * pw)^2 * w_a,  h = (2 * ph)^2 * h_a,  score_c = sigmoid(obj) * sigmoid(cls_c)
"""

from __future__ import annotations

import numpy as np

from ..numeric import sigmoid
from ._match import Group, MatchContext, Reject, located, matcher, reaches
from .base import Block, Branch, Geometry, Head, Kind, Layout, Level, Rejection


class AnchorGrid(Kind):
    name = "anchor_grid"
    gate = "obj"
    formula = (
        "per row [tx, ty, tw, th, obj, cls*nc] of anchor a (w_a, h_a in pixels) of a level with stride s at "
        "cell (gx, gy); rows ordered level, anchor, y, x: p = sigmoid(t); cx = (2 * px - 0.5 + gx) * s, "
        "cy = (2 * py - 0.5 + gy) * s, w = (2 * pw)^2 * w_a, h = (2 * ph)^2 * h_a; decoded row = "
        "[cx, cy, w, h, sigmoid(obj), sigmoid(cls)*nc]; score = obj * max(cls)"
    )

    def blocks(self, head: Head, layout: Layout) -> tuple[Block, ...]:
        pred = head.levels[0].branches[0]
        sig = layout.keep_sigmoid
        return (Block("box", 4, False, pred), Block("obj", 1, sig, pred), Block("cls", head.num_classes, sig, pred))

    def decode(self, flat: np.ndarray, g: Geometry, cells: np.ndarray, strides: np.ndarray,
               sizes: np.ndarray | None) -> np.ndarray:
        cols = g.columns()
        dt = flat.dtype.type
        p = sigmoid(flat[..., cols["box"]])
        xy = (p[..., 0:2] * dt(2) + (cells - dt(0.5))) * strides
        wh = (p[..., 2:4] * dt(2)) ** 2 * sizes
        scores = [flat[..., cols[r]] if g.activated(r) else sigmoid(flat[..., cols[r]]) for r in ("obj", "cls")]
        return np.concatenate([xy, wh, *scores], -1)


KIND = AnchorGrid()


@matcher("YOLOv5 / YOLOv7 (anchor grid, 3 anchors per cell)")
def match_anchor_grid(ctx: MatchContext, groups: list[Group], no: Reject) -> Head | Rejection:
    """YOLOv5 / YOLOv7: one conv per level with na·(5+nc) channels, viewed (1, na, 5+nc, h, w).

    Everything goes through a sigmoid; ``wh = (2σ)² · anchor`` (v5) or ``σ² · 4·anchor`` (v7): the
    anchors are the constant multiplied into the Pow output, read per level (v7 keeps them in a 6-D
    ``anchor_grid`` indexed per level; the constant evaluator resolves the Gather).
    """
    ix, shapes, region, input_shape = ctx.ix, ctx.shapes, ctx.region, ctx.input_shape
    out_shape = shapes[region.output]
    no_ = out_shape[2]
    nc = no_ - 5
    if nc < 1:
        return no(f"output has {no_} columns, fewer than 6")
    if any(len(convs) != 1 for _, _, convs in groups):
        return no("expected one prediction conv per level")
    chans = {shapes[convs[0]][1] for _, _, convs in groups}
    if len(chans) != 1 or next(iter(chans)) % no_:
        return no(f"prediction convs have {sorted(chans)} channels, not a multiple of the {no_} output columns")
    na = next(iter(chans)) // no_
    if "Pow" not in region.ops and "Mul" not in region.ops:
        return no("no (2σ)² · anchor term in the decode")
    n_rows = na * sum(h * w for _, (h, w), _ in groups)
    if out_shape[1] != n_rows:
        return no(f"output has {out_shape[1]} rows, expected {na} anchors x {n_rows // na} cells = {n_rows}")
    if not all(reaches(ix, convs[0], "Sigmoid") for _, _, convs in groups):
        return no("the prediction convs are not read through a Sigmoid")

    # anchors: the constant operand of each Mul fed by a Pow (wh). v5 squares 2σ; v7 squares σ and
    # multiplies by 4·anchor, so a Pow fed directly by the sigmoid means the constant holds 4x the anchors.
    per_level: list = []
    squares_doubled = []
    for n in region.data_nodes:
        if n.op_type != "Mul":
            continue
        prods = [ix.producer.get(i) for i in n.input]
        k = next((j for j, p in enumerate(prods) if p is not None and p.op_type == "Pow"), None)
        if k is None:
            continue
        v = ix.const_value(n.input[1 - k])
        if v is None or v.size % 2 or v.shape[-1] != 2:
            continue
        pow_node = prods[k]
        assert pow_node is not None  # k was chosen among the non-None producers
        pow_in = ix.producer.get(pow_node.input[0])
        doubled = pow_in is not None and pow_in.op_type == "Mul" and any(
            (c := ix.const_value(i)) is not None and c.size == 1 and float(c) == 2.0 for i in pow_in.input)
        squares_doubled.append(doubled)
        a = v.astype(np.float64) / (1.0 if doubled else 4.0)
        if a.size == 2 * na * len(groups) and len(groups) > 1:  # one constant for every level (nl, 1, na, 1, 1, 2)
            per_level += list(a.reshape(len(groups), na, 2))
            continue
        if a.size % (2 * na):
            continue
        a = a.reshape(na, -1, 2)  # (1, na, h, w, 2) or (1, na, 1, 1, 2): anchor axis first
        if not (a == a[:, :1]).all():
            return no(f"the anchor-grid constant of shape {v.shape} is not constant over the cells")
        per_level.append(a[:, 0])
    if len(per_level) != len(groups):
        return no(f"could not read {na} anchors per level from the wh constants (found {len(per_level)} sets)")
    levels, first = [], 0
    for stride, (h, w), convs in groups:
        levels.append(Level(stride, (h, w), first, (Branch("pred", convs[0], na * no_),)))
        first += na * h * w
    anchors = tuple(tuple((round(float(x), 4), round(float(y), 4)) for x, y in a) for a in per_level)
    v7 = not all(squares_doubled)
    family = "YOLOv7" if v7 else "YOLOv5"
    reasons = (
        f"{len(levels)} levels of one prediction conv with {na}x({nc}+5) channels, viewed as {na} anchors per cell",
        f"strides {[lv.stride for lv in levels]} = input {input_shape[-2]}x{input_shape[-1]} / grids "
        + ", ".join(f"{lv.grid[0]}x{lv.grid[1]}" for lv in levels),
        "everything goes through a sigmoid; wh = (2σ)² · anchor with anchors (pixels) " + "; ".join(
            f"P{i + 3}: " + " ".join(f"{x:g}x{y:g}" for x, y in a) for i, a in enumerate(anchors)),
        ("wh = σ² · 4·anchor_grid (YOLOv7's export branch, its 6-D anchor_grid folded per level)" if v7
         else "wh = (2σ)² · anchor_grid (YOLOv5's Detect)"),
        f"decode ops {dict(sorted(region.ops.items()))}",
    )
    return located(ctx, KIND, family, "anchor-based", nc, levels, reasons, anchors=anchors)


