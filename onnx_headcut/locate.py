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
from .head import GRID_EXP_OBJ, Branch, Head, Level

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

LOOKED_FOR = ("looked for per-level 1x1 prediction convs (box 4, objectness 1, classes nc) whose outputs "
              "reach one (1, N, 5+nc) output only through decode ops (Sigmoid, Exp, grid Add, stride Mul, "
              "Reshape/Transpose/Slice/Concat/ScatterND)")


@dataclass(frozen=True)
class Rejection:
    """A failed match, carrying its reason."""

    pattern: str
    reason: str

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


def match_grid_exp_obj(ix: GraphIndex, shapes: dict[str, Shape], region: Region,
                       input_name: str, input_shape: tuple) -> Head | Rejection:
    """YOLOv6 0.1.0 and YOLOX: ``xy = (d + grid) * s``, ``wh = exp(d) * s``, sigmoid obj and cls.

    Per level three convs feed ``Concat([box, Sigmoid(obj), Sigmoid(cls)], axis=1)``; the grid is
    the integer cell index (no +0.5) and the only float Mul constants are strides.
    """
    name = "YOLOv6 0.1.0 / YOLOX (grid + exp decode with objectness)"

    def no(reason: str) -> Rejection:
        return Rejection(name, reason)

    out_shape = shapes.get(region.output)
    if not is_static(out_shape) or len(out_shape) != 3 or out_shape[0] != 1:
        return no(f"output '{region.output}' has shape {out_shape}, expected static (1, N, C)")
    _, in_h, in_w = input_shape[-3:]
    levels_by_grid: dict[tuple[int, int], list[str]] = {}
    for t in region.frontier:
        s = shapes.get(t)
        if not is_static(s) or len(s) != 4 or s[0] != 1:
            return no(f"prediction conv output '{t}' has shape {s}, expected static (1, C, H, W)")
        levels_by_grid.setdefault((s[2], s[3]), []).append(t)
    if not levels_by_grid:
        return no("no prediction convs feed the output")

    grids = sorted(levels_by_grid, key=lambda g: -g[0] * g[1])
    levels: list[Level] = []
    nc = None
    first = 0
    concats = [n for n in region.nodes if n.op_type == "Concat"]
    for h, w in grids:
        if in_h % h or in_w % w or in_h // h != in_w // w:
            return no(f"a {h}x{w} feature map does not divide the {in_h}x{in_w} input into one integer stride")
        stride = in_h // h
        convs = set(levels_by_grid[(h, w)])
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
        f"{len(levels)} levels of 3 prediction convs (box 4, obj 1, cls {nc}) joined by a channel Concat",
        f"strides {sorted(strides)} = input {in_h}x{in_w} / grids {', '.join(f'{h}x{w}' for h, w in grids)}",
        f"decode ops {dict(sorted(region.ops.items()))}",
        f"grid constants equal the integer cell indices; float Mul constants are the strides",
        ("the decode runs per level before the levels are concatenated (YOLOv6 0.1.0 Detect)" if per_level
         else "the levels are concatenated first and decoded once (YOLOX head)"),
    )
    return Head(family, version, GRID_EXP_OBJ, input_name, tuple(input_shape), region.output,
                tuple(out_shape), nc, tuple(levels), region.keys, reasons)


PATTERNS = (match_grid_exp_obj,)


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
        rejections.append(r)
    raise NoHeadError("no YOLO head recognised (" + LOOKED_FOR + "): " + "; ".join(map(str, rejections)))
