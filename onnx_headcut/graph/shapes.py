"""Shape inference without the weights: :func:`skeleton` (a weightless copy of a model) and
:func:`infer_shapes` (ONNX shape inference on it, in memory or, above 2 GB, through files)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx

from ..io import PROTOBUF_LIMIT, save_external
from .protos import Shape, dims

#: the skeleton keeps integer initializers up to this many elements (reshape targets, slice bounds, ...)
#: and float ones up to SKELETON_KEEP_FLOAT; the rest become typed inputs
SKELETON_KEEP = 1 << 16
SKELETON_KEEP_FLOAT = 64

_INTEGER_TYPES = frozenset({onnx.TensorProto.INT64, onnx.TensorProto.INT32, onnx.TensorProto.INT8,
                            onnx.TensorProto.UINT8, onnx.TensorProto.INT16, onnx.TensorProto.BOOL})


def skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """A weightless copy for shape inference: large initializers become typed graph inputs.

    Shape inference needs the weights' shapes, not their values; small integer constants (reshape
    targets, slice bounds, expand shapes) are kept because output shapes depend on their values.
    The copy costs the graph, not the weights, so a 2 GB model is analysed in a few MB.
    """
    sk = onnx.ModelProto()
    sk.ir_version = model.ir_version
    sk.opset_import.extend(model.opset_import)
    g, src = sk.graph, model.graph
    g.name = src.name
    g.node.extend(src.node)
    g.input.extend(src.input)
    g.output.extend(src.output)
    g.value_info.extend(src.value_info)
    listed = {i.name for i in src.input}
    for t in src.initializer:
        n = int(np.prod(t.dims)) if len(t.dims) else 1
        external = t.data_location == onnx.TensorProto.EXTERNAL
        integer = t.data_type in _INTEGER_TYPES
        if not external and n <= (SKELETON_KEEP if integer else SKELETON_KEEP_FLOAT):
            g.initializer.append(t)
        elif t.name not in listed:
            g.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    return sk


def infer_shapes(model: onnx.ModelProto, data_prop: bool = False) -> dict[str, Shape]:
    """Shapes of every tensor ONNX shape inference can reach (static ints, symbolic strs, None).

    Runs on :func:`skeleton` (no weight is copied); a skeleton still too big to serialise in
    memory goes through the path-based API.
    """
    model = skeleton(model)
    if model.ByteSize() < PROTOBUF_LIMIT:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=data_prop)
    else:  # models over 2 GB (tests force this branch)
        with tempfile.TemporaryDirectory() as d:
            src, dst = Path(d, "m.onnx"), Path(d, "s.onnx")
            save_external(model, src, "m.data")
            onnx.shape_inference.infer_shapes_path(str(src), str(dst))
            inferred = onnx.load(str(dst), load_external_data=False)
    shapes: dict[str, Shape] = {}
    g = inferred.graph
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        s = dims(vi.type)
        if s is not None:
            shapes[vi.name] = s
    for t in g.initializer:
        shapes[t.name] = tuple(t.dims)
    return shapes
