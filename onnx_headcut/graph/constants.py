"""Constant evaluation: the value of a tensor that depends on initializers and Constant nodes only.

One evaluator. :func:`evaluate` collects the constant subgraph behind a tensor (at most
:data:`MAX_NODES` nodes; none of :data:`NOT_FOLDABLE`; no graph input), then folds it in graph order
with the numpy ops of :mod:`.numpy_ops`, refusing a node whose declared output is above
:data:`~.sizes.MAX_CONSTANT_ELEMENTS` before computing it. Only a subgraph numpy does not cover (another
op, or a node numpy cannot compute) goes to onnx's reference evaluator, after shape inference has
bounded every output (:func:`~.sizes.bounded`). Nothing is modified: the model is only read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import numpy_helper

from . import sizes
from .numpy_ops import NUMPY_OPS, Unsupported

if TYPE_CHECKING:
    from .index import GraphIndex

#: the largest constant subgraph evaluated (nodes)
MAX_NODES = 64

#: the reference evaluator is not run over more than this many initializer elements
MAX_REFERENCE_INITIALIZER_ELEMENTS = 1 << 20

#: ops whose value depends on more than their inputs' values, or that are too costly to fold here.
NOT_FOLDABLE = frozenset({"Shape", "Size", "Conv", "ConvTranspose", "MatMul", "Gemm", "RandomNormal",
                          "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial"})

#: what numpy raises for a malformed constant chain (bad axes, shapes that do not broadcast, ...)
_MALFORMED = (KeyError, ValueError, TypeError, IndexError, OverflowError, ZeroDivisionError)


def evaluate(ix: GraphIndex, name: str) -> dict[str, np.ndarray]:
    """Values of ``name`` and of the intermediates computed on the way (for the caller's cache);
    ``name`` is missing when it is not constant, or its chain is malformed or not evaluable.
    Raises :class:`~onnx_headcut.errors.TooLargeError` for a declared size above the limit."""
    if name in ix.initializers:
        try:
            return {name: numpy_helper.to_array(ix.initializers[name])}
        except (ValueError, TypeError, IndexError):  # an unreadable initializer is not a readable value
            return {}
    nodes = constant_subgraph(ix, name)
    if nodes is None:
        return {}
    values = _fold_numpy(ix, nodes)
    if values is None:
        values = _fold_reference(ix, nodes)
    return values or {}


def constant_subgraph(ix: GraphIndex, name: str) -> list[onnx.NodeProto] | None:
    """The nodes ``name`` is computed from, in graph order, when they reach initializers and Constant
    nodes only (no graph input, no op of :data:`NOT_FOLDABLE`, at most :data:`MAX_NODES`); else None."""
    if name in ix.graph_inputs or name not in ix.producer:
        return None
    nodes: list[onnx.NodeProto] = []
    taken: set[int] = set()
    stack, seen = [name], set()
    while stack:
        t = stack.pop()
        if not t or t in seen or t in ix.initializers:
            continue
        seen.add(t)
        node = ix.producer.get(t)
        if node is None or node.op_type in NOT_FOLDABLE or len(nodes) >= MAX_NODES:
            return None
        if id(node) not in taken:
            taken.add(id(node))
            nodes.append(node)
            stack.extend(node.input)
    nodes.sort(key=ix.position)
    return nodes


def _fold_numpy(ix: GraphIndex, nodes: list[onnx.NodeProto]) -> dict[str, np.ndarray] | None:
    """``nodes`` (a constant subgraph in graph order) computed with numpy; None when one of them is
    not covered by :data:`~.numpy_ops.NUMPY_OPS` or the chain is malformed."""
    env: dict[str, np.ndarray] = {}

    def get(t: str) -> np.ndarray:
        if t in env:
            return env[t]
        return numpy_helper.to_array(ix.initializers[t])  # KeyError: a tensor numpy did not compute

    try:
        for n in nodes:
            op = NUMPY_OPS.get(n.op_type)
            if op is None:
                return None
            ins = [get(i) if i else None for i in n.input]
            sizes.check_declared_count(n, ins)  # before anything is allocated
            env[n.output[0]] = np.asarray(op(n, ins))
    except (Unsupported, *_MALFORMED):
        return None
    return env


def _fold_reference(ix: GraphIndex, nodes: list[onnx.NodeProto]) -> dict[str, np.ndarray] | None:
    """``nodes`` (a constant subgraph in graph order) run by onnx's reference evaluator, every output
    returned (later lookups hit the cache); None when its sizes cannot be bounded or it fails."""
    used = {i for n in nodes for i in n.input}
    inits = [ix.initializers[i] for i in used if i in ix.initializers]
    if sum(int(np.prod(t.dims)) for t in inits) > MAX_REFERENCE_INITIALIZER_ELEMENTS:
        return None
    outs = [o for n in nodes for o in n.output if o]
    g = onnx.helper.make_graph(nodes, "const", [], [onnx.helper.make_empty_tensor_value_info(o) for o in outs],
                               inits)  # copies the nodes and initializers: the model is untouched
    m = onnx.helper.make_model(g, opset_imports=list(ix.model.opset_import))
    if not sizes.bounded(m, {o: n.op_type for n in nodes for o in n.output}):
        return None  # an output whose size cannot be known before running it: not evaluated
    try:
        from onnx.reference import ReferenceEvaluator

        values = ReferenceEvaluator(m).run(None, {})
    except Exception:  # not evaluable here: treat as not constant
        return None
    return {o: np.asarray(v) for o, v in zip(outs, values, strict=False)}
