"""Find the detection head of a decoded YOLO export by graph structure and constants.

How it works (no node or tensor names, no hard-coded sizes)::

    backbone ... ─► Conv(reg) ─┐                                     (prediction convs: the frontier)
                  ─► Conv(obj) ─► Sigmoid ─┤
                  ─► Conv(cls) ─► Sigmoid ─► Concat ─► Reshape(5-D) ─► Transpose ─► Slice/Add/Mul/Exp …
                                                                            … ─► Concat(levels) ─► output

1. :func:`decode_region` walks back from the output through decode-only ops (Sigmoid, Reshape,
   Transpose, Slice, Add, Mul, Exp, Concat, ScatterND, Shape/Gather plumbing, ...) and stops at
   learned Conv nodes. Those convs are the frontier; the visited nodes are the region to cut.
2. The frontier convs are grouped by feature-map size into levels; each level's stride is the
   input size divided by its grid, and must divide it exactly.
3. A *pattern* (one function per decode kind) checks the rest: branch roles from the order of the
   per-level Concat, channel counts, the ops of the decode, and the grid/stride constants. A pattern
   returns a :class:`~onnx_headcut.head.Head` or a :class:`Rejection` saying why not.

:func:`locate` returns the first :class:`Head` or raises :class:`NoHeadError` listing every reason.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import onnx

from .errors import AlreadyRawError, NoHeadError
from .graph import GraphIndex, Shape, attr, infer_shapes, is_static
from .head import ANCHOR_GRID, DIST_ANCHOR, GRID_EXP_OBJ, Branch, Head, Level

#: ops that may appear between the prediction convs and the decoded output.
DECODE_OPS = frozenset({
    "Sigmoid", "Exp", "Softmax", "Add", "Sub", "Mul", "Div", "Pow",
    "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Concat", "Split", "Slice", "Gather",
    "ScatterND", "Expand", "Tile", "Shape", "ConstantOfShape", "Range", "Equal", "Where", "Cast",
    "Identity", "Constant", "ReduceSum",
})
#: ops that only move data; a region made of these alone is already raw.
LAYOUT_OPS = frozenset({"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Concat", "Identity",
                        "Constant", "Shape", "Gather", "Cast", "Slice", "Split"})

LOOKED_FOR = ("looked for per-level prediction convs (YOLOv6 0.1.0/YOLOX: box 4, obj 1, cls nc; YOLOv6 0.2+: "
              "reg 4 or 4*(reg_max+1), cls nc) whose outputs reach one decoded (1, N, 5+nc) output only through "
              "decode ops (Sigmoid, Exp, Softmax, grid/anchor Add/Sub, stride Mul, Reshape/Transpose/Slice/Split/"
              "Concat/ScatterND)")


@dataclass(frozen=True)
class Rejection:
    """A failed match, carrying its reason."""

    pattern: str
    reason: str
    final: bool = False  # the model is recognised as a variant headcut refuses: say only this


    def __str__(self) -> str:
        return f"{self.pattern}: {self.reason}"


@dataclass(frozen=True)
class Region:
    """The result of walking back from one output."""

    output: str
    nodes: tuple[onnx.NodeProto, ...]  # decode nodes, in graph order
    frontier: tuple[str, ...]  # outputs of the prediction convs, in first-seen order
    blockers: tuple[str, ...]  # descriptions of what stopped the walk elsewhere

    @property
    def data_nodes(self) -> tuple[onnx.NodeProto, ...]:
        """Region nodes that depend on the prediction convs (constant plumbing left out)."""
        live = set(self.frontier)
        out = []
        for n in self.nodes:  # graph order is topological
            if any(i in live for i in n.input):
                live.update(n.output)
                out.append(n)
        return tuple(out)

    @property
    def ops(self) -> Counter:
        """Histogram of the decode's data ops, as the reference tables count them."""
        return Counter(n.op_type for n in self.data_nodes)

    @property
    def keys(self) -> frozenset:
        return frozenset(n.output[0] for n in self.nodes)


def _is_fixed_dfl_conv(ix: GraphIndex, node: onnx.NodeProto) -> bool:
    """A 1x1 conv with constant weights 0, 1, ..., R-1 is the DFL expectation, part of the decode."""
    if len(node.input) < 2:
        return False
    w = ix.const_value(node.input[1])
    if w is None or w.ndim != 4 or w.shape[0] != 1 or w.shape[2:] != (1, 1):
        return False
    return bool(np.array_equal(w.reshape(-1), np.arange(w.shape[1], dtype=w.dtype)))


def decode_region(ix: GraphIndex, output: str) -> Region:
    """Walk back from ``output`` through :data:`DECODE_OPS`, stopping at learned Conv nodes."""
    seen_t: set[str] = set()
    seen_n: set[int] = set()
    frontier: list[str] = []
    blockers: list[str] = []
    stack = [output]
    while stack:
        t = stack.pop()
        if not t or t in seen_t or t in ix.initializers:
            continue
        seen_t.add(t)
        if t in ix.graph_inputs:
            blockers.append(f"graph input '{t}' reached without passing a conv")
            continue
        node = ix.producer.get(t)
        if node is None:
            continue
        if node.op_type == "Conv" and not _is_fixed_dfl_conv(ix, node):
            frontier.append(t)
            continue
        if node.op_type in DECODE_OPS or node.op_type == "Conv":
            if id(node) not in seen_n:
                seen_n.add(id(node))
                stack.extend(reversed(node.input))
            continue
        blockers.append(f"{node.op_type} produces '{t}'")
    order = {id(n): i for i, n in enumerate(ix.graph.node)}
    nodes = sorted((n for n in ix.graph.node if id(n) in seen_n), key=lambda n: order[id(n)])
    return Region(output, tuple(nodes), tuple(frontier), tuple(blockers))


def _strip_sigmoid(ix: GraphIndex, t: str) -> tuple[str, bool]:
    """Follow ``t`` back through Identity/Cast and at most one Sigmoid: (source tensor, sigmoid seen)."""
    sig = False
    while (node := ix.producer.get(t)) is not None:
        if node.op_type in ("Identity", "Cast"):
            t = node.input[0]
        elif node.op_type == "Sigmoid" and not sig:
            t, sig = node.input[0], True
        else:
            break
    return t, sig


def _float_consts(ix: GraphIndex, region: Region, op: str):
    """(node, value) for each ``op`` node in the region with a floating-point constant operand."""
    for n in region.nodes:
        if n.op_type != op:
            continue
        for i in n.input:
            v = ix.const_value(i)
            if v is not None and np.issubdtype(v.dtype, np.floating):
                yield n, v


def _cell_grid(h: int, w: int) -> np.ndarray:
    """(h*w, 2) integer cell indices (gx, gy), row-major over (y, x)."""
    gy, gx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return np.stack([gx, gy], -1).reshape(-1, 2).astype(np.float32)


def _group_levels(shapes: dict[str, Shape], region: Region, input_shape) -> list | str:
    """[(stride, (h, w), [conv tensors])] stride ascending, or the reason it is not a pyramid."""
    out_shape = shapes.get(region.output)
    if not is_static(out_shape) or len(out_shape) != 3 or out_shape[0] != 1:
        return f"output '{region.output}' has shape {out_shape}, expected static (1, N, C)"
    _, in_h, in_w = input_shape[-3:]
    by_grid: dict[tuple[int, int], list[str]] = {}
    for t in region.frontier:
        sh = shapes.get(t)
        if not is_static(sh) or len(sh) != 4 or sh[0] != 1:
            return f"prediction conv output '{t}' has shape {sh}, expected static (1, C, H, W)"
        by_grid.setdefault((sh[2], sh[3]), []).append(t)
    levels = []
    for h, w in sorted(by_grid, key=lambda g: -g[0] * g[1]):
        if in_h % h or in_w % w or in_h // h != in_w // w:
            return f"a {h}x{w} feature map does not divide the {in_h}x{in_w} input into one integer stride"
        levels.append((in_h // h, (h, w), by_grid[(h, w)]))
    return levels


def _region_consts(ix: GraphIndex, region: Region):
    """(node, input index, value) for every constant float input of a region node."""
    live = set(region.frontier)
    for n in region.data_nodes:
        live.update(n.output)
    for n in region.nodes:
        for k, i in enumerate(n.input):
            if i and i not in live:
                v = ix.const_value(i)
                if v is not None and np.issubdtype(v.dtype, np.floating):
                    yield n, k, v


def _feeds_sigmoid(ix: GraphIndex, t: str) -> bool:
    """True when ``t`` (through Identity/Cast) is read by a Sigmoid."""
    stack = [t]
    while stack:
        for c in ix.consumers.get(stack.pop(), []):
            if c.op_type == "Sigmoid":
                return True
            if c.op_type in ("Identity", "Cast"):
                stack.append(c.output[0])
    return False


def match_anchor_free(ix: GraphIndex, shapes: dict[str, Shape], region: Region,
                      input_name: str, input_shape: tuple) -> Head | Rejection:
    """YOLOv6 0.2.0 … main: per level a ``reg`` conv (4, or 4·(reg_max+1) with DFL) and a ``cls`` conv.

    ``cls → Sigmoid``; ``reg`` (→ DFL: Reshape, Softmax, fixed 1x1 conv) → distances l, t, r, b;
    anchor points (cell + 0.5) and per-row strides are constants; the output is
    ``Concat([cx, cy, w, h], ones, cls_scores)`` with a constant ones column.
    """
    name = "YOLOv6 anchor-free (l, t, r, b from cell centres; DFL or not)"

    def no(reason: str) -> Rejection:
        return Rejection(name, reason)

    groups = _group_levels(shapes, region, input_shape)
    if isinstance(groups, str):
        return no(groups)
    out_shape = shapes[region.output]
    levels, nc, reg_ch, first = [], None, None, 0
    for stride, (h, w), convs in groups:
        chans = sorted(shapes[t][1] for t in convs)
        if len(convs) == 3 and 10 in chans:
            return Rejection(name, f"YOLOv6 face export (a 10-channel landmark branch per level, "
                                   f"{out_shape[2]} columns): headcut does not strip face heads", final=True)
        if len(convs) != 2:
            return no(f"the {h}x{w} level has {len(convs)} prediction convs, expected 2 (reg, cls)")
        sig = [t for t in convs if _feeds_sigmoid(ix, t)]
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
    reg_max = reg_ch // 4 - 1
    n_rows = first
    if out_shape[1:] != (n_rows, 5 + nc):
        return no(f"output shape {out_shape} does not match the levels: expected (1, {n_rows}, {5 + nc})")
    if reg_max and "Softmax" not in region.ops:
        return no(f"reg branches have {reg_ch} channels but the decode has no Softmax (DFL)")
    if "Exp" in region.ops:
        return no("the decode has an Exp, which the anchor-free decode does not use")

    cells = np.concatenate([_cell_grid(*lv.grid) for lv in levels])
    row_strides = np.concatenate([np.full(lv.rows, lv.stride, np.float32) for lv in levels])
    anchors_ok = ones_ok = False
    for n, _, v in _region_consts(ix, region):
        if v.size == 2 * n_rows and v.shape[-1] == 2:
            if not np.array_equal(v.reshape(-1, 2), cells + 0.5):
                return no(f"anchor-point constant of shape {v.shape} does not match the cell centres of the levels")
            anchors_ok = True
        elif v.size == n_rows and n.op_type == "Mul":
            if not np.array_equal(v.reshape(-1), row_strides):
                return no(f"stride constant of shape {v.shape} does not match the level strides {[lv.stride for lv in levels]}")
        elif v.size == n_rows and n.op_type == "Concat":
            ones_ok = bool((v == 1).all())
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
    return Head("YOLOv6", version, DIST_ANCHOR, input_name, tuple(input_shape), region.output, tuple(out_shape),
                nc, tuple(levels), region.keys, reasons, reg_max=reg_max)


def match_grid_exp_obj(ix: GraphIndex, shapes: dict[str, Shape], region: Region,
                       input_name: str, input_shape: tuple) -> Head | Rejection:
    """YOLOv6 0.1.0 and YOLOX: ``xy = (d + grid) * s``, ``wh = exp(d) * s``, sigmoid obj and cls.

    Per level three convs feed ``Concat([box, Sigmoid(obj), Sigmoid(cls)], axis=1)``; the grid is
    the integer cell index (no +0.5) and the only float Mul constants are strides.
    """
    name = "YOLOv6 0.1.0 / YOLOX (grid + exp decode with objectness)"

    def no(reason: str) -> Rejection:
        return Rejection(name, reason)

    groups = _group_levels(shapes, region, input_shape)
    if isinstance(groups, str):
        return no(groups)
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
            srcs = [_strip_sigmoid(ix, i) for i in c.input]
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

    n_rows = sum(lv.rows for lv in levels)
    if out_shape[1:] != (n_rows, 5 + nc):
        return no(f"output shape {out_shape} does not match the levels: expected (1, {n_rows}, {5 + nc})")
    n_exp = region.ops.get("Exp", 0)
    if n_exp == 0 and set(region.ops) <= LAYOUT_OPS | {"Sigmoid"}:
        reasons = (
            f"{len(levels)} levels of 3 prediction convs (box 4, objectness 1, cls {nc}) joined by a channel Concat",
            "the output is those convs flattened, with sigmoid on objectness and classes and no grid, Exp or "
            "stride: a YOLOX export without decode_in_inference, already raw apart from its sigmoids",
            "strip removes the sigmoids (logits, like every raw layout); --keep-sigmoid keeps them",
        )
        return Head("YOLOX", "undecoded", GRID_EXP_OBJ, input_name, tuple(input_shape), region.output,
                    tuple(out_shape), nc, tuple(levels), region.keys, reasons, original_decoded=False,
                    notes=("YOLOX export without decode: the output was already raw apart from the sigmoids on "
                           "objectness and classes",))
    if n_exp == 0:
        return no("the decode has no Exp (wh = exp(d) * stride)")
    strides = {lv.stride for lv in levels}
    for n, v in _float_consts(ix, region, "Mul"):
        bad = set(np.unique(v).tolist()) - strides
        if bad:
            return no(f"a Mul multiplies by {sorted(bad)[:3]}, which is not a level stride {sorted(strides)}")
    all_cells = np.concatenate([_cell_grid(*lv.grid) for lv in levels])
    grid_seen = 0
    for n, v in _float_consts(ix, region, "Add"):
        flat = v.reshape(-1, 2) if v.size % 2 == 0 and v.shape[-1] == 2 else None
        if flat is None:
            return no(f"an Add uses a constant of shape {v.shape}, not an (x, y) grid")
        expect = next((_cell_grid(*lv.grid) for lv in levels if lv.rows == len(flat)), None)
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
    return Head(family, version, GRID_EXP_OBJ, input_name, tuple(input_shape), region.output,
                tuple(out_shape), nc, tuple(levels), region.keys, reasons)


def _reaches(ix: GraphIndex, t: str, op: str, through=LAYOUT_OPS) -> bool:
    """True when ``t`` flows into an ``op`` node through layout ops only."""
    stack, seen = [t], set()
    while stack:
        x = stack.pop()
        if x in seen:
            continue
        seen.add(x)
        for c in ix.consumers.get(x, []):
            if c.op_type == op:
                return True
            if c.op_type in through:
                stack.extend(c.output)
    return False


def match_anchor_grid(ix: GraphIndex, shapes: dict[str, Shape], region: Region,
                      input_name: str, input_shape: tuple) -> Head | Rejection:
    """YOLOv5 / YOLOv7: one conv per level with na·(5+nc) channels, viewed (1, na, 5+nc, h, w).

    Everything goes through a sigmoid; ``wh = (2σ)² · anchor`` (v5) or ``σ² · 4·anchor`` (v7): the
    anchors are the constant multiplied into the Pow output, read per level (v7 keeps them in a 6-D
    ``anchor_grid`` indexed per level; the constant evaluator resolves the Gather).
    """
    name = "YOLOv5 / YOLOv7 (anchor grid, 3 anchors per cell)"

    def no(reason: str) -> Rejection:
        return Rejection(name, reason)

    groups = _group_levels(shapes, region, input_shape)
    if isinstance(groups, str):
        return no(groups)
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
    if not all(_reaches(ix, convs[0], "Sigmoid") for _, _, convs in groups):
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
        pow_in = ix.producer.get(prods[k].input[0])
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
    return Head(family, "anchor-based", ANCHOR_GRID, input_name, tuple(input_shape), region.output,
                tuple(out_shape), nc, tuple(levels), region.keys, reasons, anchors=anchors)


def match_ultralytics(ix: GraphIndex, shapes: dict[str, Shape], region: Region,
                      input_name: str, input_shape: tuple) -> Head | Rejection:
    """YOLOv8 / YOLO11: per level a box conv (4·reg_max channels) and a cls conv; output (1, 4+nc, N).

    DFL (Softmax + fixed 1x1 conv), anchor points at +0.5 and per-anchor strides as constants,
    sigmoid on the classes, channel-first output without objectness or ones column.
    """
    name = "YOLOv8 / YOLO11 (Ultralytics, DFL, channel-first output)"

    def no(reason: str) -> Rejection:
        return Rejection(name, reason)

    out_shape = shapes.get(region.output)
    if not is_static(out_shape) or len(out_shape) != 3 or out_shape[0] != 1:
        return no(f"output '{region.output}' has shape {out_shape}, expected static (1, 4+nc, N)")
    groups = _group_levels({**shapes, region.output: (1, out_shape[2], out_shape[1])}, region, input_shape)
    if isinstance(groups, str):
        return no(groups)
    n_rows = sum(h * w for _, (h, w), _ in groups)
    if out_shape[2] != n_rows:
        return no(f"output {out_shape} is not channel-first (1, 4+nc, {n_rows})")
    nc = out_shape[1] - 4
    if "Softmax" not in region.ops:
        return no("no DFL (Softmax) in the decode")
    levels, first, reg_ch = [], 0, None
    for stride, (h, w), convs in groups:
        if len(convs) != 2:
            return no(f"the {h}x{w} level has {len(convs)} prediction convs, expected 2 (box, cls)")
        by_ch = {shapes[t][1]: t for t in convs}
        cls = by_ch.get(nc) if len(by_ch) == 2 else None
        if cls is None:  # nc == 4 * reg_max: tell them apart by the sigmoid
            sig = [t for t in convs if _reaches(ix, t, "Sigmoid") and not _reaches(ix, t, "Softmax")]
            cls = sig[0] if len(sig) == 1 else None
        if cls is None:
            return no(f"cannot tell the box and cls convs of the {h}x{w} level apart")
        box = next(t for t in convs if t != cls)
        c = shapes[box][1]
        if c % 4 or c // 4 < 2 or (reg_ch is not None and c != reg_ch):
            return no(f"the {h}x{w} level's box conv has {c} channels, not 4·reg_max")
        reg_ch = c
        levels.append(Level(stride, (h, w), first, (Branch("dfl", box, c), Branch("cls", cls, nc))))
        first += h * w
    cells = np.concatenate([_cell_grid(*lv.grid) for lv in levels]) + 0.5
    anchors_ok = False
    for n, _, v in _region_consts(ix, region):
        if v.size == 2 * n_rows and 2 in v.shape:
            a = v.reshape(-1, n_rows).T if v.shape[-1] == n_rows else v.reshape(-1, 2)
            if not np.array_equal(a, cells):
                return no(f"anchor-point constant of shape {v.shape} does not match the cell centres")
            anchors_ok = True
    if not anchors_ok:
        return no("no anchor-point constant (cell + 0.5) found in the decode")
    dw = any(n.op_type == "Conv" and (attr(n, "group", 1) or 1) > 1 for n in _upstream(ix, levels[0].branches[1].tensor, 4))
    family = "YOLO11" if dw else "YOLOv8"
    reasons = (
        f"{len(levels)} levels of 2 prediction convs (box {reg_ch} = 4 x {reg_ch // 4} DFL bins, cls {nc})",
        f"strides {[lv.stride for lv in levels]} = input {input_shape[-2]}x{input_shape[-1]} / grids "
        + ", ".join(f"{lv.grid[0]}x{lv.grid[1]}" for lv in levels),
        "output channel-first (1, 4+nc, N) with no objectness or ones column; anchor points at cell + 0.5",
        ("the cls branch has depthwise convs: YOLO11" if dw else "the cls branch has plain 3x3 convs: YOLOv8"),
        f"decode ops {dict(sorted(region.ops.items()))}",
    )
    return Head(family, "Ultralytics", DIST_ANCHOR, input_name, tuple(input_shape), region.output,
                tuple(out_shape), nc, tuple(levels), region.keys, reasons, reg_max=reg_ch // 4 - 1,
                ones_column=False, channel_first=True)


def _upstream(ix: GraphIndex, t: str, depth: int):
    """The nodes up to ``depth`` steps upstream of tensor ``t``."""
    out, frontier = [], [t]
    for _ in range(depth):
        nxt = []
        for x in frontier:
            n = ix.producer.get(x)
            if n is not None:
                out.append(n)
                nxt += [i for i in n.input if i and i not in ix.initializers]
        frontier = nxt
    return out


PATTERNS = (match_grid_exp_obj, match_anchor_free, match_anchor_grid, match_ultralytics)


def locate(model: onnx.ModelProto, shapes: dict[str, Shape] | None = None) -> Head:
    """Find the detection head of ``model`` or raise :class:`NoHeadError` with every reason.

    Raises :class:`AlreadyRawError` when the outputs come from the prediction convs through layout
    ops only (for example a model ``strip`` already wrote).
    """
    ix = GraphIndex(model)
    if shapes is None:
        shapes = infer_shapes(model)
    inputs = [i for i in model.graph.input if i.name in ix.graph_inputs]
    if len(inputs) != 1:
        raise NoHeadError(f"no YOLO head: expected one image input, found {len(inputs)}; {LOOKED_FOR}")
    inp = inputs[0]
    in_shape = shapes.get(inp.name)
    if not is_static(in_shape) or len(in_shape) != 4:
        raise NoHeadError(f"no YOLO head: input '{inp.name}' has shape {in_shape}, expected static (1, 3, H, W)")
    outputs = [o.name for o in model.graph.output]
    # seg exports: mask prototypes (1, nm, h, w) beside per-anchor coefficients (1, N, 1 + nm); nm = 32 upstream
    coef = {32} | {s[2] - 1 for n in outputs if len(s := shapes.get(n) or ()) == 3 and isinstance(s[2], int)}
    protos = [n for n in outputs if len(s := shapes.get(n) or ()) == 4 and s[1] in coef]
    if len(outputs) > 1 and protos:
        desc = ", ".join(f"'{n}' {list(shapes.get(n) or [])}" for n in outputs)
        raise NoHeadError(f"segmentation export ({desc}: mask prototypes beside the detections): "
                          "headcut strips detection heads only")
    if len(outputs) != 1:
        raise NoHeadError(f"no YOLO head: expected one decoded output, found {len(outputs)} "
                          f"({', '.join(outputs)}); {LOOKED_FOR}")
    region = decode_region(ix, outputs[0])
    if region.blockers:
        raise NoHeadError(f"no YOLO head: output '{outputs[0]}' depends on ops outside a decode "
                          f"({'; '.join(region.blockers[:3])}); {LOOKED_FOR}")
    if not region.frontier:
        raise NoHeadError(f"no YOLO head: no conv feeds output '{outputs[0]}'; {LOOKED_FOR}")
    if set(region.ops) <= LAYOUT_OPS:
        tag = " (written by headcut)" if any(p.key == "headcut" for p in model.metadata_props) else ""
        raise AlreadyRawError(f"already raw{tag}: output '{outputs[0]}' comes from {len(region.frontier)} "
                              f"convs through layout ops only; there is no decode to cut")
    rejections = []
    for pattern in PATTERNS:
        r = pattern(ix, shapes, region, inp.name, tuple(in_shape))
        if isinstance(r, Head):
            return r
        if r.final:
            raise NoHeadError(r.reason)
        rejections.append(r)
    raise NoHeadError("no YOLO head recognised (" + LOOKED_FOR + "): " + "; ".join(map(str, rejections)))
