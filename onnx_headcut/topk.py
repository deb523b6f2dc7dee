"""NMS-free exports: a top-k selection after the decode (YOLOv10, YOLO26 with ``nms=False`` / ``end2end=True``).

Ultralytics ``Detect.postprocess`` (8.4) and YOLOv10's ``v10postprocess`` end the graph with::

    decode ─► D (1, 4+nc, N) = [x1, y1, x2, y2, scores] ─► Transpose ─► Split(boxes, scores)
        scores ─► ReduceMax(classes) ─► TopK(k) ─► indices ─► GatherElements(scores[, boxes])
        ─► Flatten (1, k*nc) ─► TopK(k) ─► Mod nc (class) / Div nc (row of the first selection)
        ─► GatherElements(boxes) ─► Concat([boxes, score, class]) ─► output (1, k, 6)

:func:`candidates` yields the channel-first tensors upstream of the TopKs, nearest first, each with the
model truncated there; the caller locates a head in each. :func:`check_tail` then proves the rest of the
graph is exactly that selection — two TopKs of k (largest, sorted) = the output's rows, the first on the
max over classes, the second on the flattened scores, Mod/Div by nc, and on the decoded values nothing
but moving and selecting them — or refuses it. The selection is recorded (:class:`~onnx_headcut.heads.base.Selection`)
and reproduced by :func:`onnx_headcut.decode.select_topk`; the verification compares ``(1, k, 6)`` outputs.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import onnx

from .errors import NoHeadError
from .graph import GraphIndex, Shape, attr, is_static
from .heads.base import Selection
from .wrappers import truncate

#: ops that may read the decoded values: they move or select them, never change one
VALUE_OPS = frozenset({"Transpose", "Split", "Slice", "ReduceMax", "TopK", "GatherElements", "Gather", "GatherND",
                       "Flatten", "Reshape", "Unsqueeze", "Squeeze", "Concat", "Identity"})
#: ops on indices and shapes only (the dynamo exporter writes ``//`` as Div, Mod, Less, Equal, And, Sub)
INDEX_OPS = frozenset({"Unsqueeze", "Squeeze", "Tile", "Expand", "Flatten", "Reshape", "Mod", "Div", "Less", "Equal",
                       "And", "Cast", "Sub", "Add", "Mul", "Concat", "Gather", "GatherND", "GatherElements", "Shape",
                       "Range", "ConstantOfShape", "Constant", "Identity", "Slice"})


def find_topk(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type == "TopK"]


def candidates(model: onnx.ModelProto, shapes: dict[str, Shape]):
    """``(truncated model, tensor, shape)`` for each static (1, C, N) tensor upstream of the first TopK, C >= 5,
    nearest first; a model without TopK yields nothing."""
    topk = find_topk(model)
    if not topk:
        return
    ix = GraphIndex(model)
    seen, queue = set(), deque(i for i in topk[0].input[:1])
    while queue:
        t = queue.popleft()
        if t in seen or t in ix.initializers or t in ix.graph_inputs:
            continue
        seen.add(t)
        s = shapes.get(t)
        if is_static(s) and len(s) == 3 and s[0] == 1 and 5 <= s[1] < s[2]:
            yield truncate(model, t, s), t, s
        node = ix.producer.get(t)
        if node is not None and node.op_type != "Conv":
            queue.extend(i for i in node.input if i)


def _tail(ix: GraphIndex, model: onnx.ModelProto, out: str, decoded: str) -> list[onnx.NodeProto]:
    """The nodes between ``decoded`` and ``out``, in graph order."""
    nodes, stack = set(), [out]
    while stack:
        t = stack.pop()
        n = ix.producer.get(t)
        if t == decoded or n is None or id(n) in nodes:
            continue
        nodes.add(id(n))
        stack.extend(i for i in n.input if i)
    return [n for n in model.graph.node if id(n) in nodes]


def _int_consts(ix: GraphIndex, node: onnx.NodeProto) -> list[np.ndarray]:
    vals = (ix.const_value(i) for i in node.input if i)
    return [v for v in vals if v is not None and np.issubdtype(v.dtype, np.integer)]


def check_tail(model: onnx.ModelProto, shapes: dict[str, Shape], decoded: str, nc: int) -> Selection:
    """The top-k selection from ``decoded`` (1, 4+nc, N) to the model's output, or :class:`NoHeadError`
    saying how the tail differs from Ultralytics' / YOLOv10's NMS-free postprocess."""
    def no(why: str) -> NoHeadError:
        return NoHeadError(f"NMS-free (top-k) export: {why}; headcut records only the Ultralytics/YOLOv10 "
                           "selection (TopK of the best class score, TopK of the flattened scores, no NMS)")

    outs = [o.name for o in model.graph.output]
    out_shape = shapes.get(outs[0]) if len(outs) == 1 else None
    if not is_static(out_shape) or len(out_shape) != 3 or out_shape[0] != 1 or out_shape[2] != 6:
        raise no(f"expected one (1, k, 6) output, found {[(o, shapes.get(o)) for o in outs]}")
    k = out_shape[1]
    ix = GraphIndex(model)
    tail = _tail(ix, model, outs[0], decoded)
    values, topks = {decoded}, []
    for n in tail:
        vin = [i for i in n.input if i in values]
        if n.op_type == "TopK":
            topks.append(n)
        if not vin:
            if n.op_type not in INDEX_OPS:
                raise no(f"a {n.op_type} on the selected indices is not part of the selection")
            continue
        if n.op_type not in VALUE_OPS:
            raise no(f"a {n.op_type} computes on the decoded values")
        if n.op_type in ("Gather", "GatherElements", "GatherND") and n.input[0] not in values:
            raise no(f"a {n.op_type} indexes with the decoded values")
        values.update(n.output[:1] if n.op_type == "TopK" else n.output)
    if len(topks) != 2:
        raise no(f"{len(topks)} TopK nodes after the decode, expected 2")
    for n in topks:
        kv = ix.const_value(n.input[1]) if len(n.input) > 1 else None
        kk = int(kv.reshape(-1)[0]) if kv is not None and kv.size == 1 else attr(n, "k", None)
        if kk != k:
            raise no(f"a TopK keeps k={kk}, but the output has {k} rows")
        rank = len(shapes.get(n.input[0]) or ())
        if attr(n, "largest", 1) != 1 or attr(n, "sorted", 1) != 1 or attr(n, "axis", -1) not in (-1, rank - 1):
            raise no("a TopK is not largest-first, sorted, over the last axis")
    first = ix.producer.get(topks[0].input[0])
    if first is None or first.op_type != "ReduceMax" or attr(first, "keepdims", 1) != 0:
        raise no("the first TopK does not read the max over classes (ReduceMax, keepdims 0)")
    if tuple(shapes.get(topks[1].input[0]) or ()) != (1, k * nc):
        raise no(f"the second TopK reads {shapes.get(topks[1].input[0])}, not the flattened (1, {k * nc}) scores")
    for n in tail:
        if n.op_type in ("Mod", "Div") and any(v.size != 1 or int(v.reshape(-1)[0]) != nc for v in _int_consts(ix, n)):
            raise no(f"a {n.op_type} by {[v.reshape(-1)[:3].tolist() for v in _int_consts(ix, n)]}, not by nc = {nc}")
    return Selection(k, outs[0], tuple(out_shape))
