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

import onnx

from .graph import GraphIndex, Shape, infer_shapes, is_static

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


def nms_candidates(model: onnx.ModelProto, shapes: dict[str, Shape] | None = None):
    """``(truncated model, tensor, shape)`` for each (1, N, C) tensor upstream of the NMS, nearest first.

    The caller locates a head in each until one is found (:func:`onnx_headcut.pipeline`); an export
    without NMS yields nothing.
    """
    nms = find_nms(model)
    if not nms:
        return
    ix = GraphIndex(model)
    shapes = shapes if shapes is not None else infer_shapes(model)
    seen, queue = set(), deque(i for n in nms for i in n.input if i)
    while queue:
        t = queue.popleft()
        if t in seen or t in ix.initializers or t in ix.graph_inputs:
            continue
        seen.add(t)
        s = shapes.get(t)
        if is_static(s) and len(s) == 3 and s[0] == 1 and s[2] >= 5:
            yield truncate(model, t, s), t, s
        node = ix.producer.get(t)
        if node is not None and node.op_type != "Conv":
            queue.extend(i for i in node.input if i)
