"""Rockchip RKNN target (``.rknn``), run by the worker: the standard library, numpy and (inside the
functions) rknn-toolkit2's ``rknn.api.RKNN``. rknn-toolkit2 pins its own numpy/onnx/protobuf and declares
``torch<=2.4.0``, so it lives in its own virtualenv (``HEADCUT_PYTHON_RKNN``; README: "Rockchip RKNN").

Conversion (``RKNN().config(mean_values, std_values, target_platform) → load_onnx → build → export_rknn``):
fp16 by default (RKNN's own), int8 with ``options["int8"]``: ``options["calib"]`` is one float32 NCHW
``.npy`` (N, 3, H, W) of letterboxed inputs *as the ONNX model takes them*, written here as one
``.npy`` per image (1, 3, H, W: the layout 2.5.0 asks of a ``.npy`` for an NCHW ONNX input; an NHWC one is
refused) listed in RKNN's ``dataset.txt``. ``mean_values`` 0 and ``std_values`` 1: the RKNN model
takes exactly the ONNX model's input (values and channel order), laid out NHWC as RKNN inputs are; the
outputs keep the ONNX model's order and layout (4-D outputs NCHW), which the parent's conversion check
proves on every conversion.

Simulation: rknn-toolkit2's simulator (``init_runtime()`` without a target) runs only a model built in the
same session; a ``.rknn`` file alone cannot run on it. So :func:`convert` writes beside ``STEM.rknn`` the
ONNX it was built from (``STEM.rknn.build.onnx``), the build recipe (``STEM.rknn.build.json``: platform, precision,
mean/std, toolkit version) and for int8 the calibration inputs (``STEM.rknn.build.calib.npy``), and :func:`run`
rebuilds the model from them with the same toolkit and runs that: what runs is the recorded build, not the
bytes of ``STEM.rknn`` (two builds of one model differ in ~700 bytes of what looks like uninitialised
memory, measured with 2.5.0; :func:`run` checks the rebuilt file has the recorded size and refuses a
different toolkit version).
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

#: packages whose absence is "engine not installed" (exit 2 with :data:`INSTALL`), not a crash; onnx (one of
#: rknn-toolkit2's requirements) only names the converted model's tensors
PACKAGES = ("rknn", "onnx")
CONVERTER = "rknn"
INSTALL = ("its own virtualenv (rknn-toolkit2 pins numpy/onnx and declares torch<=2.4): python3 -m venv VENV && "
           "VENV/bin/pip install --no-deps rknn-toolkit2==2.5.0, then its requirements and torch==2.13.0 "
           "(README: 'Rockchip RKNN'), then HEADCUT_PYTHON_RKNN=VENV/bin/python")
#: the platforms the simulator was verified to build and run for (rknn-toolkit2 2.5.0); the first is the default
PLATFORMS = ("rk3588", "rk3576", "rk3566", "rk3568", "rk3562", "rv1106", "rv1103", "rv1106b", "rv1103b", "rk2118")
#: platforms whose NPU has no float path: rknn-toolkit2 builds them only quantized
INT8_ONLY = ("rv1106", "rv1103", "rv1106b", "rv1103b")
INT8 = True
#: the precision of a conversion without --int8 (rknn-toolkit2's own default build)
FLOAT = "fp16"
MEAN, STD = 0.0, 1.0


def files(stem: str) -> list[str]:
    """``STEM.rknn`` (deployed), and what the simulator rebuilds it from (the calibration file: int8 only)."""
    return [f"{stem}.rknn", f"{stem}.rknn.build.onnx", f"{stem}.rknn.build.json", f"{stem}.rknn.build.calib.npy"]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rknn-toolkit2")
    except PackageNotFoundError:
        raise ImportError("rknn-toolkit2 is not installed", name="rknn") from None


def _call(step: str, log: io.StringIO, fn, *args, **kwargs):
    """One RKNN API step: it returns non-zero (or raises) and logs its reason as an ``E`` line."""
    try:
        rc = fn(*args, **kwargs)
    except Exception as e:  # rknn raises ValueError with a traceback text in it
        rc, why = -1, str(e).strip().splitlines()[-1:] or [type(e).__name__]
        log.write(f"E {step}: {why[0]}\n")
    if rc != 0:
        errors = [ln for ln in log.getvalue().splitlines() if "E " in ln[:12] or ln.startswith("E")]
        tail = errors[-1] if errors else f"returned {rc}"
        tail = tail.replace("\x1b[1;31m", "").replace("\x1b[0m", "").strip()
        raise RuntimeError(f"rknn {step} failed: {tail[:300]}")
    return rc


def _build(onnx_path: str, recipe: dict, calib: str | None, work: Path):
    """A built RKNN object for ``onnx_path`` following ``recipe`` (platform, precision), in ``work``."""
    from rknn.api import RKNN

    log = io.StringIO()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        r = RKNN(verbose=False)
        try:
            _call("config", log, r.config, mean_values=[[MEAN] * 3], std_values=[[STD] * 3],
                  target_platform=recipe["platform"])
            _call("load_onnx", log, r.load_onnx, model=onnx_path)
            dataset = None
            if recipe["precision"] == "int8":
                if calib is None:
                    raise RuntimeError("an int8 build needs calibration inputs")
                dataset = str(_dataset(np.load(calib), work))
            _call("build", log, r.build, do_quantization=recipe["precision"] == "int8", dataset=dataset)
        except BaseException:
            r.release()
            raise
    return r, log


def _dataset(x: np.ndarray, work: Path) -> Path:
    """RKNN's ``dataset.txt``: one float32 ``.npy`` (1, 3, H, W) per calibration input (N, 3, H, W)."""
    if x.ndim != 4 or x.shape[1] != 3 or x.dtype != np.float32 or not len(x):
        raise ValueError(f"calibration inputs must be float32 (N, 3, H, W), not {x.dtype} {list(x.shape)}")
    paths = []
    for k, xi in enumerate(x):
        p = work / f"calib{k:04d}.npy"
        np.save(p, np.ascontiguousarray(xi[None]))  # rknn-toolkit2 2.5 wants a .npy in the ONNX input's NCHW
        paths.append(str(p))
    txt = work / "dataset.txt"
    txt.write_text("\n".join(paths) + "\n")
    return txt


def _infer(r, log: io.StringIO, xs: list[np.ndarray]) -> list[list[np.ndarray]]:
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        _call("init_runtime", log, r.init_runtime)  # no target: the simulator
        out = []
        for x in xs:
            nhwc = np.ascontiguousarray(np.asarray(x, np.float32).transpose(0, 2, 3, 1))
            ys = r.inference(inputs=[nhwc], data_format="nhwc")
            if ys is None:
                _call("inference", log, lambda: -1)
            out.append([np.asarray(y, np.float32) for y in ys])
    return out


def convert(onnx_path: str, out_dir: str, stem: str, options: dict) -> dict:
    platform = (options.get("platform") or PLATFORMS[0]).lower()
    int8 = bool(options.get("int8"))
    if platform not in PLATFORMS:
        raise ValueError(f"unknown RKNN platform {platform!r} (choose from {', '.join(PLATFORMS)})")
    if platform in INT8_ONLY and not int8:
        raise ValueError(f"{platform} builds only int8 models (give --int8 --calib DIR)")
    recipe: dict = {"platform": platform, "precision": "int8" if int8 else "fp16", "mean": MEAN, "std": STD,
              "input_layout": "NHWC", "toolkit": _version(), "onnx": f"{stem}.rknn.build.onnx",
              "calib": f"{stem}.rknn.build.calib.npy" if int8 else None}
    out = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="headcut-rknn-") as d:
        r, log = _build(onnx_path, recipe, options.get("calib"), Path(d))
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                _call("export_rknn", log, r.export_rknn, str(out / f"{stem}.rknn"))
            shape = list(options.get("input_shape") or [])
            probe = _infer(r, log, [np.zeros(shape, np.float32)])[0] if len(shape) == 4 else []
        finally:
            r.release()
    shutil.copyfile(onnx_path, out / f"{stem}.rknn.build.onnx")
    if int8:
        shutil.copyfile(options["calib"], out / f"{stem}.rknn.build.calib.npy")
    recipe["rknn_bytes"] = (out / f"{stem}.rknn").stat().st_size
    (out / f"{stem}.rknn.build.json").write_text(json.dumps(recipe, indent=2) + "\n")
    inputs, outputs, shapes = _names(onnx_path)
    if probe and [list(y.shape) for y in probe] != shapes:
        raise RuntimeError(f"the RKNN model's outputs have shapes {[list(y.shape) for y in probe]}, the ONNX "
                           f"model's {shapes}: a layout headcut does not record")
    return {"inputs": inputs, "outputs": outputs,
            "output_shapes": [list(y.shape) for y in probe], "precision": recipe["precision"],
            "platform": platform, "toolkit": recipe["toolkit"],
            **({"quantizer": f"rknn-toolkit2 {recipe['toolkit']}, {platform}"} if int8 else {})}


def _names(onnx_path: str) -> tuple[list[str], list[str], list[list[int]]]:
    """The ONNX model's input and output names and output shapes (symbolic dims 1): RKNN keeps the names,
    the order and (4-D outputs NCHW) the shapes, which :func:`convert` checks."""
    import onnx

    g = onnx.load(onnx_path, load_external_data=False).graph
    inits = {t.name for t in g.initializer}
    shapes = [[d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in o.type.tensor_type.shape.dim]
              for o in g.output]
    return [i.name for i in g.input if i.name not in inits], [o.name for o in g.output], shapes


def recipe_for(model: str) -> dict:
    """The build recipe recorded beside ``model`` (``STEM.rknn``) by :func:`convert`."""
    side = Path(model + ".build.json")
    if not side.is_file():
        raise FileNotFoundError(f"{side.name} is missing: the RKNN simulator rebuilds {Path(model).name} from the "
                                "ONNX and recipe headcut convert wrote beside it (a .rknn alone cannot be simulated)")
    return json.loads(side.read_text())


def run(spec: dict, xs: list[np.ndarray]) -> tuple[list[list[np.ndarray]], dict]:
    """Rebuild ``spec["model"]`` from its recorded ONNX and recipe and run it on the simulator; outputs in
    the ONNX model's order and layout (the input is fed NHWC)."""
    model = spec["model"]
    recipe = recipe_for(model)
    if recipe.get("toolkit") != _version():
        raise RuntimeError(f"{Path(model).name} was built with rknn-toolkit2 {recipe.get('toolkit')}, this is "
                           f"{_version()}: the simulator would run a different build")
    here = Path(model).parent
    src = here / recipe["onnx"]
    calib = str(here / recipe["calib"]) if recipe.get("calib") else None
    with tempfile.TemporaryDirectory(prefix="headcut-rknn-") as d:
        r, log = _build(str(src), recipe, calib, Path(d))
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                _call("export_rknn", log, r.export_rknn, str(Path(d, "rebuilt.rknn")))
            size, have = Path(d, "rebuilt.rknn").stat().st_size, Path(model).stat().st_size
            if size != have or recipe.get("rknn_bytes", have) != have:
                raise RuntimeError(f"the rebuild of {Path(model).name} has {size} bytes, the file {have} (recorded "
                                   f"{recipe.get('rknn_bytes')}): not the build the recipe describes")
            results = _infer(r, log, xs)
        finally:
            r.release()
    wanted = spec.get("outputs")
    if wanted and results and len(wanted) != len(results[0]):
        raise RuntimeError(f"{len(wanted)} outputs asked for, the RKNN model has {len(results[0])}")
    return results, {"precision": recipe["precision"], "device": f"{recipe['platform']} simulator"}

