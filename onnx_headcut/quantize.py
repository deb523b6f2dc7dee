"""onnxruntime static int8 quantization (QDQ) of a detector, calibrated on letterboxed images.

:func:`quantize` wraps ``onnxruntime.quantization.quantize_static`` with the settings ``verify --int8``
measures: QDQ format, int8 weights quantized per output channel, int8 activations (S8S8, the
combination onnxruntime's quantization guide recommends for QDQ on CPU; U8S8 can saturate on
x86 without VNNI), calibration by ``minmax``, ``percentile`` (99.999th, onnxruntime's default) or
``entropy``. The model is first passed through ``quant_pre_process`` (shape inference and graph
optimisation, as that guide asks). Every file both steps write lives in a private temporary
folder the caller owns; nothing is ever written beside the user's model.

Calibration images are the files of a folder (sorted by name), each read with
:func:`~onnx_headcut.images.read_rgb` and letterboxed as the model's family does
(:mod:`onnx_headcut.preprocess`).
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import InputError, UsageError
from .images import read_rgb
from .preprocess import Preprocess, letterbox, to_input

#: the calibration methods ``--calib-method`` accepts (onnxruntime's ``CalibrationMethod`` names)
METHODS = ("minmax", "percentile", "entropy")
#: image file extensions read from a calibration or evaluation folder
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def image_files(folder: str | os.PathLike, what: str = "calibration folder") -> list[Path]:
    """The image files of ``folder`` sorted by name; :class:`InputError` when it is missing or has none."""
    p = Path(folder)
    if not p.is_dir():
        raise InputError(f"{p}: no such {what}" if not p.exists() else f"{p}: the {what} is not a folder")
    files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise InputError(f"{p}: {what} has no images ({', '.join(IMAGE_EXTENSIONS)})")
    return files


def model_inputs(images: Sequence[Path], size: tuple[int, int], pre: Preprocess) -> list[np.ndarray]:
    """Each image letterboxed to ``size`` = (h, w) and scaled as ``pre`` says: NCHW float32 batches of one."""
    return [to_input(letterbox(read_rgb(f), size, pre)[0], pre) for f in images]


def check_method(method: str) -> str:
    """``method`` lower-cased, or :class:`UsageError` naming the accepted ones."""
    m = str(method).lower()
    if m not in METHODS:
        raise UsageError(f"--calib-method must be one of {', '.join(METHODS)}, not {method!r}"[:200])
    return m


#: per-channel QDQ needs DequantizeLinear's ``axis`` (opset 13)
MIN_OPSET = 13


def _opset13(src: Path, tmp: Path) -> Path:
    """``src``, or its conversion to opset 13 written to ``tmp`` when it declares an older default opset
    (YOLOv5/v6 exports are often opset 11 or 12)."""
    import onnx
    from onnx import version_converter

    m = onnx.load(str(src))
    opset = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), MIN_OPSET)
    if opset >= MIN_OPSET:
        return src
    onnx.save(version_converter.convert_version(m, MIN_OPSET), str(tmp))
    return tmp


def quantize(src: str | os.PathLike, dst: str | os.PathLike, input_name: str, inputs: Sequence[np.ndarray],
             method: str = "minmax") -> Path:
    """Write the int8 QDQ model of ``src`` to ``dst`` (a path in a temporary folder the caller owns),
    calibrated on ``inputs`` (model inputs, as :func:`model_inputs` makes them) fed to ``input_name``."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    method = check_method(method)
    if not inputs:
        raise InputError("no calibration images")
    dst = Path(dst)
    pre = dst.with_name(dst.stem + ".pre.onnx")
    quant_pre_process(str(_opset13(Path(src), dst.with_name(dst.stem + ".op13.onnx"))), str(pre),
                      skip_symbolic_shape=True)

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(inputs)

        def get_next(self):
            x = next(self._it, None)
            return None if x is None else {input_name: x}

    cal = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
           "entropy": CalibrationMethod.Entropy}[method]
    with contextlib.redirect_stdout(io.StringIO()):  # the histogram calibrators print their progress
        quantize_static(str(pre), str(dst), _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, calibrate_method=cal)
    return dst
