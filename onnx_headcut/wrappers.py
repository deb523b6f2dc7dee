"""Exports that wrap the decoded output in more graph: end-to-end NMS.

YOLOv6 ``--end2end`` files feed the decoded ``(1, N, 5+nc)`` tensor through a box/score
conversion into an NMS (TensorRT's ``EfficientNMS_TRT`` plugin, or ONNX ``NonMaxSuppression``
with ``--ort``) and output ``num_dets, det_boxes, det_scores, det_classes``::

    prediction convs ─► decode ─► T (1,N,5+nc) ─► Slice/Mul/MatMul ─► EfficientNMS_TRT ─► num_dets, det_boxes, ...

:func:`nms_candidates` yields the (1, N, C) tensors upstream of the NMS, nearest first, each with
the model truncated there (:func:`truncate`); ``T`` is the first in which a known decode is located.
The NMS and the conversion are removed with the decode; the raw model is verified against ``T``.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import onnx
from onnx import numpy_helper

from .graph import GraphIndex, Shape, fresh, infer_shapes, is_static
from .graph.shapes import skeleton

NMS_OPS = frozenset({"EfficientNMS_TRT", "BatchedNMSDynamic_TRT", "BatchedNMS_TRT", "NonMaxSuppression",
                     "EfficientNMS_ONNX_TRT"})


def find_nms(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The NMS nodes of ``model`` (any domain), in graph order."""
    return [n for n in model.graph.node if n.op_type in NMS_OPS]


def truncate(model: onnx.ModelProto, tensor: str, shape: Shape | None = None) -> onnx.ModelProto:
    """A copy of ``model`` whose only output is ``tensor``; everything after it is removed."""
    import onnx_graphsurgeon as gs

    graph = gs.import_onnx(model)
    t = graph.tensors()[tensor]
    if shape is not None:
        t.shape = list(shape)
    if t.dtype is None:
        t.dtype = graph.inputs[0].dtype
    graph.outputs = [t]
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    out = gs.export_onnx(graph)
    out.ir_version = model.ir_version
    del out.opset_import[:]
    out.opset_import.extend(op for op in model.opset_import if op.domain in ("", "ai.onnx"))
    return out


def _image_batch(model: onnx.ModelProto) -> str | None:
    """The symbolic name (or ``"?"``) of the image input's batch axis, None when it is static."""
    inits = {t.name for t in model.graph.initializer}
    for i in model.graph.input:
        if i.name not in inits:
            d = i.type.tensor_type.shape.dim
            return None if not d or (d[0].HasField("dim_value") and d[0].dim_value > 0) else (d[0].dim_param or "?")
    return None


#: the least number of rounds of "Shape of a now static tensor → constant, small chains → constants" run;
#: a graph with more Shape nodes gets one round per Shape node (GELAN's ADown chunks under a dynamic batch
#: need a round per block: a Shape is pinned only once the block before it has a static shape)
PIN_ROUNDS = 12


def batch_pinned_shapes(model: onnx.ModelProto) -> dict[str, Shape]:
    """Shapes of ``model`` with the image input's symbolic batch set to 1, on a weightless copy.

    A dynamic-batch export computes its reshape targets at run time (``Shape → Gather → Unsqueeze →
    Concat → Reshape``), which ONNX shape inference does not follow. Each round replaces the ``Shape`` of
    a tensor whose shape is now static by its value and every small numeric chain that became constant by an
    initializer (:meth:`GraphIndex.const_value`), then infers again, until nothing changes. The copy is
    only used for its shapes; the model is not modified.
    """
    sk = skeleton(model)
    inits = {t.name for t in model.graph.initializer}
    for i in sk.graph.input:
        if i.name not in inits and i.type.tensor_type.shape.dim:
            i.type.tensor_type.shape.dim[0].Clear()
            i.type.tensor_type.shape.dim[0].dim_value = 1
            break
    del sk.graph.value_info[:]  # inferred afresh from the pinned input
    for o in sk.graph.output:
        o.type.tensor_type.ClearField("shape")
    taken = {t.name for t in sk.graph.initializer} | {o for n in sk.graph.node for o in n.output}
    shapes = infer_shapes(sk)
    for _ in range(max(PIN_ROUNDS, sum(n.op_type == "Shape" for n in sk.graph.node) + 1)):
        changed = False
        for k, n in enumerate(sk.graph.node):
            if n.op_type == "Shape" and is_static(shapes.get(n.input[0])):
                attrs = {a.name: a.i for a in n.attribute}
                full = np.array(shapes[n.input[0]], np.int64)
                value = full[attrs.get("start", 0):attrs.get("end", len(full))]
                sk.graph.node[k].CopyFrom(onnx.helper.make_node(
                    "Constant", [], list(n.output), name=n.name, value=numpy_helper.from_array(value)))
                changed = True
        ix = GraphIndex(sk)
        pins = []  # evaluated on the graph as it is, then applied: a renamed input would hide the chain above
        for n in sk.graph.node:
            for j, t in enumerate(n.input):
                if not t or t in ix.initializers or n.op_type == "Constant":
                    continue
                src = ix.producer.get(t)
                if src is None or src.op_type == "Constant":
                    continue
                v = ix.const_value(t)
                # floats too: make_anchors' Range(0, Cast(W to float)) has a shape once its limit is known
                if v is not None and np.issubdtype(v.dtype, np.number) and v.size <= 64:
                    pins.append((n, j, v))
        for n, j, v in pins:
            name = fresh(taken, n.input[j] + "__pinned")
            sk.graph.initializer.append(numpy_helper.from_array(v, name))
            n.input[j] = name
            changed = True
        if not changed:
            break
        shapes = infer_shapes(sk)
    return shapes


def nms_candidates(model: onnx.ModelProto, shapes: dict[str, Shape] | None = None):
    """``(truncated model, tensor, shape)`` for each (1, N, C) tensor upstream of the NMS, nearest first.

    The caller locates a head in each until one is found (:func:`onnx_headcut.pipeline`); an export
    without NMS yields nothing. With a symbolic batch (``--dynamic-batch``) the candidates are found on
    the shapes with the batch pinned to 1 (the truncated model keeps it symbolic; the locator folds it).
    Constants (anchor points, grids) are never candidates: a decoded tensor depends on the image.
    """
    nms = find_nms(model)
    if not nms:
        return
    ix = GraphIndex(model)
    batch = _image_batch(model)
    if batch is not None:
        shapes = batch_pinned_shapes(model)
    shapes = shapes if shapes is not None else infer_shapes(model)
    seen, queue = set(), deque(i for n in nms for i in n.input if i)
    while queue:
        t = queue.popleft()
        if t in seen or t in ix.initializers or t in ix.graph_inputs:
            continue
        seen.add(t)
        node = ix.producer.get(t)
        if node is None or node.op_type == "Constant":
            continue
        s = shapes.get(t)
        if is_static(s) and len(s) == 3 and s[0] == 1 and s[2] >= 5:
            yield truncate(model, t, s if batch is None else (batch if batch != "?" else "batch", *s[1:])), t, s
        if node.op_type != "Conv":
            queue.extend(i for i in node.input if i)
