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


def export(family: str, path, *, size=(320, 320), nc: int = 3, dynamo: bool = False) -> Path:
    """Export ``family`` (one of :data:`SEEDS`) to ``path`` as Ultralytics' exporter does (or with dynamo)."""
    import onnx
    import torch

    path = Path(path)
    model = build(family, nc)
    im = torch.zeros(1, 3, *size)
    names = ["output0", "output1"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model(im)
        if dynamo:
            torch.onnx.export(model, (im,), str(path), dynamo=True, external_data=True, optimize=True, verbose=False,
                              input_names=["images"], output_names=names, opset_version=18)
            return path
        torch.onnx.export(model, im, str(path), verbose=False, opset_version=18, do_constant_folding=True,
                          input_names=["images"], output_names=names, dynamo=False)
    try:
        import onnxslim
    except ImportError:
        return path
    onnx.save(onnxslim.slim(onnx.load(str(path))), str(path))
    return path
