"""Edge engines: convert a raw ONNX model to MNN or ncnn, and run a model on ort, MNN or ncnn.

Each engine is imported only when used, and MNN and ncnn only ever run in a child process
(:mod:`._worker`): ``import MNN`` writes to stdout at C level, a converter crash must not take the
CLI down, and MNN's own ``mnnconvert``/``mnnquant`` scripts (which pip-install a logging package
and send usage data) are never touched — the converter's C entry ``_tools.mnnconvert`` is called.
pnnx is used through its bundled binary only, so its Python package (which imports torch) is not
imported either.
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

ENGINES = ("ort", "mnn", "ncnn")
EXTRA_HINT = 'pip install "onnx_headcut[engines]" && pip install --no-deps pnnx'


class EngineError(HeadcutError):
    """An engine is missing, or failed to convert or run a model."""


def _need(module: str, engine: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise EngineError(f"the {engine} engine needs the '{module}' package: {EXTRA_HINT}")


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
    return {".onnx": "ort", ".mnn": "mnn", ".param": "ncnn"}.get(suffix) or _bad_model(path)


#: the model file each engine runs
SUFFIX = {"ort": ".onnx", "mnn": ".mnn", "ncnn": ".param"}


def check_engine(path: str | os.PathLike, engine: str, convertible: bool = False) -> None:
    """:class:`UsageError` (one line) when ``engine`` cannot run the file at ``path``. With
    ``convertible`` an ``.onnx`` is accepted for MNN and ncnn (the caller converts it first)."""

    if engine not in ENGINES:
        raise UsageError(f"unknown engine {engine!r} (choose from {', '.join(ENGINES)})")
    suffix = Path(path).suffix.lower()
    own = engine_for(path)
    if own == engine or (convertible and suffix == ".onnx"):
        return
    hint = (f"convert it first: headcut convert {Path(path).name} --to {engine}" if suffix == ".onnx" else
            f"give the .onnx model, or run it with --engine {own}")
    kind = {"ort": "an ONNX", "mnn": "an MNN", "ncnn": "an ncnn"}[own]
    raise UsageError(f"{path}: --engine {engine} runs {SUFFIX[engine]} files, and this is {kind} model ({suffix}); "
                     f"{hint}")


def _bad_model(path) -> str:
    raise EngineError(f"{path}: unknown model type (expected .onnx, .mnn or .param)")


def worker(args: list[str], timeout: float = 600) -> str:
    """Run ``python -m onnx_headcut.engines._worker ARGS`` and return its last stdout line (JSON)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    try:
        p = subprocess.run([sys.executable, "-m", "onnx_headcut.engines._worker", *args], capture_output=True,
                           text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise EngineError(f"engine worker timed out after {timeout:.0f} s ({args[0]} {args[1]})") from None
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("HEADCUT_RESULT ")]
    if p.returncode != 0 or not lines:
        tail = (p.stderr.strip().splitlines() or p.stdout.strip().splitlines() or ["no output"])[-1]
        tail = tail.removeprefix("RuntimeError: ")
        what = f"exit {p.returncode}" if p.returncode >= 0 else f"killed by signal {-p.returncode}"
        raise EngineError(f"{args[0]} {args[1]} failed ({what}): {tail[:300]}")
    return lines[-1][len("HEADCUT_RESULT "):]


def run(model: str | os.PathLike, inputs: list[np.ndarray], engine: str | None = None,
        input_name: str | None = None, output_names: list[str] | None = None) -> list[list[np.ndarray]]:
    """Run ``model`` on ``engine`` for each input array; returns, per input, the list of outputs.

    ort runs in this process; MNN and ncnn in a worker process. Output arrays are given back with
    the batch axis and NCHW layout restored (ncnn drops the batch axis; MNN may hand out NC4HW4).
    """
    engine = engine or engine_for(model)
    if engine not in ENGINES:
        raise EngineError(f"unknown engine {engine!r} (choose from {', '.join(ENGINES)})")
    if engine == "ort":
        s = session(model)
        name = input_name or s.get_inputs()[0].name
        return [s.run(output_names, {name: x}) for x in inputs]
    _need({"mnn": "MNN", "ncnn": "ncnn"}[engine], engine)
    with tempfile.TemporaryDirectory(prefix="headcut-run-") as d:
        np.savez(Path(d, "in.npz"), *inputs)
        spec = {"model": str(Path(model).resolve()), "input": input_name, "outputs": output_names,
                "shapes": None}
        Path(d, "spec.json").write_text(json.dumps(spec))
        worker([engine, "run", d])
        out = np.load(Path(d, "out.npz"))
        n_out = int(out["n_outputs"])
        return [[out[f"y{i}_{k}"] for k in range(n_out)] for i in range(len(inputs))]
