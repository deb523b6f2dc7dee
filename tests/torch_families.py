"""Genuine torch exports of tiny detectors with the heads of YOLOv5, YOLOv7, Ultralytics YOLOv8, YOLOX and
YOLOv6 0.3.0 (anchor-free).

Each network is small and random (fixed seed): a backbone of stride-2 ``Conv2d`` + SiLU stages gives
feature maps at strides 8, 16 and 32, and the head on top is the upstream head, whose eval/export
``forward`` is reproduced line for line. Each ``export_*`` function then prepares the model and
calls ``torch.onnx.export`` through the legacy TorchScript exporter (``dynamo=False``) the way that
project's own export script does, so the decode region is exactly what torch writes for real
users' files:

- YOLOv5 v7.0: ``models/yolo.py::Detect`` (``export``/``dynamic`` flags, ``_make_grid`` with the
  ``- 0.5`` offset), exported as ``export.py::export_onnx`` does: opset 12, ``do_constant_folding=True``,
  'images' -> 'output0', optionally ``onnxsim.simplify``.
- YOLOv7 (main): ``models/yolo.py::Detect`` as the ``cfg/deploy`` yamls use it (the same code as
  ``IDetect.fuseforward`` after ``fuse()``), exported as ``export.py --grid`` (no end2end/NMS) does:
  ``Detect.concat = True``, opset 12, 'images' -> 'output', optionally onnxsim. The onnx-export branch
  of the decode is taken (``torch.onnx.is_in_onnx_export()``).
- Ultralytics 8.4: ``ultralytics/nn/modules/head.py::Detect`` (``forward_head``: box and cls maps
  flattened and concatenated separately; ``_inference``; DFL; ``make_anchors`` with offset 0.5;
  ``dist2bbox``), exported as ``engine/exporter.py`` does: ``export=True``, ``format='onnx'``, opset 18,
  ``do_constant_folding=True``, ``dynamo=False``, then ``onnxslim.slim``.
- YOLOX 0.3.0: ``yolox/models/yolo_head.py::YOLOXHead`` (in-place ``decode_outputs``, hence ScatterND),
  exported as ``tools/export_onnx.py --decode_in_inference`` does: opset 11, 'images' -> 'output',
  onnxsim unless ``--no-onnxsim``.
- YOLOv6 0.3.0: ``yolov6/models/effidehead.py::Detect`` (anchor-free: per level stem, cls/reg convs,
  ``cls_preds``/``reg_preds``; DFL through ``proj_conv`` when ``reg_max`` > 0; ``generate_anchors`` with
  offset 0.5; ``dist2bbox(..., 'xywh') * stride_tensor``; a ones column between boxes and scores),
  exported as ``deploy/ONNX/export_onnx.py`` does: opset 13, ``do_constant_folding=True``,
  'images' -> 'outputs', onnxsim with ``--simplify``.

Every ``export_*`` also takes ``dynamo=True``: the same model through torch's new (``torch.export``-based)
exporter, ``torch.onnx.export(model, (img,), f, dynamo=True, external_data=True, opset_version=max(opset,
18))``, which writes the weights to a ``<f>.data`` side file next to ``f``; onnxsim/onnxslim are skipped then.

With a static input the legacy exporter folds every ``Shape``/``Gather`` of the ``x.shape`` reads into
constants (Reshape targets, grids, the per-level slice of YOLOv7's 6-D ``anchor_grid``); only a
symbolic batch axis (``dynamic=True``) keeps the Shape/Gather/Range chains in the graph.

Deviations that do not reach the decode region: backbone and head convs are BN-free (what the upstream
``fuse()`` leaves, and what the legacy exporter folds BN into anyway); the head's intermediate convs are
narrow (8-32 channels) to keep the files small; the YOLOv8 head has no ``end2end``/one2one branch
(``Detect.end2end`` is False for v8 models); the YOLOv6 anchor-free head keeps random ``cls_preds``/
``reg_preds`` weights where upstream's ``initialize_biases`` zeroes them (the biases are upstream's).

torch is imported lazily: importing this module never requires it.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

#: seed of the weights of each family's fixture network (distinct, so no two families share raw outputs).
SEEDS = {"yolov5": 20221122, "yolov7": 20220706, "yolov8": 20230110, "yolox": 20220118, "yolov6_af": 20230106}
#: channels of the three feature maps (strides 8, 16, 32).
WIDTHS = (16, 24, 32)
STRIDES = (8, 16, 32)
#: YOLOv5 v7.0 default anchors (pixels), P3/8, P4/16, P5/32.
V5_ANCHORS = ([10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326])
#: YOLOv7 default anchors (pixels), P3/8, P4/16, P5/32.
V7_ANCHORS = ([12, 16, 19, 36, 40, 28], [36, 75, 76, 55, 72, 146], [142, 110, 192, 243, 459, 401])


def _blocks():
    """torch, nn and the shared building blocks (defined lazily so that torch stays optional)."""
    import torch
    from torch import nn

    class ExportSiLU(nn.Module):
        """The export-friendly SiLU that YOLOv7's and YOLOX's export scripts swap in for ``nn.SiLU``."""

        @staticmethod
        def forward(x):
            return x * torch.sigmoid(x)

    class Conv(nn.Module):
        """Upstream ``Conv``/``BaseConv`` after BN fusion: conv (with bias) + SiLU."""

        def __init__(self, cin, cout, k=1, s=1, act=None):
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, k, s, k // 2, bias=True)
            self.act = act if act is not None else nn.SiLU()

        def forward(self, x):
            return self.act(self.conv(x))

    class Backbone(nn.Module):
        """Stride-2 Conv2d+SiLU stages; returns the maps at strides 8, 16 and 32 (``WIDTHS`` channels)."""

        def __init__(self, export_silu=False):
            super().__init__()
            c8, c16, c32 = WIDTHS

            def stage(cin, cout):
                return Conv(cin, cout, 3, 2, act=ExportSiLU() if export_silu else None)

            self.stem = nn.Sequential(stage(3, 8), stage(8, 12))  # strides 2, 4
            self.dark3 = stage(12, c8)  # 8
            self.dark4 = stage(c8, c16)  # 16
            self.dark5 = stage(c16, c32)  # 32

        def forward(self, x):
            x3 = self.dark3(self.stem(x))
            x4 = self.dark4(x3)
            x5 = self.dark5(x4)
            return [x3, x4, x5]

    return torch, nn, ExportSiLU, Conv, Backbone


def _seeded(ctor, seed: int):
    """``ctor()`` under a fixed seed, without disturbing the caller's RNG state."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ctor()


def _onnxsim(path: Path) -> None:
    import onnx
    import onnxsim

    model, check = onnxsim.simplify(onnx.load(str(path)))
    assert check, "onnxsim could not validate the simplified model"
    onnx.save(model, str(path))


def _dynamo_export(model, img, path: Path, *, opset: int, input_name: str, output_name: str,
                   dynamic_hw: bool = False) -> None:
    """``torch.onnx.export`` through torch's new (``torch.export``-based) exporter, as a user passing
    ``dynamo=True`` gets it: opset at least 18 (the lowest it writes), weights in a ``<path>.data``
    side file next to ``path`` (``external_data=True``), onnxscript's default graph optimisation.
    ``dynamic_hw`` passes ``dynamic_shapes`` with batch, height and width as ``Dim.AUTO``."""
    import torch

    shapes = ({0: torch.export.Dim.AUTO, 2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO},) if dynamic_hw else None
    torch.onnx.export(model, (img,), str(path), dynamo=True, external_data=True, optimize=True, verbose=False,
                      input_names=[input_name], output_names=[output_name], opset_version=max(opset, 18),
                      dynamic_shapes=shapes)


def _finish_ultralytics(path: Path, meta: dict, dynamo: bool, slim: bool) -> Path:
    """What Ultralytics' exporter does after ``torch.onnx.export``: onnxslim (legacy exports, when asked)
    and its ``metadata_props``. A dynamo export keeps its external data, so only the metadata is added."""
    import onnx

    if dynamo:
        _add_metadata(path, meta)
        return path
    m = onnx.load(str(path))
    if slim:
        import onnxslim

        m = onnxslim.slim(m)
    for k, v in meta.items():
        p = m.metadata_props.add()
        p.key, p.value = k, str(v)
    onnx.save(m, str(path))
    return path


def _add_metadata(path: Path, meta: dict, *, check: bool = False) -> None:
    """Add ``meta`` to the file's ``metadata_props`` in place (external data stays in its side file)."""
    import onnx

    if check:
        onnx.checker.check_model(str(path))  # by path: the checker resolves a .data side file
    m = onnx.load(str(path), load_external_data=False)  # tensors keep pointing at <path>.data
    for k, v in meta.items():
        p = m.metadata_props.add()
        p.key, p.value = k, str(v)
    onnx.save(m, str(path))


# --------------------------------------------------------------------------------------------- YOLOv5


def yolov5_detect():
    """The YOLOv5 v7.0 ``Detect`` class (torch imported on call); ``scripts/train_models.py`` trains it too."""
    torch, nn, _, _, _ = _blocks()

    class Detect(nn.Module):
        """YOLOv5 v7.0 ``models/yolo.py::Detect`` (detection only, no ``Segment`` branch)."""

        stride = None  # strides computed during build
        dynamic = False  # force grid reconstruction
        export = False  # export mode

        def __init__(self, nc=80, anchors=(), ch=(), inplace=True):
            super().__init__()
            self.nc = nc  # number of classes
            self.no = nc + 5  # number of outputs per anchor
            self.nl = len(anchors)  # number of detection layers
            self.na = len(anchors[0]) // 2  # number of anchors
            self.grid = [torch.empty(0) for _ in range(self.nl)]  # init grid
            self.anchor_grid = [torch.empty(0) for _ in range(self.nl)]  # init anchor grid
            self.register_buffer("anchors", torch.tensor(anchors).float().view(self.nl, -1, 2))  # (nl,na,2)
            self.m = nn.ModuleList(nn.Conv2d(x, self.no * self.na, 1) for x in ch)  # output conv
            self.inplace = inplace  # use inplace ops (e.g. slice assignment)

        def forward(self, x):
            z = []  # inference output
            for i in range(self.nl):
                x[i] = self.m[i](x[i])  # conv
                bs, _, ny, nx = x[i].shape  # x(bs,255,20,20) to x(bs,3,20,20,85)
                x[i] = x[i].view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()

                if not self.training:  # inference
                    if self.dynamic or self.grid[i].shape[2:4] != x[i].shape[2:4]:
                        self.grid[i], self.anchor_grid[i] = self._make_grid(nx, ny, i)

                    xy, wh, conf = x[i].sigmoid().split((2, 2, self.nc + 1), 4)
                    xy = (xy * 2 + self.grid[i]) * self.stride[i]  # xy
                    wh = (wh * 2) ** 2 * self.anchor_grid[i]  # wh
                    y = torch.cat((xy, wh, conf), 4)
                    z.append(y.view(bs, self.na * nx * ny, self.no))

            return x if self.training else (torch.cat(z, 1),) if self.export else (torch.cat(z, 1), x)

        def _make_grid(self, nx=20, ny=20, i=0):
            d = self.anchors[i].device
            t = self.anchors[i].dtype
            shape = 1, self.na, ny, nx, 2  # grid shape
            y, x = torch.arange(ny, device=d, dtype=t), torch.arange(nx, device=d, dtype=t)
            yv, xv = torch.meshgrid(y, x, indexing="ij")
            grid = torch.stack((xv, yv), 2).expand(shape) - 0.5  # add grid offset, i.e. y = 2.0 * x - 0.5
            anchor_grid = (self.anchors[i] * self.stride[i]).view((1, self.na, 1, 1, 2)).expand(shape)
            return grid, anchor_grid

    return Detect


def build_yolov5(nc: int = 80):
    """Backbone + YOLOv5 v7.0 ``Detect`` as ``DetectionModel.__init__`` leaves it (train mode)."""
    torch, nn, _, _, Backbone = _blocks()
    Detect = yolov5_detect()

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = Backbone()
            self.detect = Detect(nc, V5_ANCHORS, WIDTHS)
            # DetectionModel.__init__: strides from a 256x256 forward in train mode, anchors to grid units
            m, s = self.detect, 256
            m.stride = torch.tensor([s / x.shape[-2] for x in self.forward(torch.zeros(1, 3, s, s))])
            m.anchors /= m.stride.view(-1, 1, 1)  # check_anchor_order: already ascending
            self.stride = m.stride
            self._initialize_biases()

        def _initialize_biases(self):
            m = self.detect
            for mi, s in zip(m.m, m.stride):
                b = mi.bias.view(m.na, -1)  # conv.bias(255) to (3,85)
                b.data[:, 4] += math.log(8 / (640 / s) ** 2)  # obj (8 objects per 640 image)
                b.data[:, 5:5 + m.nc] += math.log(0.6 / (m.nc - 0.99999))  # cls
                mi.bias = torch.nn.Parameter(b.view(-1), requires_grad=True)

        def forward(self, x):
            return self.detect(self.backbone(x))

    return _seeded(Model, SEEDS["yolov5"])


def export_yolov5(path, *, size=(320, 320), nc: int = 80, opset: int = 12, simplify: bool = False,
                  dynamic: bool = False, dynamo: bool = False, dynamic_hw: bool = False) -> Path:
    """Export the YOLOv5 fixture to ``path`` as v7.0's ``export.py --include onnx`` does; return the path.

    ``size`` is (H, W). ``dynamic=True`` sets ``Detect.dynamic`` (grids rebuilt while tracing) but, unlike
    export.py's ``--dynamic``, marks only the batch axis symbolic (``images`` and ``output0`` axis 0), so
    the image size stays fixed. ``simplify=True`` runs ``onnxsim.simplify`` and saves over the file.
    ``dynamo=True`` exports with torch's new exporter instead (opset ``max(opset, 18)``, weights in a
    ``<path>.data`` side file, static shapes: ``dynamic`` then only rebuilds the grids while tracing);
    ``simplify`` is ignored then. ``dynamic_hw=True`` is export.py's ``--dynamic`` as it is: ``Detect.dynamic``
    and ``dynamic_axes={'images': {0: 'batch', 2: 'height', 3: 'width'}, 'output0': {0: 'batch', 1: 'anchors'}}``
    (dynamo: ``dynamic_shapes`` with batch, height and width ``Dim.AUTO``).
    """
    import torch

    path = Path(path)
    dynamic = dynamic or dynamic_hw
    model = build_yolov5(nc).eval()
    for m in model.modules():  # export.py "Update model"
        if type(m).__name__ == "Detect":
            m.inplace = False  # --inplace not given
            m.dynamic = dynamic
            m.export = True
    im = torch.zeros(1, 3, *size)
    axes = {"images": {0: "batch"}, "output0": {0: "batch"}} if dynamic else None
    if dynamic_hw:
        axes = {"images": {0: "batch", 2: "height", 3: "width"}, "output0": {0: "batch", 1: "anchors"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation warnings
        for _ in range(2):
            model(im)  # dry runs
        if dynamo:
            _dynamo_export(model, im, path, opset=opset, input_name="images", output_name="output0",
                           dynamic_hw=dynamic_hw)
        else:
            torch.onnx.export(model, im, str(path), verbose=False, opset_version=opset, do_constant_folding=True,
                              input_names=["images"], output_names=["output0"], dynamic_axes=axes, dynamo=False)
    _add_metadata(path, {"stride": int(max(model.stride)), "names": [str(i) for i in range(nc)]}, check=True)
    if simplify and not dynamo:
        _onnxsim(path)
    return path


# --------------------------------------------------------------------------------------------- YOLOv7


def build_yolov7(nc: int = 80):
    """Backbone + YOLOv7 ``Detect`` as ``Model.__init__`` leaves it (train mode, export-friendly SiLU)."""
    torch, nn, _, _, Backbone = _blocks()

    class Detect(nn.Module):
        """YOLOv7 (main) ``models/yolo.py::Detect``; ``IDetect.fuseforward`` is the same code."""

        stride = None  # strides computed during build
        export = False  # onnx export
        end2end = False
        include_nms = False
        concat = False

        def __init__(self, nc=80, anchors=(), ch=()):
            super().__init__()
            self.nc = nc  # number of classes
            self.no = nc + 5  # number of outputs per anchor
            self.nl = len(anchors)  # number of detection layers
            self.na = len(anchors[0]) // 2  # number of anchors
            self.grid = [torch.zeros(1)] * self.nl  # init grid
            a = torch.tensor(anchors).float().view(self.nl, -1, 2)
            self.register_buffer("anchors", a)  # shape(nl,na,2)
            self.register_buffer("anchor_grid", a.clone().view(self.nl, 1, -1, 1, 1, 2))  # shape(nl,1,na,1,1,2)
            self.m = nn.ModuleList(nn.Conv2d(x, self.no * self.na, 1) for x in ch)  # output conv

        def forward(self, x):
            z = []  # inference output
            self.training |= self.export
            for i in range(self.nl):
                x[i] = self.m[i](x[i])  # conv
                bs, _, ny, nx = x[i].shape  # x(bs,255,20,20) to x(bs,3,20,20,85)
                x[i] = x[i].view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()

                if not self.training:  # inference
                    if self.grid[i].shape[2:4] != x[i].shape[2:4]:
                        self.grid[i] = self._make_grid(nx, ny).to(x[i].device)
                    y = x[i].sigmoid()
                    if not torch.onnx.is_in_onnx_export():
                        y[..., 0:2] = (y[..., 0:2] * 2. - 0.5 + self.grid[i]) * self.stride[i]  # xy
                        y[..., 2:4] = (y[..., 2:4] * 2) ** 2 * self.anchor_grid[i]  # wh
                    else:
                        xy, wh, conf = y.split((2, 2, self.nc + 1), 4)  # y.tensor_split((2, 4, 5), 4)
                        xy = xy * (2. * self.stride[i]) + (self.stride[i] * (self.grid[i] - 0.5))  # new xy
                        wh = wh ** 2 * (4 * self.anchor_grid[i].data)  # new wh
                        y = torch.cat((xy, wh, conf), 4)
                    z.append(y.view(bs, -1, self.no))

            if self.training:
                out = x
            elif self.end2end:
                out = torch.cat(z, 1)
            elif self.include_nms:
                raise NotImplementedError("include_nms is not reproduced")
            elif self.concat:
                out = torch.cat(z, 1)
            else:
                out = (torch.cat(z, 1), x)
            return out

        @staticmethod
        def _make_grid(nx=20, ny=20):
            yv, xv = torch.meshgrid([torch.arange(ny), torch.arange(nx)], indexing="ij")  # torch<1.10 default
            return torch.stack((xv, yv), 2).view((1, 1, ny, nx, 2)).float()

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = Backbone(export_silu=True)  # export.py swaps nn.SiLU for x * sigmoid(x)
            self.detect = Detect(nc, V7_ANCHORS, WIDTHS)
            m, s = self.detect, 256
            m.stride = torch.tensor([s / x.shape[-2] for x in self.forward(torch.zeros(1, 3, s, s))])
            m.anchors /= m.stride.view(-1, 1, 1)  # anchor_grid (a clone) stays in pixels
            self.stride = m.stride
            self._initialize_biases()

        def _initialize_biases(self):
            m = self.detect
            for mi, s in zip(m.m, m.stride):
                b = mi.bias.view(m.na, -1)  # conv.bias(255) to (3,85)
                b.data[:, 4] += math.log(8 / (640 / s) ** 2)  # obj (8 objects per 640 image)
                b.data[:, 5:] += math.log(0.6 / (m.nc - 0.99))  # cls
                mi.bias = torch.nn.Parameter(b.view(-1), requires_grad=True)

        def forward(self, x):
            return self.detect(self.backbone(x))

    return _seeded(Model, SEEDS["yolov7"])


def export_yolov7(path, *, size=(320, 320), nc: int = 80, opset: int = 12, simplify: bool = False,
                  dynamo: bool = False) -> Path:
    """Export the YOLOv7 fixture to ``path`` as ``export.py --grid`` (no ``--end2end``) does; return the path.

    ``Detect.export = not grid`` (False), a dry run, ``Detect.concat = True``, then
    ``torch.onnx.export(model, img, f, opset_version=12, input_names=['images'], output_names=['output'])``
    (torch's default constant folding). The decode is in the graph: ``xy * (2 * stride) + stride *
    (grid - 0.5)``, ``wh ** 2 * (4 * anchor_grid[i])`` with the 6-D ``anchor_grid`` buffer.
    ``dynamo=True`` exports with torch's new exporter instead (opset ``max(opset, 18)``, weights in a
    ``<path>.data`` side file; ``torch.onnx.is_in_onnx_export()`` is True there too, so the same branch
    of the decode is traced); ``simplify`` is ignored then.
    """
    import onnx
    import torch

    path = Path(path)
    model = build_yolov7(nc).eval()  # attempt_load: .float().fuse().eval()
    model.detect.export = False  # not opt.grid
    img = torch.zeros(1, 3, *size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model(img)  # dry run
        model.detect.concat = True  # opt.grid and not opt.end2end
        if dynamo:
            _dynamo_export(model, img, path, opset=opset, input_name="images", output_name="output")
        else:
            torch.onnx.export(model, img, str(path), verbose=False, opset_version=opset, input_names=["images"],
                              output_names=["output"], dynamic_axes=None, dynamo=False)
    if dynamo:
        onnx.checker.check_model(str(path))
        return path
    m = onnx.load(str(path))
    onnx.checker.check_model(m)
    if simplify:
        import onnxsim

        m, check = onnxsim.simplify(m)
        assert check, "onnxsim could not validate the simplified model"
    onnx.save(m, str(path))
    return path


# ------------------------------------------------------------------------------------ Ultralytics YOLOv8


def build_yolov8(nc: int = 80, reg_max: int = 16):
    """Backbone + Ultralytics ``Detect`` (legacy v8 branches) as ``DetectionModel.__init__`` leaves it."""
    torch, nn, _, Conv, Backbone = _blocks()

    def make_anchors(feats, strides, grid_cell_offset=0.5):
        """ultralytics/utils/tal.py::make_anchors."""
        anchor_points, stride_tensor = [], []
        assert feats is not None
        dtype, device = feats[0].dtype, feats[0].device
        for i, stride in enumerate(strides):
            h, w = feats[i].shape[2:] if isinstance(feats, list) else (int(feats[i][0]), int(feats[i][1]))
            sx = torch.arange(end=w, device=device, dtype=dtype) + grid_cell_offset  # shift x
            sy = torch.arange(end=h, device=device, dtype=dtype) + grid_cell_offset  # shift y
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
            c_xy = (x1y1 + x2y2) / 2
            wh = x2y2 - x1y1
            return torch.cat((c_xy, wh), dim)  # xywh bbox
        return torch.cat((x1y1, x2y2), dim)  # xyxy bbox

    class DFL(nn.Module):
        """ultralytics/nn/modules/block.py::DFL: softmax over reg_max bins, expectation by a fixed 1x1 conv."""

        def __init__(self, c1=16):
            super().__init__()
            self.conv = nn.Conv2d(c1, 1, 1, bias=False).requires_grad_(False)
            x = torch.arange(c1, dtype=torch.float)
            self.conv.weight.data[:] = nn.Parameter(x.view(1, c1, 1, 1))
            self.c1 = c1

        def forward(self, x):
            b, _, a = x.shape  # batch, channels, anchors
            return self.conv(x.view(b, 4, self.c1, a).transpose(2, 1).softmax(1)).view(b, 4, a)

    class Detect(nn.Module):
        """Ultralytics 8.4 ``Detect`` (one2many path; ``end2end`` False as for v8 models)."""

        dynamic = False  # force grid reconstruction
        export = False  # export mode
        format = None  # export format
        max_det = 300
        shape = None
        anchors = torch.empty(0)  # init
        strides = torch.empty(0)  # init
        legacy = True  # v8 branches: Conv, Conv, Conv2d
        xyxy = False  # xyxy or xywh output
        end2end = False

        def __init__(self, nc=80, reg_max=16, ch=()):
            super().__init__()
            self.nc = nc  # number of classes
            self.nl = len(ch)  # number of detection layers
            self.reg_max = reg_max  # DFL channels
            self.no = nc + self.reg_max * 4  # number of outputs per anchor
            self.stride = torch.zeros(self.nl)  # strides computed during build
            # upstream widths are c2 = max(16, ch[0] // 4, 4 * reg_max), c3 = max(ch[0], min(nc, 100)); narrowed here
            self.cv2 = nn.ModuleList(
                nn.Sequential(Conv(x, x, 3), Conv(x, x, 3), nn.Conv2d(x, 4 * self.reg_max, 1)) for x in ch)
            self.cv3 = nn.ModuleList(
                nn.Sequential(Conv(x, x, 3), Conv(x, x, 3), nn.Conv2d(x, self.nc, 1)) for x in ch)
            self.dfl = DFL(self.reg_max) if self.reg_max > 1 else nn.Identity()

        @property
        def one2many(self):
            return dict(box_head=self.cv2, cls_head=self.cv3)

        def forward_head(self, x, box_head=None, cls_head=None):
            if box_head is None or cls_head is None:  # for fused inference
                return dict()
            bs = x[0].shape[0]  # batch size
            boxes = torch.cat([box_head[i](x[i]).view(bs, 4 * self.reg_max, -1) for i in range(self.nl)], dim=-1)
            scores = torch.cat([cls_head[i](x[i]).view(bs, self.nc, -1) for i in range(self.nl)], dim=-1)
            return dict(boxes=boxes, scores=scores, feats=x)

        def forward(self, x):
            preds = self.forward_head(x, **self.one2many)
            if self.training:
                return preds
            y = self._inference(preds)
            return y if self.export else (y, preds)

        def _inference(self, x):
            dbox = self._get_decode_boxes(x)
            return torch.cat((dbox, x["scores"].sigmoid()), 1)

        def _get_decode_boxes(self, x):
            shape = x["feats"][0].shape  # BCHW
            if self.dynamic or self.shape != shape:
                self.anchors, self.strides = (a.transpose(0, 1) for a in make_anchors(x["feats"], self.stride, 0.5))
                self.shape = shape
            dbox = self.decode_bboxes(self.dfl(x["boxes"]), self.anchors.unsqueeze(0)) * self.strides
            return dbox

        def bias_init(self):
            for i, (a, b) in enumerate(zip(self.cv2, self.cv3)):  # from
                a[-1].bias.data[:] = 2.0  # box
                b[-1].bias.data[: self.nc] = math.log(5 / self.nc / (640 / self.stride[i]) ** 2)  # cls

        def decode_bboxes(self, bboxes, anchors, xywh=True):
            return dist2bbox(bboxes, anchors, xywh=xywh and not self.end2end and not self.xyxy, dim=1)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = Backbone()
            self.detect = Detect(nc, reg_max, WIDTHS)
            m, s = self.detect, 256
            m.stride = torch.tensor([s / x.shape[-2] for x in self.forward(torch.zeros(1, 3, s, s))["feats"]])
            self.stride = m.stride
            m.bias_init()

        def forward(self, x):
            return self.detect(self.backbone(x))

    return _seeded(Model, SEEDS["yolov8"])


def export_yolov8(path, *, size=(320, 320), nc: int = 80, opset: int = 18, slim: bool = True,
                  dynamic: bool = False, dynamo: bool = False, dynamic_hw: bool = False) -> Path:
    """Export the YOLOv8 fixture to ``path`` as Ultralytics' ``Exporter`` (format='onnx') does; return the path.

    ``Detect.export = True``, ``format = 'onnx'``, ``dynamic`` as given, two dry runs, then
    ``torch.onnx.export(..., opset_version=opset, do_constant_folding=True, input_names=['images'],
    output_names=['output0'], dynamo=False)`` and, with ``slim`` (Ultralytics' ``simplify=True``,
    its default), ``onnxslim.slim``. ``dynamic=True`` sets ``Detect.dynamic`` (anchors rebuilt while
    tracing) but marks only the batch axis symbolic (upstream also marks height, width, anchors).
    ``dynamo=True`` exports with torch's new exporter instead (opset ``max(opset, 18)``, weights in a
    ``<path>.data`` side file, static shapes) and skips ``slim``; the metadata is still added.
    ``dynamic_hw=True`` is the exporter's ``dynamic=True`` as it is: ``Detect.dynamic`` and ``dynamic_axes=
    {'images': {0: 'batch', 2: 'height', 3: 'width'}, 'output0': {0: 'batch', 2: 'anchors'}}`` (dynamo:
    ``dynamic_shapes`` with batch, height and width ``Dim.AUTO``).
    """
    import torch

    path = Path(path)
    model = build_yolov8(nc)
    for p in model.parameters():
        p.requires_grad = False
    model.eval()
    det = model.detect
    det.dynamic, det.export, det.format, det.max_det, det.xyxy = dynamic or dynamic_hw, True, "onnx", 300, False
    im = torch.zeros(1, 3, *size)
    axes = {"images": {0: "batch"}, "output0": {0: "batch"}} if dynamic else None
    if dynamic_hw:
        axes = {"images": {0: "batch", 2: "height", 3: "width"}, "output0": {0: "batch", 2: "anchors"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(2):
            model(im)  # dry runs
        if dynamo:
            _dynamo_export(model, im, path, opset=opset, input_name="images", output_name="output0",
                           dynamic_hw=dynamic_hw)
        else:
            torch.onnx.export(model, im, str(path), verbose=False, opset_version=opset, do_constant_folding=True,
                              input_names=["images"], output_names=["output0"], dynamic_axes=axes, dynamo=False)
    meta = {"description": "Ultralytics YOLOv8-tiny fixture", "author": "Ultralytics", "stride": int(max(det.stride)),
            "task": "detect", "batch": 1, "imgsz": list(size), "names": {i: str(i) for i in range(nc)},
            "channels": 3, "end2end": False}
    return _finish_ultralytics(path, meta, dynamo, slim)


# ---------------------------------------------------------------------------------------------- YOLOX


def yolox_head():
    """The YOLOX 0.3.0 ``YOLOXHead`` class, eval path, export SiLU (torch imported on call); ``scripts/
    train_sample.py`` exports its trained YOLOX head through it."""
    torch, nn, ExportSiLU, Conv, _ = _blocks()

    def act():
        return ExportSiLU()  # replace_module(model, nn.SiLU, SiLU)

    class YOLOXHead(nn.Module):
        """YOLOX 0.3.0 ``yolox/models/yolo_head.py::YOLOXHead``, eval path only."""

        def __init__(self, num_classes, strides=STRIDES, in_channels=WIDTHS, width=16):
            super().__init__()
            self.n_anchors = 1
            self.num_classes = num_classes
            self.decode_in_inference = True  # for deploy, set to False
            self.stems = nn.ModuleList(Conv(c, width, 1, act=act()) for c in in_channels)
            self.cls_convs = nn.ModuleList(
                nn.Sequential(Conv(width, width, 3, act=act()), Conv(width, width, 3, act=act())) for _ in in_channels)
            self.reg_convs = nn.ModuleList(
                nn.Sequential(Conv(width, width, 3, act=act()), Conv(width, width, 3, act=act())) for _ in in_channels)
            self.cls_preds = nn.ModuleList(nn.Conv2d(width, self.n_anchors * num_classes, 1) for _ in in_channels)
            self.reg_preds = nn.ModuleList(nn.Conv2d(width, 4, 1) for _ in in_channels)
            self.obj_preds = nn.ModuleList(nn.Conv2d(width, self.n_anchors * 1, 1) for _ in in_channels)
            self.strides = list(strides)
            self.grids = [torch.zeros(1)] * len(in_channels)

        def initialize_biases(self, prior_prob):
            for conv in list(self.cls_preds) + list(self.obj_preds):
                b = conv.bias.view(self.n_anchors, -1)
                b.data.fill_(-math.log((1 - prior_prob) / prior_prob))
                conv.bias = torch.nn.Parameter(b.view(-1), requires_grad=True)

        def forward(self, xin):
            outputs = []
            for k, (cls_conv, reg_conv, _stride_this_level, x) in enumerate(
                zip(self.cls_convs, self.reg_convs, self.strides, xin)
            ):
                x = self.stems[k](x)
                cls_x = x
                reg_x = x

                cls_feat = cls_conv(cls_x)
                cls_output = self.cls_preds[k](cls_feat)

                reg_feat = reg_conv(reg_x)
                reg_output = self.reg_preds[k](reg_feat)
                obj_output = self.obj_preds[k](reg_feat)

                output = torch.cat([reg_output, obj_output.sigmoid(), cls_output.sigmoid()], 1)
                outputs.append(output)

            self.hw = [x.shape[-2:] for x in outputs]
            # [batch, n_anchors_all, 85]
            outputs = torch.cat([x.flatten(start_dim=2) for x in outputs], dim=2).permute(0, 2, 1)
            if self.decode_in_inference:
                return self.decode_outputs(outputs, dtype=xin[0].type())
            else:
                return outputs

        def decode_outputs(self, outputs, dtype):
            grids = []
            strides = []
            for (hsize, wsize), stride in zip(self.hw, self.strides):
                yv, xv = torch.meshgrid([torch.arange(hsize), torch.arange(wsize)], indexing="ij")  # yolox meshgrid
                grid = torch.stack((xv, yv), 2).view(1, -1, 2)
                grids.append(grid)
                shape = grid.shape[:2]
                strides.append(torch.full((*shape, 1), stride))

            grids = torch.cat(grids, dim=1).type(dtype)
            strides = torch.cat(strides, dim=1).type(dtype)

            outputs[..., :2] = (outputs[..., :2] + grids) * strides
            outputs[..., 2:4] = torch.exp(outputs[..., 2:4]) * strides
            return outputs

    return YOLOXHead


def build_yolox(nc: int = 80, width: int = 16):
    """Backbone + YOLOX 0.3.0 ``YOLOXHead`` (biases from ``initialize_biases(1e-2)``), export SiLU."""
    torch, nn, _, _, Backbone = _blocks()
    YOLOXHead = yolox_head()

    class YOLOX(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = Backbone(export_silu=True)
            self.head = YOLOXHead(nc, width=width)
            self.head.initialize_biases(1e-2)  # Exp.get_model

        def forward(self, x):
            return self.head(self.backbone(x))

    return _seeded(YOLOX, SEEDS["yolox"])


def export_yolox(path, *, size=(320, 320), nc: int = 80, opset: int = 11, decode: bool = True,
                 simplify: bool = True, dynamo: bool = False) -> Path:
    """Export the YOLOX fixture to ``path`` as 0.3.0's ``tools/export_onnx.py`` does; return the path.

    ``model.head.decode_in_inference = decode`` (``--decode_in_inference``), no dry run,
    ``torch.onnx.export(model, randn(1, 3, H, W), opset_version=11, input_names=['images'],
    output_names=['output'])``, then onnxsim unless ``simplify=False`` (``--no-onnxsim``).
    ``dynamo=True`` exports with torch's new exporter instead (opset ``max(opset, 18)``, weights in a
    ``<path>.data`` side file) and skips onnxsim.
    """
    import torch

    path = Path(path)
    model = build_yolox(nc).eval()
    model.head.decode_in_inference = decode
    dummy_input = _seeded(lambda: torch.randn(1, 3, *size), SEEDS["yolox"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            _dynamo_export(model, dummy_input, path, opset=opset, input_name="images", output_name="output")
        else:
            torch.onnx.export(model, dummy_input, str(path), input_names=["images"], output_names=["output"],
                              dynamic_axes=None, opset_version=opset, dynamo=False)
    if simplify and not dynamo:
        _onnxsim(path)
    return path


# ------------------------------------------------------------------------------ YOLOv6 anchor-free


def build_yolov6_af(nc: int = 80, reg_max: int = 0):
    """Backbone + YOLOv6 0.3.0 anchor-free ``Detect`` (eval path), export SiLU, ``initialize_biases`` biases."""
    torch, nn, ExportSiLU, Conv, Backbone = _blocks()
    F = torch.nn.functional

    def generate_anchors(feats, fpn_strides, grid_cell_size=5.0, grid_cell_offset=0.5, device="cpu",
                         is_eval=False, mode="af"):
        """yolov6/assigners/anchor_generator.py::generate_anchors, ``is_eval=True``, ``mode='af'`` branch."""
        assert feats is not None and is_eval and mode == "af"
        anchor_points, stride_tensor = [], []
        for i, stride in enumerate(fpn_strides):
            _, _, h, w = feats[i].shape
            shift_x = torch.arange(end=w, device=device) + grid_cell_offset
            shift_y = torch.arange(end=h, device=device) + grid_cell_offset
            shift_y, shift_x = torch.meshgrid(shift_y, shift_x, indexing="ij")
            anchor_point = torch.stack([shift_x, shift_y], axis=-1).to(torch.float)
            anchor_points.append(anchor_point.reshape([-1, 2]))
            stride_tensor.append(torch.full((h * w, 1), stride, dtype=torch.float, device=device))
        return torch.cat(anchor_points), torch.cat(stride_tensor)

    def dist2bbox(distance, anchor_points, box_format="xyxy"):
        """yolov6/utils/general.py::dist2bbox: l, t, r, b distances to xyxy or xywh boxes."""
        lt, rb = torch.split(distance, 2, -1)
        x1y1 = anchor_points - lt
        x2y2 = anchor_points + rb
        if box_format == "xyxy":
            bbox = torch.cat([x1y1, x2y2], -1)
        elif box_format == "xywh":
            c_xy = (x1y1 + x2y2) / 2
            wh = x2y2 - x1y1
            bbox = torch.cat([c_xy, wh], -1)
        return bbox

    def conv(c, k):
        return Conv(c, c, k, act=ExportSiLU())  # export_onnx.py: Conv.act nn.SiLU -> SiLU()

    class Detect(nn.Module):
        """YOLOv6 0.3.0 ``yolov6/models/effidehead.py::Detect`` (anchor-free, DFL when ``reg_max`` > 0)."""

        def __init__(self, num_classes=80, num_layers=3, inplace=True, channels=WIDTHS, use_dfl=True, reg_max=16):
            super().__init__()
            self.nc = num_classes  # number of classes
            self.no = num_classes + 5  # number of outputs per anchor
            self.nl = num_layers  # number of detection layers
            self.grid = [torch.zeros(1)] * num_layers
            self.prior_prob = 1e-2
            self.inplace = inplace
            self.stride = torch.tensor(list(STRIDES))
            self.use_dfl = use_dfl
            self.reg_max = reg_max
            self.proj_conv = nn.Conv2d(self.reg_max + 1, 1, 1, bias=False)
            self.grid_cell_offset = 0.5
            self.grid_cell_size = 5.0
            # build_effidehead_layer: stem (1x1), cls_conv, reg_conv (3x3), cls_pred (nc), reg_pred (4 * (reg_max + 1))
            self.stems = nn.ModuleList(conv(c, 1) for c in channels)
            self.cls_convs = nn.ModuleList(conv(c, 3) for c in channels)
            self.reg_convs = nn.ModuleList(conv(c, 3) for c in channels)
            self.cls_preds = nn.ModuleList(nn.Conv2d(c, num_classes, 1) for c in channels)
            self.reg_preds = nn.ModuleList(nn.Conv2d(c, 4 * (reg_max + 1), 1) for c in channels)

        def initialize_biases(self):
            # upstream also zeroes the cls_pred/reg_pred weights (training starts there); kept random here so the
            # outputs depend on the image
            for c in self.cls_preds:
                c.bias.data.fill_(-math.log((1 - self.prior_prob) / self.prior_prob))
            for c in self.reg_preds:
                c.bias.data.fill_(1.0)
            self.proj = nn.Parameter(torch.linspace(0, self.reg_max, self.reg_max + 1), requires_grad=False)
            self.proj_conv.weight = nn.Parameter(self.proj.view([1, self.reg_max + 1, 1, 1]).clone().detach(),
                                                 requires_grad=False)

        def forward(self, x):
            assert not self.training, "only the eval/export path is reproduced"
            cls_score_list = []
            reg_dist_list = []
            anchor_points, stride_tensor = generate_anchors(
                x, self.stride, self.grid_cell_size, self.grid_cell_offset, device=x[0].device, is_eval=True, mode="af")

            for i in range(self.nl):
                b, _, h, w = x[i].shape
                l = h * w  # noqa: E741
                x[i] = self.stems[i](x[i])
                cls_x = x[i]
                reg_x = x[i]
                cls_feat = self.cls_convs[i](cls_x)
                cls_output = self.cls_preds[i](cls_feat)
                reg_feat = self.reg_convs[i](reg_x)
                reg_output = self.reg_preds[i](reg_feat)

                if self.use_dfl:
                    reg_output = reg_output.reshape([-1, 4, self.reg_max + 1, l]).permute(0, 2, 1, 3)
                    reg_output = self.proj_conv(F.softmax(reg_output, dim=1))

                cls_output = torch.sigmoid(cls_output)
                cls_score_list.append(cls_output.reshape([b, self.nc, l]))
                reg_dist_list.append(reg_output.reshape([b, 4, l]))

            cls_score_list = torch.cat(cls_score_list, axis=-1).permute(0, 2, 1)
            reg_dist_list = torch.cat(reg_dist_list, axis=-1).permute(0, 2, 1)

            pred_bboxes = dist2bbox(reg_dist_list, anchor_points, box_format="xywh")
            pred_bboxes *= stride_tensor
            return torch.cat(
                [
                    pred_bboxes,
                    torch.ones((b, pred_bboxes.shape[1], 1), device=pred_bboxes.device, dtype=pred_bboxes.dtype),
                    cls_score_list,
                ],
                axis=-1)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = Backbone(export_silu=True)
            self.detect = Detect(nc, use_dfl=reg_max > 0, reg_max=reg_max)
            self.detect.initialize_biases()

        def forward(self, x):
            return self.detect(self.backbone(x))

    return _seeded(Model, SEEDS["yolov6_af"])


def export_yolov6_af(path, *, size=(320, 320), nc: int = 80, reg_max: int = 0, opset: int = 13,
                     simplify: bool = False, dynamo: bool = False, dynamic_hw: bool = False) -> Path:
    """Export the YOLOv6 anchor-free fixture to ``path`` as 0.3.0's ``deploy/ONNX/export_onnx.py`` does.

    ``reg_max=0`` is the n/s head (4 reg channels, no DFL), ``reg_max=16`` the m/l one (68 reg channels,
    DFL through ``proj_conv``). ``Detect.inplace`` as ``--inplace`` leaves it (False; the anchor-free
    decode does not read it), a dry run, then ``torch.onnx.export(model, img, f, opset_version=13,
    training=EVAL, do_constant_folding=True, input_names=['images'], output_names=['outputs'])`` and,
    with ``simplify`` (``--simplify``), onnxsim. ``dynamo=True`` exports with torch's new exporter instead
    (opset ``max(opset, 18)``, weights in a ``<path>.data`` side file) and skips onnxsim.
    ``dynamic_hw=True`` adds ``dynamic_axes={'images': {0: 'batch', 2: 'height', 3: 'width'}, 'outputs': {0:
    'batch', 1: 'anchors'}}`` (export_onnx.py has ``--dynamic-batch`` only; this is the same call with the image
    axes named too; dynamo: ``dynamic_shapes`` with batch, height and width ``Dim.AUTO``).
    """
    import torch

    path = Path(path)
    model = build_yolov6_af(nc, reg_max).eval()
    model.detect.inplace = False  # m.inplace = args.inplace
    img = torch.zeros(1, 3, *size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model(img)  # dry run
        if dynamo:
            _dynamo_export(model, img, path, opset=opset, input_name="images", output_name="outputs",
                           dynamic_hw=dynamic_hw)
        else:
            axes = {"images": {0: "batch", 2: "height", 3: "width"}, "outputs": {0: "batch", 1: "anchors"}} \
                if dynamic_hw else None
            torch.onnx.export(model, img, str(path), verbose=False, opset_version=opset,
                              training=torch.onnx.TrainingMode.EVAL, do_constant_folding=True,
                              input_names=["images"], output_names=["outputs"], dynamic_axes=axes, dynamo=False)
    if simplify and not dynamo:
        _onnxsim(path)
    return path
