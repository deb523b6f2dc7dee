"""Cut the decode off a located head and emit the raw (1, N, C) tensor with layout ops only.

Per level the prediction convs are joined and flattened; the levels are stacked row-wise::

    Conv(box) ─┐
    Conv(obj) ─┼─► Concat(axis=1) (1,C,h,w) ─► Reshape (1,C,h*w) ─► Transpose(0,2,1) (1,h*w,C) ─┐
    Conv(cls) ─┘                                                                               ├─► Concat(axis=1) ─► (1,N,C)
                                        ... one such chain per level, stride ascending ...  ──┘

The new output keeps the original output's name and dtype, so code that binds by name still
finds it; everything the old output needed and the new one does not is removed by graphsurgeon's
``cleanup()`` (nothing is deleted by hand).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .head import Head


@dataclass(frozen=True)
class CutReport:
    nodes_before: int
    nodes_after: int
    removed_ops: dict  # op type -> count, over every removed node (Constants included)
    added_ops: dict


def cut(model: onnx.ModelProto, head: Head) -> tuple[onnx.ModelProto, CutReport]:
    """Return a new model whose single output is the raw head of ``head`` (``model`` is not changed)."""
    graph = gs.import_onnx(model)
    tensors = graph.tensors()
    old_out = tensors[head.output_name]
    dtype = old_out.dtype if old_out.dtype is not None else np.float32
    old_out.name = f"{head.output_name}__decoded_by_headcut"
    before = Counter(n.op for n in graph.nodes)

    added: list[gs.Node] = []
    rows = []
    width = head.width
    for i, lv in enumerate(head.levels):
        h, w = lv.grid
        branches = [tensors[b.tensor] for b in lv.branches]
        cat = gs.Variable(f"headcut/l{i}/concat", dtype=dtype, shape=(1, width, h, w))
        flat = gs.Variable(f"headcut/l{i}/flat", dtype=dtype, shape=(1, width, h * w))
        rows_i = gs.Variable(f"headcut/l{i}/rows", dtype=dtype, shape=(1, h * w, width))
        shape = gs.Constant(f"headcut/l{i}/flat_shape", np.array([1, width, h * w], dtype=np.int64))
        added += [
            gs.Node("Concat", f"headcut/l{i}/Concat", {"axis": 1}, branches, [cat]),
            gs.Node("Reshape", f"headcut/l{i}/Reshape", {}, [cat, shape], [flat]),
            gs.Node("Transpose", f"headcut/l{i}/Transpose", {"perm": [0, 2, 1]}, [flat], [rows_i]),
        ]
        rows.append(rows_i)
    out = gs.Variable(head.output_name, dtype=dtype, shape=(1, head.rows, width))
    added.append(gs.Node("Concat", "headcut/Concat", {"axis": 1}, rows, [out]))
    graph.nodes.extend(added)
    graph.outputs = [out]
    graph.cleanup(remove_unused_graph_inputs=False).toposort()

    after = Counter(n.op for n in graph.nodes)
    added_ops = Counter(n.op for n in added)
    removed = before - (after - added_ops)
    raw = gs.export_onnx(graph, do_type_check=True)
    raw.ir_version = model.ir_version
    del raw.opset_import[:]
    raw.opset_import.extend(model.opset_import)
    raw.producer_name, raw.producer_version = model.producer_name, model.producer_version
    report = CutReport(sum(before.values()), sum(after.values()), dict(sorted(removed.items())),
                       dict(sorted(added_ops.items())))
    return raw, report
