"""Cut the decode off a located head and emit the raw output with layout ops only.

Per level the prediction convs are joined on the channel axis; the flat layout then stacks the
levels row-wise::

    Conv(box) ─┐
    Conv(obj) ─┼─► Concat(axis=1) (1,C,h,w) ─► Reshape (1,C,h*w) ─► Transpose(0,2,1) (1,h*w,C) ─┐
    Conv(cls) ─┘                                                                               │
                                        ... one such chain per level, stride ascending ...  ──┴─► Concat(axis=1) (1,N,C)

With ``Layout("levels")`` each level's ``(1,C,h,w)`` Concat is an output of its own. ``split`` makes
two per level, the box blocks ``<name>_s<stride>_box`` and the score blocks (objectness, classes)
``<name>_s<stride>_cls``, and with ``score_sum`` a third, ``<name>_s<stride>_sum`` =
``Clip(sum over the classes of Sigmoid(cls), 0, 1)`` as rknn_model_zoo's YOLOv8 export has it (the sum
a 1x1 Conv of ones rather than its ReduceSum, which pnnx mistranslates);
``flat-split`` stacks each of those row-wise, ``<name>_box``, ``<name>_cls`` (``<name>_sum``). Options add a
Sigmoid on score branches (``keep_sigmoid``) or keep the DFL expectation in the graph
(``keep_dfl``), written in <= 4-D ops that every opset reads the same way::

    Conv(dfl) (1,4R,h,w) ─► Reshape (1,4,R,h*w) ─► Transpose(0,1,3,2) ─► Softmax(axis=3)
        ─► MatMul([0..R-1]ᵀ) ─► Reshape (1,4,h,w)

A task head's extra block (segment: mask coefficients) follows the detection blocks of each level; the
outputs the head keeps (segment: the prototypes) stay graph outputs, untouched, after the raw ones.

The new output keeps the original output's name and dtype (levels: ``<name>_s<stride>``); what
the old output needed and the new one does not is pruned from the protobuf in place, so the
weights are never copied (the cut of a 2 GB model costs no more memory than loading it).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from .errors import HeadcutError, UsageError
from .graph import fresh, graph_names
from .heads import Head, Layout
from .heads.anchor_grid import KIND as ANCHOR_GRID
from .heads.base import PER_LEVEL, SPLIT, part_of


@dataclass(frozen=True)
class CutReport:
    nodes_before: int
    nodes_after: int
    removed_ops: dict  # op type -> count, over every removed node (Constants included)
    added_ops: dict
    outputs: tuple  # ((name, shape), ...) of the raw model

    @property
    def removed(self) -> int:
        return sum(self.removed_ops.values())


class _Tail:
    """Builds the new nodes (protobuf, appended to the graph); every name is prefixed ``headcut/`` and
    made unique against ``taken`` (all names of the graph), so a model that already uses ``headcut/...``
    names cannot make the new nodes collide with its own.

    ``batch`` is 1, or the symbolic name of a dynamic batch axis: Reshape targets then copy the
    batch from their input (0) instead of fixing it. ``hw`` names a symbolic input height and width
    kept in the raw graph: the sizes that follow them are then symbolic (``dims``), written ``-1`` in
    Reshape targets, so the targets hold for any input size.
    """

    def __init__(self, elem_type: int, batch: int | str = 1, taken: set[str] | None = None,
                 hw: tuple[str, str] | None = None):
        self.taken = taken if taken is not None else set()
        self.elem_type = elem_type
        self.dtype = onnx.helper.tensor_dtype_to_np_dtype(elem_type)
        self.batch = batch
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.value_info: list[onnx.ValueInfoProto] = []
        self.channels: dict[str, int] = {}  # last axis (flat rows) or channel axis (1, C, h, w) of each tensor made
        self.opset = 13
        self.hw = hw

    def dims(self, stride: int, grid: tuple[int, int]) -> tuple:
        """(h, w, h*w) of a level: numbers, or with a kept symbolic input size the names of those sizes."""
        if self.hw is None:
            return grid[0], grid[1], grid[0] * grid[1]
        h, w = (f"{n}/{stride}" for n in self.hw)
        return h, w, f"{h}*{w}"

    def target(self, name: str, *dims) -> str:
        b = 1 if self.batch == 1 else 0
        values = [-1 if isinstance(d, str) else d for d in dims]
        assert values.count(-1) <= 1, "a Reshape target infers at most one dim"
        return self.const(name, np.array([b, *values], np.int64))

    def op(self, op: str, name: str, inputs, shape, out: str | None = None, keep_name: bool = False,
           batch_dim: bool = True, **attrs) -> str:
        """Append ``op`` writing tensor ``headcut/<name>`` (or ``out``; as given with ``keep_name``) of
        ``shape`` (batch axis replaced unless not ``batch_dim``)."""
        if keep_name:
            assert out is not None, "keep_name needs out"
        else:
            out = fresh(self.taken, out or f"headcut/{name}")
        node_name = fresh(self.taken, f"headcut/{name}/{op}")
        self.nodes.append(onnx.helper.make_node(op, list(inputs), [out], name=node_name, **attrs))
        dims = [self.batch, *shape[1:]] if batch_dim else list(shape)
        self.value_info.append(onnx.helper.make_tensor_value_info(out, self.elem_type, dims))
        self.channels[out] = shape[-1] if len(shape) == 3 else shape[1]
        return out

    def slice(self, x: str, name: str, start: int, end: int, axis: int, shape) -> str:
        """``x[start:end]`` on ``axis``."""
        return self.op("Slice", name, [x, self.const(f"{name}/start", np.array([start], np.int64)),
                                       self.const(f"{name}/end", np.array([end], np.int64)),
                                       self.const(f"{name}/axis", np.array([axis], np.int64))], shape)

    def join(self, parts: list[str], name: str, shape, out: str | None = None) -> str:
        """``parts`` joined on the channel axis into ``out``: a Concat; one part made here is renamed ``out``
        (a conv output is passed through an Identity, so that the conv keeps its name)."""
        if len(parts) > 1:
            return self.op("Concat", name, parts, shape, out=out, axis=1)
        (t,) = parts
        if out is None:
            return t
        made = next((n for n in self.nodes if t in n.output), None)
        if made is None or any(t in n.input for n in self.nodes):  # a conv, or read by another node (the sum)
            return self.op("Identity", name, [t], shape, out=out)
        out = fresh(self.taken, out)
        made.output[list(made.output).index(t)] = out
        vi = next(v for v in self.value_info if v.name == t)
        vi.name = out
        self.channels[out] = self.channels[t]
        return out

    def const(self, name: str, value: np.ndarray) -> str:
        name = fresh(self.taken, f"headcut/{name}")
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def dfl(self, x: str, name: str, reg_max: int, h, w) -> str:
        r = reg_max + 1
        if self.hw is not None:
            return self._dfl_any_size(x, name, r, h, w)
        y = self.op("Reshape", f"{name}/bins", [x, self.target(f"{name}/bins_shape", 4, r, h * w)],
                    (1, 4, r, h * w))
        y = self.op("Transpose", f"{name}/bins_last", [y], (1, 4, h * w, r), perm=[0, 1, 3, 2])
        y = self.op("Softmax", f"{name}/softmax", [y], (1, 4, h * w, r), axis=3)
        proj = self.const(f"{name}/proj", np.arange(r, dtype=self.dtype).reshape(r, 1))
        y = self.op("MatMul", f"{name}/expect", [y, proj], (1, 4, h * w, 1))
        return self.op("Reshape", f"{name}/ltrb", [y, self.target(f"{name}/ltrb_shape", 4, h, w)],
                       (1, 4, h, w))

    def _dfl_any_size(self, x: str, name: str, r: int, h, w) -> str:
        """The DFL expectation with h and w copied from the input (Reshape 0), for a symbolic input size::

            (B,4R,h,w) ─► Reshape [-1,R,0,0] (4B,R,h,w) ─► Transpose(0,2,3,1) ─► Softmax(3) ─► MatMul([0..R-1]ᵀ)
                ─► Transpose(0,3,1,2) (4B,1,h,w) ─► Reshape [B,4,0,0] (B,4,h,w)
        """
        four = f"4*{self.batch}" if self.batch != 1 else 4
        y = self.op("Reshape", f"{name}/bins", [x, self.const(f"{name}/bins_shape", np.array([-1, r, 0, 0], np.int64))],
                    (four, r, h, w), batch_dim=False)
        y = self.op("Transpose", f"{name}/bins_last", [y], (four, h, w, r), perm=[0, 2, 3, 1], batch_dim=False)
        y = self.op("Softmax", f"{name}/softmax", [y], (four, h, w, r), axis=3, batch_dim=False)
        proj = self.const(f"{name}/proj", np.arange(r, dtype=self.dtype).reshape(r, 1))
        y = self.op("MatMul", f"{name}/expect", [y, proj], (four, h, w, 1), batch_dim=False)
        y = self.op("Transpose", f"{name}/sides", [y], (four, 1, h, w), perm=[0, 3, 1, 2], batch_dim=False)
        b = 1 if self.batch == 1 else -1
        return self.op("Reshape", f"{name}/ltrb",
                       [y, self.const(f"{name}/ltrb_shape", np.array([b, 4, 0, 0], np.int64))], (1, 4, h, w))


def _anchor_levels(tail: _Tail, head: Head, layout: Layout, base: str) -> list[str]:
    """YOLOv5/v7: (1, na·no, h, w) → rows (1, na·h·w, no) ordered anchor, y, x; levels: the conv itself.

        Conv (1,na·no,h,w) ─► Reshape (1,na,no,h·w) ─► Transpose(0,1,3,2) ─► Reshape (1,na·h·w,no)
                              [─► Slice [4:] ─► Sigmoid ─► Concat with [:4]   (keep_sigmoid)]

    split: ``Reshape (1,na,no,h·w) ─► Slice [:4] | [4:] on axis 2 [─► Sigmoid] ─► Reshape (1,na·k,h,w)``, per
    anchor a block of k channels; flat-split: the rows above sliced on the last axis instead.
    """
    na, no = head.na, head.num_classes + 5
    out = []
    for i, lv in enumerate(head.levels):
        h, w, hw = tail.dims(lv.stride, lv.grid)
        conv = lv.branches[0].tensor
        if layout.kind == "levels":
            if layout.keep_sigmoid:
                raise HeadcutError("--keep-sigmoid with --layout levels is not available for anchor heads "
                                   "(the sigmoid would reach the box columns); use the flat layout")
            out.append(tail.op("Identity", f"l{i}/level", [conv], (1, na * no, h, w),
                               out=f"{base}_s{lv.stride}"))
            continue
        y = tail.op("Reshape", f"l{i}/anchors", [conv, tail.target(f"l{i}/anchors_shape", na, no, hw)],
                    (1, na, no, hw))
        if layout.kind == "split":
            if tail.hw is not None:
                raise UsageError("--layout split of an anchor head with a symbolic input height and width is not "
                                 "available (its per-anchor blocks need the grid size); pin it with --input-size")
            for part, (a, b) in (("box", (0, 4)), ("cls", (4, no))):
                t = tail.slice(y, f"l{i}/{part}", a, b, 2, (1, na, b - a, hw))
                if part == "cls" and layout.keep_sigmoid:
                    t = tail.op("Sigmoid", f"l{i}/scores", [t], (1, na, b - a, hw))
                out.append(tail.op("Reshape", f"l{i}/{part}_level", [t, tail.target(f"l{i}/{part}_shape",
                                                                                    na * (b - a), h, w)],
                                   (1, na * (b - a), h, w), out=f"{base}_s{lv.stride}_{part}"))
            continue
        y = tail.op("Transpose", f"l{i}/cells_last", [y], (1, na, hw, no), perm=[0, 1, 3, 2])
        rows = na * hw if isinstance(hw, int) else f"{na}*{hw}"
        if layout.kind == "flat-split":
            for part, (a, b) in (("box", (0, 4)), ("cls", (4, no))):
                t = tail.slice(y, f"l{i}/{part}", a, b, 3, (1, na, hw, b - a))
                if part == "cls" and layout.keep_sigmoid:
                    t = tail.op("Sigmoid", f"l{i}/scores", [t], (1, na, hw, b - a))
                out.append(tail.op("Reshape", f"l{i}/{part}_rows", [t, tail.target(f"l{i}/{part}_rows_shape",
                                                                                   rows, b - a)], (1, rows, b - a)))
            continue
        y = tail.op("Reshape", f"l{i}/rows", [y, tail.target(f"l{i}/rows_shape", rows, no)], (1, rows, no))
        if layout.keep_sigmoid:
            box = tail.slice(y, f"l{i}/box", 0, 4, 2, (1, rows, 4))
            rest = tail.slice(y, f"l{i}/scores_logits", 4, no, 2, (1, rows, no - 4))
            rest = tail.op("Sigmoid", f"l{i}/scores", [rest], (1, rows, no - 4))
            y = tail.op("Concat", f"l{i}/rows_scored", [box, rest], (1, rows, no), axis=2)
        out.append(y)
    return out


def _conv_levels(tail: _Tail, head: Head, layout: Layout, base: str) -> list[str]:
    """Anchor-free and objectness heads: per level the blocks joined on the channel axis, one group per
    part of the layout (split: box, cls[, sum]); per-level layouts name each group an output, flat ones
    flatten it to rows. Returns the per-level tensors, level-major (groups in part order)."""
    blocks = head.blocks(layout)
    opset = tail.opset
    out = []
    for i, lv in enumerate(head.levels):
        h, w, hw = tail.dims(lv.stride, lv.grid)
        by_role = {b.role: b for b in lv.branches}
        groups: dict[str, list[str]] = {p: [] for p in layout.parts}
        scores = None
        for blk in blocks:
            assert blk.source is not None  # every block of a non-anchor-grid head has a source conv
            branch = by_role[blk.source.role]
            t = branch.tensor
            if blk.sigmoid:
                t = tail.op("Sigmoid", f"l{i}/{blk.role}_sigmoid", [t], (1, blk.size, h, w))
            if branch.role == "dfl" and blk.role == "reg":
                t = tail.dfl(t, f"l{i}/dfl", head.reg_max, h, w)
            groups[part_of(blk.role) if layout.kind in SPLIT else ""].append(t)
            if blk.role == "cls":
                scores = t if blk.sigmoid else None
        if layout.score_sum:  # rknn_model_zoo's YOLOv8: clamp(sigmoid(cls).sum(1, keepdim=True), 0, 1)
            cls = scores or tail.op("Sigmoid", f"l{i}/sum_sigmoid", [by_role["cls"].tensor],
                                    (1, head.num_classes, h, w))
            # the sum over the classes as a 1x1 Conv with weights 1: pnnx 20261020 writes a channel ReduceSum as
            # an ncnn Reduction over no axis (the values unsummed); the Conv is read the same way everywhere
            ones = tail.const(f"l{i}/sum_weights", np.ones((1, head.num_classes, 1, 1), tail.dtype))
            s = tail.op("Conv", f"l{i}/score_sum", [cls, ones], (1, 1, h, w), kernel_shape=[1, 1])
            if opset >= 11:
                bounds = [tail.const(f"l{i}/clip_{k}", np.array(v, tail.dtype)) for k, v in (("min", 0), ("max", 1))]
                s = tail.op("Clip", f"l{i}/score_sum_clip", [s, *bounds], (1, 1, h, w))
            else:
                s = tail.op("Clip", f"l{i}/score_sum_clip", [s], (1, 1, h, w), min=0.0, max=1.0)
            groups["sum"] = [s]
        for part, parts in groups.items():
            c = sum(tail.channels[t] for t in parts)
            name = f"{base}_s{lv.stride}" + (f"_{part}" if part else "")
            if layout.kind in PER_LEVEL:
                out.append(tail.join(parts, f"l{i}/level{part and '_' + part}", (1, c, h, w), name))
                continue
            cat = tail.join(parts, f"l{i}/concat{part and '_' + part}", (1, c, h, w))
            flat = tail.op("Reshape", f"l{i}/flat{part and '_' + part}",
                           [cat, tail.target(f"l{i}/flat{part and '_' + part}_shape", c, hw)], (1, c, hw))
            out.append(tail.op("Transpose", f"l{i}/rows{part and '_' + part}", [flat], (1, hw, c), perm=[0, 2, 1]))
    return out


def cut(model: onnx.ModelProto, head: Head, layout: Layout = Layout(), batch: int | str = 1,
        inplace: bool = False, output_name: str | None = None) -> tuple[onnx.ModelProto, CutReport]:
    """Return a model whose outputs are the raw head of ``head``.

    ``batch`` is 1 (static) or the name of the input's symbolic batch axis, kept dynamic. A head with
    ``dynamic_hw`` keeps the input's symbolic height and width (reshape targets ``-1``; with batch 1
    the input's batch axis is pinned to 1). With
    ``inplace`` the cut is made on ``model`` itself (no copy of the weights: what ``strip`` does);
    otherwise ``model`` is left unchanged. The raw output takes ``output_name`` (default: the
    decoded output's name; ``<name>_s<stride>`` per level with the levels layout, ``<name>_s<stride>_box``,
    ``_cls`` (``_sum``) with split, ``<name>_box``, ``_cls`` (``_sum``) with flat-split).
    """
    if not inplace:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        model = copy
    layout = head.effective(layout)
    g = model.graph
    before = Counter(n.op_type for n in g.node)
    old = next(o for o in g.output if o.name == head.output_name)
    elem = old.type.tensor_type.elem_type or onnx.TensorProto.FLOAT
    taken = graph_names(g)
    hidden = fresh(taken, f"{head.output_name}__decoded_by_headcut")
    for n in g.node:  # the new output takes the old one's name
        for k, o in enumerate(n.output):
            if o == head.output_name:
                n.output[k] = hidden
        for k, i in enumerate(n.input):
            if i == head.output_name:
                n.input[k] = hidden

    tail = _Tail(elem, batch, taken, head.dynamic_hw.axes if head.dynamic_hw else None)
    base = output_name or head.output_name
    keep = base == head.output_name  # the decoded output's name was freed above; any other must be unique
    tail.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    tail.channels.update({b.tensor: b.channels for lv in head.levels for b in lv.branches})
    per_level = (_anchor_levels if head.kind is ANCHOR_GRID else _conv_levels)(tail, head, layout, base)
    parts = layout.parts
    if layout.kind in PER_LEVEL:
        outputs = per_level
    else:  # per level, one tensor per part: each part's rows concatenated over the levels
        outputs = []
        n_rows = head.rows if head.dynamic_hw is None else "rows"
        for k, part in enumerate(parts):
            rows = per_level[k::len(parts)]
            width = sum(tail.channels[t] for t in rows[:1])
            outputs.append(tail.op("Concat", f"concat{part and '_' + part}", rows, (1, n_rows, width),
                                   out=base + (f"_{part}" if part else ""), keep_name=keep and not part, axis=1))
    out_info = {vi.name: vi for vi in tail.value_info if vi.name in outputs}
    kept = [o for name in head.kept_outputs for o in g.output if o.name == name]  # the prototypes: as they are
    g.node.extend(tail.nodes)
    g.initializer.extend(tail.inits)
    del g.output[:]
    g.output.extend(out_info[o] for o in outputs)
    g.output.extend(kept)
    outputs += [o.name for o in kept]
    g.value_info.extend(vi for vi in tail.value_info if vi.name not in out_info)
    _prune(g)
    if head.dynamic_hw is not None and batch == 1:  # the symbolic batch of such an export is pinned, as ever
        _pin_batch(g, head.kept_outputs)

    after = Counter(n.op_type for n in g.node)
    added_ops = Counter(n.op_type for n in tail.nodes)
    removed = before - (after - added_ops)
    shapes = {vi.name: tuple(d.dim_value or d.dim_param for d in vi.type.tensor_type.shape.dim) for vi in g.output}
    report = CutReport(sum(before.values()), sum(after.values()), dict(sorted(removed.items())),
                       dict(sorted(added_ops.items())), tuple((o, shapes[o]) for o in outputs))
    return model, report


def _prune(g: onnx.GraphProto) -> None:
    """Remove, in place, every node, initializer and value_info the outputs do not need.

    Deleting from the repeated fields keeps the surviving weights where they are (no copy).
    """
    producer = {o: i for i, n in enumerate(g.node) for o in n.output}
    keep, stack = set(), [o.name for o in g.output]
    needed = set()
    while stack:
        t = stack.pop()
        if t in needed:
            continue
        needed.add(t)
        i = producer.get(t)
        if i is not None and i not in keep:
            keep.add(i)
            stack.extend(x for x in g.node[i].input if x)
            for a in g.node[i].attribute:  # subgraphs (If/Loop) read outer tensors too
                for sub in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                    stack.extend(x for n in sub.node for x in n.input if x)
    for i in sorted(set(range(len(g.node))) - keep, reverse=True):
        del g.node[i]
    for i in reversed([i for i, t in enumerate(g.initializer) if t.name not in needed]):
        del g.initializer[i]
    for i in reversed([i for i, v in enumerate(g.value_info) if v.name not in needed]):
        del g.value_info[i]


def _pin_batch(g: onnx.GraphProto, kept: tuple[str, ...] = ()) -> None:
    """Make the image input's batch axis 1, and that of the original's outputs kept as they are (``kept``: a segment
    head's prototypes, whose declaration would say the batch is still symbolic); the other dims stay."""
    inits = {t.name for t in g.initializer}
    for i in [*(i for i in g.input if i.name not in inits), *(o for o in g.output if o.name in kept)]:
        dims = i.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = 1
