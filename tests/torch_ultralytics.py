"""Tiny torch detectors with the backbones and heads that name the Ultralytics-style families: YOLOv8,
YOLO11, YOLOv10 and YOLOv9 (Ultralytics ``yolov9t`` and WongKinYiu's GELAN, with and without the dual
PGI head), written from the upstream module definitions:

- ``ultralytics/nn/modules/block.py``: ``Bottleneck``, ``C2f``, ``C3``, ``C3k``, ``C3k2``, ``SPPF``,
  ``Attention``, ``PSABlock``, ``C2PSA``, ``PSA``, ``SCDown``, ``RepBottleneck``/``RepCSP``,
  ``RepNCSPELAN4``, ``ELAN1``, ``AConv``, ``ADown``, ``SPPELAN`` (WongKinYiu/yolov9 ``models/common.py``
  holds the same ``RepNCSPELAN4``, ``ADown``, ``SPPELAN``);
- ``ultralytics/nn/modules/head.py``: ``Detect`` (``legacy`` v8/v9 class branch ``Conv 3x3 → Conv 3x3 →
  Conv2d``, else ``[DWConv 3x3 → Conv 1x1] × 2 → Conv2d``), ``v10Detect`` (the same depthwise class branch;
  its one-to-many ``cv2``/``cv3`` branch is what an 8.4 export without ``nms`` writes, ``(1, 4+nc, N)``);
- WongKinYiu/yolov9 ``models/yolo.py``: ``DDetect`` (box branch ``Conv 3x3 → Conv 3x3 (g=4) →
  Conv2d 1x1 (groups=4)``) and ``DualDDetect`` (two such heads, ``[auxiliary d1, main d2]``; both decoded
  with the anchors of ``d1``; ``export=True`` returns both decoded tensors).

Each network is a backbone of the family's blocks at strides 8, 16, 32 feeding the head directly (no
FPN/PAN neck: the neck is the same kind of blocks and does not reach the decode); BN is left out (what
``fuse()`` leaves), ``RepConv`` is the single 3x3 conv its ``fuse_convs`` leaves. Widths are small except
where upstream's formulas need more: attention has ``num_heads = c // 64``, so the attention blocks run
at 128 channels (one head).

Exports: Ultralytics as ``engine/exporter.py`` (legacy exporter, opset 18, ``do_constant_folding``,
'images' -> 'output0', then ``onnxslim.slim`` when importable); WongKinYiu as its ``export.py`` (legacy
exporter, opset 12, ``output_names=['output0']`` only, so the dual head's second output gets torch's
numeric name); ``dynamo=True``: torch's new exporter, opset 18, weights in ``<path>.data``.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

SEEDS = {"yolov8": 20230111, "yolo11": 20240930, "yolov10": 20240523, "yolov9t": 20240221, "gelan": 20240222,
         "dual": 20240223}
FAMILIES = tuple(SEEDS)


def _modules():
    import torch
    import torch.nn.functional as F
    from torch import nn

    def autopad(k, p=None, d=1):
        return k // 2 if p is None else p

    class Conv(nn.Module):
        """``Conv`` after BN fusion: Conv2d (bias) + SiLU (``act=False``: none)."""

        def __init__(self, c1, c2, k=1, s=1, p=None, g=1, act=True):
            super().__init__()
            self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p), groups=g, bias=True)
            self.act = nn.SiLU() if act is True else nn.Identity()

        def forward(self, x):
            return self.act(self.conv(x))

    def DWConv(c1, c2, k=1, s=1, act=True):  # noqa: N802 - upstream's class name
        return Conv(c1, c2, k, s, g=math.gcd(c1, c2), act=act)

    class Bottleneck(nn.Module):
        def __init__(self, c1, c2, shortcut=True, g=1, k=(3, 3), e=0.5, first=Conv):
            super().__init__()
            c_ = int(c2 * e)
            self.cv1 = first(c1, c_, k[0], 1)
            self.cv2 = Conv(c_, c2, k[1], 1, g=g)
            self.add = shortcut and c1 == c2

        def forward(self, x):
            return x + self.cv2(self.cv1(x)) if self.add else self.cv2(self.cv1(x))

    class C2f(nn.Module):
        def __init__(self, c1, c2, n=1, shortcut=False, g=1, e=0.5):
            super().__init__()
            self.c = int(c2 * e)
            self.cv1 = Conv(c1, 2 * self.c, 1, 1)
            self.cv2 = Conv((2 + n) * self.c, c2, 1)
            self.m = nn.ModuleList(Bottleneck(self.c, self.c, shortcut, g, k=(3, 3), e=1.0) for _ in range(n))

        def forward(self, x):  # ``forward_split``: what Ultralytics' exporter sets on every C2f (C3k2 included)
            y = list(self.cv1(x).split((self.c, self.c), 1))
            y.extend(m(y[-1]) for m in self.m)
            return self.cv2(torch.cat(y, 1))

    class C3(nn.Module):
        def __init__(self, c1, c2, n=1, shortcut=True, g=1, e=0.5, k=(1, 3), first=Conv):
            super().__init__()
            c_ = int(c2 * e)
            self.cv1 = Conv(c1, c_, 1, 1)
            self.cv2 = Conv(c1, c_, 1, 1)
            self.cv3 = Conv(2 * c_, c2, 1)
            self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, g, k=k, e=1.0, first=first) for _ in range(n)))

        def forward(self, x):
            return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))

    class C3k2(C2f):
        def __init__(self, c1, c2, n=1, c3k=False, e=0.5, g=1, shortcut=True):
            super().__init__(c1, c2, n, shortcut, g, e)
            self.m = nn.ModuleList(C3(self.c, self.c, 2, shortcut, g, k=(3, 3)) if c3k else
                                   Bottleneck(self.c, self.c, shortcut, g) for _ in range(n))

    class SPPF(nn.Module):
        def __init__(self, c1, c2, k=5):
            super().__init__()
            c_ = c1 // 2
            self.cv1 = Conv(c1, c_, 1, 1)
            self.cv2 = Conv(c_ * 4, c2, 1, 1)
            self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

        def forward(self, x):
            y = [self.cv1(x)]
            y.extend(self.m(y[-1]) for _ in range(3))
            return self.cv2(torch.cat(y, 1))

    class Attention(nn.Module):
        def __init__(self, dim, num_heads=8, attn_ratio=0.5):
            super().__init__()
            self.num_heads = num_heads
            self.head_dim = dim // num_heads
            self.key_dim = int(self.head_dim * attn_ratio)
            self.scale = self.key_dim ** -0.5
            h = dim + self.key_dim * num_heads * 2
            self.qkv = Conv(dim, h, 1, act=False)
            self.proj = Conv(dim, dim, 1, act=False)
            self.pe = Conv(dim, dim, 3, 1, g=dim, act=False)

        def forward(self, x):
            B, C, H, W = x.shape
            N = H * W
            q, k, v = self.qkv(x).view(B, self.num_heads, self.key_dim * 2 + self.head_dim, N).split(
                [self.key_dim, self.key_dim, self.head_dim], dim=2)
            attn = (q.transpose(-2, -1) @ k) * self.scale
            attn = attn.softmax(dim=-1)
            x = (v @ attn.transpose(-2, -1)).view(B, C, H, W) + self.pe(v.reshape(B, C, H, W))
            return self.proj(x)

    class PSABlock(nn.Module):
        def __init__(self, c, attn_ratio=0.5, num_heads=4, shortcut=True):
            super().__init__()
            self.attn = Attention(c, attn_ratio=attn_ratio, num_heads=num_heads)
            self.ffn = nn.Sequential(Conv(c, c * 2, 1), Conv(c * 2, c, 1, act=False))
            self.add = shortcut

        def forward(self, x):
            x = x + self.attn(x) if self.add else self.attn(x)
            return x + self.ffn(x) if self.add else self.ffn(x)

    class C2PSA(nn.Module):
        def __init__(self, c1, c2, n=1, e=0.5):
            super().__init__()
            self.c = int(c1 * e)
            self.cv1 = Conv(c1, 2 * self.c, 1, 1)
            self.cv2 = Conv(2 * self.c, c1, 1)
            self.m = nn.Sequential(*(PSABlock(self.c, attn_ratio=0.5, num_heads=self.c // 64) for _ in range(n)))

        def forward(self, x):
            a, b = self.cv1(x).split((self.c, self.c), dim=1)
            return self.cv2(torch.cat((a, self.m(b)), 1))

    class PSA(nn.Module):
        def __init__(self, c1, c2, e=0.5):
            super().__init__()
            self.c = int(c1 * e)
            self.cv1 = Conv(c1, 2 * self.c, 1, 1)
            self.cv2 = Conv(2 * self.c, c1, 1)
            self.attn = Attention(self.c, attn_ratio=0.5, num_heads=self.c // 64)
            self.ffn = nn.Sequential(Conv(self.c, self.c * 2, 1), Conv(self.c * 2, self.c, 1, act=False))

        def forward(self, x):
            a, b = self.cv1(x).split((self.c, self.c), dim=1)
            b = b + self.attn(b)
            b = b + self.ffn(b)
            return self.cv2(torch.cat((a, b), 1))

    class SCDown(nn.Module):
        def __init__(self, c1, c2, k, s):
            super().__init__()
            self.cv1 = Conv(c1, c2, 1, 1)
            self.cv2 = Conv(c2, c2, k=k, s=s, g=c2, act=False)

        def forward(self, x):
            return self.cv2(self.cv1(x))

    def RepCSP(c1, c2, n=1, shortcut=True, g=1, e=0.5):  # noqa: N802 - C3 of RepBottlenecks (RepConv fused: 3x3)
        return C3(c1, c2, n, shortcut, g, e, k=(3, 3))

    class RepNCSPELAN4(nn.Module):
        def __init__(self, c1, c2, c3, c4, n=1):
            super().__init__()
            self.c = c3 // 2
            self.cv1 = Conv(c1, c3, 1, 1)
            self.cv2 = nn.Sequential(RepCSP(c3 // 2, c4, n), Conv(c4, c4, 3, 1))
            self.cv3 = nn.Sequential(RepCSP(c4, c4, n), Conv(c4, c4, 3, 1))
            self.cv4 = Conv(c3 + (2 * c4), c2, 1, 1)

        def forward(self, x):
            y = list(self.cv1(x).chunk(2, 1))
            y.extend((m(y[-1])) for m in [self.cv2, self.cv3])
            return self.cv4(torch.cat(y, 1))

    class ELAN1(RepNCSPELAN4):
        def __init__(self, c1, c2, c3, c4):
            super().__init__(c1, c2, c3, c4)
            self.cv2 = Conv(c3 // 2, c4, 3, 1)
            self.cv3 = Conv(c4, c4, 3, 1)

    class AConv(nn.Module):
        def __init__(self, c1, c2):
            super().__init__()
            self.cv1 = Conv(c1, c2, 3, 2, 1)

        def forward(self, x):
            return self.cv1(F.avg_pool2d(x, 2, 1, 0, False, True))

    class ADown(nn.Module):
        def __init__(self, c1, c2):
            super().__init__()
            self.c = c2 // 2
            self.cv1 = Conv(c1 // 2, self.c, 3, 2, 1)
            self.cv2 = Conv(c1 // 2, self.c, 1, 1, 0)

        def forward(self, x):
            x = F.avg_pool2d(x, 2, 1, 0, False, True)
            x1, x2 = x.chunk(2, 1)
            x1 = self.cv1(x1)
            x2 = F.max_pool2d(x2, 3, 2, 1)
            return torch.cat((x1, self.cv2(x2)), 1)

    class SPPELAN(nn.Module):
        def __init__(self, c1, c2, c3, k=5):
            super().__init__()
            self.cv1 = Conv(c1, c3, 1, 1)
            self.cv2 = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)
            self.cv3 = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)
            self.cv4 = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)
            self.cv5 = Conv(4 * c3, c2, 1, 1)

        def forward(self, x):
            y = [self.cv1(x)]
            y.extend(m(y[-1]) for m in [self.cv2, self.cv3, self.cv4])
            return self.cv5(torch.cat(y, 1))

    return dict(torch=torch, nn=nn, Conv=Conv, DWConv=DWConv, C2f=C2f, C3k2=C3k2, SPPF=SPPF, C2PSA=C2PSA, PSA=PSA,
                SCDown=SCDown, RepNCSPELAN4=RepNCSPELAN4, ELAN1=ELAN1, AConv=AConv, ADown=ADown, SPPELAN=SPPELAN)


def _heads(m):
    torch, nn, Conv, DWConv = m["torch"], m["nn"], m["Conv"], m["DWConv"]

    def make_anchors(feats, strides, offset=0.5):
        points, stride_tensor = [], []
        dtype = feats[0].dtype
        for i, stride in enumerate(strides):
            h, w = feats[i].shape[2:]
            sx = torch.arange(end=w, dtype=dtype) + offset
            sy = torch.arange(end=h, dtype=dtype) + offset
            sy, sx = torch.meshgrid(sy, sx, indexing="ij")
            points.append(torch.stack((sx, sy), -1).view(-1, 2))
            stride_tensor.append(torch.full((h * w, 1), stride, dtype=dtype))
        return torch.cat(points), torch.cat(stride_tensor)

    def dist2bbox(distance, anchor_points, dim=1):
        lt, rb = distance.chunk(2, dim)
        x1y1, x2y2 = anchor_points - lt, anchor_points + rb
        return torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), dim)

    class DFL(nn.Module):
        def __init__(self, c1=16):
            super().__init__()
            self.conv = nn.Conv2d(c1, 1, 1, bias=False).requires_grad_(False)
            self.conv.weight.data[:] = torch.arange(c1, dtype=torch.float).view(1, c1, 1, 1)
            self.c1 = c1

        def forward(self, x):
            b, _, a = x.shape
            return self.conv(x.view(b, 4, self.c1, a).transpose(2, 1).softmax(1)).view(b, 4, a)

    class Detect(nn.Module):
        """Ultralytics 8.4 ``Detect`` one-to-many path (``forward_head`` + ``_inference``), ``export=True``."""

        legacy = False

        def __init__(self, nc, ch, legacy=False, reg_max=16):
            super().__init__()
            self.nc, self.nl, self.reg_max, self.legacy = nc, len(ch), reg_max, legacy
            self.stride = torch.zeros(self.nl)
            c2, c3 = max((16, ch[0] // 4, self.reg_max * 4)), max(ch[0], min(nc, 100))
            self.cv2 = nn.ModuleList(nn.Sequential(Conv(x, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 * reg_max, 1))
                                     for x in ch)
            self.cv3 = (nn.ModuleList(nn.Sequential(Conv(x, c3, 3), Conv(c3, c3, 3), nn.Conv2d(c3, nc, 1)) for x in ch)
                        if legacy else nn.ModuleList(
                            nn.Sequential(nn.Sequential(DWConv(x, x, 3), Conv(x, c3, 1)),
                                          nn.Sequential(DWConv(c3, c3, 3), Conv(c3, c3, 1)), nn.Conv2d(c3, nc, 1))
                            for x in ch))
            self.dfl = DFL(reg_max)

        def branches(self):
            return self.cv2, self.cv3

        def forward(self, x):
            box_head, cls_head = self.branches()
            bs = x[0].shape[0]
            boxes = torch.cat([box_head[i](x[i]).view(bs, 4 * self.reg_max, -1) for i in range(self.nl)], -1)
            scores = torch.cat([cls_head[i](x[i]).view(bs, self.nc, -1) for i in range(self.nl)], -1)
            anchors, strides = (a.transpose(0, 1) for a in make_anchors(x, self.stride, 0.5))
            dbox = dist2bbox(self.dfl(boxes), anchors.unsqueeze(0)) * strides
            return torch.cat((dbox, scores.sigmoid()), 1)

    class V10Detect(Detect):
        """``v10Detect``: the depthwise class branch ``Conv(x, x, 3, g=x) → Conv(x, c3, 1)`` twice, and a
        one-to-one copy of both branches (``one2one_cv2``/``one2one_cv3``); the default 8.4 export without
        ``nms`` decodes the one-to-many ``cv2``/``cv3`` branch, which :meth:`forward` does."""

        def __init__(self, nc, ch):
            super().__init__(nc, ch, legacy=True)
            c3 = max(ch[0], min(nc, 100))
            self.cv3 = nn.ModuleList(nn.Sequential(nn.Sequential(Conv(x, x, 3, g=x), Conv(x, c3, 1)),
                                                   nn.Sequential(Conv(c3, c3, 3, g=c3), Conv(c3, c3, 1)),
                                                   nn.Conv2d(c3, nc, 1)) for x in ch)
            import copy

            self.one2one_cv2, self.one2one_cv3 = copy.deepcopy(self.cv2), copy.deepcopy(self.cv3)

    class DDetect(nn.Module):
        """WongKinYiu/yolov9 ``DDetect`` (``export=True``: the decoded tensor only)."""

        def __init__(self, nc, ch):
            super().__init__()
            self.nc, self.nl, self.reg_max = nc, len(ch), 16
            self.no = nc + self.reg_max * 4
            self.stride = torch.zeros(self.nl)
            c2 = max((ch[0] // 4, self.reg_max * 4, 16))
            c2 = math.ceil(c2 / 4) * 4  # make_divisible(..., 4)
            c3 = max((ch[0], min((nc * 2, 128))))
            self.cv2 = nn.ModuleList(nn.Sequential(Conv(x, c2, 3), Conv(c2, c2, 3, g=4),
                                                   nn.Conv2d(c2, 4 * self.reg_max, 1, groups=4)) for x in ch)
            self.cv3 = nn.ModuleList(nn.Sequential(Conv(x, c3, 3), Conv(c3, c3, 3), nn.Conv2d(c3, nc, 1)) for x in ch)
            self.dfl = DFL(self.reg_max)

        def decode(self, x, cv2, cv3, dfl, anchor_feats=None):
            shape = x[0].shape
            d = [torch.cat((cv2[i](x[i]), cv3[i](x[i])), 1) for i in range(self.nl)]
            anchors, strides = (a.transpose(0, 1) for a in make_anchors(anchor_feats or d, self.stride, 0.5))
            box, cls = torch.cat([di.view(shape[0], self.no, -1) for di in d], 2).split((self.reg_max * 4, self.nc), 1)
            dbox = dist2bbox(dfl(box), anchors.unsqueeze(0)) * strides
            return torch.cat((dbox, cls.sigmoid()), 1), d

        def forward(self, x):
            return self.decode(x, self.cv2, self.cv3, self.dfl)[0]

    class DualDDetect(DDetect):
        """WongKinYiu/yolov9 ``DualDDetect``: ``x = [A3, A4, A5, P3, P4, P5]``; ``d1`` (cv2/cv3) on the auxiliary
        maps, ``d2`` (cv4/cv5) on the main ones, both decoded with ``d1``'s anchors; returns ``[y1, y2]``."""

        def __init__(self, nc, ch):
            super().__init__(nc, ch[: len(ch) // 2])
            self.cv4, self.cv5 = (self._copy(self.cv2), self._copy(self.cv3))
            self.dfl2 = DFL(self.reg_max)

        @staticmethod
        def _copy(mods):
            import copy

            new = copy.deepcopy(mods)
            for p in new.parameters():
                p.data.normal_(0, 0.1)
            return new

        def forward(self, x):
            y1, d1 = self.decode(x[: self.nl], self.cv2, self.cv3, self.dfl)
            y2, _ = self.decode(x[self.nl:], self.cv4, self.cv5, self.dfl2, anchor_feats=d1)
            return [y1, y2]

    return Detect, V10Detect, DDetect, DualDDetect


def build(family: str, nc: int = 80):
    """The ``family`` network (one of :data:`FAMILIES`) in eval mode, fixed seed, strides set."""
    m = _modules()
    torch, nn, Conv = m["torch"], m["nn"], m["Conv"]
    Detect, V10Detect, DDetect, DualDDetect = _heads(m)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(Conv(3, 8, 3, 2), Conv(8, 16, 3, 2))
            if family == "yolov8":
                b = [m["C2f"](16, 16, 1, True), Conv(16, 32, 3, 2), m["C2f"](32, 32, 1, True), Conv(32, 48, 3, 2),
                     m["C2f"](48, 48, 1, True), Conv(48, 64, 3, 2), m["C2f"](64, 64, 1, True), m["SPPF"](64, 64)]
                taps, ch, head = (2, 4, 7), (32, 48, 64), Detect(nc, (32, 48, 64), legacy=True)
            elif family == "yolo11":
                C3k2 = m["C3k2"]
                b = [C3k2(16, 16, 1, False, 0.25), Conv(16, 32, 3, 2), C3k2(32, 32, 1, False, 0.25),
                     Conv(32, 48, 3, 2), C3k2(48, 48, 1, True), Conv(48, 128, 3, 2), C3k2(128, 128, 1, True),
                     m["SPPF"](128, 128), m["C2PSA"](128, 128, 1)]
                taps, ch = (2, 4, 8), (32, 48, 128)
                head = Detect(nc, ch, legacy=False)
            elif family == "yolov10":
                b = [m["C2f"](16, 16, 1, True), Conv(16, 32, 3, 2), m["C2f"](32, 32, 1, True),
                     m["SCDown"](32, 48, 3, 2), m["C2f"](48, 48, 1, True), m["SCDown"](48, 128, 3, 2),
                     m["C2f"](128, 128, 1, True),
                     m["SPPF"](128, 128), m["PSA"](128, 128)]
                taps, ch = (2, 4, 8), (32, 48, 128)
                head = V10Detect(nc, ch)
            elif family == "yolov9t":  # Ultralytics cfg/models/v9/yolov9t.yaml's blocks
                E, A = m["RepNCSPELAN4"], m["AConv"]
                b = [m["ELAN1"](16, 16, 16, 8), A(16, 32), E(32, 32, 32, 16, 1), A(32, 48), E(48, 48, 48, 24, 1),
                     A(48, 64), E(64, 64, 64, 32, 1), m["SPPELAN"](64, 64, 32)]
                taps, ch, head = (2, 4, 7), (32, 48, 64), Detect(nc, (32, 48, 64), legacy=True)
            else:  # WongKinYiu gelan-c style: RepNCSPELAN4 + ADown, DDetect (or DualDDetect)
                E, A = m["RepNCSPELAN4"], m["ADown"]
                b = [E(16, 16, 16, 8, 1), A(16, 32), E(32, 32, 32, 16, 1), A(32, 48), E(48, 48, 48, 24, 1),
                     A(48, 64), E(64, 64, 64, 32, 1), m["SPPELAN"](64, 64, 32)]
                taps, ch = (2, 4, 7), (32, 48, 64)
                head = DualDDetect(nc, ch + ch) if family == "dual" else DDetect(nc, ch)
                if family == "dual":  # the auxiliary branch: its own convs on the backbone maps
                    self.aux = nn.ModuleList(nn.Sequential(Conv(c, c, 3), Conv(c, c, 1)) for c in ch)
            self.body = nn.ModuleList(b)
            self.taps, self.head = taps, head

        def forward(self, x):
            x = self.stem(x)
            feats = []
            for i, blk in enumerate(self.body):
                x = blk(x)
                if i in self.taps[:2]:
                    feats.append(x)
            feats.append(x)
            if hasattr(self, "aux"):
                feats = [a(f) for a, f in zip(self.aux, feats)] + feats
            return self.head(feats)

    def make():
        net = Net()
        net.head.stride = torch.tensor([8.0, 16.0, 32.0])
        for p in net.parameters():
            p.requires_grad = False
        return net.eval()

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEEDS[family])
        return make()


def export(family: str, path, *, size=(320, 320), nc: int = 80, dynamo: bool = False) -> Path:
    """Export the ``family`` network to ``path`` as its project's exporter does (see the module docstring)."""
    import onnx
    import torch

    path = Path(path)
    model = build(family, nc)
    im = torch.zeros(1, 3, *size)
    ultralytics = family in ("yolov8", "yolo11", "yolov10", "yolov9t")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model(im)
        if dynamo:
            torch.onnx.export(model, (im,), str(path), dynamo=True, external_data=True, optimize=True, verbose=False,
                              input_names=["images"], output_names=["output0"], opset_version=18)
        else:
            torch.onnx.export(model, im, str(path), verbose=False, opset_version=18 if ultralytics else 12,
                              do_constant_folding=True, input_names=["images"], output_names=["output0"],
                              dynamo=False)
    if dynamo:
        return path
    if ultralytics:
        try:
            import onnxslim
        except ImportError:  # Ultralytics skips the slimming when it is unavailable
            return path
        onnx.save(onnxslim.slim(onnx.load(str(path))), str(path))
    return path
