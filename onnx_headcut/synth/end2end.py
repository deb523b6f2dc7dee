"""End-to-end NMS wrappers around a decoded model, as each project's exporter writes them.

- :func:`end2end`: YOLOv6 ``--end2end`` (TensorRT plugin, or ONNX NMS with ``--ort``).
- :func:`end2end_yolov7`: WongKinYiu/yolov7 ``models/experimental.py`` ``End2End`` on a decoded (1, N, 5+nc)
  output: ``ONNX_ORT`` (``--max-wh``: obj × cls, ``boxes @ convert_matrix`` xywh → xyxy, ReduceMax/ArgMax,
  class offset, ``NonMaxSuppression``, gathers, one (n, 7) output) or ``ONNX_TRT`` (obj × cls,
  ``EfficientNMS_TRT`` with ``box_coding=1`` on the xywh boxes, four outputs).
- :func:`end2end_yolov9`: WongKinYiu/yolov9 ``End2End`` / ``ONNX_TRT`` on a channel-first (1, 4+nc, N) output:
  ``permute(0, 2, 1)``, four one-column box slices concatenated and unsqueezed to (1, N, 1, 4), the class
  scores sliced, ``EfficientNMS_TRT``.
"""

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




def _slice(b: Builder, x: str, start: int, end: int, axis: int = 2) -> str:
    """``x[..., start:end]`` as the legacy exporter writes it (starts, ends, axes, steps)."""
    return b.node("Slice", [x, b.const([start], np.int64, "/end2end"), b.const([end], np.int64, "/end2end"),
                            b.const([axis], np.int64, "/end2end"), b.const([1], np.int64, "/end2end")],
                  scope="/end2end")


def _wrap(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str, Builder]:
    """A copy of ``model`` whose decoded output is renamed as an internal tensor (the wrapper's outputs take
    the names), its decoded tensor, and a builder holding its nodes."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    (out,) = [o.name for o in m.graph.output]
    dec = "/model/detect/Concat_decoded_output_0"
    for n in m.graph.node:
        n.output[:] = [dec if o == out else o for o in n.output]
        n.input[:] = [dec if i == out else i for i in n.input]
    b = Builder(1)
    b.nodes = list(m.graph.node)
    return m, dec, b


def _trt(m: onnx.ModelProto, b: Builder, boxes: str, scores: str, max_det: int) -> None:
    batch = m.graph.input[0].type.tensor_type.shape.dim[0]
    bs = batch.dim_param or batch.dim_value
    outs = ["num_dets", "det_boxes", "det_scores", "det_classes"]
    b.nodes.append(helper.make_node("EfficientNMS_TRT", [boxes, scores], outs, name="/end2end/EfficientNMS_TRT",
                                    domain="TRT", background_class=[-1], box_coding=[1], iou_threshold=0.45,
                                    max_output_boxes=max_det, plugin_version="1", score_activation=0,
                                    score_threshold=0.25))
    m.opset_import.append(helper.make_opsetid("TRT", 1))
    del m.graph.output[:]
    m.graph.output.extend([helper.make_tensor_value_info(outs[0], TensorProto.INT32, [bs, 1]),
                           helper.make_tensor_value_info(outs[1], TensorProto.FLOAT, [bs, max_det, 4]),
                           helper.make_tensor_value_info(outs[2], TensorProto.FLOAT, [bs, max_det]),
                           helper.make_tensor_value_info(outs[3], TensorProto.INT32, [bs, max_det])])


def _done(m: onnx.ModelProto, b: Builder) -> onnx.ModelProto:
    del m.graph.node[:]
    m.graph.node.extend(b.nodes)
    m.graph.initializer.extend(b.inits)
    return m


def end2end_yolov7(model: onnx.ModelProto, kind: str = "ort", max_det: int = 100,
                   max_wh: int = 640) -> onnx.ModelProto:
    """Wrap a decoded YOLOv7 model (one (B, N, 5+nc) output) as ``export.py --grid --end2end`` does:
    ``kind="ort"`` (``--max-wh``): ``ONNX_ORT``, output ``output`` (n, 7) = [batch, x1, y1, x2, y2, class,
    score]; ``kind="trt"``: ``ONNX_TRT``, outputs num_dets, det_boxes, det_scores, det_classes."""
    if kind not in ("ort", "trt"):
        raise ValueError(f"kind must be 'trt' or 'ort', not {kind!r}")
    m, dec, b = _wrap(model)
    if m.graph.output[0].type.tensor_type.shape.dim[2].dim_value < 6:
        raise ValueError("end2end_yolov7 wraps a decoded (B, N, 5+nc) output")
    boxes, conf, scores = _slice(b, dec, 0, 4), _slice(b, dec, 4, 5), _slice(b, dec, 5, 2 ** 63 - 1)
    scores = b.node("Mul", [scores, conf], scope="/end2end")  # scores *= conf
    if kind == "trt":
        _trt(m, b, boxes, scores, max_det)
        return _done(m, b)
    convert = np.array([[1, 0, 1, 0], [0, 1, 0, 1], [-0.5, 0, 0.5, 0], [0, -0.5, 0, 0.5]], np.float32)
    boxes = b.node("MatMul", [boxes, b.const(convert, scope="/end2end")], scope="/end2end")
    best = b.node("ReduceMax", [scores], scope="/end2end", axes=[2], keepdims=1)
    cls = b.node("ArgMax", [scores], scope="/end2end", axis=2, keepdims=1)
    dis = b.node("Mul", [b.node("Cast", [cls], scope="/end2end", to=TensorProto.FLOAT),
                         b.const(np.array(float(max_wh), np.float32), scope="/end2end")], scope="/end2end")
    nms_box = b.node("Add", [boxes, dis], scope="/end2end")
    best_t = b.node("Transpose", [best], scope="/end2end", perm=[0, 2, 1])
    limits = [b.const([max_det], np.int64, "/end2end"), b.const([0.45], np.float32, "/end2end"),
              b.const([0.25], np.float32, "/end2end")]
    sel = b.node("NonMaxSuppression", [nms_box, best_t, *limits], scope="/end2end")
    x = b.node("Gather", [sel, b.const(np.array(0, np.int64), scope="/end2end")], scope="/end2end", axis=1)
    y = b.node("Gather", [sel, b.const(np.array(2, np.int64), scope="/end2end")], scope="/end2end", axis=1)
    n = b.node("Gather", [b.node("Shape", [boxes], scope="/end2end"), b.const(np.array(1, np.int64), scope="/end2end")],
               scope="/end2end", axis=0)
    flat = b.node("Add", [y, b.node("Mul", [x, n], scope="/end2end")], scope="/end2end")  # boxes[X, Y, :]

    def pick(t):
        return b.node("Gather", [b.node("Flatten", [t], scope="/end2end", axis=2), flat], scope="/end2end", axis=0)

    xs = b.node("Cast", [b.node("Unsqueeze", [x], scope="/end2end", axes=[1])], scope="/end2end", to=TensorProto.FLOAT)
    parts = [xs, pick(boxes), b.node("Cast", [pick(cls)], scope="/end2end", to=TensorProto.FLOAT), pick(best)]
    b.nodes.append(helper.make_node("Concat", parts, ["output"], name="/end2end/Concat_out", axis=1))
    del m.graph.output[:]
    m.graph.output.append(helper.make_tensor_value_info("output", TensorProto.FLOAT, [None, 7]))
    return _done(m, b)


def end2end_yolov9(model: onnx.ModelProto, max_det: int = 100) -> onnx.ModelProto:
    """Wrap a decoded channel-first model (one (B, 4+nc, N) output, YOLOv9 ``DDetect``) as YOLOv9's
    ``End2End`` / ``ONNX_TRT`` does; outputs num_dets, det_boxes, det_scores, det_classes."""
    m, dec, b = _wrap(model)
    opset = next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))
    out = b.node("Transpose", [dec], scope="/end2end", perm=[0, 2, 1])
    xywh = b.node("Concat", [_slice(b, out, k, k + 1) for k in range(4)], scope="/end2end", axis=-1)
    if opset >= 13:
        boxes = b.node("Unsqueeze", [xywh, b.const([2], np.int64, "/end2end")], scope="/end2end")
    else:
        boxes = b.node("Unsqueeze", [xywh], scope="/end2end", axes=[2])
    _trt(m, b, boxes, _slice(b, out, 4, 2 ** 63 - 1), max_det)
    return _done(m, b)
