"""Genuine torch exports of a tiny detector with YOLOv6 0.1.0's ``Detect`` head.

The network is small and random (fixed seed), but the head's ``forward`` is YOLOv6 0.1.0's
``yolov6/models/effidehead.py::Detect.forward`` in eval mode, and :func:`export_yolov6_v1` exports
it the way that release's ``deploy/ONNX/export_onnx.py`` does: BN-free convs with the
export-friendly ``x * sigmoid(x)`` SiLU, ``Detect.inplace`` set from ``--inplace``, a dry run, then
``torch.onnx.export(..., opset_version=12, input_names=['image_arrays'], output_names=['outputs'],
do_constant_folding=True)`` through the legacy TorchScript exporter, and ``onnxsim.simplify``
saved over the file with ``--simplify``. So the decode region is what torch itself writes, not
what :mod:`onnx_headcut.synth` imitates.

torch is imported lazily: importing this module never requires it.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

#: seed of every weight in the fixture network.
SEED = 20220623
#: channels of the three feature maps (strides 8, 16, 32) and of the head at each level.
WIDTHS = (16, 24, 32)
STRIDES = (8, 16, 32)


def build_model(nc: int = 80, inplace: bool = False):
    """The fixture network (eval mode, deterministic weights): backbone + YOLOv6 0.1.0 ``Detect``."""
    import torch
    from torch import nn

    class SiLU(nn.Module):
        """YOLOv6's export-friendly SiLU (export_onnx.py swaps it in for nn.SiLU)."""

        @staticmethod
        def forward(x):
            return x * torch.sigmoid(x)

    class Conv(nn.Module):
        """YOLOv6 ``Conv`` after BN fusion: conv (with bias) + activation."""

        def __init__(self, cin, cout, k, s=1):
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, k, s, k // 2, bias=True)
            self.act = SiLU()

        def forward(self, x):
            return self.act(self.conv(x))

    class Backbone(nn.Module):
        """Stride-2 Conv2d+ReLU stages; returns the maps at strides 8, 16 and 32."""

        def __init__(self):
            super().__init__()
            c8, c16, c32 = WIDTHS

            def stage(cin, cout):
                return nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1), nn.ReLU())

            self.stem = nn.Sequential(stage(3, 8), stage(8, 12))  # strides 2, 4
            self.dark3 = stage(12, c8)  # 8
            self.dark4 = stage(c8, c16)  # 16
            self.dark5 = stage(c16, c32)  # 32

        def forward(self, x):
            x3 = self.dark3(self.stem(x))
            x4 = self.dark4(x3)
            x5 = self.dark5(x4)
            return [x3, x4, x5]

    class Detect(nn.Module):
        """YOLOv6 0.1.0 ``Detect`` (efficient decoupled head), eval path only."""

        def __init__(self, num_classes=80, anchors=1, num_layers=3, inplace=True, channels=WIDTHS):
            super().__init__()
            self.nc = num_classes
            self.no = num_classes + 5
            self.nl = num_layers
            self.na = anchors
            self.grid = [torch.zeros(1)] * num_layers
            self.prior_prob = 1e-2
            self.inplace = inplace
            self.stride = torch.tensor(list(STRIDES))
            self.stems = nn.ModuleList(Conv(c, c, 1) for c in channels)
            self.cls_convs = nn.ModuleList(Conv(c, c, 3) for c in channels)
            self.reg_convs = nn.ModuleList(Conv(c, c, 3) for c in channels)
            self.cls_preds = nn.ModuleList(nn.Conv2d(c, self.nc * self.na, 1) for c in channels)
            self.reg_preds = nn.ModuleList(nn.Conv2d(c, 4 * self.na, 1) for c in channels)
            self.obj_preds = nn.ModuleList(nn.Conv2d(c, 1 * self.na, 1) for c in channels)

        def initialize_biases(self):
            for conv in list(self.cls_preds) + list(self.obj_preds):
                b = conv.bias.view(self.na, -1)
                b.data.fill_(-math.log((1 - self.prior_prob) / self.prior_prob))
                conv.bias = torch.nn.Parameter(b.view(-1), requires_grad=True)

        def forward(self, x):
            z = []
            for i in range(self.nl):
                x[i] = self.stems[i](x[i])
                cls_x = x[i]
                reg_x = x[i]
                cls_feat = self.cls_convs[i](cls_x)
                cls_output = self.cls_preds[i](cls_feat)
                reg_feat = self.reg_convs[i](reg_x)
                reg_output = self.reg_preds[i](reg_feat)
                obj_output = self.obj_preds[i](reg_feat)
                y = torch.cat([reg_output, obj_output.sigmoid(), cls_output.sigmoid()], 1)
                bs, _, ny, nx = y.shape
                y = y.view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
                if self.grid[i].shape[2:4] != y.shape[2:4]:
                    yv, xv = torch.meshgrid([torch.arange(ny), torch.arange(nx)])
                    self.grid[i] = torch.stack((xv, yv), 2).view(1, self.na, ny, nx, 2).float()
                if self.inplace:
                    y[..., 0:2] = (y[..., 0:2] + self.grid[i]) * self.stride[i]  # xy
                    y[..., 2:4] = torch.exp(y[..., 2:4]) * self.stride[i]  # wh
                else:
                    xy = (y[..., 0:2] + self.grid[i]) * self.stride[i]  # xy
                    wh = torch.exp(y[..., 2:4]) * self.stride[i]  # wh
                    y = torch.cat((xy, wh, y[..., 4:]), -1)
                z.append(y.view(bs, -1, self.no))
            return torch.cat(z, 1)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = Backbone()
            self.detect = Detect(num_classes=nc, inplace=inplace)
            self.detect.initialize_biases()

        def forward(self, x):
            return self.detect(self.backbone(x))

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = Model()
    model.detect.inplace = inplace  # export_onnx.py: ``m.inplace = args.inplace``
    return model.eval()


def export_yolov6_v1(path, *, inplace: bool = False, simplify: bool = False, size=(320, 320), nc: int = 80,
                     opset: int = 12, dynamo: bool = False, dynamic_batch: bool = False) -> Path:
    """Export the fixture network to ``path`` as YOLOv6 0.1.0's export_onnx.py does; return the path.

    ``size`` is (H, W). ``dynamic_batch=True`` marks the batch axis of input and output symbolic
    (legacy exporter), so the batch size is read from ``Shape`` at run time. ``dynamo=True`` uses
    torch's new (torch.export) exporter instead, at opset 18 when ``opset`` is left at 12; it may write a
    ``<path>.data`` side file.
    """
    import torch

    path = Path(path)
    model = build_model(nc=nc, inplace=inplace)
    img = torch.zeros(1, 3, *size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # meshgrid indexing, tracer and deprecation warnings
        model(img)  # dry run, as export_onnx.py does
        if dynamo:
            torch.onnx.export(model, (img,), str(path), opset_version=max(opset, 18), input_names=["image_arrays"],
                              output_names=["outputs"], dynamo=True, external_data=True, optimize=True,
                              verbose=False)
        else:
            torch.onnx.export(model, img, str(path), verbose=False, opset_version=opset,
                              training=torch.onnx.TrainingMode.EVAL, do_constant_folding=True,
                              input_names=["image_arrays"], output_names=["outputs"], dynamo=False,
                              dynamic_axes=({"image_arrays": {0: "batch"}, "outputs": {0: "batch"}}
                                            if dynamic_batch else None))
    if simplify:
        import onnx
        import onnxsim

        onnx_model = onnx.load(str(path))
        onnx_model, check = onnxsim.simplify(onnx_model)
        assert check, "onnxsim could not validate the simplified model"
        onnx.save(onnx_model, str(path))
    return path
