"""onnx_headcut: cut the decode off ONNX YOLO detectors, keep the raw head, prove the cut exact.

Data flow, one module each: :mod:`.io` (load/save) → :mod:`.locate` → :mod:`.cut` →
:mod:`.surgery` (rank ≤ 4) → :mod:`.verify`; :mod:`.strip` chains them, :mod:`.decode` is the
numpy reference decode and :mod:`.cli` the thin command line.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "strip", "inspect", "decode", "surgery"]


def __getattr__(name):  # keep `import onnx_headcut` (and `headcut --help`) fast
    import importlib

    if name in ("strip", "inspect"):
        return getattr(importlib.import_module(".strip", __name__), name)
    if name in ("decode", "surgery", "locate", "cut", "verify", "synth", "head", "io", "errors"):
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(name)
