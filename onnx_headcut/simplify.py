"""onnxsim where it serves: fold run-time shape plumbing before locating, and ``--simplify`` the result.

Unsimplified legacy exports compute reshape targets and grids through Shape → Gather → Concat
chains, and ``--dynamic-batch`` exports have symbolic dims; neither can be matched on constants.
:func:`fold` pins the batch to 1 and lets onnxsim fold those chains into constants (no other
optimisation, so the prediction convs keep their tensors), after which the locator sees numbers.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys

import onnx

from .errors import HeadcutError


@contextlib.contextmanager
def _silenced():
    """Silence stdout/stderr at the file-descriptor level: onnxsim's C++ core prints warnings."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved + [devnull]:
            os.close(fd)


def _quiet_onnxsim(model: onnx.ModelProto, **kw) -> onnx.ModelProto:
    import onnxsim

    try:
        with _silenced():
            out, ok = onnxsim.simplify(model, **kw)
    except Exception as e:  # onnxsim raises many types; surface one line
        raise HeadcutError(f"onnxsim failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    if not ok:
        raise HeadcutError("onnxsim could not validate its result")
    return out


def needs_folding(model: onnx.ModelProto) -> bool:
    """True when the input has a non-static dim or the graph computes shapes at run time."""
    inits = {t.name for t in model.graph.initializer}
    for i in model.graph.input:
        if i.name in inits:
            continue
        dims = i.type.tensor_type.shape.dim
        if any(not d.HasField("dim_value") or d.dim_value <= 0 for d in dims):
            return True
    return any(n.op_type in ("Shape", "Range") for n in model.graph.node)


def fold(model: onnx.ModelProto, size: tuple[int, int] | None = None) -> onnx.ModelProto:
    """Constant-fold shape computations with onnxsim, batch pinned to 1; no fusions.

    ``size`` (H, W) pins a symbolic height and width (an export with dynamic image axes); without it
    such an input is refused.
    """
    inits = {t.name for t in model.graph.initializer}
    shapes = {}
    for i in model.graph.input:
        if i.name in inits:
            continue
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                for d in i.type.tensor_type.shape.dim]
        if dims and dims[0] is None:
            dims[0] = 1
        if size is not None and len(dims) == 4:
            dims[2:] = list(size)
        if any(d is None for d in dims):
            raise HeadcutError(f"input '{i.name}' has non-batch symbolic dims {dims}; export with a fixed image size")
        shapes[i.name] = dims
    return _quiet_onnxsim(model, perform_optimization=False, overwrite_input_shapes=shapes)


def simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    """Full onnxsim pass over a (raw) model, as ``--simplify`` asks."""
    if model.ByteSize() > 1_500_000_000:
        raise HeadcutError("--simplify: onnxsim cannot handle a model over 1.5 GB; run without it")
    return _quiet_onnxsim(model)


