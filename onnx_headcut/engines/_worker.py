"""Child-process entry for the edge engines: ``PYTHON path/to/_worker.py ENGINE VERB ARGS``.

Run by file path, with any interpreter: it imports only the standard library, numpy and the target
module ``ENGINE.py`` beside it (loaded by path under a private name, so ``openvino.py`` here never
shadows the ``openvino`` package), which imports its engine's package inside its functions. So an
engine can live in its own virtualenv holding nothing of headcut's but numpy
(``HEADCUT_PYTHON_<ENGINE>``, see :func:`onnx_headcut.engines.interpreter`).

Verbs: ``convert ONNX OUTDIR STEM OPTIONS_JSON``, ``run DIR`` (``DIR/spec.json`` + ``DIR/in.npz`` →
``DIR/out.npz``) and ``bench DIR``. The last stdout line ``HEADCUT_RESULT {json}`` is the answer;
``HEADCUT_MISSING {json}`` (exit 2) says a package is not importable here; ``HEADCUT_ERROR {json}``
(before the traceback, exit 1) says what failed in one line; everything else the engines print is noise the
parent discards.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# the script's folder is sys.path[0]: drop it, or ``import openvino`` would find openvino.py here
sys.path[:] = [p for p in sys.path if not p or Path(p).resolve() != HERE] if sys.path else []

#: exit code of a worker that cannot import a package it needs (the parent turns it into exit 2)
MISSING = 2


def _result(obj, tag: str = "HEADCUT_RESULT") -> None:
    sys.stdout.flush()
    print(f"{tag} " + json.dumps(obj), flush=True)


def _target(engine: str):
    path = HERE / f"{engine}.py"
    if not engine.isidentifier() or engine.startswith("_") or not path.is_file():
        raise SystemExit(f"unknown engine {engine}")
    spec = importlib.util.spec_from_file_location(f"headcut_target_{engine}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _runs(target, d: Path, spec: dict, xs: list):
    out = target.run(spec, xs)
    return out if isinstance(out, tuple) else (out, {})


def main(argv: list[str]) -> int:
    engine, verb = argv[0], argv[1]
    try:
        import numpy as np
    except ImportError:
        _result({"package": "numpy", "python": sys.executable}, "HEADCUT_MISSING")
        return MISSING
    target = _target(engine)
    try:
        return _verb(target, engine, verb, argv[2:], np)
    except ImportError as e:
        root = (e.name or "").split(".")[0]
        if root and root in getattr(target, "PACKAGES", ()):
            _result({"package": root, "python": sys.executable}, "HEADCUT_MISSING")
            return MISSING
        _result({"error": _said(e)}, "HEADCUT_ERROR")
        raise
    except Exception as e:  # the traceback's last line may be the tail of a printed array: say the first
        _result({"error": _said(e)}, "HEADCUT_ERROR")
        raise


def _said(e: BaseException) -> str:
    """``Type: first line of the message``, as a traceback ends for a one-line message."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _verb(target, engine: str, verb: str, args: list[str], np) -> int:
    if verb == "convert":
        _result(target.convert(args[0], args[1], args[2], json.loads(args[3]) if len(args) > 3 else {}))
        return 0
    d = Path(args[0])
    spec = json.loads((d / "spec.json").read_text())
    data = np.load(d / "in.npz")
    xs = [data[f"arr_{i}"] for i in range(len(data.files))]
    if verb == "bench":  # median milliseconds of spec["repeat"] runs on the first input
        import time

        for _ in range(3):
            _runs(target, d, spec, xs[:1])
        times = []
        for _ in range(int(spec.get("repeat", 20))):
            t = time.perf_counter()
            _runs(target, d, spec, xs[:1])
            times.append(time.perf_counter() - t)
        _result({"ms": sorted(times)[len(times) // 2] * 1e3})
        return 0
    if verb == "run":
        results, info = _runs(target, d, spec, xs)
        arrays = {f"y{i}_{k}": y for i, ys in enumerate(results) for k, y in enumerate(ys)}
        np.savez(d / "out.npz", n_outputs=np.array(len(results[0]) if results else 0), **arrays)
        _result({"runs": len(results), **info})
        return 0
    raise SystemExit(f"unknown verb {engine} {verb}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
