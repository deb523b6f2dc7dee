"""Cut the decode off a located head and emit the raw output with layout ops only.

Per level the prediction convs are joined on the channel axis; the flat layout then stacks the
levels row-wise::

    Conv(box) ─┐
    Conv(obj) ─┼─► Concat(axis=1) (1,C,h,w) ─► Reshape (1,C,h*w) ─► Transpose(0,2,1) (1,h*w,C) ─┐
    Conv(cls) ─┘                                                                               ├─► Concat(axis=1) ─► (1,N,C)
                                        ... one such chain per level, stride ascending ...  ──┘

With ``Layout("levels")`` each level's ``(1,C,h,w)`` Concat is an output of its own. Options add a
Sigmoid on score branches (``keep_sigmoid``) or keep the DFL expectation in the graph
(``keep_dfl``), written in <= 4-D ops that every opset reads the same way::

    Conv(dfl) (1,4R,h,w) ─► Reshape (1,4,R,h*w) ─► Transpose(0,1,3,2) ─► Softmax(axis=3) ─► MatMul([0..R-1]ᵀ) ─► Reshape (1,4,h,w)

The new output keeps the original output's name and dtype (levels: ``<name>_s<stride>``); what
the old output needed and the new one does not is removed by graphsurgeon's ``cleanup()``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .head import ANCHOR_GRID, Head, Layout


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
    """Builds the new nodes; every name is prefixed ``headcut/`` so they are easy to find.

    ``batch`` is 1, or the symbolic name of a dynamic batch axis: Reshape targets then copy the
    batch from their input (0) instead of fixing it.
    """

    def __init__(self, dtype, batch: int | str = 1):
        self.dtype = dtype
        self.batch = batch
        self.nodes: list[gs.Node] = []

    def target(self, name: str, *dims: int) -> gs.Constant:
        b = 1 if self.batch == 1 else 0
        return self.const(name, np.array([b, *dims], np.int64))

    def op(self, op: str, name: str, inputs, shape, **attrs) -> gs.Variable:
        shape = (self.batch, *shape[1:])
        out = gs.Variable(f"headcut/{name}", dtype=self.dtype, shape=tuple(shape))
        self.nodes.append(gs.Node(op, f"headcut/{name}/{op}", attrs, list(inputs), [out]))
        return out

    def const(self, name: str, value: np.ndarray) -> gs.Constant:
        return gs.Constant(f"headcut/{name}", np.asarray(value))

    def dfl(self, x: gs.Variable, name: str, reg_max: int, h: int, w: int) -> gs.Variable:
        r = reg_max + 1
        y = self.op("Reshape", f"{name}/bins", [x, self.target(f"{name}/bins_shape", 4, r, h * w)],
                    (1, 4, r, h * w))
        y = self.op("Transpose", f"{name}/bins_last", [y], (1, 4, h * w, r), perm=[0, 1, 3, 2])
        y = self.op("Softmax", f"{name}/softmax", [y], (1, 4, h * w, r), axis=3)
        proj = self.const(f"{name}/proj", np.arange(r, dtype=self.dtype).reshape(r, 1))
        y = self.op("MatMul", f"{name}/expect", [y, proj], (1, 4, h * w, 1))
        return self.op("Reshape", f"{name}/ltrb", [y, self.target(f"{name}/ltrb_shape", 4, h, w)],
                       (1, 4, h, w))


def _anchor_levels(tail: _Tail, tensors, head: Head, layout: Layout, dtype, batch) -> list:
    """YOLOv5/v7: (1, na·no, h, w) → rows (1, na·h·w, no) ordered anchor, y, x; levels: the conv itself.

        Conv (1,na·no,h,w) ─► Reshape (1,na,no,h·w) ─► Transpose(0,1,3,2) ─► Reshape (1,na·h·w,no)
                              [─► Slice [4:] ─► Sigmoid ─► Concat with [:4]   (keep_sigmoid)]
    """
    na, no = head.na, head.num_classes + 5
    out = []
    for i, lv in enumerate(head.levels):
        h, w = lv.grid
        conv = tensors[lv.branches[0].tensor]
        if layout.kind == "levels":
            if layout.keep_sigmoid:
                from .errors import HeadcutError

                raise HeadcutError("--keep-sigmoid with --layout levels is not available for anchor heads "
                                   "(the sigmoid would reach the box columns); use the flat layout")
            ident = gs.Variable(f"{head.output_name}_s{lv.stride}", dtype=dtype, shape=(batch, na * no, h, w))
            tail.nodes.append(gs.Node("Identity", f"headcut/l{i}/Identity", {}, [conv], [ident]))
            out.append(ident)
            continue
        y = tail.op("Reshape", f"l{i}/anchors", [conv, tail.target(f"l{i}/anchors_shape", na, no, h * w)],
                    (1, na, no, h * w))
        y = tail.op("Transpose", f"l{i}/cells_last", [y], (1, na, h * w, no), perm=[0, 1, 3, 2])
        y = tail.op("Reshape", f"l{i}/rows", [y, tail.target(f"l{i}/rows_shape", na * h * w, no)], (1, na * h * w, no))
        if layout.keep_sigmoid:
            rows = na * h * w
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


def cut(model: onnx.ModelProto, head: Head, layout: Layout = Layout(),
        batch: int | str = 1) -> tuple[onnx.ModelProto, CutReport]:
    """Return a new model whose outputs are the raw head of ``head`` (``model`` is not changed).

    ``batch`` is 1 (static) or the name of the input's symbolic batch axis, kept dynamic.
    """
    layout = head.effective(layout)
    graph = gs.import_onnx(model)
    tensors = graph.tensors()
    old_out = tensors[head.output_name]
    dtype = old_out.dtype if old_out.dtype is not None else np.float32
    old_out.name = f"{head.output_name}__decoded_by_headcut"
    before = Counter(n.op for n in graph.nodes)

    tail = _Tail(dtype, batch)
    blocks = head.blocks(layout)
    width = sum(b.size for b in blocks)
    per_level = []
    if head.decode == ANCHOR_GRID:
        per_level = _anchor_levels(tail, tensors, head, layout, dtype, batch)
    for i, lv in enumerate(head.levels if head.decode != ANCHOR_GRID else ()):
        h, w = lv.grid
        by_role = {b.role: b for b in lv.branches}
        parts = []
        for blk in blocks:
            branch = by_role[blk.source.role]
            t = tensors[branch.tensor]
            if blk.sigmoid:
                t = tail.op("Sigmoid", f"l{i}/{blk.role}_sigmoid", [t], (1, blk.size, h, w))
            if branch.role == "dfl" and blk.role == "reg":
                t = tail.dfl(t, f"l{i}/dfl", head.reg_max, h, w)
            parts.append(t)
        if layout.kind == "levels":
            out = gs.Variable(f"{head.output_name}_s{lv.stride}", dtype=dtype, shape=(batch, width, h, w))
            tail.nodes.append(gs.Node("Concat", f"headcut/l{i}/Concat", {"axis": 1}, parts, [out]))
            per_level.append(out)
            continue
        cat = tail.op("Concat", f"l{i}/concat", parts, (1, width, h, w), axis=1)
        flat = tail.op("Reshape", f"l{i}/flat", [cat, tail.target(f"l{i}/flat_shape", width, h * w)],
                       (1, width, h * w))
        per_level.append(tail.op("Transpose", f"l{i}/rows", [flat], (1, h * w, width), perm=[0, 2, 1]))
    if layout.kind == "levels":
        outputs = per_level
    else:
        out = gs.Variable(head.output_name, dtype=dtype, shape=(batch, head.rows, width))
        tail.nodes.append(gs.Node("Concat", "headcut/Concat", {"axis": 1}, per_level, [out]))
        outputs = [out]
    graph.nodes.extend(tail.nodes)
    graph.outputs = outputs
    graph.cleanup(remove_unused_graph_inputs=False).toposort()

    after = Counter(n.op for n in graph.nodes)
    added_ops = Counter(n.op for n in tail.nodes)
    removed = before - (after - added_ops)
    raw = gs.export_onnx(graph, do_type_check=True)
    raw.ir_version = model.ir_version
    del raw.opset_import[:]
    raw.opset_import.extend(model.opset_import)
    raw.producer_name, raw.producer_version = model.producer_name, model.producer_version
    report = CutReport(sum(before.values()), sum(after.values()), dict(sorted(removed.items())),
                       dict(sorted(added_ops.items())), tuple((o.name, tuple(o.shape)) for o in outputs))
    return raw, report
