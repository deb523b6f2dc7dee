"""TFLite target (``.tflite``), run by the worker: the standard library, numpy and (inside the functions)
onnx2tf (to convert; it needs tensorflow) and ai-edge-litert (to run). Their exact pins conflict with
headcut's own numpy/onnx, so this target normally lives in its own virtualenv
(``HEADCUT_PYTHON_TFLITE``).

onnx2tf's ways, measured with 1.29: it lays every 4-D tensor out NHWC (the input becomes 1×H×W×3, each
per-level raw output 1×H×W×C), renames the outputs ``PartitionedCall:N`` and lists them in its own
order; :func:`convert` reports the tensors as they are and the parent matches them to the ONNX outputs
by shape (:func:`onnx_headcut.convert.match_outputs`), recording the match in the head JSON
(``converted``), which :func:`run` reads to give the outputs back NCHW in the raw outputs' order. For a
1×3×H×W input onnx2tf loads ``calibration_image_sample_data_20x128x128x3_float32.npy`` from its working
folder even without quantization, downloading it when absent (which fails offline): :func:`convert` runs
it in a scratch folder where that file is written first (:func:`calibration_sample`).

int8 (``options["int8"]``): onnx2tf's full-integer quantization (``output_integer_quantized_tflite``,
per-channel weights, int8 input and outputs: ``*_full_integer_quant.tflite``), calibrated on the
float32 NCHW ``.npy`` ``options["calib"]``, handed to onnx2tf transposed NHWC through its own
``custom_input_op_name_np_data_path`` with mean 0 and std 1 (the samples already are what the model
takes), so it never reaches for its downloaded sample. Each tensor's quantization (scale, zero point)
is reported; :func:`run` quantizes the float input with the input's and dequantizes every int8 output
with its own, so the decode reads floats.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

#: packages whose absence is "engine not installed" (exit 2 with :data:`INSTALL`), not a crash;
#: the first runs the model, the last converts it
PACKAGES = ("ai_edge_litert", "tensorflow", "onnx2tf")
INSTALL = ('its own virtualenv (onnx2tf pins numpy, onnx and tensorflow): python3 -m venv VENV && '
           'VENV/bin/pip install "onnx_headcut[tflite]", then HEADCUT_PYTHON_TFLITE=VENV/bin/python')
#: the converted model's tensors differ from ONNX's in name, layout and order: recorded in its head JSON
RELAYS = True
#: full-integer int8 through onnx2tf (``options["int8"]``), for the LiteRT CPU interpreter
INT8 = True
PLATFORMS = ("cpu",)
#: what headcut rewrites in the copy of the model it hands onnx2tf (:mod:`onnx_headcut.engine_rewrites`):
#: onnx2tf 1.29 turns a Split sized by a Constant node into FlexSplitV, which LiteRT cannot run, and fails on an
#: Expand of constants (YOLOv6 0.3's decoded anchor points): Constant nodes become initializers, constant
#: subgraphs their values
ONNX_REWRITES = ("fold_constants",)
CALIBRATION_SAMPLE = "calibration_image_sample_data_20x128x128x3_float32.npy"


def files(stem: str) -> list[str]:
    return [f"{stem}.tflite"]


def calibration_sample(n: int = 20, size: int = 128, seed: int = 0) -> np.ndarray:
    """``n`` synthetic RGB images (NHWC float32 in [0, 1]): gradients with a few flat boxes, the stand-in
    for the sample file onnx2tf would download (only its shape and range matter without quantization)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1)
    out = np.empty((n, size, size, 3), np.float32)
    for k in range(n):
        a = rng.random(3, dtype=np.float32)
        out[k] = (a * yy[..., None] + (1 - a) * xx[..., None]) * 0.8 + 0.1
        for _ in range(3):
            y0, x0 = rng.integers(0, size - 16, 2)
            h, w = rng.integers(8, size // 2, 2)
            out[k, y0:y0 + h, x0:x0 + w] = rng.random(3, dtype=np.float32)
    return out


def _interpreter(path: str):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    it = Interpreter(model_path=path)
    it.allocate_tensors()
    return it


def _tensors(details) -> list[dict]:
    out = []
    for d in details:
        t = {"name": d["name"], "shape": [int(v) for v in d["shape"]], "index": int(d["index"])}
        scale, zero = d.get("quantization", (0.0, 0))
        if np.dtype(d["dtype"]).kind in "iu" and scale:  # a quantized tensor: real = (q - zero) * scale
            t["quantization"] = {"dtype": np.dtype(d["dtype"]).name, "scale": float(scale), "zero_point": int(zero)}
        out.append(t)
    return out


def convert(onnx_path: str, out_dir: str, stem: str, options: dict) -> dict:
    import onnx2tf

    int8 = bool(options.get("int8"))
    with tempfile.TemporaryDirectory(prefix="headcut-onnx2tf-") as d:
        np.save(Path(d, CALIBRATION_SAMPLE), calibration_sample())
        kw: dict = {}
        if int8:
            nhwc = np.ascontiguousarray(np.load(options["calib"]).transpose(0, 2, 3, 1), dtype=np.float32)
            np.save(Path(d, "calib.npy"), nhwc)
            zero, one = np.zeros((1, 1, 1, 3), np.float32), np.ones((1, 1, 1, 3), np.float32)
            kw = {"output_integer_quantized_tflite": True, "quant_type": "per-channel",
                  "custom_input_op_name_np_data_path": [[options["input_name"], str(Path(d, "calib.npy")), zero, one]],
                  "input_quant_dtype": "int8", "output_quant_dtype": "int8"}
        here = os.getcwd()
        os.chdir(d)  # onnx2tf reads the sample from its working folder
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                onnx2tf.convert(input_onnx_file_path=onnx_path, output_folder_path=str(Path(d, "out")),
                                non_verbose=True, output_signaturedefs=False, **kw)
        finally:
            os.chdir(here)
        kind = "full_integer_quant" if int8 else "float32"
        made = Path(d, "out", f"{Path(onnx_path).stem}_{kind}.tflite")
        if not made.is_file():
            wrote = ", ".join(p.name for p in Path(d, "out").glob("*")) or "nothing"
            raise RuntimeError(f"onnx2tf wrote no {kind} model ({wrote})")
        final = Path(out_dir, f"{stem}.tflite")
        shutil.move(str(made), final)
    it = _interpreter(str(final))
    extra = {"precision": "int8", "quantizer": f"onnx2tf {onnx2tf.__version__} full-integer",
             "calib_samples": int(len(nhwc))} if int8 else {}
    return {"inputs": _tensors(it.get_input_details()), "outputs": _tensors(it.get_output_details()), **extra}


def run(spec: dict, xs: list[np.ndarray]) -> tuple[list[list[np.ndarray]], dict]:
    """Run on the LiteRT interpreter. With the recorded ``options["io"]`` the NCHW input is fed NHWC and
    the outputs come back NCHW in the raw outputs' order; without it, in the model's own order and layout
    (the input transposed when the model's is NHWC)."""
    it = _interpreter(spec["model"])
    ins = {d["name"]: d for d in it.get_input_details()}
    outs = {d["name"]: d for d in it.get_output_details()}
    recorded = (spec.get("options") or {}).get("io")
    if recorded:
        feed = ins[recorded["input"]["name"]]
        in_layout = recorded["input"]["layout"]
        wanted = [(outs[o["name"]], o["layout"]) for o in recorded["outputs"]]
    else:
        feed = next(iter(ins.values()))
        shape = list(feed["shape"])
        in_layout = "NHWC" if len(shape) == 4 and shape[-1] in (1, 3) and shape[1] not in (1, 3) else "same"
        wanted = [(d, "same") for d in outs.values()]
    results = []
    for x in xs:
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1) if in_layout == "NHWC" else x, dtype=np.float32)
        it.set_tensor(feed["index"], _quantized(x, feed))
        it.invoke()
        ys = []
        for d, layout in wanted:
            y = _real(it.get_tensor(d["index"]), d)
            back = {"NHWC": (0, 3, 1, 2), "NWC": (0, 2, 1)}.get(layout)
            ys.append(np.ascontiguousarray(y.transpose(back)) if back else y)
        results.append(ys)
    quantized = np.dtype(feed["dtype"]).kind in "iu" or any(np.dtype(d["dtype"]).kind in "iu" for d, _ in wanted)
    return results, ({"precision": "int8"} if quantized else {})


def _quantized(x: np.ndarray, detail: dict) -> np.ndarray:
    """A float input as the tensor takes it: unchanged, or quantized ``round(x / scale) + zero``, clipped."""
    dtype = np.dtype(detail["dtype"])
    if dtype.kind not in "iu":
        return x
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(dtype)


def _real(y: np.ndarray, detail: dict) -> np.ndarray:
    """An output as float32: dequantized ``(q - zero) * scale`` when the tensor is quantized."""
    if np.dtype(detail["dtype"]).kind not in "iu":
        return np.array(y, dtype=np.float32)
    scale, zero = detail["quantization"]
    return ((y.astype(np.float32) - np.float32(zero)) * np.float32(scale)).astype(np.float32)
