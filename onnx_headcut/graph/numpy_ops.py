"""numpy implementations of the ONNX ops exporters put in constant chains (grid, stride and anchor
chains, reshape targets, slice bounds): what :mod:`.constants` folds without onnx's reference
evaluator (fast: no evaluator start-up).

Each entry of :data:`NUMPY_OPS` takes the node and its input values (None for an omitted optional
input) and returns the value of its first output. It raises :class:`Unsupported` for a node of a
listed op that numpy here does not cover, and the usual numpy errors for a malformed one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from .protos import attr, constant_node_value

Inputs = Sequence[Any]  # the node's input values: np.ndarray, or None for an omitted optional input


class Unsupported(Exception):
    """This node is not computed here: leave it to onnx's reference evaluator."""


def _constant(node: onnx.NodeProto, ins: Inputs) -> np.ndarray:
    value = constant_node_value(node)
    if value is None:  # sparse_value, value_string(s): not a dense numeric value numpy reads here
        raise Unsupported(node.op_type)
    return value


def _axes(node: onnx.NodeProto, ins: Inputs, k: int = 1) -> list[int] | None:
    """``axes``: the attribute (opset < 13) or input ``k`` (opset >= 13), None when neither is given."""
    a = attr(node, "axes")
    if a is None and len(ins) > k and ins[k] is not None:
        a = ins[k].tolist()
    return a


def _reshape(node: onnx.NodeProto, ins: Inputs) -> np.ndarray:
    x = ins[0]
    return x.reshape([int(d) if d != 0 else x.shape[k] for k, d in enumerate(ins[1].tolist())])  # 0: copy the dim


def _unsqueeze(node: onnx.NodeProto, ins: Inputs) -> np.ndarray:
    x, axes = ins[0], _axes(node, ins)
    if axes is None:
        raise TypeError("Unsqueeze without axes")  # malformed: left to the reference evaluator
    for ax in sorted(a if a >= 0 else a + x.ndim + len(axes) for a in axes):
        x = np.expand_dims(x, ax)
    return x


def _squeeze(node: onnx.NodeProto, ins: Inputs) -> np.ndarray:
    axes = _axes(node, ins)
    return np.squeeze(ins[0], axis=tuple(axes)) if axes is not None else np.squeeze(ins[0])


def _slice(node: onnx.NodeProto, ins: Inputs) -> np.ndarray:
    x = ins[0]
    starts, ends = ins[1].tolist(), ins[2].tolist()
    axes = ins[3].tolist() if len(ins) > 3 and ins[3] is not None else list(range(len(starts)))
    steps = ins[4].tolist() if len(ins) > 4 and ins[4] is not None else [1] * len(starts)
    idx = [slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, axes, steps, strict=False):
        idx[a] = slice(s, e, st)
    return x[tuple(idx)]


def _constant_of_shape(node: onnx.NodeProto, ins: Inputs) -> np.ndarray:
    """ONNX ConstantOfShape: ``value`` (a one-element tensor; default float32 0) repeated to the shape ``ins[0]``."""
    value = np.zeros(1, np.float32)
    for a in node.attribute:
        if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
            value = numpy_helper.to_array(a.t)
    return np.full([int(d) for d in np.asarray(ins[0]).reshape(-1)], value.reshape(-1)[0], dtype=value.dtype)


NUMPY_OPS: dict[str, Callable[[onnx.NodeProto, Inputs], Any]] = {
    "Constant": _constant,
    "Identity": lambda n, i: i[0],
    "Cast": lambda n, i: i[0].astype(onnx.helper.tensor_dtype_to_np_dtype(attr(n, "to"))),
    "Reshape": _reshape,
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Concat": lambda n, i: np.concatenate(i, axis=attr(n, "axis")),
    "Expand": lambda n, i: i[0] * np.ones(i[1].tolist(), dtype=i[0].dtype),
    "Tile": lambda n, i: np.tile(i[0], i[1].tolist()),
    "Transpose": lambda n, i: np.transpose(i[0], attr(n, "perm")),
    "Gather": lambda n, i: np.take(i[0], i[1], axis=attr(n, "axis", 0)),
    "Add": lambda n, i: i[0] + i[1], "Sub": lambda n, i: i[0] - i[1], "Mul": lambda n, i: i[0] * i[1],
    "Range": lambda n, i: np.arange(i[0], i[1], i[2]).astype(i[0].dtype),
    "Slice": _slice,
    "ConstantOfShape": _constant_of_shape,
}
