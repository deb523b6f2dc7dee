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


def export_yolov7_raw(path, *, size=(320, 320), nc: int = 80, opset: int = 12, dynamo: bool = False) -> Path:
    """``export.py`` without ``--grid``: three 5-D raw outputs, the first named 'output'."""
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
            torch.onnx.export(model, img, str(path), verbose=False, opset_version=opset, input_names=["images"],
                              output_names=["output"], dynamic_axes=None, dynamo=False)
    onnx.checker.check_model(str(path))
    return path
