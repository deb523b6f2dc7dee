"""Small stateless readers of ONNX protos: node attributes, Constant values, declared tensor shapes.

Everything else in :mod:`onnx_headcut.graph` builds on these; they read and never modify a proto.
"""

from __future__ import annotations

from typing import Any, TypeGuard

import numpy as np
import onnx
from onnx import numpy_helper

Shape = tuple  # of int (static) | str (symbolic) | None (unknown)


def attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    """The value of attribute ``name`` of ``node``, or ``default``."""
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def constant_node_value(node: onnx.NodeProto) -> np.ndarray | None:
    """The value a ``Constant`` node holds, or None when it is not a dense numeric value
    (``sparse_value``, ``value_string(s)``, or no value attribute)."""
    for a in node.attribute:
        if a.name == "value":
            return numpy_helper.to_array(a.t)
        if a.name == "value_float":
            return np.array(a.f, dtype=np.float32)
        if a.name == "value_floats":
            return np.array(list(a.floats), dtype=np.float32)
        if a.name == "value_int":
            return np.array(a.i, dtype=np.int64)
        if a.name == "value_ints":
            return np.array(list(a.ints), dtype=np.int64)
    return None


def dims(type_proto: onnx.TypeProto) -> Shape | None:
    """The shape a tensor type declares (ints, symbolic strs, None for unknown dims), or None if it has none."""
    tt = type_proto.tensor_type
    if not tt.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim)


def is_static(shape: Shape | None) -> TypeGuard[tuple[int, ...]]:
    """True when every dim of ``shape`` is a known positive int."""
    return shape is not None and all(isinstance(d, int) and d > 0 for d in shape)


def max_rank(shapes: dict[str, Shape]) -> int:
    """The largest rank among the tensors in ``shapes`` (0 for an empty map)."""
    return max((len(s) for s in shapes.values()), default=0)
