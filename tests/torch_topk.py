"""Genuine torch exports of tiny YOLO26 and YOLOv10 heads: one-to-many, and NMS-free (top-k) end to end.

The head is Ultralytics 8.4's ``ultralytics/nn/modules/head.py::Detect`` with ``end2end=True`` (a deep copy
of ``cv2``/``cv3`` as ``one2one_cv2``/``one2one_cv3``), reproduced line for line in its eval/export path:

- ``forward``: the one-to-many ``forward_head``, and with ``end2end`` the one-to-one one on detached
  features; ``_inference`` of the one-to-one predictions, then ``postprocess(y.permute(0, 2, 1))``.
- ``decode_bboxes``: ``dist2bbox(..., xywh=xywh and not self.end2end and not self.xyxy, dim=1)``, so an
  end-to-end export decodes x1, y1, x2, y2 (input pixels).
- ``postprocess`` / ``get_topk_index`` (8.4): ``k = max_det if self.export else min(max_det, anchors)``;
  ``scores.max(-1)[0].topk(k)``, ``gather`` of the scores, ``flatten(1).topk(k)``, ``index // nc`` into the
  first selection, ``index % nc`` as the class, ``boxes.gather`` last.
- ``postprocess="v10"``: THU-MIG/yolov10 ``ultralytics/utils/ops.py::v10postprocess`` (boxes and scores
  gathered after the first TopK, ``index % nc`` / ``index // nc``, boxes gathered again), as
  ``v10Detect.forward`` calls it when exporting.

YOLO26: ``reg_max=1`` (no DFL: ``self.dfl`` is ``nn.Identity``, 4 box channels); the cls branch is the
8.4 default (``legacy`` False): two ``DWConv`` + ``Conv`` pairs, then ``Conv2d(c3, nc, 1)``. YOLOv10: DFL with
16 bins. ``end2end=False`` for an export (Ultralytics 8.4's default ``nms`` unset for YOLO26) gives the
one-to-many channel-first ``(1, 4+nc, N)`` output, boxes cx, cy, w, h.

Exported as ``engine/exporter.py`` does (``export=True``, ``format='onnx'``, ``do_constant_folding=True``,
'images' -> 'output0', ``dynamo=False``, then onnxslim), at opset 12 or 18; ``dynamo=True`` uses torch's new
exporter (see :func:`torch_families._dynamo_export`). Widths are narrowed; weights random with a fixed seed.
"""

from __future__ import annotations

import copy
import math
import warnings
from pathlib import Path

from torch_families import STRIDES, WIDTHS, _blocks, _dynamo_export, _finish_ultralytics, _seeded

SEED = 20260114


def build(nc: int = 80, reg_max: int = 1, end2end: bool = True, postprocess: str = "8.4", max_det: int = 300):
    """Backbone + Ultralytics 8.4 ``Detect`` (``reg_max`` 1: YOLO26; 16: YOLOv10's head), eval mode."""
    torch, nn, _, Conv, Backbone = _blocks()

    def make_anchors(feats, strides, grid_cell_offset=0.5):
        """ultralytics/utils/tal.py::make_anchors."""
        anchor_points, stride_tensor = [], []
        dtype, device = feats[0].dtype, feats[0].device
        for i, stride in enumerate(strides):
            h, w = feats[i].shape[2:]
            sx = torch.arange(end=w, device=device, dtype=dtype) + grid_cell_offset
            sy = torch.arange(end=h, device=device, dtype=dtype) + grid_cell_offset
            sy, sx = torch.meshgrid(sy, sx, indexing="ij")
            anchor_points.append(torch.stack((sx, sy), -1).view(-1, 2))
            stride_tensor.append(torch.full((h * w, 1), stride, dtype=dtype, device=device))
        return torch.cat(anchor_points), torch.cat(stride_tensor)

    def dist2bbox(distance, anchor_points, xywh=True, dim=-1):
        """ultralytics/utils/tal.py::dist2bbox."""
        lt, rb = distance.chunk(2, dim)
        x1y1 = anchor_points - lt
        x2y2 = anchor_points + rb
        if xywh:
            return torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), dim)
        return torch.cat((x1y1, x2y2), dim)

    class DFL(nn.Module):
        def __init__(self, c1=16):
            super().__init__()
            self.conv = nn.Conv2d(c1, 1, 1, bias=False).requires_grad_(False)
            self.conv.weight.data[:] = torch.arange(c1, dtype=torch.float).view(1, c1, 1, 1)
            self.c1 = c1

        def forward(self, x):
            b, _, a = x.shape
            return self.conv(x.view(b, 4, self.c1, a).transpose(2, 1).softmax(1)).view(b, 4, a)

    class DWConv(Conv):
        def __init__(self, c1, c2, k=1):
            super().__init__(c1, c2, k)
            self.conv = nn.Conv2d(c1, c2, k, 1, k // 2, groups=math.gcd(c1, c2), bias=True)

    class Detect(nn.Module):
        dynamic = False
        export = False
        format = None
        max_det = 300
        shape = None
        anchors = torch.empty(0)
        strides = torch.empty(0)
        xyxy = False

        def __init__(self, nc=80, reg_max=16, end2end=False, ch=()):
            super().__init__()
            self.nc, self.nl, self.reg_max = nc, len(ch), reg_max
            self.no = nc + reg_max * 4
            self.stride = torch.zeros(self.nl)
            c3 = 16  # upstream max(ch[0], min(nc, 100)); narrowed
            self.cv2 = nn.ModuleList(nn.Sequential(Conv(x, 16, 3), Conv(16, 16, 3), nn.Conv2d(16, 4 * reg_max, 1))
                                     for x in ch)
            self.cv3 = nn.ModuleList(nn.Sequential(nn.Sequential(DWConv(x, x, 3), Conv(x, c3, 1)),
                                                   nn.Sequential(DWConv(c3, c3, 3), Conv(c3, c3, 1)),
                                                   nn.Conv2d(c3, nc, 1)) for x in ch)
            self.dfl = DFL(reg_max) if reg_max > 1 else nn.Identity()
            self._end2end = end2end
            if end2end:
                self.one2one_cv2 = copy.deepcopy(self.cv2)
                self.one2one_cv3 = copy.deepcopy(self.cv3)

        @property
        def end2end(self):
            return self._end2end and hasattr(self, "one2one_cv2")

        def forward_head(self, x, box_head, cls_head):
            bs = x[0].shape[0]
            boxes = torch.cat([box_head[i](x[i]).view(bs, 4 * self.reg_max, -1) for i in range(self.nl)], dim=-1)
            scores = torch.cat([cls_head[i](x[i]).view(bs, self.nc, -1) for i in range(self.nl)], dim=-1)
            return dict(boxes=boxes, scores=scores, feats=x)

        def forward(self, x):
            preds = self.forward_head(x, self.cv2, self.cv3)
            if self.end2end:
                one2one = self.forward_head([xi.detach() for xi in x], self.one2one_cv2, self.one2one_cv3)
                preds = {"one2many": preds, "one2one": one2one}
            y = self._inference(preds["one2one"] if self.end2end else preds)
            if self.end2end:
                y = self.postprocess(y.permute(0, 2, 1))
            return y

        def _inference(self, x):
            shape = x["feats"][0].shape
            if self.dynamic or self.shape != shape:
                self.anchors, self.strides = (a.transpose(0, 1) for a in make_anchors(x["feats"], self.stride, 0.5))
                self.shape = shape
            dbox = dist2bbox(self.dfl(x["boxes"]), self.anchors.unsqueeze(0),
                             xywh=not self.end2end and not self.xyxy, dim=1) * self.strides
            return torch.cat((dbox, x["scores"].sigmoid()), 1)

        def postprocess(self, preds):
            if postprocess == "v10":  # THU-MIG/yolov10 ops.v10postprocess
                boxes, scores = preds.split([4, self.nc], dim=-1)
                max_scores = scores.amax(dim=-1)
                max_scores, index = torch.topk(max_scores, self.max_det, dim=-1)
                index = index.unsqueeze(-1)
                boxes = torch.gather(boxes, dim=1, index=index.repeat(1, 1, boxes.shape[-1]))
                scores = torch.gather(scores, dim=1, index=index.repeat(1, 1, scores.shape[-1]))
                scores, index = torch.topk(scores.flatten(1), self.max_det, dim=-1)
                labels = index % self.nc
                index = index // self.nc
                boxes = boxes.gather(dim=1, index=index.unsqueeze(-1).repeat(1, 1, boxes.shape[-1]))
                return torch.cat([boxes, scores.unsqueeze(-1), labels.unsqueeze(-1).to(boxes.dtype)], dim=-1)
            boxes, scores = preds.split([4, self.nc], dim=-1)
            scores, conf, idx = self.get_topk_index(scores, self.max_det)
            boxes = boxes.gather(dim=1, index=idx.repeat(1, 1, 4))
            return torch.cat([boxes, scores, conf], dim=-1)

        def get_topk_index(self, scores, max_det):
            batch_size, anchors, nc = scores.shape
            k = max_det if self.export else min(max_det, anchors)
            ori_index = scores.max(dim=-1)[0].topk(k)[1].unsqueeze(-1)
            scores = scores.gather(dim=1, index=ori_index.repeat(1, 1, nc))
            scores, index = scores.flatten(1).topk(k)
            idx = ori_index[torch.arange(batch_size)[..., None], index // nc]
            return scores[..., None], (index % nc)[..., None].float(), idx

        def bias_init(self):
            heads = [(self.cv2, self.cv3)] + ([(self.one2one_cv2, self.one2one_cv3)] if self.end2end else [])
            for box_head, cls_head in heads:
                for i, (a, b) in enumerate(zip(box_head, cls_head)):
                    a[-1].bias.data[:] = 2.0 if reg_max > 1 else 1.0
                    b[-1].bias.data[: self.nc] = math.log(5 / self.nc / (640 / self.stride[i]) ** 2)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = Backbone()
            self.detect = Detect(nc, reg_max, end2end, WIDTHS)
            m, s = self.detect, 256
            with torch.no_grad():
                m.stride = torch.tensor([s / f.shape[-2] for f in self.backbone(torch.zeros(1, 3, s, s))])
            m.bias_init()
            m.max_det = max_det

        def forward(self, x):
            return self.detect(self.backbone(x))

    assert len(STRIDES) == 3
    return _seeded(Model, SEED + reg_max + 2 * end2end)


def export(path, *, size=(320, 320), nc: int = 80, reg_max: int = 1, end2end: bool = True,
           postprocess: str = "8.4", opset: int = 18, slim: bool = True, dynamo: bool = False,
           max_det: int = 300) -> Path:
    """Export the fixture to ``path`` as Ultralytics' ``Exporter`` (format='onnx') does; return the path."""
    import torch

    path = Path(path)
    model = build(nc, reg_max, end2end, postprocess, max_det)
    for p in model.parameters():
        p.requires_grad = False
    model.eval()
    det = model.detect
    det.export, det.format = True, "onnx"
    im = torch.zeros(1, 3, *size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(2):
            model(im)
        if dynamo:
            _dynamo_export(model, im, path, opset=opset, input_name="images", output_name="output0")
        else:
            torch.onnx.export(model, im, str(path), verbose=False, opset_version=opset, do_constant_folding=True,
                              input_names=["images"], output_names=["output0"], dynamo=False)
    meta = {"description": "Ultralytics tiny fixture", "author": "Ultralytics", "stride": 32, "task": "detect",
            "batch": 1, "imgsz": list(size), "names": {i: str(i) for i in range(nc)}, "end2end": end2end}
    return _finish_ultralytics(path, meta, dynamo, slim)
