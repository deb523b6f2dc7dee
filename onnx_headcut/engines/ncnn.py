"""ncnn target (``.param`` + ``.bin``, written by pnnx's binary in the parent), run by the worker: the
standard library, numpy and (inside :func:`run`) ncnn."""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: packages whose absence is "engine not installed" (exit 2 with :data:`INSTALL`), not a crash
PACKAGES = ("ncnn",)
INSTALL = 'pip install "onnx_headcut[engines]" && pip install --no-deps pnnx'


def files(stem: str) -> list[str]:
    return [f"{stem}.param", f"{stem}.bin"]


def run(spec: dict, xs: list[np.ndarray]) -> list[list[np.ndarray]]:
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
