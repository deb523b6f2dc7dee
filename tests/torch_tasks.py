"""Tiny torch task heads written from the upstream module definitions, on :mod:`tests.torch_ultralytics`' backbones:

- ``ultralytics/nn/modules/head.py``: ``Segment(Detect)`` (per level ``cv4 = Conv 3x3 → Conv 3x3 → Conv2d 1x1``
  of ``nm`` mask coefficients, ``c4 = max(ch[0] // 4, nm)``; ``Proto(ch[0], npr, nm)`` on P3) whose export returns
  ``(torch.cat([x, mc], 1), p)``: ``output0`` (1, 4 + nc + nm, N) and ``output1`` the prototypes (1, nm, H/4, W/4);
- ``ultralytics/nn/modules/block.py``: ``Proto`` (``Conv 3x3 → ConvTranspose2d(2, 2) → Conv 3x3 → Conv 1x1``).

Exported as ``tests/torch_ultralytics.py`` exports (legacy exporter + onnxslim, or the dynamo exporter), with
``output_names=['output0', 'output1']`` as Ultralytics' exporter names a segmentation model's outputs.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch_ultralytics as tu

SEEDS = {"yolov8-seg": 20230112, "yolo11-seg": 20240931}
NM, NPR = 32, 16  # upstream: nm 32 mask coefficients, npr 256 prototype channels (kept small here)


def _segment(m):
    torch, nn, Conv = m["torch"], m["nn"], m["Conv"]
    Detect = tu._heads(m)[0]

    class Proto(nn.Module):
        def __init__(self, c1, c_=256, c2=32):
            super().__init__()
            self.cv1 = Conv(c1, c_, k=3)
            self.upsample = nn.ConvTranspose2d(c_, c_, 2, 2, 0, bias=True)
            self.cv2 = Conv(c_, c_, k=3)
            self.cv3 = Conv(c_, c2)

        def forward(self, x):
            return self.cv3(self.cv2(self.upsample(self.cv1(x))))

    class Segment(Detect):
        def __init__(self, nc, ch, legacy, nm=NM, npr=NPR):
            super().__init__(nc, ch, legacy=legacy)
            self.nm, self.npr = nm, npr
            self.proto = Proto(ch[0], self.npr, self.nm)
            c4 = max(ch[0] // 4, self.nm)
            self.cv4 = nn.ModuleList(nn.Sequential(Conv(x, c4, 3), Conv(c4, c4, 3), nn.Conv2d(c4, self.nm, 1))
                                     for x in ch)

        def forward(self, x):
            p = self.proto(x[0])
            bs = p.shape[0]
            mc = torch.cat([self.cv4[i](x[i]).view(bs, self.nm, -1) for i in range(self.nl)], 2)
            return torch.cat([Detect.forward(self, x), mc], 1), p

    return Segment


def build(family: str, nc: int = 3):
    """``yolov8-seg`` / ``yolo11-seg``: the ``tests.torch_ultralytics`` network of that family with a Segment head."""
    import torch

    base = family.removesuffix("-seg")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEEDS[family])
        net = tu.build(base, nc)
        ch = tuple(c[0].conv.in_channels for c in net.head.cv2)
        head = _segment(tu._modules())(nc, ch, legacy=base == "yolov8")
        head.stride = torch.tensor([8.0, 16.0, 32.0])
        with torch.no_grad():  # scores spread around the threshold, coefficients of both signs
            for s in head.cv3:
                s[-1].bias.fill_(-1.0)
            for s in head.cv2:
                s[-1].bias.fill_(1.0)
        net.head = head
        for p in net.parameters():
            p.requires_grad = False
        return net.eval()


def export(family: str, path, *, size=(320, 320), nc: int = 3, dynamo: bool = False, dynamic_hw: bool = False,
           dynamic_batch: bool = False) -> Path:
    """Export ``family`` (one of :data:`SEEDS`) to ``path`` as Ultralytics' exporter does (or with dynamo).
    ``dynamic_hw``: its ``dynamic=True`` (legacy exporter: batch, height and width symbolic, ``output0``
    ``{0: batch, 2: anchors}``, ``output1`` ``{0: batch, 2: mask_height, 3: mask_width}``; the anchors are made in
    the graph from the feature maps' shapes); ``dynamic_batch``: the batch axes only (dynamo: ``dynamic_shapes``
    ``Dim.AUTO`` on those input axes)."""
    import onnx
    import torch

    path = Path(path)
    model = build(family, nc)
    im = torch.zeros(1, 3, *size)
    names = ["output0", "output1"]
    axes = None
    if dynamic_hw or dynamic_batch:
        hw = dynamic_hw
        axes = {"images": {0: "batch", **({2: "height", 3: "width"} if hw else {})},
                "output0": {0: "batch", **({2: "anchors"} if hw else {})},
                "output1": {0: "batch", **({2: "mask_height", 3: "mask_width"} if hw else {})}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model(im)
        if dynamo:  # dynamic: batch (and height, width) Dim.AUTO, as tests/torch_families.py's _dynamo_export
            auto = torch.export.Dim.AUTO
            shapes = ({0: auto, **({2: auto, 3: auto} if dynamic_hw else {})},) if axes else None
            torch.onnx.export(model, (im,), str(path), dynamo=True, external_data=True, optimize=True, verbose=False,
                              input_names=["images"], output_names=names, opset_version=18, dynamic_shapes=shapes)
            return path
        torch.onnx.export(model, im, str(path), verbose=False, opset_version=18, do_constant_folding=True,
                          input_names=["images"], output_names=names, dynamic_axes=axes, dynamo=False)
    try:
        import onnxslim
    except ImportError:
        return path
    onnx.save(onnxslim.slim(onnx.load(str(path))), str(path))
    return path


def _anchors(x, strides):
    """YOLOv6's ``generate_anchors`` as its export traces it: cell centres (+0.5) per level and their strides."""
    import torch

    anchor_points, stride_tensor = [], []
    for i, s in enumerate(strides):
        _, _, h, w = x[i].shape
        sy, sx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
        anchor_points.append(torch.stack([sx, sy], -1).to(torch.float).reshape(-1, 2))
        stride_tensor.append(torch.full((h * w, 1), s, dtype=torch.float))
    return torch.cat(anchor_points), torch.cat(stride_tensor)


# ------------------------------------------------------------------------------ YOLOv6 0.3.1 face


def build_yolov6_face(nc: int = 1):
    """The ``tests.torch_families`` YOLOv6 anchor-free network (0.3.0 ``Detect``, no DFL) with the face release's
    ``lmks_preds``: per level a Conv2d(c, 10, 1) on the reg branch's features; eval output
    ``cat([pred_bboxes, (lmks + anchor_points.repeat(1, 5)) * stride_tensor, ones, cls], -1)`` (1, N, 15 + nc)."""
    import torch
    import torch_families as tf
    from torch import nn

    base = tf.build_yolov6_af(nc, 0).eval()
    det = base.detect

    class FaceDetect(nn.Module):
        def __init__(self):
            super().__init__()
            self.det = det
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(20230301)
                self.lmks_preds = nn.ModuleList(nn.Conv2d(c.conv.out_channels, 10, 1) for c in det.reg_convs)
                for p in self.lmks_preds.parameters():
                    p.data.mul_(0.5)
                for c in det.cls_preds:  # scores spread around the threshold (upstream's prior leaves them at 0.01)
                    c.weight.data.mul_(20.0)
                    c.bias.data.fill_(-1.0)

        def forward(self, x):
            d = self.det
            anchor_points, stride_tensor = _anchors(x, d.stride.tolist())
            cls_list, reg_list, lmk_list = [], [], []
            for i in range(d.nl):
                b, _, h, w = x[i].shape
                f = d.stems[i](x[i])
                cls_output = torch.sigmoid(d.cls_preds[i](d.cls_convs[i](f)))
                reg_feat = d.reg_convs[i](f)
                cls_list.append(cls_output.reshape([b, d.nc, h * w]))
                reg_list.append(d.reg_preds[i](reg_feat).reshape([b, 4, h * w]))
                lmk_list.append(self.lmks_preds[i](reg_feat).reshape([b, 10, h * w]))
            cls_all = torch.cat(cls_list, -1).permute(0, 2, 1)
            reg_all = torch.cat(reg_list, -1).permute(0, 2, 1)
            lmk_all = torch.cat(lmk_list, -1).permute(0, 2, 1)
            lt, rb = torch.split(reg_all, 2, -1)
            x1y1, x2y2 = anchor_points - lt, anchor_points + rb
            boxes = torch.cat([(x1y1 + x2y2) / 2, x2y2 - x1y1], -1) * stride_tensor
            lmks = (lmk_all + anchor_points.repeat(1, 5)) * stride_tensor
            ones = torch.ones((b, boxes.shape[1], 1), dtype=boxes.dtype)
            return torch.cat([boxes, lmks, ones, cls_all], -1)

    base.detect = FaceDetect()
    for p in base.parameters():
        p.requires_grad = False
    return base.eval()


def export_yolov6_face(path, *, size=(320, 320), nc: int = 1, opset: int = 13, dynamo: bool = False) -> Path:
    """Export the face fixture as YOLOv6's ``deploy/ONNX/export_onnx.py`` does (legacy, opset 13, 'images' ->
    'outputs'), or with the dynamo exporter (opset 18, weights in ``<path>.data``)."""
    return _export_yolov6(build_yolov6_face(nc), path, size, ["outputs"], opset, dynamo)


def _export_yolov6(model, path, size, names: list[str], opset: int, dynamo: bool) -> Path:
    """YOLOv6's ``deploy/ONNX/export_onnx.py`` export of ``model`` (legacy exporter, eval mode, constants folded,
    'images' -> ``names``), or the dynamo exporter's (opset 18 at least, weights in ``<path>.data``)."""
    import torch

    path = Path(path)
    img = torch.zeros(1, 3, *size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model(img)
        if dynamo:
            torch.onnx.export(model, (img,), str(path), dynamo=True, external_data=True, optimize=True, verbose=False,
                              input_names=["images"], output_names=names, opset_version=max(opset, 18))
        else:
            torch.onnx.export(model, img, str(path), verbose=False, opset_version=opset,
                              training=torch.onnx.TrainingMode.EVAL, do_constant_folding=True,
                              input_names=["images"], output_names=names, dynamo=False)
    return path


# ------------------------------------------------------------------------------ YOLOv6 0.4.1 seg


def build_yolov6_seg(nc: int = 3, nm: int = NM, npr: int = NPR):
    """The ``tests.torch_families`` YOLOv6 anchor-free network with 0.4.1's seg head
    (``yolov6/models/heads/effidehead_fuseab_seg.py`` ``Detect``, eval path, ``use_dfl`` False): per level
    ``seg_convs`` (ConvBNSiLU 3x3 on the stem) → ``seg_preds`` (nm); ``Proto`` (Conv 3x3 → Upsample nearest x2 →
    Conv 3x3 → Conv 1x1) on P3's stem; returns ``(cat([boxes, ones, cls], -1), [protos], seg_conf)`` with
    ``seg_conf`` (1, N, 1 + nm) = per row [``proto_no`` = the level index, coefficients]."""
    import torch
    import torch_families as tf
    from torch import nn

    base = tf.build_yolov6_af(nc, 0).eval()
    det = base.detect
    _, _, ExportSiLU, Conv, _ = tf._blocks()

    class Proto(nn.Module):
        def __init__(self, c1, c_, c2):
            super().__init__()
            self.cv1 = Conv(c1, c_, 3, act=ExportSiLU())
            self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
            self.cv2 = Conv(c_, c_, 3, act=ExportSiLU())
            self.cv3 = Conv(c_, c2, 1, act=ExportSiLU())

        def forward(self, x):
            return self.cv3(self.cv2(self.upsample(self.cv1(x))))

    class SegDetect(nn.Module):
        def __init__(self):
            super().__init__()
            self.det = det
            chans = [c.conv.out_channels for c in det.stems]
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(20230915)
                self.seg_convs = nn.ModuleList(Conv(c, c, 3, act=ExportSiLU()) for c in chans)
                self.seg_preds = nn.ModuleList(nn.Conv2d(c, nm, 1) for c in chans)
                self.seg_proto = nn.ModuleList([Proto(chans[0], npr, nm)])
                for c in det.cls_preds:  # scores spread around the threshold
                    c.weight.data.mul_(20.0)
                    c.bias.data.fill_(-1.0)

        def forward(self, x):
            d = self.det
            anchor_points, stride_tensor = _anchors(x, d.stride.tolist())
            cls_list, reg_list, seg_conf = [], [], []
            seg_mask = None
            for i in range(d.nl):
                b, _, h, w = x[i].shape
                l_ = h * w
                f = d.stems[i](x[i])
                if i == 0:  # upstream: seg_proto on x[0] before the stems; here on P3's stem output (same role)
                    seg_mask = self.seg_proto[0](f)
                cls_output = torch.sigmoid(d.cls_preds[i](d.cls_convs[i](f)))
                reg_output = d.reg_preds[i](d.reg_convs[i](f))
                seg_output = self.seg_preds[i](self.seg_convs[i](f))
                proto_no = torch.ones(b, 1, l_) * i
                cls_list.append(cls_output.reshape([b, d.nc, l_]))
                reg_list.append(reg_output.reshape([b, 4, l_]))
                seg_conf.append(torch.cat([proto_no, seg_output.reshape([b, nm, l_])], axis=1))
            cls_all = torch.cat(cls_list, -1).permute(0, 2, 1)
            reg_all = torch.cat(reg_list, -1).permute(0, 2, 1)
            seg_all = torch.cat(seg_conf, -1).permute(0, 2, 1)
            lt, rb = torch.split(reg_all, 2, -1)
            x1y1, x2y2 = anchor_points - lt, anchor_points + rb
            boxes = torch.cat([(x1y1 + x2y2) / 2, x2y2 - x1y1], -1) * stride_tensor
            ones = torch.ones((b, boxes.shape[1], 1), dtype=boxes.dtype)
            return torch.cat([boxes, ones, cls_all], -1), [seg_mask], seg_all

    base.detect = SegDetect()
    for p in base.parameters():
        p.requires_grad = False
    return base.eval()


def export_yolov6_seg(path, *, size=(320, 320), nc: int = 3, opset: int = 13, dynamo: bool = False) -> Path:
    """Export the YOLOv6 0.4.1 seg fixture (legacy exporter, opset 13, as ``deploy/ONNX/export_onnx.py``; or dynamo):
    'outputs' (1, N, 5 + nc), 'protos' (1, nm, H/4, W/4), 'coefficients' (1, N, 1 + nm)."""
    return _export_yolov6(build_yolov6_seg(nc), path, size, ["outputs", "protos", "coefficients"], opset, dynamo)
