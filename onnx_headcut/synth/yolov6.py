"""Generate small decoded YOLO exports with the node patterns of the upstream exporters.

These are the project's fixtures and samples: random weights, tiny widths, real structure. The
decode region is written node for node as torch's legacy TorchScript exporter writes YOLOv6
0.1.0's ``Detect.forward`` at opset 12 (checked against genuine exports in the test suite):

* default: ``Concat([reg, Sigmoid(obj), Sigmoid(cls)])`` → ``Reshape(1,1,C,h,w)`` →
  ``Transpose(0,1,3,4,2)`` → ``Slice``/``Add grid``/``Mul stride``/``Exp`` → ``Concat`` →
  ``Reshape(1,-1,C)``, levels joined by ``Concat(axis=1)``; every constant is a ``Constant`` node.
* ``inplace=True`` (``--inplace``): the xy and wh writes are ``ScatterND`` with the exporter's
  index plumbing (``ConstantOfShape``/``Equal``/``Where``/``Expand``/``Unsqueeze``) and
  ``Shape``-driven ``Expand``/``Reshape`` of the updates.
* ``simplify=True``: the same model after onnxsim, as ``export_onnx.py --simplify`` leaves it.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ._common import check_size, finish
from .builder import INT64_MAX, Builder, cells


def yolov6_v1(nc: int = 80, size: tuple[int, int] = (320, 320), width: int = 16, inplace: bool = False,
              simplify: bool = False, opset: int = 12, seed: int = 0, input_name: str = "image_arrays",
              output_name: str = "outputs", half: bool = False, slim: bool = False) -> onnx.ModelProto:
    """A YOLOv6 0.1.0-style decoded detector (strides 8, 16, 32), as ``deploy/ONNX/export_onnx.py`` writes it."""
    H, W = check_size(size)
    b = Builder(seed)
    no = nc + 5
    x = input_name
    chans = [width, width, width * 2, width * 4, width * 8]
    feats = []
    cin = 3
    for i, c in enumerate(chans):  # RepVGG-style stride-2 stages: Conv + Relu
        x = b.node("Relu", [b.conv(x, cin, c, 3, 2, f"backbone.stage{i}.conv")], scope=f"/backbone/stage{i}")
        cin = c
        if i >= 2:
            feats.append((x, c))
    outs = []
    prior = -np.log((1 - 1e-2) / 1e-2)
    for i, (f, c) in enumerate(feats):
        stride = 8 * 2 ** i
        h, w = H // stride, W // stride
        stem = b.silu(b.conv(f, c, c, 1, 1, f"detect.stems.{i}.conv"), f"/detect/stems.{i}/act")
        cls_f = b.silu(b.conv(stem, c, c, 3, 1, f"detect.cls_convs.{i}.conv"), f"/detect/cls_convs.{i}/act")
        cls = b.conv(cls_f, c, nc, 1, 1, f"detect.cls_preds.{i}", std=0.05, bias=prior)
        reg_f = b.silu(b.conv(stem, c, c, 3, 1, f"detect.reg_convs.{i}.conv"), f"/detect/reg_convs.{i}/act")
        reg = b.conv(reg_f, c, 4, 1, 1, f"detect.reg_preds.{i}", std=0.05)
        obj = b.conv(reg_f, c, 1, 1, 1, f"detect.obj_preds.{i}", std=0.05, bias=prior + 3.0)
        y = b.node("Concat", [reg, b.node("Sigmoid", [obj]), b.node("Sigmoid", [cls])], axis=1)
        shape5 = [1, 1, no, h, w]
        y = b.node("Transpose", [b.node("Reshape", [y, b.const(np.array(shape5, np.int64))])], perm=[0, 1, 3, 4, 2])
        grid = cells(h, w).reshape(1, 1, h, w, 2)
        s = np.array(float(stride), np.float32)
        xy = b.node("Mul", [b.node("Add", [b.slice_last(y, 0, 2), b.const(grid)]), b.const(s)])
        if inplace:
            y = b.scatter_last(y, (0, 2), xy, [1, 1, h, w, 2])
            wh = b.node("Mul", [b.node("Exp", [b.slice_last(y, 2, 4)]), b.const(s)])
            y = b.scatter_last(y, (2, 4), wh, [1, 1, h, w, 2])
        else:
            wh = b.node("Mul", [b.node("Exp", [b.slice_last(y, 2, 4)]), b.const(s)])
            y = b.node("Concat", [xy, wh, b.slice_last(y, 4, INT64_MAX)], axis=-1)
        outs.append(b.node("Reshape", [y, b.const(np.array([1, -1, no], np.int64))]))
    b.nodes.append(helper.make_node("Concat", outs, [output_name], name="/detect/Concat_out", axis=1))
    n = sum((H // (8 * 2 ** i)) * (W // (8 * 2 ** i)) for i in range(3))
    return finish(b, input_name, [1, 3, H, W], [(output_name, [1, n, no])], opset,
                  ir_version=7 if opset <= 12 else 8, simplify=simplify, slim=slim, half=half)


def yolov6_af(nc: int = 80, size: tuple[int, int] = (320, 320), width: int = 8, reg_max: int = 0,
              levels: int = 3, shuffle: bool = False, opset: int = 13, simplify: bool = False,
              dynamic_batch: bool = False, seed: int = 0, input_name: str = "images",
              output_name: str = "outputs", half: bool = False, landmarks: bool = False,
              slim: bool = False, dynamic_hw: bool = False) -> onnx.ModelProto:
    """A YOLOv6 0.2.0 … main anchor-free decoded export, as ``deploy/ONNX/export_onnx.py`` writes it.

    ``reg_max=16`` gives the DFL head of m/l models (68 reg channels per level); ``levels=4`` the
    P6 / Lite heads (strides 8…64); ``shuffle=True`` adds YOLOv6-Lite's 5-D channel shuffles to the
    backbone; ``opset=12`` is 0.2.0 (Softmax wrapped in Transposes, Split/Unsqueeze attributes);
    ``dynamic_batch=True`` is ``--dynamic-batch`` (batch read with Shape, ones column from
    ConstantOfShape); ``simplify=True`` is ``--simplify`` (onnxsim). ``dynamic_hw=True`` is the same
    export with the input's batch, height and width named (``dynamic_axes``): as the legacy exporter
    writes ``generate_anchors`` then, each level's ``h, w = feats[i].shape[2:]`` is Shape → Gather,
    the anchor points are Range + 0.5 expanded into a meshgrid, the strides ConstantOfShape((h·w, 1)) × s,
    and every reshape target and the ones column are built from those Shape reads.
    """
    H, W = check_size(size, 8 * 2 ** (levels - 1))
    if dynamic_hw and (landmarks or opset < 13):
        raise ValueError("dynamic_hw is written for opset >= 13 without landmarks")
    dynamic_batch = dynamic_batch or dynamic_hw
    b = Builder(seed)
    new_unsqueeze = opset >= 13

    def unsqueeze(x, axis):
        if new_unsqueeze:
            return b.node("Unsqueeze", [x, b.const([axis], np.int64)])
        return b.node("Unsqueeze", [x], axes=[axis])

    x = input_name
    chans = [width] * 2 + [width * 2 ** k for k in range(1, levels + 1)]
    feats, cin = [], 3
    for i, c in enumerate(chans):
        x = b.node("Relu", [b.conv(x, cin, c, 3, 2, f"backbone.stage{i}.conv")], scope=f"/backbone/stage{i}")
        cin = c
        # Lite: channel_shuffle(x, 2) = view(b, 2, c/2, h, w).transpose(1, 2).view(b, -1, h, w)
        if shuffle and c % 2 == 0:
            hh, ww = H // 2 ** (i + 1), W // 2 ** (i + 1)
            y = b.node("Reshape", [x, b.const(np.array([1, 2, c // 2, hh, ww], np.int64), scope="/backbone")],
                       scope="/backbone")
            y = b.node("Transpose", [y], scope="/backbone", perm=[0, 2, 1, 3, 4])
            x = b.node("Reshape", [y, b.const(np.array([1, -1, hh, ww], np.int64), scope="/backbone")],
                       scope="/backbone")
        if i >= 2:
            feats.append((x, c))

    strides = [8 * 2 ** i for i in range(levels)]
    grids = [(H // s, W // s) for s in strides]
    # generate_anchors(): shift_y/shift_x = arange + 0.5 (float64 constants), meshgrid, stack, float, view(-1, 2)
    anchor_parts = []
    level_hw = []  # per level: (h·w as a 1-element tensor) when read with Shape (dynamic_hw)
    for i in range(len(grids) if dynamic_hw else 0):
        sh = b.node("Shape", [feats[i][0]])
        hs, ws = (b.node("Gather", [sh, b.const(np.array(k, np.int64))], axis=0) for k in (2, 3))
        shape = b.node("Concat", [unsqueeze(hs, 0), unsqueeze(ws, 0)], axis=0)
        one, zero = b.const(np.array(1, np.int64)), b.const(np.array(0, np.int64))
        half_ = b.const(np.array(0.5, np.float32))
        sx = b.node("Add", [b.node("Cast", [b.node("Range", [zero, ws, one])], to=TensorProto.FLOAT), half_])
        sy = b.node("Add", [b.node("Cast", [b.node("Range", [zero, hs, one])], to=TensorProto.FLOAT), half_])
        ys = b.node("Expand", [unsqueeze(sy, 1), shape])
        xs = b.node("Expand", [unsqueeze(sx, 0), shape])
        xy = b.node("Concat", [unsqueeze(xs, -1), unsqueeze(ys, -1)], axis=-1)
        anchor_parts.append(b.node("Reshape", [xy, b.const(np.array([-1, 2], np.int64))]))
        level_hw.append(unsqueeze(b.node("Mul", [hs, ws]), 0))
    for h, w in grids if not dynamic_hw else ():
        shape = b.const(np.array([h, w], np.int64))
        ys = b.node("Expand", [b.const((np.arange(h) + 0.5).reshape(h, 1)), shape])
        xs = b.node("Expand", [b.const((np.arange(w) + 0.5).reshape(1, w)), shape])
        xy = b.node("Concat", [unsqueeze(xs, -1), unsqueeze(ys, -1)], axis=-1)
        anchor_parts.append(b.node("Reshape", [b.node("Cast", [xy], to=TensorProto.FLOAT),
                                               b.const(np.array([-1, 2], np.int64))]))
    anchors = b.node("Concat", anchor_parts, axis=0)
    batch = None
    if dynamic_batch:
        batch = unsqueeze(b.node("Gather", [b.node("Shape", [input_name]), b.const(np.array(0, np.int64))], axis=0), 0)

    def target(*dims):  # reshape([b, ...]): a constant, or Concat(Shape-derived b, constants) with --dynamic-batch
        if batch is None:
            return b.const(np.array([1, *dims], np.int64))
        return b.node("Concat", [batch] + [d if isinstance(d, str) else b.const(np.array([d], np.int64)) for d in dims],
                      axis=0)

    prior = -np.log((1 - 1e-2) / 1e-2)
    r = reg_max + 1
    proj = b.init("detect.proj_conv.weight", np.arange(r, dtype=np.float32).reshape(1, r, 1, 1)) if reg_max else None
    cls_list, reg_list, lmk_list = [], [], []
    for i, ((f, c), (h, w)) in enumerate(zip(feats, grids)):
        stem = b.silu(b.conv(f, c, c, 1, 1, f"detect.stems.{i}.conv"), f"/detect/stems.{i}/act")
        cls_f = b.silu(b.conv(stem, c, c, 3, 1, f"detect.cls_convs.{i}.conv"), f"/detect/cls_convs.{i}/act")
        cls = b.conv(cls_f, c, nc, 1, 1, f"detect.cls_preds.{i}", std=0.05, bias=prior)
        reg_f = b.silu(b.conv(stem, c, c, 3, 1, f"detect.reg_convs.{i}.conv"), f"/detect/reg_convs.{i}/act")
        reg = b.conv(reg_f, c, 4 * r, 1, 1, f"detect.reg_preds.{i}", std=0.05, bias=1.0 if not reg_max else None)
        hw = level_hw[i] if dynamic_hw else h * w  # l = h * w, read with Shape when dynamic
        if reg_max:  # reg.reshape([-1, 4, reg_max + 1, l]).permute(0, 2, 1, 3) → softmax(dim=1) → proj_conv
            bins = b.node("Concat", [b.const(np.array([-1, 4, r], np.int64)), hw], axis=0) if dynamic_hw else \
                b.const(np.array([-1, 4, r, h * w], np.int64))
            y = b.node("Transpose", [b.node("Reshape", [reg, bins])], perm=[0, 2, 1, 3])
            if opset >= 13:
                y = b.node("Softmax", [y], axis=1)
            else:  # the legacy exporter moves the softmax axis last below opset 13
                y = b.node("Transpose", [b.node("Softmax", [b.node("Transpose", [y], perm=[0, 3, 2, 1])], axis=3)],
                           perm=[0, 3, 2, 1])
            assert proj is not None  # made above whenever reg_max
            reg = b.node("Conv", [y, proj], scope=f"/detect/proj_conv_{i}", dilations=[1, 1], group=1,
                         kernel_shape=[1, 1], pads=[0, 0, 0, 0], strides=[1, 1])
        if landmarks:
            lmk = b.conv(reg_f, c, 10, 1, 1, f"detect.lmks_preds.{i}", std=0.05)
            lmk_list.append(b.node("Reshape", [lmk, target(10, h * w)]))
        cls_list.append(b.node("Reshape", [b.node("Sigmoid", [cls]), target(nc, hw)]))
        reg_list.append(b.node("Reshape", [reg, target(4, hw)]))
    n = sum(h * w for h, w in grids)
    cls_all = b.node("Transpose", [b.node("Concat", cls_list, axis=-1)], perm=[0, 2, 1])
    reg_all = b.node("Transpose", [b.node("Concat", reg_list, axis=-1)], perm=[0, 2, 1])
    if opset >= 13:
        split = b.const(np.array([2, 2], np.int64))
        lt_rb = helper.make_node("Split", [reg_all, split], [reg_all + "_lt", reg_all + "_rb"], name="/detect/Split",
                                 axis=-1)
    else:
        lt_rb = helper.make_node("Split", [reg_all], [reg_all + "_lt", reg_all + "_rb"], name="/detect/Split",
                                 axis=-1, split=[2, 2])
    b.nodes.append(lt_rb)
    x1y1 = b.node("Sub", [anchors, lt_rb.output[0]])
    x2y2 = b.node("Add", [anchors, lt_rb.output[1]])
    c_xy = b.node("Div", [b.node("Add", [x1y1, x2y2]), b.const(np.array(2.0, np.float32))])
    wh = b.node("Sub", [x2y2, x1y1])
    cat = b.node("Concat", [c_xy, wh], axis=-1)
    if dynamic_hw:  # torch.full((h * w, 1), stride) per level
        col = b.const(np.array([1], np.int64))
        stride_c = b.node("Concat", [b.node("ConstantOfShape", [b.node("Concat", [hw_, col], axis=0)],
                                            value=numpy_helper.from_array(np.array([float(s)], np.float32)))
                                     for s, hw_ in zip(strides, level_hw)], axis=0)
    else:
        stride_t = np.concatenate([np.full((h * w, 1), s, np.float32) for s, (h, w) in zip(strides, grids)])
        stride_c = b.const(stride_t)
    boxes = b.node("Mul", [cat, stride_c])
    if dynamic_hw:  # torch.ones((b, pred_bboxes.shape[1], 1))
        assert batch is not None  # dynamic_hw implies the symbolic batch
        rows = unsqueeze(b.node("Gather", [b.node("Shape", [boxes]), b.const(np.array(1, np.int64))], axis=0), 0)
        ones = b.node("ConstantOfShape", [b.node("Concat", [batch, rows, b.const(np.array([1], np.int64))], axis=0)],
                      value=numpy_helper.from_array(np.array([1.0], np.float32)))
    elif batch is None:
        ones = b.const(np.ones((1, n, 1), np.float32))
    else:
        ones_shape = b.node("Concat", [batch, b.const(np.array([n], np.int64)), b.const(np.array([1], np.int64))],
                            axis=0)
        ones = b.node("ConstantOfShape", [ones_shape], value=numpy_helper.from_array(np.array([1.0], np.float32)))
    middle = [ones]
    if landmarks:  # lmk = (raw + anchor point) * stride, for each of the 5 points
        lmk_all = b.node("Transpose", [b.node("Concat", lmk_list, axis=-1)], perm=[0, 2, 1])
        ap5 = np.tile(np.concatenate([(cells(h, w) + 0.5) for h, w in grids]), (1, 5)).astype(np.float32)
        middle = [b.node("Mul", [b.node("Add", [lmk_all, b.const(ap5)]), b.const(stride_t)]), ones]
    b.nodes.append(helper.make_node("Concat", [boxes, *middle, cls_all], [output_name], name="/detect/Concat_out",
                                    axis=-1))
    in_dims = ["batch" if dynamic_batch else 1, 3, *(("height", "width") if dynamic_hw else (H, W))]
    out_dims = ["batch" if dynamic_batch else 1, "anchors" if dynamic_hw else n, 5 + nc + (10 if landmarks else 0)]
    return finish(b, input_name, in_dims, [(output_name, out_dims)], opset, ir_version=7 if opset <= 13 else 8,
                  simplify=simplify, slim=slim, half=half)


