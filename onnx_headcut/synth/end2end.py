"""YOLOv6 ``--end2end`` wrappers around a decoded model (TensorRT plugin or ONNX NMS)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from .builder import Builder


def end2end(model: onnx.ModelProto, kind: str = "trt", max_det: int = 100) -> onnx.ModelProto:
    """Wrap a decoded model as YOLOv6 ``--end2end`` does: score *= conf, xywh→xyxy, then NMS.

    ``kind="trt"``: TensorRT's ``TRT::EfficientNMS_TRT`` plugin (not runnable in onnxruntime);
    ``kind="ort"``: ONNX ``NonMaxSuppression`` (``--ort``). Outputs num_dets, det_boxes,
    det_scores, det_classes.
    """
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    (dec,) = [o.name for o in g.output]
    nc = g.output[0].type.tensor_type.shape.dim[2].dim_value - 5
    b = Builder(1)
    b.nodes = list(g.node)
    box = b.node("Slice", [dec, b.const([0], np.int64, "/end2end"), b.const([4], np.int64, "/end2end"),
                           b.const([2], np.int64, "/end2end")], scope="/end2end")
    conf = b.node("Slice", [dec, b.const([4], np.int64, "/end2end"), b.const([5], np.int64, "/end2end"),
                            b.const([2], np.int64, "/end2end")], scope="/end2end")
    score = b.node("Slice", [dec, b.const([5], np.int64, "/end2end"), b.const([5 + nc], np.int64, "/end2end"),
                             b.const([2], np.int64, "/end2end")], scope="/end2end")
    score = b.node("Mul", [score, conf], scope="/end2end")
    convert = np.array([[1, 0, 1, 0], [0, 1, 0, 1], [-0.5, 0, 0.5, 0], [0, -0.5, 0, 0.5]], np.float32)
    box = b.node("MatMul", [box, b.const(convert, scope="/end2end")], scope="/end2end")
    outs = ["num_dets", "det_boxes", "det_scores", "det_classes"]
    del g.output[:]
    if kind == "trt":
        b.nodes.append(helper.make_node("EfficientNMS_TRT", [box, score], outs, name="/end2end/EfficientNMS_TRT",
                                        domain="TRT", background_class=-1, box_coding=0, iou_threshold=0.45,
                                        max_output_boxes=max_det, plugin_version="1", score_activation=0,
                                        score_threshold=0.25))
        m.opset_import.append(helper.make_opsetid("TRT", 1))
        g.output.extend([helper.make_tensor_value_info(outs[0], TensorProto.INT32, [1, 1]),
                         helper.make_tensor_value_info(outs[1], TensorProto.FLOAT, [1, max_det, 4]),
                         helper.make_tensor_value_info(outs[2], TensorProto.FLOAT, [1, max_det]),
                         helper.make_tensor_value_info(outs[3], TensorProto.INT32, [1, max_det])])
    elif kind == "ort":
        best = b.node("ReduceMax", [score], scope="/end2end", axes=[2], keepdims=1) \
            if model.opset_import[0].version < 18 \
            else b.node("ReduceMax", [score, b.const([2], np.int64, "/end2end")], scope="/end2end", keepdims=1)
        cls = b.node("ArgMax", [score], scope="/end2end", axis=2, keepdims=1)
        offset = b.node("Mul", [b.node("Cast", [cls], scope="/end2end", to=TensorProto.FLOAT),
                                b.const(np.array(7680.0, np.float32), scope="/end2end")], scope="/end2end")
        nms_box = b.node("Add", [box, offset], scope="/end2end")
        scores_t = b.node("Transpose", [best], scope="/end2end", perm=[0, 2, 1])
        sel = b.node("NonMaxSuppression", [nms_box, scores_t, b.const([max_det], np.int64, "/end2end"),
                                           b.const([0.45], np.float32, "/end2end"),
                                           b.const([0.25], np.float32, "/end2end")],
                     scope="/end2end")
        idx = b.node("Gather", [sel, b.const(np.array(2, np.int64), scope="/end2end")], scope="/end2end", axis=1)
        b.nodes += [helper.make_node("Shape", [idx], ["num_dets"]),
                    helper.make_node("Gather", [box, idx], ["det_boxes"], axis=1),
                    helper.make_node("Gather", [best, idx], ["det_scores"], axis=1),
                    helper.make_node("Gather", [cls, idx], ["det_classes"], axis=1)]
        g.output.extend([helper.make_tensor_value_info(o, t, None) for o, t in
                         zip(outs, [TensorProto.INT64, TensorProto.FLOAT, TensorProto.FLOAT, TensorProto.INT64])])
    else:
        raise ValueError(f"kind must be 'trt' or 'ort', not {kind!r}")
    del g.node[:]
    g.node.extend(b.nodes)
    return m


