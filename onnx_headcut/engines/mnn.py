"""MNN target (``.mnn``), run by the worker: the standard library, numpy and (inside the functions) MNN.

The converter's C entry ``_tools.mnnconvert`` is called; never ``MNN.tools`` or MNN's console scripts
(they pip-install a logging package and send usage data).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np

#: packages whose absence is "engine not installed" (exit 2 with :data:`INSTALL`), not a crash
PACKAGES = ("MNN", "_tools")
INSTALL = 'pip install "onnx_headcut[engines]"'


def files(stem: str) -> list[str]:
    return [f"{stem}.mnn"]


def convert(onnx_path: str, out_dir: str, stem: str, options: dict) -> dict:
    import _tools  # MNN's converter entry; never MNN.tools (it pip-installs a logger and phones home)

    out_path = str(Path(out_dir, f"{stem}.mnn"))
    # capture the converter's C-level stdout to read the tensor names it reports
    with tempfile.TemporaryFile(mode="w+b") as cap:
        saved = os.dup(1)
        os.dup2(cap.fileno(), 1)
        try:
            _tools.mnnconvert(["mnnconvert", "-f", "ONNX", "--modelFile", onnx_path, "--MNNModel", out_path,
                               "--bizCode", "headcut", "--keepInputFormat"])
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
        cap.seek(0)
        log = cap.read().decode(errors="replace")
    if not Path(out_path).exists() or "Converted Success" not in log:
        lines = [ln for ln in log.splitlines() if ln.strip()]
        raise RuntimeError("MNN converter failed: " + (lines[-1] if lines else "no output"))

    def names(tag: str) -> list[str]:
        for ln in log.splitlines():
            if ln.startswith(tag):
                inside = ln.split("[", 1)[1].rsplit("]", 1)[0]
                return [x.strip() for x in inside.split(",") if x.strip()]
        return []

    return {"inputs": names("inputTensors"), "outputs": names("outputTensors")}


def run(spec: dict, xs: list[np.ndarray]) -> list[list[np.ndarray]]:
    import MNN
    import MNN.expr as F

    inp = spec["input"]
    outs = spec["outputs"]
    module = MNN.nn.load_module_from_file(spec["model"], [inp] if inp else [], outs or [])
    results = []
    for x in xs:
        v = F.const(x.astype(np.float32), list(x.shape), F.NCHW)
        ys = module.forward([v])
        ys = ys if isinstance(ys, (list, tuple)) else [ys]
        results.append([np.array(F.convert(y, F.NCHW).read(), dtype=np.float32).reshape(y.shape) for y in ys])
    return results
