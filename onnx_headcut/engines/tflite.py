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
    return [{"name": d["name"], "shape": [int(v) for v in d["shape"]], "index": int(d["index"])} for d in details]


def convert(onnx_path: str, out_dir: str, stem: str, options: dict) -> dict:
    import onnx2tf

    with tempfile.TemporaryDirectory(prefix="headcut-onnx2tf-") as d:
        np.save(Path(d, CALIBRATION_SAMPLE), calibration_sample())
        here = os.getcwd()
        os.chdir(d)  # onnx2tf reads the sample from its working folder
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                onnx2tf.convert(input_onnx_file_path=onnx_path, output_folder_path=str(Path(d, "out")),
                                non_verbose=True, output_signaturedefs=False)
        finally:
            os.chdir(here)
        made = Path(d, "out", f"{Path(onnx_path).stem}_float32.tflite")
        if not made.is_file():
            wrote = ", ".join(p.name for p in Path(d, "out").glob("*")) or "nothing"
            raise RuntimeError(f"onnx2tf wrote no float32 model ({wrote})")
        final = Path(out_dir, f"{stem}.tflite")
        shutil.move(str(made), final)
    it = _interpreter(str(final))
    return {"inputs": _tensors(it.get_input_details()), "outputs": _tensors(it.get_output_details())}


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
        it.set_tensor(feed["index"], x)
        it.invoke()
        ys = []
        for d, layout in wanted:
            y = np.array(it.get_tensor(d["index"]), dtype=np.float32)
            back = {"NHWC": (0, 3, 1, 2), "NWC": (0, 2, 1)}.get(layout)
            ys.append(np.ascontiguousarray(y.transpose(back)) if back else y)
        results.append(ys)
    return results, {}
