"""How big headcut lets tensors get: the limits, the one refusal message, and the checks that refuse
a declared size before anything is allocated (model inputs, constants the graph creates, the outputs
of a constant subgraph about to be evaluated).

The limits are read when a check runs, so setting ``onnx_headcut.graph.MAX_*`` (or this module's)
takes effect at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import onnx

from ..errors import TooLargeError
from .protos import Shape, attr, dims

#: The largest tensor headcut computes itself: 2**24 elements (64 MiB as float32). Constant folding
#: (grid, stride and anchor chains, reshape targets) and the check run before onnxsim folds a graph
#: refuse anything the graph *declares* larger -- ConstantOfShape, Expand, Tile, Range, broadcasting
#: arithmetic, sparse constants -- before a byte is allocated. Real decode constants are far below
#: it: a grid or anchor-point constant is (1, N, 2) with N ~ 200k anchors even at 1280-1920 px
#: inputs (~2**19 elements). Weights the file itself holds are not limited (they are already read).
MAX_CONSTANT_ELEMENTS = 1 << 24

#: The largest model input headcut feeds (verification's deterministic input, a letterboxed image):
#: 2**26 elements, e.g. 3 x 4096 x 4096 at batch 1. A file declaring a larger input is refused before
#: an input tensor is allocated.
MAX_INPUT_ELEMENTS = 1 << 26

#: ops whose output is not a function of their inputs: never folded (not constant), but onnxruntime still
#: allocates what they declare, so their sizes are checked too
_RANDOM = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
                     "Bernoulli"})


def prod(values: Iterable[Any]) -> int:
    """The product of ``values`` as a Python int (no overflow; 1 for none)."""
    n = 1
    for d in values:
        n *= int(d)
    return n


def too_large(name: str, op: str, count: int) -> TooLargeError:
    """The one refusal for a constant above :data:`MAX_CONSTANT_ELEMENTS` (what, where, how big, the limit)."""
    return TooLargeError(f"constant '{name}' ({op}) would hold {count} elements, above headcut's limit of "
                         f"{MAX_CONSTANT_ELEMENTS}; refusing to materialise it")


def check_input_size(name: str, shape: Shape, batch: int = 1) -> None:
    """Refuse to run a model whose input ``name`` of ``shape`` (symbolic dims count as ``batch``)
    would exceed :data:`MAX_INPUT_ELEMENTS`."""
    n = prod(d if isinstance(d, int) and d > 0 else batch for d in shape)
    if n > MAX_INPUT_ELEMENTS:
        raise TooLargeError(f"input '{name}' {list(shape)} would hold {n} elements, above headcut's limit of "
                            f"{MAX_INPUT_ELEMENTS} for running the model")


def check_declared_count(node: onnx.NodeProto, ins: Sequence[np.ndarray | None]) -> None:
    """Refuse (:func:`too_large`) to compute ``node`` from the values ``ins`` when its output would be
    above :data:`MAX_CONSTANT_ELEMENTS`, judged from shapes only, before anything is allocated."""
    count = _declared_count(node, ins)
    if count is not None and count > MAX_CONSTANT_ELEMENTS:
        raise too_large(node.output[0], node.op_type, count)


def _declared_count(node: onnx.NodeProto, ins: Sequence[Any]) -> int | None:
    """How many elements ``node`` would produce from the values ``ins``, computed from shapes only;
    None for ops whose output is never larger than their inputs (Slice, Cast, Transpose, ...)."""
    op = node.op_type
    if op == "ConstantOfShape":
        shape = [int(d) for d in np.asarray(ins[0]).reshape(-1)]
        if any(d < 0 for d in shape):
            raise ValueError("negative dim")
        return prod(shape)
    if op == "Expand":
        return prod(np.broadcast_shapes(ins[0].shape, tuple(int(d) for d in np.asarray(ins[1]).reshape(-1))))
    if op == "Tile":
        reps = [int(r) for r in np.asarray(ins[1]).reshape(-1)]
        return prod([d * r for d, r in zip(ins[0].shape, reps, strict=False)]) if len(reps) == ins[0].ndim else None
    if op == "Range":
        return range_length(*ins[:3])
    if op in ("Add", "Sub", "Mul"):
        return prod(np.broadcast_shapes(ins[0].shape, ins[1].shape))
    if op == "Concat":
        return sum(int(x.size) for x in ins if x is not None)
    if op == "Gather":
        return prod(ins[1].shape) * (int(ins[0].size) // max(1, ins[0].shape[attr(node, "axis", 0)]))
    return None


def range_length(start: Any, limit: Any, delta: Any) -> int:
    """How many elements ONNX ``Range(start, limit, delta)`` produces (ValueError for delta 0)."""
    d = float(np.asarray(delta).reshape(-1)[0])
    if d == 0:
        raise ValueError("Range with delta 0")
    return max(0, int(np.ceil((float(np.asarray(limit).reshape(-1)[0]) - float(np.asarray(start).reshape(-1)[0])) / d)))


def bounded(model: onnx.ModelProto, ops: dict[str, str]) -> bool:
    """True when shape inference bounds every output of ``model`` (a constant subgraph; ``ops`` maps
    each output to its op type) within :data:`MAX_CONSTANT_ELEMENTS`; raises :func:`too_large` for
    one declared above it, False when a size cannot be known before running it."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:
        return False
    known = {vi.name: dims(vi.type) for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    for name, op in ops.items():
        shape = known.get(name)
        if shape is None or not all(isinstance(d, int) for d in shape):
            return False
        if prod(shape) > MAX_CONSTANT_ELEMENTS:
            raise too_large(name, op, prod(shape))
    return True


def check_constant_sizes(model: onnx.ModelProto, shapes: dict[str, Shape]) -> None:
    """Refuse a graph that declares a constant above :data:`MAX_CONSTANT_ELEMENTS` which the file does
    not itself hold, before anything (headcut's folder, onnxsim, onnxruntime) materialises it.

    A tensor is constant when it depends on initializers, Constant nodes and static shapes only (Shape
    and Size outputs count: onnxsim folds them). It is refused when its inferred static size is above
    the limit and above each of its inputs' sizes (so a large weight cast to another type, held by the
    file, passes; a ConstantOfShape, Expand, Tile, Range or broadcast that creates one does not).
    Sparse constants and sparse initializers are refused on their declared dims. Raises
    :class:`~onnx_headcut.errors.TooLargeError`.
    """
    g = model.graph
    for sp in g.sparse_initializer:
        if prod(sp.dims) > MAX_CONSTANT_ELEMENTS:
            raise too_large(sp.values.name or sp.indices.name, "sparse initializer", prod(sp.dims))
    const = {t.name for t in g.initializer} | {sp.values.name for sp in g.sparse_initializer}

    def size(name: str) -> int | None:
        shape = shapes.get(name)
        return prod(shape) if shape is not None and all(isinstance(d, int) for d in shape) else None

    for node in g.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "sparse_value" and prod(a.sparse_tensor.dims) > MAX_CONSTANT_ELEMENTS:
                    raise too_large(node.output[0], "Constant sparse_value", prod(a.sparse_tensor.dims))
            const.update(node.output)
            continue
        random = node.op_type in _RANDOM
        if not random and node.op_type not in ("Shape", "Size") and not all(not i or i in const for i in node.input):
            continue
        if not random:
            const.update(o for o in node.output if o)
        if node.op_type in ("Shape", "Size"):
            continue
        biggest = max((size(i) or 0 for i in node.input if i), default=0)
        for o in node.output:
            n = size(o) if o else None
            if n is not None and n > MAX_CONSTANT_ELEMENTS and n > biggest:
                raise too_large(o, node.op_type, n)
