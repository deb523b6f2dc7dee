"""Ultralytics YOLOv8 / YOLO11 segmentation exports (``yolov8n-seg.pt`` → ``model.export(format="onnx")``: legacy
exporter, onnxslim, opset 18): the :func:`~.yolov8.yolov8` detection export plus ``Segment``'s mask branch::

    per level: feature ─► cv4: Conv 3x3 ─► SiLU ─► Conv 3x3 ─► SiLU ─► Conv 1x1 (1,nm,h,w) ─► Reshape (1,nm,-1)
                                                                        ─► Concat(levels) mc (1,nm,N)
    Concat([dbox, sigmoid(cls), mc], axis 1) ─► output0 (1, 4+nc+nm, N)   (onnxslim merges the two Concats)
    P3 ─► Proto: Conv 3x3 ─► SiLU ─► ConvTranspose 2x2/2 ─► Conv 3x3 ─► SiLU ─► Conv 1x1 ─► SiLU
        ─► output1 (1, nm, H/4, W/4)
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from .builder import Builder, check
from .yolov8 import yolov8


def yolov8_seg(nc: int = 80, size: tuple[int, int] = (320, 320), width: int = 8, yolo11: bool = False, nm: int = 32,
               npr: int = 16, opset: int = 18, seed: int = 0) -> onnx.ModelProto:
    """A YOLOv8 (or YOLO11) ``-seg`` export: 'images' → 'output0' (1, 4+nc+nm, N), 'output1' (1, nm, H/4, W/4).
    ``npr``: the prototype branch's width (upstream 256)."""
    model = yolov8(nc, size, width, yolo11, opset, seed)
    g = model.graph
    H, W = size
    b = Builder(seed + 7)
    convs = {n.input[1]: n for n in g.node if n.op_type == "Conv" and len(n.input) > 1}
    inits = {t.name: t for t in g.initializer}
    feats = []
    for i in range(3):  # each level's feature map: what the box branch's first conv reads
        w = f"model.22.cv2.{i}.0.conv.weight"
        feats.append((convs[w].input[0], inits[w].dims[1]))
    sc = "/model.22"
    c4 = max(feats[0][1] // 4, nm)
    mcs = []
    for i, (f, c) in enumerate(feats):
        x = b.silu(b.conv(f, c, c4, 3, 1, f"model.22.cv4.{i}.0.conv"), f"{sc}/cv4.{i}/act0")
        x = b.silu(b.conv(x, c4, c4, 3, 1, f"model.22.cv4.{i}.1.conv"), f"{sc}/cv4.{i}/act1")
        mc = b.conv(x, c4, nm, 1, 1, f"model.22.cv4.{i}.2", std=0.3)
        mcs.append(b.node("Reshape", [mc, b.const(np.array([1, nm, -1], np.int64), scope=sc)], scope=sc, allowzero=0))
    mc = b.node("Concat", mcs, scope=sc, axis=2)
    p3, c3 = feats[0]
    x = b.silu(b.conv(p3, c3, npr, 3, 1, "model.22.proto.cv1.conv"), f"{sc}/proto/cv1/act")
    wt = b.init("model.22.proto.upsample.weight", b.rng.normal(0, 0.3, (npr, npr, 2, 2)))
    bt = b.init("model.22.proto.upsample.bias", b.rng.normal(0, 0.1, npr))
    x = b.node("ConvTranspose", [x, wt, bt], scope=f"{sc}/proto/upsample", dilations=[1, 1], group=1,
               kernel_shape=[2, 2], pads=[0, 0, 0, 0], strides=[2, 2])
    x = b.silu(b.conv(x, npr, npr, 3, 1, "model.22.proto.cv2.conv"), f"{sc}/proto/cv2/act")
    y = b.conv(x, npr, nm, 1, 1, "model.22.proto.cv3.conv")
    b.nodes.append(helper.make_node("Sigmoid", [y], [f"{sc}/proto/cv3/act/Sigmoid_output_0"],
                                    name=f"{sc}/proto/cv3/act/Sigmoid"))
    b.nodes.append(helper.make_node("Mul", [y, f"{sc}/proto/cv3/act/Sigmoid_output_0"], ["output1"],
                                    name=f"{sc}/proto/cv3/act/Mul"))
    out = next(n for n in g.node if "output0" in n.output)
    out.input.append(mc)  # Concat([dbox, sigmoid(cls), mc], axis=1)
    n = sum((H // s) * (W // s) for s in (8, 16, 32))
    at = list(g.node).index(out)
    for k, node in enumerate(b.nodes):
        g.node.insert(at + k, node)
    g.initializer.extend(b.inits)
    g.output[0].type.tensor_type.shape.dim[1].dim_value = 4 + nc + nm
    assert g.output[0].type.tensor_type.shape.dim[2].dim_value == n
    g.output.append(helper.make_tensor_value_info("output1", TensorProto.FLOAT, [1, nm, H // 4, W // 4]))
    check(model)
    return model


def yolov6_seg(nc: int = 80, size: tuple[int, int] = (320, 320), width: int = 8, reg_max: int = 0, nm: int = 32,
               npr: int = 16, opset: int = 13, seed: int = 0) -> onnx.ModelProto:
    """A YOLOv6 0.4.1 seg export (``yolov6/models/heads/effidehead_fuseab_seg.py`` eval path): the anchor-free
    :func:`~.yolov6.yolov6_af` detections 'outputs' (1, N, 5+nc), the prototypes 'protos' (1, nm, H/4, W/4) and
    'coefficients' (1, N, 1+nm) = per row [level index, nm coefficients]::

        stem ─► seg_conv 3x3 ─► SiLU ─► seg_pred 1x1 (1,nm,h,w) ─► Reshape (1,nm,l) ─┐
                         Constant (1,1,l) = level index ─► Concat([index, coeffs], 1) ─► Concat(levels, -1)
                                                                                    ─► Transpose ─► coefficients
        P3 stem ─► Proto: Conv 3x3 ─► SiLU ─► Resize (nearest, x2) ─► Conv 3x3 ─► SiLU ─► Conv 1x1 ─► SiLU ─► protos
    """
    from .yolov6 import yolov6_af

    model = yolov6_af(nc, size, width, reg_max=reg_max, opset=opset, seed=seed)
    g = model.graph
    H, W = size
    b = Builder(seed + 11)
    inits = {t.name: t for t in g.initializer}
    producer_of_input = {n.input[1]: n for n in g.node if n.op_type == "Conv" and len(n.input) > 1}
    stems = []
    for i in range(3):
        conv = producer_of_input[f"detect.stems.{i}.conv.weight"]
        act = next(n for n in g.node if n.op_type == "Mul" and conv.output[0] in n.input)
        stems.append((act.output[0], inits[f"detect.stems.{i}.conv.weight"].dims[0]))
    sc = "/detect"
    parts = []
    for i, (f, c) in enumerate(stems):
        s = 8 * 2 ** i
        l_ = (H // s) * (W // s)
        x = b.silu(b.conv(f, c, c, 3, 1, f"detect.seg_convs.{i}.conv"), f"{sc}/seg_convs.{i}/act")
        y = b.conv(x, c, nm, 1, 1, f"detect.seg_preds.{i}", std=0.3)
        y = b.node("Reshape", [y, b.const(np.array([1, nm, l_], np.int64), scope=sc)], scope=sc)
        idx = b.const(np.full((1, 1, l_), float(i), np.float32), scope=sc)  # torch.ones(b, 1, l) * i, folded
        parts.append(b.node("Concat", [idx, y], scope=sc, axis=1))
    cat = b.node("Concat", parts, scope=sc, axis=-1)
    b.nodes.append(helper.make_node("Transpose", [cat], ["coefficients"], name=f"{sc}/Transpose_coefficients",
                                    perm=[0, 2, 1]))
    p3, c3 = stems[0]
    x = b.silu(b.conv(p3, c3, npr, 3, 1, "detect.seg_proto.0.cv1.conv"), f"{sc}/seg_proto.0/cv1/act")
    scales = b.const(np.array([1, 1, 2, 2], np.float32), scope=f"{sc}/seg_proto.0/upsample")
    x = b.node("Resize", [x, "", scales], scope=f"{sc}/seg_proto.0/upsample", mode="nearest",
               coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    x = b.silu(b.conv(x, npr, npr, 3, 1, "detect.seg_proto.0.cv2.conv"), f"{sc}/seg_proto.0/cv2/act")
    y = b.conv(x, npr, nm, 1, 1, "detect.seg_proto.0.cv3.conv")
    sig = b.node("Sigmoid", [y], scope=f"{sc}/seg_proto.0/cv3/act")
    b.nodes.append(helper.make_node("Mul", [y, sig], ["protos"], name=f"{sc}/seg_proto.0/cv3/act/Mul"))
    out = next(n for n in g.node if "outputs" in n.output)
    at = list(g.node).index(out)
    for k, node in enumerate(b.nodes):
        g.node.insert(at + k, node)
    g.initializer.extend(b.inits)
    n = sum((H // s) * (W // s) for s in (8, 16, 32))
    g.output.append(helper.make_tensor_value_info("protos", TensorProto.FLOAT, [1, nm, H // 4, W // 4]))
    g.output.append(helper.make_tensor_value_info("coefficients", TensorProto.FLOAT, [1, n, 1 + nm]))
    check(model)
    return model
