"""``grid_exp_obj``: YOLOv6 0.1.0 and YOLOX — ``xy = (d + grid) * s``, ``wh = exp(d) * s``, objectness.

Per level three prediction convs (box 4, obj 1, cls nc) feed ``Concat([box, Sigmoid(obj),
Sigmoid(cls)], axis=1)``; the grid is the integer cell index (no +0.5) and the only float Mul
constants are strides. Raw row ``[dx, dy, dw, dh, obj, cls_0 .. cls_{nc-1}]``::

    cx = (dx + gx) * s        w = exp(dw) * s        score_c = sigmoid(obj) * sigmoid(cls_c)
    cy = (dy + gy) * s        h = exp(dh) * s
"""

from __future__ import annotations

import numpy as np

from ..graph import attr
from ..numeric import sigmoid
from ..region import LAYOUT_OPS
from ._match import Group, MatchContext, Reject, cell_grid, float_consts, located, matcher, strip_sigmoid
from .base import Block, Branch, Geometry, Head, Kind, Layout, Level, Rejection


class GridExpObj(Kind):
    name = "grid_exp_obj"
    gate = "obj"
    formula = (
        "per row [dx, dy, dw, dh, obj, cls*nc] of a level with stride s at cell (gx, gy): "
        "cx = (dx + gx) * s, cy = (dy + gy) * s, w = exp(dw) * s, h = exp(dh) * s, "
        "obj = sigmoid(obj), cls = sigmoid(cls); decoded row = [cx, cy, w, h, obj, cls*nc]; "
        "score = obj * max(cls)"
    )

    def blocks(self, head: Head, layout: Layout) -> tuple[Block, ...]:
        br = {b.role: b for b in head.levels[0].branches}
        sig = layout.keep_sigmoid
        return (Block("box", 4, False, br["box"]), Block("obj", 1, sig, br["obj"]),
                Block("cls", head.num_classes, sig, br["cls"]))

    def decode(self, flat: np.ndarray, g: Geometry, cells: np.ndarray, strides: np.ndarray,
               sizes: np.ndarray | None) -> np.ndarray:
        cols = g.columns()
        box = flat[..., cols["box"]]
        scores = [flat[..., cols[r]] if g.activated(r) else sigmoid(flat[..., cols[r]]) for r in ("obj", "cls")]
        return np.concatenate([(box[..., 0:2] + cells) * strides, np.exp(box[..., 2:4]) * strides, *scores], -1)


KIND = GridExpObj()

#: ops on the head's values that YOLOv6 0.1.0's and YOLOX's decodes never use
_NOT_IN_THIS_DECODE = frozenset({"Sub", "Div", "Pow", "Softmax", "ReduceSum", "Tile"})


@matcher("YOLOv6 0.1.0 / YOLOX (grid + exp decode with objectness)")
def match_grid_exp_obj(ctx: MatchContext, groups: list[Group], no: Reject) -> Head | Rejection:
    """YOLOv6 0.1.0 and YOLOX: ``xy = (d + grid) * s``, ``wh = exp(d) * s``, sigmoid obj and cls.

    Per level three convs feed ``Concat([box, Sigmoid(obj), Sigmoid(cls)], axis=1)``; the grid is
    the integer cell index (no +0.5) and the only float Mul constants are strides.
    """
    ix, shapes, region, input_shape = ctx.ix, ctx.shapes, ctx.region, ctx.input_shape
    out_shape = shapes[region.output]
    _, in_h, in_w = input_shape[-3:]
    grids = [g for _, g, _ in groups]
    levels: list[Level] = []
    nc = None
    first = 0
    concats = [n for n in region.nodes if n.op_type == "Concat"]
    for stride, (h, w), conv_list in groups:
        convs = set(conv_list)
        cat = None
        for c in concats:
            srcs = [strip_sigmoid(ix, i) for i in c.input]
            if {s for s, _ in srcs} == convs and len(srcs) == len(convs):
                cat = (c, srcs)
                break
        if cat is None:
            return no(f"no Concat joins the {len(convs)} prediction convs of the {h}x{w} level")
        c, srcs = cat
        ax = attr(c, "axis")
        if ax not in (1, -3):
            return no(f"the {h}x{w} level's Concat is on axis {ax}, expected the channel axis")
        if len(srcs) != 3:
            return no(f"the {h}x{w} level has {len(srcs)} prediction convs, expected 3 (box, obj, cls)")
        (box, box_sig), (obj, obj_sig), (cls, cls_sig) = srcs
        cb, co, cc = (shapes[t][1] for t in (box, obj, cls))
        if box_sig or not (obj_sig and cls_sig):
            return no(f"the {h}x{w} level applies sigmoid to the wrong branches (expected raw box, sigmoid obj/cls)")
        if (cb, co) != (4, 1):
            return no(f"the {h}x{w} level's branches have {cb}, {co}, {cc} channels, expected 4, 1, nc")
        if nc is not None and cc != nc:
            return no(f"class count differs between levels ({nc} vs {cc})")
        nc = cc
        levels.append(Level(stride, (h, w), first, (Branch("box", box, 4), Branch("obj", obj, 1),
                                                    Branch("cls", cls, cc))))
        first += h * w
    assert nc is not None  # locate() refuses a decode without prediction convs, so there is a level

    n_rows = sum(lv.rows for lv in levels)
    if out_shape[1:] != (n_rows, 5 + nc):
        return no(f"output shape {out_shape} does not match the levels: expected (1, {n_rows}, {5 + nc})")
    foreign = {n.op_type for n in region.value_nodes()[0]} & _NOT_IN_THIS_DECODE
    if foreign:  # an offset or scale the formula does not have would be hidden only by the tolerance
        return no(f"the decode has {', '.join(sorted(foreign))} on the head's values, which the grid + exp decode "
                  "does not use")
    n_exp = region.ops.get("Exp", 0)
    if n_exp == 0 and set(region.ops) <= LAYOUT_OPS | {"Sigmoid"}:
        reasons: tuple[str, ...] = (
            f"{len(levels)} levels of 3 prediction convs (box 4, objectness 1, cls {nc}) joined by a channel Concat",
            "the output is those convs flattened, with sigmoid on objectness and classes and no grid, Exp or "
            "stride: a YOLOX export without decode_in_inference, already raw apart from its sigmoids",
            "strip removes the sigmoids (logits, like every raw layout); --keep-sigmoid keeps them",
        )
        return located(ctx, KIND, "YOLOX", "undecoded", nc, levels, reasons, original_decoded=False,
                       notes=("YOLOX export without decode: the output was already raw apart from the sigmoids on "
                           "objectness and classes",))
    if n_exp == 0:
        return no("the decode has no Exp (wh = exp(d) * stride)")
    strides = {lv.stride for lv in levels}
    for _, v in float_consts(ix, region, "Mul"):
        bad = set(np.unique(v).tolist()) - strides
        if bad:
            return no(f"a Mul multiplies by {sorted(bad)[:3]}, which is not a level stride {sorted(strides)}")
    all_cells = np.concatenate([cell_grid(*lv.grid) for lv in levels])
    grid_seen = 0
    for _, v in float_consts(ix, region, "Add"):
        flat = v.reshape(-1, 2) if v.size % 2 == 0 and v.shape[-1] == 2 else None
        if flat is None:
            return no(f"an Add uses a constant of shape {v.shape}, not an (x, y) grid")
        expect = next((cell_grid(*lv.grid) for lv in levels if lv.rows == len(flat)), None)
        if expect is None and len(flat) == n_rows:
            expect = all_cells
        if expect is None or not np.array_equal(flat, expect):
            return no(f"grid constant of shape {v.shape} does not match the cell indices of any level")
        grid_seen += 1
    if grid_seen == 0:
        return no("no grid constant found (xy = (d + grid) * stride)")

    per_level = n_exp == len(levels)
    family, version = ("YOLOv6", "0.1.0") if per_level or len(levels) == 1 else ("YOLOX", "0.x")
    reasons = (
        f"{len(levels)} levels of 3 prediction convs (box 4, objectness 1, cls {nc}) joined by a channel Concat; "
        "an objectness branch and wh = exp(d) * s mark the 0.1.0-style head",
        f"strides {sorted(strides)} = input {in_h}x{in_w} / grids {', '.join(f'{h}x{w}' for h, w in grids)}",
        f"decode ops {dict(sorted(region.ops.items()))}",
        "grid constants equal the integer cell indices; float Mul constants are the strides",
        ("the decode runs per level before the levels are concatenated (YOLOv6 0.1.0 Detect)" if per_level
         else "the levels are concatenated first and decoded once (YOLOX head)"),
    )
    return located(ctx, KIND, family, version, nc, levels, reasons)


