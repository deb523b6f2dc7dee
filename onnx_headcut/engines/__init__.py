"""Edge engines: convert a raw ONNX model for a target, and run a model on ort or a target.

Each target is one small module beside this one (``mnn.py``, ``ncnn.py``, ``openvino.py``,
``tflite.py``, ``rknn.py``, ``nncase.py``) holding its ``convert`` and ``run``; it imports only the standard
library and numpy at the top and its engine's package inside its functions, and it only ever runs in a child process
(:mod:`._worker`, started by file path): an engine's import may write to stdout at C level, a
converter crash must not take the CLI down, and the child may be **another interpreter**, so an engine
whose package pins versions headcut cannot share lives in its own virtualenv holding just numpy and
the engine::

    HEADCUT_PYTHON_TFLITE=/path/to/venv/bin/python headcut convert raw.onnx --to tflite

(``HEADCUT_PYTHON_<TARGET>`` for each target; default: this interpreter). A target whose package the
interpreter cannot import is an :class:`EngineError` (exit 2) with its one-line install hint.
MNN's own ``mnnconvert``/``mnnquant`` scripts (which pip-install a logging package and send usage
data) are never touched, nor OpenVINO's telemetry; pnnx is used through its bundled binary only.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..check import session
from ..errors import HeadcutError, UsageError
from . import mnn, ncnn, nncase, openvino, rknn, tflite

#: targets ``convert`` writes for, each run in the worker
TARGETS = ("mnn", "ncnn", "openvino", "tflite", "rknn", "nncase")
ENGINES = ("ort", *TARGETS)
MODULES = {"mnn": mnn, "ncnn": ncnn, "openvino": openvino, "tflite": tflite, "rknn": rknn, "nncase": nncase}
EXTRA_HINT = ncnn.INSTALL
#: the model file each engine runs
SUFFIX = {"ort": ".onnx", "mnn": ".mnn", "ncnn": ".param", "openvino": ".xml", "tflite": ".tflite", "rknn": ".rknn",
          "nncase": ".kmodel"}
_KIND = {"ort": "an ONNX", "mnn": "an MNN", "ncnn": "an ncnn", "openvino": "an OpenVINO", "tflite": "a TFLite",
         "rknn": "an RKNN", "nncase": "an nncase"}
WORKER = Path(__file__).with_name("_worker.py")


class EngineError(HeadcutError):
    """An engine is missing, or failed to convert or run a model."""


def python_variable(engine: str) -> str:
    """The environment variable naming the interpreter ``engine``'s worker runs in."""
    return f"HEADCUT_PYTHON_{engine.upper()}"


def interpreter(engine: str) -> str:
    """The Python that runs ``engine``: ``$HEADCUT_PYTHON_<ENGINE>`` when set, else this one."""
    var = python_variable(engine)
    chosen = os.environ.get(var, "").strip()
    if not chosen:
        return sys.executable
    path = Path(chosen).expanduser()
    if not path.is_file() or not os.access(path, os.X_OK):
        raise EngineError(f"{var}={chosen}: no such interpreter (point it at a virtualenv's bin/python)")
    return str(path)


def install_hint(engine: str) -> str:
    """How to make ``engine`` available, on one line."""
    hint = MODULES[engine].INSTALL
    var = python_variable(engine)
    return hint if var in hint else f"{hint} (or set {var} to a Python that has it)"


def _need(module: str, engine: str) -> None:
    """In this interpreter (the default worker's): :class:`EngineError` when ``module`` is missing."""
    if engine in MODULES and os.environ.get(python_variable(engine), "").strip():
        return  # another interpreter: its worker reports what it lacks
    if importlib.util.find_spec(module) is None:
        raise EngineError(f"the {engine} engine needs the '{module}' package: "
                          f"{install_hint(engine) if engine in MODULES else EXTRA_HINT}")


def pnnx_binary() -> Path:
    """The pnnx executable shipped in the pnnx wheel, found without importing the package (it imports torch)."""
    spec = importlib.util.find_spec("pnnx")
    if spec is None or not spec.submodule_search_locations:
        raise EngineError(f"ncnn conversion needs pnnx: {EXTRA_HINT} "
                          "(--no-deps: pnnx's binary needs no torch, and plain 'pip install pnnx' pulls an "
                          "unpinned torch, a multi-GB CUDA build)")
    exe = Path(list(spec.submodule_search_locations)[0]) / ("pnnx.exe" if os.name == "nt" else "pnnx")
    if not exe.exists():
        raise EngineError(f"pnnx is installed but its binary is missing ({exe})")
    return exe


def engine_for(path: str | os.PathLike) -> str:
    """The engine a model file runs on, from its extension."""
    suffix = Path(path).suffix.lower()
    return next((e for e, s in SUFFIX.items() if s == suffix), None) or _bad_model(path)


def check_engine(path: str | os.PathLike, engine: str, convertible: bool = False) -> None:
    """:class:`UsageError` (one line) when ``engine`` cannot run the file at ``path``. With
    ``convertible`` an ``.onnx`` is accepted for every target (the caller converts it first)."""

    if engine not in ENGINES:
        raise UsageError(f"unknown engine {engine!r} (choose from {', '.join(ENGINES)})")
    suffix = Path(path).suffix.lower()
    own = engine_for(path)
    if own == engine or (convertible and suffix == ".onnx"):
        return
    hint = (f"convert it first: headcut convert {Path(path).name} --to {engine}" if suffix == ".onnx" else
            f"give the .onnx model, or run it with --engine {own}")
    raise UsageError(f"{path}: --engine {engine} runs {SUFFIX[engine]} files, and this is {_KIND[own]} model "
                     f"({suffix}); {hint}")


def _bad_model(path) -> str:
    known = ", ".join(sorted(set(SUFFIX.values())))
    raise EngineError(f"{path}: unknown model type (expected one of {known})")


def worker(args: list[str], timeout: float = 600) -> str:
    """Run ``PYTHON _worker.py ARGS`` (``ARGS[0]`` is the engine; PYTHON its :func:`interpreter`) and
    return its answer (JSON). A package the interpreter lacks is an :class:`EngineError` naming it and the
    install hint; any other failure an :class:`EngineError` with the worker's last line."""
    engine = args[0]
    python = interpreter(engine)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    try:
        p = subprocess.run([python, str(WORKER), *args], capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise EngineError(f"engine worker timed out after {timeout:.0f} s ({args[0]} {args[1]})") from None
    except OSError as e:
        raise EngineError(f"cannot start {python} for the {engine} engine: {e.strerror or e}") from None
    missing = [ln for ln in p.stdout.splitlines() if ln.startswith("HEADCUT_MISSING ")]
    if missing:
        what = json.loads(missing[-1].split(" ", 1)[1])
        where = "" if python == sys.executable else f" in {python}"
        hint = install_hint(engine) if what["package"] != "numpy" else f"{python} -m pip install numpy"
        raise EngineError(f"the {engine} engine needs the '{what['package']}' package{where}: {hint}")
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("HEADCUT_RESULT ")]
    if p.returncode != 0 or not lines:
        said = [ln for ln in p.stdout.splitlines() if ln.startswith("HEADCUT_ERROR ")]
        tail = json.loads(said[-1].split(" ", 1)[1]).get("error", "") if said else \
            (p.stderr.strip().splitlines() or p.stdout.strip().splitlines() or ["no output"])[-1]
        tail = tail.removeprefix("RuntimeError: ")
        what = f"exit {p.returncode}" if p.returncode >= 0 else f"killed by signal {-p.returncode}"
        raise EngineError(f"{args[0]} {args[1]} failed ({what}): {tail[:300]}")
    return lines[-1][len("HEADCUT_RESULT "):]


def run_options(engine: str, record: dict | None) -> dict:
    """What ``run`` passes the target for a model ``convert`` recorded as ``record`` (its ``converted``
    record, :func:`~onnx_headcut.metadata.converted_record`): OpenVINO is asked for fp32 inference (its
    CPU plugin may default to bf16); TFLite gets the recorded tensor layout."""
    if engine == "openvino":
        return {"precision": "f32"}
    if engine == "tflite":
        return {"io": record}
    return {}


def run(model: str | os.PathLike | bytes, inputs: list[np.ndarray], engine: str | None = None,
        input_name: str | None = None, output_names: list[str] | None = None, options: dict | None = None,
        info: dict | None = None) -> list[list[np.ndarray]]:
    """Run ``model`` on ``engine`` for each input array; returns, per input, the list of outputs.

    ort runs in this process; the targets in a worker process. Output arrays are given back with
    the batch axis and NCHW layout restored (ncnn drops the batch axis; MNN may hand out NC4HW4;
    TFLite's outputs are NHWC and in its own order: ``options["io"]``, see :mod:`.tflite`; RKNN's
    simulator runs the model rebuilt from what ``convert`` recorded beside the ``.rknn``, see :mod:`.rknn`).
    ``options`` go to the target's ``run`` (OpenVINO: ``precision``); ``info``, when given, receives
    what the worker reports (OpenVINO: the precision that ran).
    """
    if isinstance(model, bytes) and engine != "ort":
        raise EngineError("a serialized model runs on onnxruntime only")
    engine = engine or ("ort" if isinstance(model, bytes) else engine_for(model))
    if engine not in ENGINES:
        raise EngineError(f"unknown engine {engine!r} (choose from {', '.join(ENGINES)})")
    if engine == "ort":
        s = session(model)
        name = input_name or s.get_inputs()[0].name
        return [s.run(output_names, {name: x}) for x in inputs]
    assert not isinstance(model, bytes)  # refused above
    _need(MODULES[engine].PACKAGES[0], engine)
    with tempfile.TemporaryDirectory(prefix="headcut-run-") as d:
        np.savez(Path(d, "in.npz"), *inputs)
        spec = {"model": str(Path(model).resolve()), "input": input_name, "outputs": output_names,
                "shapes": None, "options": options or {}}
        Path(d, "spec.json").write_text(json.dumps(spec))
        # nncase's K230 simulator: ~6 s an input on a quiet machine, 70 s measured on a loaded one
        answer = json.loads(worker([engine, "run", d], timeout=max(600.0, 150.0 * len(inputs))))
        if info is not None:
            info.update(answer)
        out = np.load(Path(d, "out.npz"))
        n_out = int(out["n_outputs"])
        return [[out[f"y{i}_{k}"] for k in range(n_out)] for i in range(len(inputs))]
