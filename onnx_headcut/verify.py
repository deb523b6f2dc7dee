"""Prove a cut exact: run the original and the raw model in onnxruntime and compare.

The original's decoded output must equal :func:`onnx_headcut.decode.decode` applied to the raw
model's output, on a deterministic input (and on real images when given). Graph optimisations are
disabled on both sides so that onnxruntime's own fusions cannot hide or cause a difference.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .decode import letterbox, original_output, to_input
from .errors import VerificationError
from .head import Geometry

#: max abs error allowed on an output whose values are within 640 (pixels); scaled above that.
DEFAULT_TOL = 1e-3
_BOX_SCALE = 640.0


@dataclass(frozen=True)
class Check:
    input: str  # "random(seed=0)" or an image path
    max_abs_err: float
    max_abs_err_boxes: float
    max_abs_err_scores: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.max_abs_err)) and self.max_abs_err <= self.tolerance


@dataclass(frozen=True)
class Verification:
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def max_abs_err(self) -> float:
        return max(c.max_abs_err for c in self.checks)

    @property
    def tolerance(self) -> float:
        return min(c.tolerance for c in self.checks)


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


def session(model, threads: int = 1):
    """An onnxruntime CPU session on a path or serialized bytes, with graph optimisations off."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = threads
    so.log_severity_level = 4  # headcut reports failures itself, in one line
    src = os.fspath(model) if isinstance(model, (str, os.PathLike)) else model
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def deterministic_input(shape, dtype=np.float32, seed: int = 0) -> np.ndarray:
    """Uniform [0, 1) noise shaped like the input: every anchor gets a different value."""
    return np.random.default_rng(seed).random(tuple(shape), dtype=np.float32).astype(dtype)


def image_input(path: str | os.PathLike, shape, dtype=np.float32) -> np.ndarray:
    """An image file letterboxed to the model's input, as NCHW floats in [0, 1]."""
    from .images import read_rgb

    img, _, _ = letterbox(read_rgb(path), tuple(shape[-2:]))
    return to_input(img).astype(dtype)


def compare(original_out: np.ndarray, decoded: np.ndarray, tol: float = DEFAULT_TOL, label: str = "",
            channel_first: bool = False) -> Check:
    """Max abs errors between two decoded ``(B, N, C)`` tensors; boxes are columns 0-3.

    The tolerance grows with the box scale above 640 px, and for float16 models it is at least a
    few half-precision ulps of the largest box value (the original decode itself rounds to fp16).
    """
    a = original_out.astype(np.float64)
    b = decoded.astype(np.float64)
    if a.shape != b.shape:
        return Check(label, float("inf"), float("inf"), float("inf"), tol)
    err = np.abs(a - b)
    if channel_first:  # (B, C, N): boxes are rows 0-3
        a, b, err = a.transpose(0, 2, 1), b.transpose(0, 2, 1), err.transpose(0, 2, 1)
    boxes = np.abs(a[..., :4])
    boxes = boxes[np.isfinite(boxes)]
    top = float(boxes.max()) if boxes.size else 0.0
    limit = tol * max(1.0, top / _BOX_SCALE)
    if original_out.dtype == np.float16:
        limit = max(limit, 4 * float(np.spacing(np.float16(max(top, 1.0)))))
    return Check(label, float(err.max()), float(err[..., :4].max()), float(err[..., 4:].max()), limit)


def verify(original, raw, head, images: tuple = (), tol: float = DEFAULT_TOL, seed: int = 0,
           batches: tuple = (1,)) -> Verification:
    """Run ``original`` and ``raw`` (paths or bytes) and compare the original with the decoded raw output.

    Each batch size in ``batches`` gets its own deterministic input (dynamic-batch models).
    """
    g = Geometry.of(head)
    try:
        s_orig = session(original)
    except Exception as e:
        raise VerificationError(f"onnxruntime cannot run the original model, so the cut cannot be checked "
                                f"({_first_line(e)}); use --no-verify to skip the check") from None
    try:
        s_raw = session(raw)
    except Exception as e:  # a bug in the cut, not in the input
        raise VerificationError(f"onnxruntime cannot load the raw model ({_first_line(e)})") from None
    inp = s_orig.get_inputs()[0]
    np_dtype = np.float16 if "float16" in inp.type else np.float32
    feeds = [(f"random(seed={seed})" + (f", batch {n}" if n != 1 else ""),
              deterministic_input((n, *g.input_shape[1:]), np_dtype, seed)) for n in batches]
    feeds += [(str(Path(p)), image_input(p, g.input_shape, np_dtype)) for p in images]
    checks = []
    for label, x in feeds:
        try:
            y = s_orig.run(None, {inp.name: x})[0]
        except Exception as e:  # the input file is not a runnable model
            raise VerificationError(f"onnxruntime cannot run the original model on {label} ({_first_line(e)}); "
                                    "nothing written") from None
        try:
            r = s_raw.run(None, {s_raw.get_inputs()[0].name: x})
        except Exception as e:
            raise VerificationError(f"onnxruntime cannot run the raw model ({_first_line(e)}); nothing written") from None
        with np.errstate(all="ignore"):  # inf/nan in a broken model's output is reported, not warned about
            checks.append(compare(y, original_output(r if g.layout == "levels" else r[0], g), tol, label,
                                  g.channel_first))
    return Verification(tuple(checks))
