"""Child-process entry for MNN and ncnn: ``python -m onnx_headcut.engines._worker ENGINE VERB ARGS``.

Verbs: ``convert ONNX OUTDIR`` and ``run DIR`` (``DIR/spec.json`` + ``DIR/in.npz`` → ``DIR/out.npz``).
The last stdout line ``HEADCUT_RESULT {json}`` is the answer; everything else the engines print
is noise the parent discards.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np


def _result(obj) -> None:
    sys.stdout.flush()
    print("HEADCUT_RESULT " + json.dumps(obj), flush=True)


def mnn_convert(onnx_path: str, out_path: str) -> dict:
    import os
    import tempfile

    import _tools  # MNN's converter entry; never MNN.tools (it pip-installs a logger and phones home)

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


def mnn_run(d: Path, spec: dict, xs: list[np.ndarray]) -> list[list[np.ndarray]]:
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


def ncnn_run(d: Path, spec: dict, xs: list[np.ndarray]) -> list[list[np.ndarray]]:
    import ncnn

    param = Path(spec["model"])
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    if net.load_param(str(param)) != 0:
        kinds = {ln.split()[0] for ln in param.read_text().splitlines()[2:] if ln.split()}
        missing = sorted(k for k in kinds if ncnn.layer_to_index(k) < 0)
        raise RuntimeError(f"ncnn cannot load {param.name}: layers ncnn does not have: {', '.join(missing) or '?'}")
    if net.load_model(str(param.with_suffix(".bin"))) != 0:
        raise RuntimeError(f"ncnn cannot load the weights {param.with_suffix('.bin').name}")
    results = []
    for x in xs:
        ex = net.create_extractor()
        chw = np.ascontiguousarray(x[0], dtype=np.float32)  # ncnn has no batch axis; keep the buffer alive
        mat = ncnn.Mat(chw)
        ex.input(spec["input"], mat)
        ys = []
        for name in spec["outputs"]:
            ret, out = ex.extract(name)
            if ret != 0:
                raise RuntimeError(f"ncnn could not extract blob '{name}' (code {ret})")
            ys.append(np.array(out, dtype=np.float32)[None])  # batch axis back
        results.append(ys)
        del mat, chw
    return results


def main(argv: list[str]) -> int:
    engine, verb = argv[0], argv[1]
    if engine == "mnn" and verb == "convert":
        _result(mnn_convert(argv[2], argv[3]))
        return 0
    if verb == "bench":  # bench DIR: median milliseconds of spec["repeat"] runs on the first input
        import time

        d = Path(argv[2])
        spec = json.loads((d / "spec.json").read_text())
        x = np.load(d / "in.npz")["arr_0"]
        runner = mnn_run if engine == "mnn" else ncnn_run
        for _ in range(3):
            runner(d, spec, [x])
        times = []
        for _ in range(int(spec.get("repeat", 20))):
            t = time.perf_counter()
            runner(d, spec, [x])
            times.append(time.perf_counter() - t)
        _result({"ms": sorted(times)[len(times) // 2] * 1e3})
        return 0
    if verb == "run":
        d = Path(argv[2])
        spec = json.loads((d / "spec.json").read_text())
        data = np.load(d / "in.npz")
        xs = [data[f"arr_{i}"] for i in range(len(data.files))]
        results = (mnn_run if engine == "mnn" else ncnn_run)(d, spec, xs)
        # typed Any: numpy's stub would otherwise read the ** entries as its ``allow_pickle: bool``
        arrays: dict[str, Any] = {f"y{i}_{k}": y for i, ys in enumerate(results) for k, y in enumerate(ys)}
        np.savez(d / "out.npz", n_outputs=np.array(len(results[0]) if results else 0), **arrays)
        _result({"runs": len(results)})
        return 0
    raise SystemExit(f"unknown verb {engine} {verb}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
