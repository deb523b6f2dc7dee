"""torch exports of the YOLOv7 fixture (``torch_families.build_yolov7``) without ``--grid`` and with ``--end2end``.

- ``export_yolov7_raw``: WongKinYiu/yolov7 ``export.py`` without ``--grid``: ``Detect.export = True``, so
  ``forward`` sets ``self.training |= self.export`` and returns ``x``, the three maps viewed
  ``(bs, na, no, ny, nx)`` and permuted to ``(bs, na, ny, nx, no)`` (``IDetect.fuseforward`` after ``fuse()``
  is the same code); ``torch.onnx.export(..., opset_version=12, input_names=['images'],
  output_names=['output'])``: only the first output is named, the other two keep torch's numbers.
- ``export_yolov7_end2end``: ``export.py --grid --end2end [--max-wh N] [--dynamic-batch]``: ``End2End``
  (``models/experimental.py``) sets ``Detect.end2end`` (decoded ``torch.cat(z, 1)``, (1, N, 85)) and wraps it in
  ``ONNX_ORT`` (``--max-wh`` given: ``scores *= conf``, ``boxes @= convert_matrix``, ``scores.max(2)``,
  ``NonMaxSuppression``, gathers, output ``(n, 7)``) or ``ONNX_TRT`` (``TRT::EfficientNMS_TRT``, four outputs).
  ``--dynamic-batch`` labels axis 0 of the input and outputs ``batch``.

The NMS ``autograd.Function``s are upstream's, with ``symbolic`` writing the ONNX op; ``forward`` returns
placeholders as upstream's do. torch is imported lazily.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch_families


def _dynamo(model, img, path, output_names, opset=18):
    import torch

    torch.onnx.export(model, (img,), str(path), dynamo=True, external_data=True, optimize=True, verbose=False,
                      input_names=["images"], output_names=output_names, opset_version=max(opset, 18))


def export_yolov7_raw(path, *, size=(320, 320), nc: int = 80, opset: int = 12, dynamo: bool = False,
                      dynamic_batch: bool = False) -> Path:
    """``export.py`` without ``--grid``: three 5-D raw outputs, the first named 'output'; ``dynamic_batch``:
    ``--dynamic-batch`` (axis 0 of 'images' and 'output' labelled 'batch'; legacy exporter only)."""
    import onnx
    import torch

    path = Path(path)
    model = torch_families.build_yolov7(nc).eval()
    model.detect.export = True  # not opt.grid
    img = torch.zeros(1, 3, *size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model(img)  # dry run
        if dynamo:
            _dynamo(model, img, path, ["output"], opset)
        else:
            axes = {"images": {0: "batch"}, "output": {0: "batch"}} if dynamic_batch else None
            torch.onnx.export(model, img, str(path), verbose=False, opset_version=opset, input_names=["images"],
                              output_names=["output"], dynamic_axes=axes, dynamo=False)
    onnx.checker.check_model(str(path))
    return path


def _nms_wrappers():
    """``models/experimental.py``'s ORT_NMS, TRT_NMS, ONNX_ORT, ONNX_TRT (YOLOv7) and YOLOv9's ONNX_TRT."""
    import random

    import torch
    from torch import nn

    class ORT_NMS(torch.autograd.Function):
        """ONNX-Runtime NMS operation"""

        @staticmethod
        def forward(ctx, boxes, scores, max_output_boxes_per_class=torch.tensor([100]),
                    iou_threshold=torch.tensor([0.45]), score_threshold=torch.tensor([0.25])):
            device = boxes.device
            batch = scores.shape[0]
            num_det = random.randint(0, 100)
            batches = torch.randint(0, batch, (num_det,)).sort()[0].to(device)
            idxs = torch.arange(100, 100 + num_det).to(device)
            zeros = torch.zeros((num_det,), dtype=torch.int64).to(device)
            selected_indices = torch.cat([batches[None], zeros[None], idxs[None]], 0).T.contiguous()
            return selected_indices.to(torch.int64)

        @staticmethod
        def symbolic(g, boxes, scores, max_output_boxes_per_class, iou_threshold, score_threshold):
            return g.op("NonMaxSuppression", boxes, scores, max_output_boxes_per_class, iou_threshold,
                        score_threshold)

    class TRT_NMS(torch.autograd.Function):
        """TensorRT NMS operation"""

        @staticmethod
        def forward(ctx, boxes, scores, background_class=-1, box_coding=1, iou_threshold=0.45, max_output_boxes=100,
                    plugin_version="1", score_activation=0, score_threshold=0.25):
            batch_size, num_boxes, num_classes = scores.shape
            num_det = torch.randint(0, max_output_boxes, (batch_size, 1), dtype=torch.int32)
            det_boxes = torch.randn(batch_size, max_output_boxes, 4)
            det_scores = torch.randn(batch_size, max_output_boxes)
            det_classes = torch.randint(0, num_classes, (batch_size, max_output_boxes), dtype=torch.int32)
            return num_det, det_boxes, det_scores, det_classes

        @staticmethod
        def symbolic(g, boxes, scores, background_class=-1, box_coding=1, iou_threshold=0.45, max_output_boxes=100,
                     plugin_version="1", score_activation=0, score_threshold=0.25):
            out = g.op("TRT::EfficientNMS_TRT", boxes, scores, background_class_i=background_class,
                       box_coding_i=box_coding, iou_threshold_f=iou_threshold, max_output_boxes_i=max_output_boxes,
                       plugin_version_s=plugin_version, score_activation_i=score_activation,
                       score_threshold_f=score_threshold, outputs=4)
            nums, boxes, scores, classes = out
            return nums, boxes, scores, classes

    class ONNX_ORT(nn.Module):
        """onnx module with ONNX-Runtime NMS operation (YOLOv7)."""

        def __init__(self, max_obj=100, iou_thres=0.45, score_thres=0.25, max_wh=640, device=None, n_classes=80):
            super().__init__()
            self.device = device if device else torch.device("cpu")
            self.max_obj = torch.tensor([max_obj]).to(device)
            self.iou_threshold = torch.tensor([iou_thres]).to(device)
            self.score_threshold = torch.tensor([score_thres]).to(device)
            self.max_wh = max_wh
            self.convert_matrix = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 1], [-0.5, 0, 0.5, 0], [0, -0.5, 0, 0.5]],
                                               dtype=torch.float32, device=self.device)
            self.n_classes = n_classes

        def forward(self, x):
            boxes = x[:, :, :4]
            conf = x[:, :, 4:5]
            scores = x[:, :, 5:]
            if self.n_classes == 1:
                scores = conf
            else:
                scores *= conf  # conf = obj_conf * cls_conf
            boxes @= self.convert_matrix
            max_score, category_id = scores.max(2, keepdim=True)
            dis = category_id.float() * self.max_wh
            nmsbox = boxes + dis
            max_score_tp = max_score.transpose(1, 2).contiguous()
            selected_indices = ORT_NMS.apply(nmsbox, max_score_tp, self.max_obj, self.iou_threshold,
                                             self.score_threshold)
            X, Y = selected_indices[:, 0], selected_indices[:, 2]
            selected_boxes = boxes[X, Y, :]
            selected_categories = category_id[X, Y, :].float()
            selected_scores = max_score[X, Y, :]
            X = X.unsqueeze(1).float()
            return torch.cat([X, selected_boxes, selected_categories, selected_scores], 1)

    class ONNX_TRT(nn.Module):
        """onnx module with TensorRT NMS operation (YOLOv7)."""

        def __init__(self, max_obj=100, iou_thres=0.45, score_thres=0.25, max_wh=None, device=None, n_classes=80):
            super().__init__()
            assert max_wh is None
            self.background_class = -1,
            self.box_coding = 1,
            self.iou_threshold = iou_thres
            self.max_obj = max_obj
            self.plugin_version = "1"
            self.score_activation = 0
            self.score_threshold = score_thres
            self.n_classes = n_classes

        def forward(self, x):
            boxes = x[:, :, :4]
            conf = x[:, :, 4:5]
            scores = x[:, :, 5:]
            if self.n_classes == 1:
                scores = conf
            else:
                scores *= conf  # conf = obj_conf * cls_conf
            return TRT_NMS.apply(boxes, scores, self.background_class, self.box_coding, self.iou_threshold,
                                 self.max_obj, self.plugin_version, self.score_activation, self.score_threshold)

    class ONNX_TRT_V9(ONNX_TRT):
        """WongKinYiu/yolov9 ``models/experimental.py::ONNX_TRT``: channel-first (1, 4+nc, N) in, no objectness."""

        def forward(self, output):
            if isinstance(output, list):
                output = output[1]
            output = output.permute(0, 2, 1)
            bboxes_x = output[..., 0:1]
            bboxes_y = output[..., 1:2]
            bboxes_w = output[..., 2:3]
            bboxes_h = output[..., 3:4]
            bboxes = torch.cat([bboxes_x, bboxes_y, bboxes_w, bboxes_h], dim=-1)
            bboxes = bboxes.unsqueeze(2)  # [n_batch, n_bboxes, 4] -> [n_batch, n_bboxes, 1, 4]
            obj_conf = output[..., 4:]
            scores = obj_conf
            return TRT_NMS.apply(bboxes, scores, self.background_class, self.box_coding, self.iou_threshold,
                                 self.max_obj, self.plugin_version, self.score_activation, self.score_threshold)

    class End2End(nn.Module):
        """export onnx or tensorrt model with NMS operation."""

        def __init__(self, model, max_obj=100, iou_thres=0.45, score_thres=0.25, max_wh=None, device=None,
                     n_classes=80, v9=False):
            super().__init__()
            device = device if device else torch.device("cpu")
            self.model = model.to(device)
            self.model.detect.end2end = True
            self.patch_model = ONNX_TRT_V9 if v9 else ONNX_TRT if max_wh is None else ONNX_ORT
            self.end2end = self.patch_model(max_obj, iou_thres, score_thres, max_wh, device, n_classes)
            self.end2end.eval()

        def forward(self, x):
            return self.end2end(self.model(x))

    return End2End


TRT_OUTPUTS = ["num_dets", "det_boxes", "det_scores", "det_classes"]


def export_yolov7_end2end(path, *, size=(320, 320), nc: int = 80, max_wh: int | None = 640,
                          dynamic_batch: bool = False, topk_all: int = 100) -> Path:
    """YOLOv7 ``export.py --grid --end2end [--max-wh N] [--dynamic-batch]`` (legacy exporter, opset 12)."""
    import onnx
    import torch

    path = Path(path)
    model = torch_families.build_yolov7(nc).eval()
    model.detect.export = False  # not opt.grid
    img = torch.zeros(1, 3, *size)
    trt = max_wh is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model(img)  # dry run
        axes = None
        if dynamic_batch:
            axes = {"images": {0: "batch"}}
            axes.update({o: {0: "batch"} for o in TRT_OUTPUTS} if trt else {"output": {0: "batch"}})
        wrapped = _nms_wrappers()(model, topk_all, 0.45, 0.25, max_wh, None, nc)
        names = TRT_OUTPUTS if trt else ["output"]
        torch.onnx.export(wrapped, img, str(path), verbose=False, opset_version=12, input_names=["images"],
                          output_names=names, dynamic_axes=axes, dynamo=False)
    m = onnx.load(str(path))
    if trt:  # export.py writes the TRT outputs' shapes as dim_params
        shapes = ["batch" if dynamic_batch else 1, 1] + [("batch" if dynamic_batch else 1), topk_all, 4] + \
            [("batch" if dynamic_batch else 1), topk_all] * 2
        for o in m.graph.output:
            for d in o.type.tensor_type.shape.dim:
                d.dim_param = str(shapes.pop(0))
    onnx.save(m, str(path))
    return path


def build_gelan(nc: int = 80):
    """Backbone + WongKinYiu/yolov9 ``models/yolo.py::DDetect`` (the GELAN / converted YOLOv9 head): per level
    ``cat(cv2(x), cv3(x))`` (box tower ending in a grouped 1x1 conv of 64, class tower), DFL, ``make_anchors``
    (offset 0.5), ``dist2bbox(xywh)`` times the strides, sigmoid classes: ``(1, 4+nc, N)``."""
    import math

    import torch
    from torch import nn

    _, _, _, Conv, Backbone = torch_families._blocks()

    def make_anchors(feats, strides, grid_cell_offset=0.5):
        """utils/tal/anchor_generator.py::make_anchors."""
        anchor_points, stride_tensor = [], []
        dtype, device = feats[0].dtype, feats[0].device
        for i, stride in enumerate(strides):
            _, _, h, w = feats[i].shape
            sx = torch.arange(end=w, device=device, dtype=dtype) + grid_cell_offset  # shift x
            sy = torch.arange(end=h, device=device, dtype=dtype) + grid_cell_offset  # shift y
            sy, sx = torch.meshgrid(sy, sx, indexing="ij")
            anchor_points.append(torch.stack((sx, sy), -1).view(-1, 2))
            stride_tensor.append(torch.full((h * w, 1), stride, dtype=dtype, device=device))
        return torch.cat(anchor_points), torch.cat(stride_tensor)

    def dist2bbox(distance, anchor_points, xywh=True, dim=-1):
        lt, rb = torch.split(distance, 2, dim)
        x1y1 = anchor_points - lt
        x2y2 = anchor_points + rb
        if xywh:
            return torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), dim)
        return torch.cat((x1y1, x2y2), dim)

    class DFL(nn.Module):
        def __init__(self, c1=16):
            super().__init__()
            self.conv = nn.Conv2d(c1, 1, 1, bias=False).requires_grad_(False)
            self.conv.weight.data[:] = nn.Parameter(torch.arange(c1, dtype=torch.float).view(1, c1, 1, 1))
            self.c1 = c1

        def forward(self, x):
            b, c, a = x.shape  # batch, channels, anchors
            return self.conv(x.view(b, 4, self.c1, a).transpose(2, 1).softmax(1)).view(b, 4, a)

    class DDetect(nn.Module):
        dynamic = False  # force grid reconstruction
        export = False  # export mode
        shape = None
        anchors = torch.empty(0)  # init
        strides = torch.empty(0)  # init

        def __init__(self, nc=80, ch=()):
            super().__init__()
            self.nc = nc  # number of classes
            self.nl = len(ch)  # number of detection layers
            self.reg_max = 16
            self.no = nc + self.reg_max * 4  # number of outputs per anchor
            self.stride = torch.zeros(self.nl)  # strides computed during build
            c2 = 64  # make_divisible(max((ch[0] // 4, self.reg_max * 4, 16)), 4); c3 narrowed to ch
            self.cv2 = nn.ModuleList(nn.Sequential(Conv(x, c2, 3), nn.Conv2d(c2, c2, 3, 1, 1, groups=4), nn.SiLU(),
                                                   nn.Conv2d(c2, 4 * self.reg_max, 1, groups=4)) for x in ch)
            self.cv3 = nn.ModuleList(nn.Sequential(Conv(x, x, 3), Conv(x, x, 3), nn.Conv2d(x, self.nc, 1)) for x in ch)
            self.dfl = DFL(self.reg_max)

        def forward(self, x):
            shape = x[0].shape  # BCHW
            for i in range(self.nl):
                x[i] = torch.cat((self.cv2[i](x[i]), self.cv3[i](x[i])), 1)
            if self.training:
                return x
            elif self.dynamic or self.shape != shape:
                self.anchors, self.strides = (x.transpose(0, 1) for x in make_anchors(x, self.stride, 0.5))
                self.shape = shape
            box, cls = torch.cat([xi.view(shape[0], self.no, -1) for xi in x], 2).split((self.reg_max * 4, self.nc), 1)
            dbox = dist2bbox(self.dfl(box), self.anchors.unsqueeze(0), xywh=True, dim=1) * self.strides
            y = torch.cat((dbox, cls.sigmoid()), 1)
            return y if self.export else (y, x)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = Backbone()
            self.detect = m = DDetect(nc, torch_families.WIDTHS)
            m.stride = torch.tensor([8.0, 16.0, 32.0])
            for a, b, s in zip(m.cv2, m.cv3, m.stride):  # bias_init
                a[-1].bias.data[:] = 1.0  # box
                b[-1].bias.data[:m.nc] = math.log(5 / m.nc / (640 / s) ** 2)

        def forward(self, x):
            return self.detect(self.backbone(x))

    return torch_families._seeded(Model, 20240221)


def export_gelan_end2end(path, *, size=(320, 320), nc: int = 80, dynamic_batch: bool = True,
                         topk_all: int = 100, gelan_backbone: bool = False) -> Path:
    """WongKinYiu/yolov9 ``export.py --include onnx_end2end`` on a GELAN (``DDetect``) model: ``DDetect.export``,
    ``End2End`` with YOLOv9's ``ONNX_TRT`` (permute to (1, N, 4+nc), box slices, ``EfficientNMS_TRT``), opset 14
    (``export.py``'s default ``--opset``), four outputs with dim_params. Upstream also labels height and width
    dynamic; this fixture keeps them static (``dynamic_batch`` only: dynamic H/W are another part of #14).
    ``gelan_backbone``: the network of ``torch_ultralytics.build("gelan")`` (RepNCSPELAN4 + ADown, which names
    the family YOLOv9) instead of plain stride-2 convs (named only by its head, "WongKinYiu DDetect head")."""
    import onnx
    import torch

    path = Path(path)
    if gelan_backbone:
        import torch_ultralytics

        model = torch_ultralytics.build("gelan", nc)
        model.detect = model.head  # what End2End flags; its DDetect returns the decoded tensor only
    else:
        model = build_gelan(nc).eval()
        model.detect.export = True
    img = torch.zeros(1, 3, *size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model(img)  # dry run
        wrapped = _nms_wrappers()(model, topk_all, 0.45, 0.25, None, None, nc, v9=True)
        axes = {"images": {0: "batch"}, **{o: {0: "batch"} for o in TRT_OUTPUTS}} if dynamic_batch else None
        torch.onnx.export(wrapped, img, str(path), verbose=False, opset_version=14, input_names=["images"],
                          output_names=TRT_OUTPUTS, dynamic_axes=axes, dynamo=False)
    m = onnx.load(str(path))
    b = "batch" if dynamic_batch else 1
    shapes = [b, 1, b, topk_all, 4, b, topk_all, b, topk_all]
    for o in m.graph.output:
        for d in o.type.tensor_type.shape.dim:
            d.dim_param = str(shapes.pop(0))
    onnx.save(m, str(path))
    return path
