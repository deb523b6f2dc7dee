"""``dist_anchor``: anchor-free heads — YOLOv6 >= 0.2.0 and Ultralytics YOLOv8 / YOLO11.

Per level a box conv (4 distances, or 4 groups of DFL bin logits) and a class conv; anchor points
at the cell centres (+0.5). Raw row ``[l, t, r, b, cls...]``, or with DFL
``[l_0..l_R, t_0..t_R, r_0..r_R, b_0..b_R, cls...]`` where each distance is the expectation
``sum_i softmax(bins)_i * i``::

    ax = gx + 0.5, ay = gy + 0.5
    x1 = ax - l, y1 = ay - t, x2 = ax + r, y2 = ay + b
    cx = (x1 + x2) / 2 * s, cy = (y1 + y2) / 2 * s, w = (x2 - x1) * s, h = (y2 - y1) * s
    score_c = sigmoid(cls_c)

YOLOv6's decoded output has a constant ones column at 4; Ultralytics' is channel-first without it.
"""

from __future__ import annotations

import numpy as np

from ..graph import attr, is_static
from ..numeric import dfl_expectation, sigmoid
from ._match import (
    Group,
    MatchContext,
    Reject,
    cell_grid,
    feeds_sigmoid,
    located,
    matcher,
    reaches,
    region_consts,
    upstream,
)
from .base import Block, Branch, Geometry, Head, Kind, Layout, Level, Rejection


class DistAnchor(Kind):
    name = "dist_anchor"
    gate = "cls"
    formula = (
        "per row [l, t, r, b, cls*nc] of a level with stride s at cell (gx, gy) (with DFL each of "
        "l, t, r, b is sum_i softmax(bins)_i * i over dfl_bins bin logits, i = 0 .. dfl_bins - 1): "
        "ax = gx + 0.5, ay = gy + 0.5, "
        "x1 = ax - l, y1 = ay - t, x2 = ax + r, y2 = ay + b; cx = (x1 + x2) / 2 * s, cy = (y1 + y2) / 2 * s, "
        "w = (x2 - x1) * s, h = (y2 - y1) * s; decoded row = [cx, cy, w, h, 1, sigmoid(cls)*nc]; "
        "score = max(sigmoid(cls)); without a ones column (YOLOv8/11) the decoded row is [cx, cy, w, h, "
        "sigmoid(cls)*nc], laid out channel-first (1, 4+nc, N) when the original was"
    )

    def blocks(self, head: Head, layout: Layout) -> tuple[Block, ...]:
        br = {b.role: b for b in head.levels[0].branches}
        reg = br.get("reg") or br["dfl"]
        if layout.kind == "levels":  # YOLOv6's own ncnn Lite demo: [sigmoid(cls) * nc, l, t, r, b]
            return (Block("cls", head.num_classes, True, br["cls"]), Block("reg", 4, False, reg))
        box = Block("reg", 4, False, reg) if (not head.dfl or layout.keep_dfl) else \
            Block("dfl", 4 * (head.reg_max + 1), False, reg)
        return (box, Block("cls", head.num_classes, layout.keep_sigmoid, br["cls"]))

    def effective(self, head: Head, layout: Layout) -> Layout:
        """The levels layout implies DFL kept and sigmoid applied (the layout YOLOv6's demo reads)."""
        return Layout("levels", keep_dfl=True, keep_sigmoid=True) if layout.kind == "levels" else layout

    def _parts(self, flat: np.ndarray, g: Geometry, cells: np.ndarray):
        cols = g.columns()
        dt = flat.dtype.type
        d = dfl_expectation(flat[..., cols["dfl"]], g.reg_max) if "dfl" in cols else flat[..., cols["reg"]]
        d = d.astype(flat.dtype)
        anchors = cells + dt(0.5)
        cls = flat[..., cols["cls"]] if g.activated("cls") else sigmoid(flat[..., cols["cls"]])
        return anchors - d[..., 0:2], anchors + d[..., 2:4], cls

    def decode(self, flat: np.ndarray, g: Geometry, cells: np.ndarray, strides: np.ndarray,
               sizes: np.ndarray | None) -> np.ndarray:
        x1y1, x2y2, cls = self._parts(flat, g, cells)
        box = np.concatenate([(x1y1 + x2y2) / flat.dtype.type(2), x2y2 - x1y1], -1) * strides
        return np.concatenate([box, np.ones((*flat.shape[:-1], 1), flat.dtype), cls], -1)

    def corners(self, flat: np.ndarray, g: Geometry, cells: np.ndarray, strides: np.ndarray) -> np.ndarray:
        """Decoded rows ``(B, N, 4 + nc)`` = ``[x1, y1, x2, y2, sigmoid(cls)]`` in input pixels: what an
        Ultralytics end-to-end export computes before its top-k selection (``dist2bbox(xywh=False) * s``)."""
        x1y1, x2y2, cls = self._parts(flat, g, cells)
        return np.concatenate([np.concatenate([x1y1, x2y2], -1) * strides, cls], -1)


KIND = DistAnchor()


def stride_mismatch(v: np.ndarray, levels) -> str | None:
    """Why a per-row constant multiplied into the boxes is not each row's level stride, or None."""
    strides = np.concatenate([np.full(lv.rows, lv.stride, np.float32) for lv in levels])
    if np.array_equal(v.reshape(-1), strides):
        return None
    return f"stride constant of shape {v.shape} does not match the level strides {[lv.stride for lv in levels]}"


def unexplained(node, v: np.ndarray) -> str | None:
    """Why a float constant of the decode is none of what the anchor-free formula uses, or None.

    Anchor points and strides are matched by the callers; besides them the decode halves (Div by 2
    or Mul by 0.5) and the DFL expectation's fixed 1x1 conv weights 0..R-1 appear. Any other offset
    or scale would change the boxes by an amount the verification's tolerance might not see.
    """
    flat = v.reshape(-1)
    if node.op_type == "Div" and flat.size == 1 and float(flat[0]) == 2.0:
        return None
    if node.op_type == "Mul" and flat.size == 1 and float(flat[0]) == 0.5:
        return None
    if node.op_type == "Conv" and np.array_equal(flat, np.arange(flat.size, dtype=flat.dtype)):
        return None
    if node.op_type in ("Concat", "Expand", "ConstantOfShape", "Reshape", "Unsqueeze") and bool((flat == 1).all()):
        return None  # the ones column of YOLOv6's output and its plumbing
    shown = flat[:3].tolist()
    return (f"a {node.op_type} in the decode uses a constant {list(v.shape)} {shown}{'...' if flat.size > 3 else ''} "
            "that the anchor-free formula does not have (only anchor points, strides, /2 and the DFL weights)")


@matcher("YOLOv6 anchor-free (l, t, r, b from cell centres; DFL or not)")
def match_anchor_free(ctx: MatchContext, groups: list[Group], no: Reject) -> Head | Rejection:
    """YOLOv6 0.2.0 … main: per level a ``reg`` conv (4, or 4·(reg_max+1) with DFL) and a ``cls`` conv.

    ``cls → Sigmoid``; ``reg`` (→ DFL: Reshape, Softmax, fixed 1x1 conv) → distances l, t, r, b;
    anchor points (cell + 0.5) and per-row strides are constants; the output is
    ``Concat([cx, cy, w, h], ones, cls_scores)`` with a constant ones column.
    """
    ix, shapes, region, input_shape = ctx.ix, ctx.shapes, ctx.region, ctx.input_shape
    out_shape = shapes[region.output]
    levels, nc, reg_ch, first = [], None, None, 0
    for stride, (h, w), convs in groups:
        if len(convs) != 2:
            return no(f"the {h}x{w} level has {len(convs)} prediction convs, expected 2 (reg, cls)")
        sig = [t for t in convs if feeds_sigmoid(ix, t)]
        if len(sig) != 1:
            return no(f"the {h}x{w} level has {len(sig)} branches read through a Sigmoid, expected 1 (cls)")
        cls = sig[0]
        reg = next(t for t in convs if t != cls)
        c_reg, c_cls = shapes[reg][1], shapes[cls][1]
        if c_reg % 4 or c_reg == 0:
            return no(f"the {h}x{w} level's reg branch has {c_reg} channels, not 4 or 4*(reg_max+1)")
        if (nc, reg_ch) != (None, None) and (c_cls, c_reg) != (nc, reg_ch):
            return no(f"branch widths differ between levels ({reg_ch}, {nc} vs {c_reg}, {c_cls})")
        nc, reg_ch = c_cls, c_reg
        role = "reg" if c_reg == 4 else "dfl"
        levels.append(Level(stride, (h, w), first, (Branch(role, reg, c_reg), Branch("cls", cls, c_cls))))
        first += h * w
    assert nc is not None and reg_ch is not None  # locate() refuses a decode without prediction convs
    reg_max = reg_ch // 4 - 1
    n_rows = first
    if out_shape[1:] != (n_rows, 5 + nc):
        return no(f"output shape {out_shape} does not match the levels: expected (1, {n_rows}, {5 + nc})")
    if reg_max and "Softmax" not in region.ops:
        return no(f"reg branches have {reg_ch} channels but the decode has no Softmax (DFL)")
    if "Exp" in region.ops:
        return no("the decode has an Exp, which the anchor-free decode does not use")

    cells = np.concatenate([cell_grid(*lv.grid) for lv in levels])
    anchors_ok = ones_ok = False
    on_values = {id(x) for x in region.value_nodes()[0]}  # the data path, not the constant plumbing
    for n, _, v in region_consts(ix, region):
        if v.size == 2 * n_rows and v.shape[-1] == 2:
            if not np.array_equal(v.reshape(-1, 2), cells + 0.5):
                return no(f"anchor-point constant of shape {v.shape} does not match the cell centres of the levels")
            anchors_ok = True
        elif v.size == n_rows and n.op_type == "Mul":
            if (why := stride_mismatch(v, levels)) is not None:
                return no(why)
        elif v.size == n_rows and n.op_type == "Concat":
            ones_ok = bool((v == 1).all())
        elif id(n) in on_values and (why := unexplained(n, v)) is not None:
            return no(why)
    if not anchors_ok:
        return no("no anchor-point constant (cell + 0.5) found in the decode")
    if not ones_ok:
        return no("no constant ones column concatenated into the output")

    strides = [lv.stride for lv in levels]
    dfl = f"DFL with reg_max {reg_max} ({reg_ch} reg channels)" if reg_max else "no DFL (4 reg channels)"
    version = "0.2+ anchor-free" + (", DFL" if reg_max else "")
    reasons = (
        f"{len(levels)} levels of 2 prediction convs (reg {reg_ch}, cls {nc}); cls is read through a Sigmoid",
        f"strides {strides} = input {input_shape[-2]}x{input_shape[-1]} / grids "
        + ", ".join(f"{lv.grid[0]}x{lv.grid[1]}" for lv in levels),
        f"{dfl}; no objectness branch, so 0.2.0 or later (anchor-free)",
        "anchor points equal the cell centres (+0.5); per-row stride constants match; constant ones column",
        f"decode ops {dict(sorted(region.ops.items()))}",
    ) + ((f"{len(levels)} levels: a P6 or YOLOv6-Lite model",) if len(levels) == 4 else ())
    return located(ctx, KIND, "YOLOv6", version, nc, levels, reasons, reg_max=reg_max)



@matcher("YOLOv8 / YOLO11 / YOLO26 (Ultralytics, channel-first output)", rows=False)  # (1, C, N): checked below
def match_ultralytics(ctx: MatchContext, groups: list[Group], no: Reject) -> Head | Rejection:
    """YOLOv8 / YOLO11 / YOLO26: per level a box conv (4·reg_max channels) and a cls conv; output (1, 4+nc, N).

    YOLO26 has ``reg_max`` 1: 4 box channels (l, t, r, b in stride units), no DFL, so no Softmax. An
    end-to-end export (before its top-k selection) decodes x1, y1, x2, y2 (no halving): recorded as ``xyxy``.

    DFL (Softmax + fixed 1x1 conv), anchor points at +0.5 and per-anchor strides as constants,
    sigmoid on the classes, channel-first output without objectness or ones column.
    """
    ix, shapes, region, input_shape = ctx.ix, ctx.shapes, ctx.region, ctx.input_shape

    out_shape = shapes.get(region.output)
    if not is_static(out_shape) or len(out_shape) != 3 or out_shape[0] != 1:
        return no(f"output '{region.output}' has shape {out_shape}, expected static (1, 4+nc, N)")
    n_rows = sum(h * w for _, (h, w), _ in groups)
    if out_shape[2] != n_rows:
        return no(f"output {out_shape} is not channel-first (1, 4+nc, {n_rows})")
    nc = out_shape[1] - 4
    levels, first, reg_ch = [], 0, None
    for stride, (h, w), convs in groups:
        if len(convs) != 2:
            return no(f"the {h}x{w} level has {len(convs)} prediction convs, expected 2 (box, cls)")
        by_ch = {shapes[t][1]: t for t in convs}
        cls = by_ch.get(nc) if len(by_ch) == 2 else None
        if cls is None:  # nc == 4 * reg_max: tell them apart by the sigmoid
            sig = [t for t in convs if reaches(ix, t, "Sigmoid") and not reaches(ix, t, "Softmax")]
            cls = sig[0] if len(sig) == 1 else None
        if cls is None:
            return no(f"cannot tell the box and cls convs of the {h}x{w} level apart")
        box = next(t for t in convs if t != cls)
        c = shapes[box][1]
        if c % 4 or (reg_ch is not None and c != reg_ch):
            return no(f"the {h}x{w} level's box conv has {c} channels, not 4·reg_max")
        reg_ch = c
        levels.append(Level(stride, (h, w), first, (Branch("dfl" if c > 4 else "reg", box, c), Branch("cls", cls, nc))))
        first += h * w
    assert reg_ch is not None  # locate() refuses a decode without prediction convs
    if reg_ch > 4 and "Softmax" not in region.ops:
        return no(f"box convs of {reg_ch} channels (DFL) but no Softmax in the decode")
    if reg_ch == 4 and "Softmax" in region.ops:
        return no("box convs of 4 channels (reg_max 1, no DFL) but a Softmax in the decode")
    cells = np.concatenate([cell_grid(*lv.grid) for lv in levels]) + 0.5
    anchors_ok = halved = False
    on_values = {id(x) for x in region.value_nodes()[0]}  # the data path, not the constant plumbing
    for n, _, v in region_consts(ix, region):
        halved |= id(n) in on_values and v.size == 1 and (n.op_type, float(v.reshape(-1)[0])) in (("Div", 2.0),
                                                                                                   ("Mul", 0.5))
        if v.size == 2 * n_rows and 2 in v.shape:
            a = v.reshape(-1, n_rows).T if v.shape[-1] == n_rows else v.reshape(-1, 2)
            if not np.array_equal(a, cells):
                return no(f"anchor-point constant of shape {v.shape} does not match the cell centres")
            anchors_ok = True
        elif v.size == n_rows and n.op_type == "Mul":
            if (why := stride_mismatch(v, levels)) is not None:
                return no(why)
        elif id(n) in on_values and (why := unexplained(n, v)) is not None:
            return no(why)
    if not anchors_ok:
        return no("no anchor-point constant (cell + 0.5) found in the decode")
    dw = any(n.op_type == "Conv" and (attr(n, "group", 1) or 1) > 1
             for n in upstream(ix, levels[0].branches[1].tensor, 4))
    if reg_ch == 4:
        family, why = "YOLO26", "4 box channels (reg_max 1, no DFL): YOLO26"
    else:
        family = "YOLO11" if dw else "YOLOv8"
        why = "the cls branch has depthwise convs: YOLO11" if dw else "the cls branch has plain 3x3 convs: YOLOv8"
    box = f"box {reg_ch} = 4 x {reg_ch // 4} DFL bins" if reg_ch > 4 else "box 4 = l, t, r, b"
    reasons = (
        f"{len(levels)} levels of 2 prediction convs ({box}, cls {nc})",
        f"strides {[lv.stride for lv in levels]} = input {input_shape[-2]}x{input_shape[-1]} / grids "
        + ", ".join(f"{lv.grid[0]}x{lv.grid[1]}" for lv in levels),
        "output channel-first (1, 4+nc, N) with no objectness or ones column; anchor points at cell + 0.5",
        "boxes " + ("x1, y1, x2, y2 (no halving in the decode: an end-to-end export)" if not halved
                    else "cx, cy, w, h"),
        why,
        f"decode ops {dict(sorted(region.ops.items()))}",
    )
    return located(ctx, KIND, family, "Ultralytics", nc, levels, reasons, reg_max=max(reg_ch // 4 - 1, 0),
                   ones_column=False, channel_first=True, xyxy=not halved)


