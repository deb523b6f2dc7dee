"""The public entry point of the pipeline, where users import it: ``from onnx_headcut import strip``.

``strip.strip(src, dst)`` cuts, lowers, records, verifies and writes; ``strip.inspect(src)`` says
what it would do; ``strip.read_metadata(raw)`` reads the head record back. The implementation is
:mod:`onnx_headcut.pipeline`.
"""

from __future__ import annotations

from .metadata import read_metadata
from .pipeline import Inspection, StripResult, inspect, strip

__all__ = ["Inspection", "StripResult", "inspect", "read_metadata", "strip"]
