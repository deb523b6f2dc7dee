"""Tiny torch Ultralytics task heads: ``Pose`` and ``OBB``, written from upstream (8.4)
``ultralytics/nn/modules/head.py`` and ``ultralytics/utils/tal.py``:

- ``Pose(Detect)``: a third branch per level ``cv4 = Conv(x, c4, 3) → Conv(c4, c4, 3) → Conv2d(c4, nk, 1)``
  (``c4 = max(ch[0] // 4, nk)``, ``nk = kpt_shape[0] * kpt_shape[1]``); the export path of ``kpts_decode``::

      y = kpts.view(bs, *kpt_shape, -1)
      a = (y[:, :, :2] * 2.0 + (anchors - 0.5)) * strides
      if ndim == 3: a = torch.cat((a, y[:, :, 2:3].sigmoid()), 2)
      return a.view(bs, nk, -1)

  output ``torch.cat([dbox, cls.sigmoid(), kpts], 1)`` = ``(1, 4 + nc + nk, N)``.
- ``OBB(Detect)``: ``cv4`` of ``ne = 1`` channel; ``angle = (angle.sigmoid() - 0.25) * pi``; the boxes through
  ``dist2rbox(dfl(boxes), angle, anchors, dim=1) * strides``::

      lt, rb = pred_dist.split(2, dim); cos, sin = cos(angle), sin(angle)
      xf, yf = ((rb - lt) / 2).split(1, dim); x, y = xf * cos - yf * sin, xf * sin + yf * cos
      xy = cat([x, y], dim) + anchor_points; return cat([xy, lt + rb], dim)

  output ``torch.cat([dbox, cls.sigmoid(), angle], 1)`` = ``(1, 4 + nc + 1, N)``.

The backbone is the YOLOv8 one of :mod:`torch_ultralytics` (C2f + SPPF, strides 8, 16, 32, no neck) with
``Detect``'s ``legacy`` class branch, or with ``yolo11=True`` YOLO11's (C3k2, SPPF, C2PSA; the depthwise class
branch). Exports as Ultralytics' exporter
(legacy exporter, opset 18, constant folding, then onnxslim; ``task`` in the metadata) or with ``dynamo=True``.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

SEEDS = {"pose": 20230410, "obb": 20240105}


def build(task: str, nc: int = 1, kpt_shape=(17, 3), yolo11: bool = False):
    """The ``task`` ("pose" or "obb") network, eval mode, fixed seed, strides 8, 16, 32."""
    import torch
    from torch import nn
    from torch_ultralytics import _heads, _modules

    m = _modules()
    Conv = m["Conv"]
    Detect = _heads(m)[0]

    def make_anchors(feats, strides, offset=0.5):
        points, stride_tensor = [], []
        for i, stride in enumerate(strides):
            h, w = feats[i].shape[2:]
            sx = torch.arange(end=w, dtype=feats[0].dtype) + offset
            sy = torch.arange(end=h, dtype=feats[0].dtype) + offset
            sy, sx = torch.meshgrid(sy, sx, indexing="ij")
            points.append(torch.stack((sx, sy), -1).view(-1, 2))
            stride_tensor.append(torch.full((h * w, 1), stride, dtype=feats[0].dtype))
        return torch.cat(points), torch.cat(stride_tensor)

    def dist2bbox(distance, anchor_points, dim=1):
        lt, rb = distance.chunk(2, dim)
        x1y1, x2y2 = anchor_points - lt, anchor_points + rb
        return torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), dim)

    def dist2rbox(pred_dist, pred_angle, anchor_points, dim=-1):
        lt, rb = pred_dist.split(2, dim=dim)
        cos, sin = torch.cos(pred_angle), torch.sin(pred_angle)
        xf, yf = ((rb - lt) / 2).split(1, dim=dim)
        x, y = xf * cos - yf * sin, xf * sin + yf * cos
        xy = torch.cat([x, y], dim=dim) + anchor_points
        return torch.cat([xy, lt + rb], dim=dim)

    class TaskHead(Detect):
        def __init__(self, nc, ch, extra):
            super().__init__(nc, ch, legacy=not yolo11)
            c4 = max(ch[0] // 4, extra)
            self.cv4 = nn.ModuleList(nn.Sequential(Conv(x, c4, 3), Conv(c4, c4, 3), nn.Conv2d(c4, extra, 1))
                                     for x in ch)

        def parts(self, x):
            bs = x[0].shape[0]
            boxes = torch.cat([self.cv2[i](x[i]).view(bs, 4 * self.reg_max, -1) for i in range(self.nl)], -1)
            scores = torch.cat([self.cv3[i](x[i]).view(bs, self.nc, -1) for i in range(self.nl)], -1)
            extra = torch.cat([self.cv4[i](x[i]).view(bs, self.cv4[i][-1].out_channels, -1)
                               for i in range(self.nl)], 2)
            anchors, strides = (a.transpose(0, 1) for a in make_anchors(x, self.stride, 0.5))
            return boxes, scores, extra, anchors, strides

    class Pose(TaskHead):
        def __init__(self, nc, ch, kpt_shape):
            self.kpt_shape = tuple(kpt_shape)
            self.nk = kpt_shape[0] * kpt_shape[1]
            super().__init__(nc, ch, self.nk)

        def forward(self, x):
            boxes, scores, kpts, anchors, strides = self.parts(x)
            dbox = dist2bbox(self.dfl(boxes), anchors.unsqueeze(0)) * strides
            bs = kpts.shape[0]
            y = kpts.view(bs, *self.kpt_shape, -1)
            a = (y[:, :, :2] * 2.0 + (anchors - 0.5)) * strides
            if self.kpt_shape[1] == 3:
                a = torch.cat((a, y[:, :, 2:3].sigmoid()), 2)
            return torch.cat([dbox, scores.sigmoid(), a.view(bs, self.nk, -1)], 1)

    class OBB(TaskHead):
        def __init__(self, nc, ch):
            super().__init__(nc, ch, 1)

        def forward(self, x):
            boxes, scores, angle, anchors, strides = self.parts(x)
            angle = (angle.sigmoid() - 0.25) * math.pi
            dbox = dist2rbox(self.dfl(boxes), angle, anchors.unsqueeze(0), dim=1) * strides
            return torch.cat([dbox, scores.sigmoid(), angle], 1)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(Conv(3, 8, 3, 2), Conv(8, 16, 3, 2))
            if yolo11:  # torch_ultralytics' YOLO11 backbone (attention needs 128 channels: one head)
                C3k2 = m["C3k2"]
                self.body = nn.ModuleList([C3k2(16, 16, 1, False, 0.25), Conv(16, 32, 3, 2),
                                           C3k2(32, 32, 1, False, 0.25), Conv(32, 48, 3, 2), C3k2(48, 48, 1, True),
                                           Conv(48, 128, 3, 2), C3k2(128, 128, 1, True), m["SPPF"](128, 128),
                                           m["C2PSA"](128, 128, 1)])
                ch = (32, 48, 128)
            else:
                self.body = nn.ModuleList([m["C2f"](16, 16, 1, True), Conv(16, 32, 3, 2), m["C2f"](32, 32, 1, True),
                                           Conv(32, 48, 3, 2), m["C2f"](48, 48, 1, True), Conv(48, 64, 3, 2),
                                           m["C2f"](64, 64, 1, True), m["SPPF"](64, 64)])
                ch = (32, 48, 64)
            self.head = Pose(nc, ch, kpt_shape) if task == "pose" else OBB(nc, ch)

        def forward(self, x):
            x = self.stem(x)
            feats = []
            for i, blk in enumerate(self.body):
                x = blk(x)
                if i in (2, 4):
                    feats.append(x)
            feats.append(x)
            return self.head(feats)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEEDS[task])
        net = Net()
        net.head.stride = torch.tensor([8.0, 16.0, 32.0])
        with torch.no_grad():  # upstream's bias_init, and spread so that some anchors score and keypoints scatter
            for a, b in zip(net.head.cv2, net.head.cv3):
                a[-1].bias.data[:] = 2.0
                b[-1].bias.data[:] = -1.0
        for p in net.parameters():
            p.requires_grad = False
        return net.eval()


def export(task: str, path, *, size=(256, 256), nc: int = 1, kpt_shape=(17, 3), dynamo: bool = False,
           yolo11: bool = False, dynamic_hw: bool = False) -> Path:
    """Export the ``task`` network to ``path`` as Ultralytics' exporter does (see the module docstring);
    ``dynamic_hw``: its ``dynamic=True`` (legacy exporter: batch, height, width and anchors symbolic; the
    anchors are made in the graph from the feature-map shapes, as ``Detect.dynamic`` does)."""
    import torch
    from torch_families import _dynamo_export, _finish_ultralytics

    path = Path(path)
    model = build(task, nc, kpt_shape, yolo11)
    im = torch.zeros(1, 3, *size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model(im)
        if dynamo:
            _dynamo_export(model, im, path, opset=18, input_name="images", output_name="output0")
        else:
            axes = {"images": {0: "batch", 2: "height", 3: "width"}, "output0": {0: "batch", 2: "anchors"}} \
                if dynamic_hw else None
            torch.onnx.export(model, im, str(path), verbose=False, opset_version=18, do_constant_folding=True,
                              input_names=["images"], output_names=["output0"], dynamic_axes=axes, dynamo=False)
    meta = {"description": f"Ultralytics YOLOv8-{task} tiny fixture", "author": "Ultralytics", "stride": 32,
            "task": task, "batch": 1, "imgsz": list(size), "names": {i: str(i) for i in range(nc)}}
    if task == "pose":
        meta["kpt_shape"] = list(kpt_shape)
    return _finish_ultralytics(path, meta, dynamo, slim=True)
