"""OpenVINO target (``.xml`` + ``.bin``), run by the worker: the standard library, numpy and (inside the
functions) ``openvino``. Converted with ``ov.convert_model`` + ``ov.save_model`` (weights kept in fp32),
run on the CPU plugin.

Precision: on CPUs with AVX512-BF16 or AMX the CPU plugin infers in bf16 by default (measured 2.1 px on
decoded originals, 0.48 px on raw flat heads), so :func:`run` asks for ``INFERENCE_PRECISION_HINT``
``options["precision"]`` (``f32`` unless told otherwise; ``default`` leaves the plugin's choice) and
reports the precision the compiled model actually uses.

int8 (``options["int8"]``): post-training quantization with NNCF (``nncf.quantize``, ``mixed`` preset:
symmetric int8 weights per channel, asymmetric activations per tensor, FakeQuantize nodes in the saved
IR), calibrated on the float32 NCHW ``.npy`` ``options["calib"]`` (one image per sample, letterboxed and
scaled as the model takes them). Measured on the trained sample's raw split head with 16 calibration
scenes: 28 of 32 fp32 detections kept, where NNCF's default symmetric ``performance`` preset keeps 21
(SiLU outputs are one-sided). The CPU plugin runs the quantized ops in int8 and the rest in the
precision asked for (f32).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

#: packages whose absence is "engine not installed" (exit 2 with :data:`INSTALL`), not a crash
PACKAGES = ("openvino", "nncf")
#: the package that converts, and the one that quantizes (``--int8`` only)
CONVERTER, QUANTIZER = "openvino", "nncf"
INSTALL = 'pip install "onnx_headcut[openvino]"'
PRECISIONS = ("f32", "bf16", "f16", "default")
#: quantizes (``options["int8"]``) with NNCF, for the CPU plugin
INT8 = True
PLATFORMS = ("cpu",)


def files(stem: str) -> list[str]:
    return [f"{stem}.xml", f"{stem}.bin"]


def _quiet() -> None:
    """No usage data sent: ``ov.convert_model`` reports to Google Analytics through ``openvino_telemetry``
    unless a consent file says no (measured with openvino 2026.4, telemetry 2025.2: no file means
    consent); made unimportable, openvino falls back to its own no-op stub."""
    sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]


def convert(onnx_path: str, out_dir: str, stem: str, options: dict) -> dict:
    _quiet()
    import openvino as ov

    model = ov.convert_model(onnx_path)
    inputs, outputs = [i.get_any_name() for i in model.inputs], [o.get_any_name() for o in model.outputs]
    extra = {}
    if options.get("int8"):
        model, extra = _quantize(model, inputs[0], options["calib"])
    ov.save_model(model, str(Path(out_dir, f"{stem}.xml")), compress_to_fp16=False)
    return {"inputs": inputs, "outputs": outputs, "version": ov.get_version(), **extra}


def _quantize(model, input_name: str, calib: str):
    """``model`` quantized by ``nncf.quantize`` on the samples of the ``.npy`` at ``calib``."""
    import logging

    import nncf

    logging.getLogger("nncf").setLevel(logging.ERROR)
    data = np.load(calib)
    samples = [{input_name: np.ascontiguousarray(data[k:k + 1], dtype=np.float32)} for k in range(len(data))]
    quantized = nncf.quantize(model, nncf.Dataset(samples), preset=nncf.QuantizationPreset.MIXED,
                              subset_size=len(samples))
    return quantized, {"precision": "int8", "quantizer": f"NNCF {nncf.__version__}", "calib_samples": len(samples)}


def run(spec: dict, xs: list[np.ndarray]) -> tuple[list[list[np.ndarray]], dict]:
    _quiet()
    import openvino as ov

    precision = (spec.get("options") or {}).get("precision", "f32")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r} (choose from {', '.join(PRECISIONS)})")
    core = ov.Core()
    config = {} if precision == "default" else {"INFERENCE_PRECISION_HINT": precision}
    compiled = core.compile_model(core.read_model(spec["model"]), "CPU", config)
    ran = compiled.get_property("INFERENCE_PRECISION_HINT")
    ran = getattr(ran, "to_string", lambda: str(ran))()
    request = compiled.create_infer_request()
    names = spec.get("outputs") or [o.get_any_name() for o in compiled.outputs]
    outputs = [compiled.output(n) for n in names]
    feed = spec.get("input") or compiled.inputs[0].get_any_name()
    results = []
    for x in xs:
        got = request.infer({feed: np.ascontiguousarray(x, dtype=np.float32)})
        results.append([np.array(got[o], dtype=np.float32) for o in outputs])
    return results, {"precision": ran, "device": "CPU"}
