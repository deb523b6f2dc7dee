"""onnx_headcut: cut the decode off ONNX YOLO detectors, keep the raw head, prove the cut exact.

Data flow, one module each: :mod:`.io` (load/save) → :mod:`.locate` → :mod:`.cut` →
:mod:`.surgery` (rank ≤ 4) → :mod:`.verify`; :mod:`.strip` chains them, :mod:`.decode` is the
numpy reference decode and :mod:`.cli` the thin command line.
"""

__version__ = "0.2.0"

__all__ = ["__version__", "strip", "inspect", "decode", "surgery"]


_MODULES = ("strip", "pipeline", "decode", "surgery", "locate", "cut", "check", "synth", "heads", "io", "errors",
            "metadata", "graph", "preprocess", "names")


def __getattr__(name: str):  # the submodules load on first use: `headcut --help` must not import onnx
    import importlib

    if name == "inspect":  # the function; `strip` is always the module (strip.strip, strip.inspect)
        return importlib.import_module(".pipeline", __name__).inspect
    if name in _MODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(name)
