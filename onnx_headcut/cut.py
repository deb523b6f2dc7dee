"""Cut the decode off a located head and emit the raw output with layout ops only.

Per level the prediction convs are joined on the channel axis; the flat layout then stacks the
levels row-wise::

    Conv(box) ─┐
    Conv(obj) ─┼─► Concat(axis=1) (1,C,h,w) ─► Reshape (1,C,h*w) ─► Transpose(0,2,1) (1,h*w,C) ─┐
    Conv(cls) ─┘                                                                               │
                                        ... one such chain per level, stride ascending ...  ──┴─► Concat(axis=1) (1,N,C)

With ``Layout("levels")`` each level's ``(1,C,h,w)`` Concat is an output of its own. Options add a
Sigmoid on score branches (``keep_sigmoid``) or keep the DFL expectation in the graph
(``keep_dfl``), written in <= 4-D ops that every opset reads the same way::

    Conv(dfl) (1,4R,h,w) ─► Reshape (1,4,R,h*w) ─► Transpose(0,1,3,2) ─► Softmax(axis=3)
        ─► MatMul([0..R-1]ᵀ) ─► Reshape (1,4,h,w)

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

from .errors import HeadcutError
from .graph import fresh, graph_names
from .heads import Head, Layout
from .heads.anchor_grid import KIND as ANCHOR_GRID


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
        self.hw = hw
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.value_info: list[onnx.ValueInfoProto] = []

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
        rows = na * hw if isinstance(hw, int) else f"{na}*{hw}"
        y = tail.op("Reshape", f"l{i}/anchors", [conv, tail.target(f"l{i}/anchors_shape", na, no, hw)],
                    (1, na, no, hw))
        y = tail.op("Transpose", f"l{i}/cells_last", [y], (1, na, hw, no), perm=[0, 1, 3, 2])
        y = tail.op("Reshape", f"l{i}/rows", [y, tail.target(f"l{i}/rows_shape", rows, no)], (1, rows, no))
        if layout.keep_sigmoid:
            box = tail.op("Slice", f"l{i}/box", [y, tail.const(f"l{i}/b0", np.array([0], np.int64)),
                                                 tail.const(f"l{i}/b1", np.array([4], np.int64)),
                                                 tail.const(f"l{i}/ax", np.array([2], np.int64))], (1, rows, 4))
            rest = tail.op("Slice", f"l{i}/scores_logits", [y, tail.const(f"l{i}/r0", np.array([4], np.int64)),
                                                            tail.const(f"l{i}/r1", np.array([no], np.int64)),
                                                            tail.const(f"l{i}/ax2", np.array([2], np.int64))],
                           (1, rows, no - 4))
            rest = tail.op("Sigmoid", f"l{i}/scores", [rest], (1, rows, no - 4))
            y = tail.op("Concat", f"l{i}/rows_scored", [box, rest], (1, rows, no), axis=2)
        out.append(y)
    return out


def cut(model: onnx.ModelProto, head: Head, layout: Layout = Layout(), batch: int | str = 1,
        inplace: bool = False, output_name: str | None = None) -> tuple[onnx.ModelProto, CutReport]:
    """Return a model whose outputs are the raw head of ``head``.

    ``batch`` is 1 (static) or the name of the input's symbolic batch axis, kept dynamic. A head with
    ``dynamic_hw`` keeps the input's symbolic height and width (reshape targets ``-1``; with batch 1
    the input's batch axis is pinned to 1). With
    ``inplace`` the cut is made on ``model`` itself (no copy of the weights: what ``strip`` does);
    otherwise ``model`` is left unchanged. The raw output takes ``output_name`` (default: the
    decoded output's name; ``<name>_s<stride>`` per level with the levels layout).
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
    blocks = head.blocks(layout)
    width = sum(b.size for b in blocks)
    per_level = _anchor_levels(tail, head, layout, base) if head.kind is ANCHOR_GRID else []
    for i, lv in enumerate(head.levels if head.kind is not ANCHOR_GRID else ()):
        h, w, hw = tail.dims(lv.stride, lv.grid)
        by_role = {b.role: b for b in lv.branches}
        parts = []
        for blk in blocks:
            assert blk.source is not None  # every block of a non-anchor-grid head has a source conv
            branch = by_role[blk.source.role]
            t = branch.tensor
            if blk.sigmoid:
                t = tail.op("Sigmoid", f"l{i}/{blk.role}_sigmoid", [t], (1, blk.size, h, w))
            if branch.role == "dfl" and blk.role == "reg":
                t = tail.dfl(t, f"l{i}/dfl", head.reg_max, h, w)
            parts.append(t)
        if layout.kind == "levels":
            per_level.append(tail.op("Concat", f"l{i}/level", parts, (1, width, h, w),
                                     out=f"{base}_s{lv.stride}", axis=1))
            continue
        cat = tail.op("Concat", f"l{i}/concat", parts, (1, width, h, w), axis=1)
        flat = tail.op("Reshape", f"l{i}/flat", [cat, tail.target(f"l{i}/flat_shape", width, hw)], (1, width, hw))
        per_level.append(tail.op("Transpose", f"l{i}/rows", [flat], (1, hw, width), perm=[0, 2, 1]))
    if layout.kind == "levels":
        outputs = per_level
    else:
        rows = head.rows if head.dynamic_hw is None else "rows"
        outputs = [tail.op("Concat", "concat", per_level, (1, rows, width), out=base, keep_name=keep, axis=1)]
    out_info = {vi.name: vi for vi in tail.value_info if vi.name in outputs}
    g.node.extend(tail.nodes)
    g.initializer.extend(tail.inits)
    del g.output[:]
    g.output.extend(out_info[o] for o in outputs)
    g.value_info.extend(vi for vi in tail.value_info if vi.name not in out_info)
    _prune(g)
    if head.dynamic_hw is not None and batch == 1:  # the symbolic batch of such an export is pinned, as ever
        _pin_batch(g)

    after = Counter(n.op_type for n in g.node)
    added_ops = Counter(n.op_type for n in tail.nodes)
    removed = before - (after - added_ops)
    shapes = {vi.name: tuple(d.dim_value or d.dim_param for d in vi.type.tensor_type.shape.dim) for vi in g.output}
    report = CutReport(sum(before.values()), sum(after.values()), dict(sorted(removed.items())),
                       dict(sorted(added_ops.items())), tuple((o, shapes[o]) for o in outputs))
    return model, report


def _pin_batch(g: onnx.GraphProto) -> None:
    """Make the image input's batch axis 1 (the graph's other dims stay as they are)."""
    inits = {t.name for t in g.initializer}
    for i in g.input:
        dims = i.type.tensor_type.shape.dim
        if i.name not in inits and dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = 1


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
