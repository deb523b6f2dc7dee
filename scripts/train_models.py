"""The trained samples' torch networks: one YOLOv8 backbone + PAN neck, three upstream heads on top.

Blocks from ``ultralytics/nn/modules/`` (``Conv`` with BN, ``Bottleneck``, ``C2f``, ``SPPF``, ``DFL``,
``tal.py::make_anchors``/``dist2bbox``) at small widths; the heads, each with its upstream decode:

- ``v8``: ``ultralytics/nn/modules/head.py::Detect`` (DFL, ``reg_max`` 16), export ``(1, 4 + nc, N)``;
- ``yolox``: YOLOX 0.3.0 ``yolox/models/yolo_head.py::YOLOXHead`` (stem, cls/reg branches, obj); trained
  here with logits out, exported through the eval-path ``YOLOXHead`` of ``tests/torch_families.py`` (the
  same modules, upstream's in-place ``decode_outputs``: ``xy = (raw + grid) * s``, ``wh = exp(raw) * s``,
  sigmoid obj and cls), ``(1, N, 5 + nc)``;
- ``v5``: YOLOv5 v7.0 ``models/yolo.py::Detect``, the class of ``tests/torch_families.py`` itself (3
  anchors a level, ``anchor_grid``: ``xy = (2σ - 0.5 + grid) * s``, ``wh = (2σ)² * anchor``), ``(1, 3N, 5 + nc)``.

In training each head returns its raw maps (what the losses in ``train_losses.py`` take); ``export =
True`` (YOLOX: the fixture head) switches on the decode. Used by ``scripts/train_sample.py`` (not part of
the package: torch).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the torch fixtures' upstream heads

REG_MAX = 16
STRIDES = (8, 16, 32)
#: YOLOv5 v7.0 default anchors (pixels), P3/8, P4/16, P5/32. AutoAnchor (``check_anchors``) keeps them when
#: their best possible recall is >= 0.98: it is 1.0 for these scenes' 14-106 px shapes (train_sample.py prints it)
V5_ANCHORS = ((10, 13, 16, 30, 33, 23), (30, 61, 62, 45, 59, 119), (116, 90, 156, 198, 373, 326))


class Conv(nn.Module):
    """``conv.py::Conv``: Conv2d (no bias) + BatchNorm2d + SiLU; :meth:`fuse` folds the BN (``forward_fuse``)."""

    def __init__(self, c1, c2, k=1, s=1):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2, bias=False)
        self.bn: nn.Module = nn.BatchNorm2d(c2)
        self.act = nn.SiLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))

    def fuse(self):
        """``torch_utils.py::fuse_conv_and_bn``: one Conv2d with bias, BN gone."""
        conv, bn = self.conv, self.bn
        assert isinstance(bn, nn.BatchNorm2d)
        fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=True)
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        fused.weight.data = conv.weight.data * scale.detach().view(-1, 1, 1, 1)
        fused.bias.data = (bn.bias - bn.running_mean * scale).detach()
        self.conv, self.bn = fused, nn.Identity()


class Bottleneck(nn.Module):
    """``block.py::Bottleneck`` (k=(3, 3), e=1.0 as C2f builds it)."""

    def __init__(self, c1, c2, shortcut=True):
        super().__init__()
        self.cv1, self.cv2 = Conv(c1, c2, 3), Conv(c2, c2, 3)
        self.add = shortcut and c1 == c2

    def forward(self, x):
        return x + self.cv2(self.cv1(x)) if self.add else self.cv2(self.cv1(x))


class C2f(nn.Module):
    """``block.py::C2f``: split, n bottlenecks on the last half, concat all, 1x1."""

    def __init__(self, c1, c2, n=1, shortcut=False):
        super().__init__()
        self.c = c2 // 2
        self.cv1 = Conv(c1, 2 * self.c, 1)
        self.cv2 = Conv((2 + n) * self.c, c2, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, self.c, shortcut) for _ in range(n))

    def forward(self, x):
        y = list(self.cv1(x).chunk(2, 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))

    def forward_split(self, x):
        """``C2f.forward_split``, which Ultralytics' ``Exporter`` swaps in for ONNX (``Split`` nodes)."""
        y = list(self.cv1(x).split((self.c, self.c), 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    """``block.py::SPPF`` (k=5)."""

    def __init__(self, c1, c2, k=5):
        super().__init__()
        c_ = c1 // 2
        self.cv1, self.cv2 = Conv(c1, c_, 1), Conv(c_ * 4, c2, 1)
        self.m = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x):
        y = [self.cv1(x)]
        y.extend(self.m(y[-1]) for _ in range(3))
        return self.cv2(torch.cat(y, 1))


def make_anchors(feats, strides, offset=0.5):
    """``tal.py::make_anchors``: anchor centres (grid units) and their strides."""
    points, stride_t = [], []
    for f, s in zip(feats, strides):
        h, w = f.shape[2:]
        sx = torch.arange(w, dtype=f.dtype) + offset
        sy = torch.arange(h, dtype=f.dtype) + offset
        sy, sx = torch.meshgrid(sy, sx, indexing="ij")
        points.append(torch.stack((sx, sy), -1).view(-1, 2))
        stride_t.append(torch.full((h * w, 1), s, dtype=f.dtype))
    return torch.cat(points), torch.cat(stride_t)


def dist2bbox(distance, anchor_points, xywh=True, dim=-1):
    """``tal.py::dist2bbox``."""
    lt, rb = distance.chunk(2, dim)
    x1y1, x2y2 = anchor_points - lt, anchor_points + rb
    if xywh:
        return torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), dim)
    return torch.cat((x1y1, x2y2), dim)


class DFL(nn.Module):
    """``block.py::DFL``: softmax over the bins, expectation by a fixed 1x1 conv."""

    def __init__(self, c1=16):
        super().__init__()
        self.conv = nn.Conv2d(c1, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(c1, dtype=torch.float).view(1, c1, 1, 1)
        self.c1 = c1

    def forward(self, x):
        b, _, a = x.shape
        return self.conv(x.view(b, 4, self.c1, a).transpose(2, 1).softmax(1)).view(b, 4, a)


class Detect(nn.Module):
    """``head.py::Detect`` (v8 branches: Conv, Conv, Conv2d); training returns the raw maps, export the
    decoded ``(1, 4 + nc, N)`` = ``cat(dist2bbox(DFL(box), anchors, xywh) * strides, sigmoid(cls))``."""

    export = False

    def __init__(self, nc, ch, c2=16, c3=16):
        super().__init__()
        self.nc, self.nl, self.reg_max = nc, len(ch), REG_MAX
        self.stride = torch.tensor(STRIDES, dtype=torch.float32)
        self.cv2 = nn.ModuleList(nn.Sequential(Conv(x, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 * REG_MAX, 1))
                                 for x in ch)
        self.cv3 = nn.ModuleList(nn.Sequential(Conv(x, c3, 3), Conv(c3, c3, 3), nn.Conv2d(c3, nc, 1)) for x in ch)
        self.dfl = DFL(REG_MAX)

    def bias_init(self):
        """``Detect.bias_init`` (image size 640 in the class prior, as upstream)."""
        for a, b, s in zip(self.cv2, self.cv3, STRIDES):
            a[-1].bias.data[:] = 1.0
            b[-1].bias.data[: self.nc] = math.log(5 / self.nc / (640 / s) ** 2)

    def forward(self, x):
        bs = x[0].shape[0]
        boxes = torch.cat([self.cv2[i](x[i]).view(bs, 4 * REG_MAX, -1) for i in range(self.nl)], -1)
        scores = torch.cat([self.cv3[i](x[i]).view(bs, self.nc, -1) for i in range(self.nl)], -1)
        if not self.export:
            return boxes, scores, x
        anchors, strides = (a.transpose(0, 1) for a in make_anchors(x, self.stride, 0.5))
        dbox = dist2bbox(self.dfl(boxes), anchors.unsqueeze(0), xywh=True, dim=1) * strides
        return torch.cat((dbox, scores.sigmoid()), 1)


class YOLOXHead(nn.Module):
    """YOLOX 0.3.0 ``YOLOXHead`` (``width`` channels, ``n_anchors`` 1, BN convs), training path: ``(B, N,
    5 + nc)`` raw ``[reg 4, obj logit, cls logits]`` and the maps. The export goes through the test
    fixtures' eval-path ``YOLOXHead`` (:func:`yolox_export_head`), which holds upstream's decode."""

    def __init__(self, nc, ch, width=16, prior_prob=1e-2):
        super().__init__()
        self.num_classes, self.width, self.in_channels = nc, width, tuple(ch)
        self.stems = nn.ModuleList(Conv(c, width, 1) for c in ch)
        self.cls_convs = nn.ModuleList(nn.Sequential(Conv(width, width, 3), Conv(width, width, 3)) for _ in ch)
        self.reg_convs = nn.ModuleList(nn.Sequential(Conv(width, width, 3), Conv(width, width, 3)) for _ in ch)
        self.cls_preds = nn.ModuleList(nn.Conv2d(width, nc, 1) for _ in ch)
        self.reg_preds = nn.ModuleList(nn.Conv2d(width, 4, 1) for _ in ch)
        self.obj_preds = nn.ModuleList(nn.Conv2d(width, 1, 1) for _ in ch)
        for conv in list(self.cls_preds) + list(self.obj_preds):  # initialize_biases(prior_prob)
            conv.bias.data.fill_(-math.log((1 - prior_prob) / prior_prob))

    def forward(self, xin):
        outputs = []
        for k, x in enumerate(xin):
            x = self.stems[k](x)
            cls_output = self.cls_preds[k](self.cls_convs[k](x))
            reg_feat = self.reg_convs[k](x)
            outputs.append(torch.cat([self.reg_preds[k](reg_feat), self.obj_preds[k](reg_feat), cls_output], 1))
        return torch.cat([x.flatten(start_dim=2) for x in outputs], dim=2).permute(0, 2, 1), xin


def yolox_export_head(head: YOLOXHead) -> nn.Module:
    """The fixtures' ``YOLOXHead`` (``tests/torch_families.py``: upstream's eval forward and in-place
    ``decode_outputs``, export SiLU) holding ``head``'s weights; ``head``'s BN must be fused."""
    import torch_families

    out = torch_families.yolox_head()(head.num_classes, STRIDES, head.in_channels, width=head.width)
    out.load_state_dict(head.state_dict())  # strict: the fused Conv is conv (with bias) + SiLU, as the fixture's
    out.decode_in_inference = True
    return out


def v5_detect(nc, ch, anchors=V5_ANCHORS):
    """YOLOv5 v7.0 ``Detect`` (``tests/torch_families.py::yolov5_detect``: upstream's forward, training maps
    ``(B, na, ny, nx, 5 + nc)``, export ``(cat(z, 1),)``), set up as ``DetectionModel.__init__`` does:
    strides, anchors in grid units, ``_initialize_biases``."""
    import torch_families

    m = torch_families.yolov5_detect()(nc, anchors, ch)
    m.stride = torch.tensor(STRIDES, dtype=torch.float32)
    m.anchors /= m.stride.view(-1, 1, 1)  # check_anchor_order: already ascending
    for mi, s in zip(m.m, STRIDES):
        b = mi.bias.view(m.na, -1)
        b.data[:, 4] += math.log(8 / (640 / s) ** 2)  # obj (8 objects per 640 image)
        b.data[:, 5:5 + nc] += math.log(0.6 / (nc - 0.99999))  # cls
    return m


HEADS = {"v8": Detect, "yolox": YOLOXHead, "v5": v5_detect}


class Model(nn.Module):
    """YOLOv8 backbone (P3–P5) + PAN neck (``yolov8.yaml`` topology) at widths ``(8, 16, 32, 48, 64)``,
    then the ``head`` kind of :data:`HEADS`."""

    def __init__(self, nc, head="v8"):
        super().__init__()
        self.kind = head
        self.b1 = nn.Sequential(Conv(3, 8, 3, 2), Conv(8, 16, 3, 2), C2f(16, 16, 1, True),
                                Conv(16, 32, 3, 2), C2f(32, 32, 1, True))  # P3/8
        self.b2 = nn.Sequential(Conv(32, 48, 3, 2), C2f(48, 48, 1, True))  # P4/16
        self.b3 = nn.Sequential(Conv(48, 64, 3, 2), C2f(64, 64, 1, True), SPPF(64, 64))  # P5/32
        self.up = nn.Upsample(None, 2, "nearest")
        self.n4 = C2f(64 + 48, 48)
        self.n3 = C2f(48 + 32, 32)  # out P3
        self.d3 = Conv(32, 32, 3, 2)
        self.o4 = C2f(32 + 48, 48)  # out P4
        self.d4 = Conv(48, 48, 3, 2)
        self.o5 = C2f(48 + 64, 64)  # out P5
        self.detect = HEADS[head](nc, (32, 48, 64))
        if head == "v8":
            self.detect.bias_init()

    def forward(self, x):
        p3 = self.b1(x)
        p4 = self.b2(p3)
        p5 = self.b3(p4)
        n4 = self.n4(torch.cat([self.up(p5), p4], 1))
        o3 = self.n3(torch.cat([self.up(n4), p3], 1))
        o4 = self.o4(torch.cat([self.d3(o3), n4], 1))
        o5 = self.o5(torch.cat([self.d4(o4), p5], 1))
        return self.detect([o3, o4, o5])

    def fuse(self):
        for m in self.modules():
            if isinstance(m, Conv) and isinstance(m.bn, nn.BatchNorm2d):
                m.fuse()
        return self
