"""Read-only views of an ONNX graph: who produces and consumes each tensor, constant values, shapes."""

from __future__ import annotations

import os
import tempfile
from collections import defaultdict
from functools import cached_property
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from .io import PROTOBUF_LIMIT

Shape = tuple  # of int (static) | str (symbolic) | None (unknown)


class GraphIndex:
    """Producer/consumer maps and constant lookup over ``model.graph`` (the model is not modified)."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.graph = model.graph
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in self.graph.node:
            for o in node.output:
                if o:
                    self.producer[o] = node
            for i in node.input:
                if i:
                    self.consumers[i].append(node)
        self.initializers = {t.name: t for t in self.graph.initializer}
        self.graph_inputs = {i.name for i in self.graph.input} - set(self.initializers)
        self._const_cache: dict[str, np.ndarray | None] = {}

    def const_value(self, name: str) -> np.ndarray | None:
        """The value of ``name`` if it depends on constants only (initializers, Constant nodes).

        Simple chains are read directly; other small constant subgraphs (the anchor-point
        Expand/Unsqueeze/Concat/Cast chains exporters write, for example) are evaluated.
        """
        if name not in self._const_cache:
            try:
                v = self._const(name, depth=0)
            except (ValueError, TypeError, IndexError):  # a malformed constant chain is not a readable value
                v = None
            self._const_cache[name] = v if v is not None else self._evaluate(name)
        return self._const_cache[name]

    def _evaluate(self, name: str, limit: int = 64) -> np.ndarray | None:
        """Run the constant-only subgraph behind ``name`` with onnx's reference evaluator."""
        if name in self.graph_inputs or name not in self.producer:
            return None
        nodes, stack, seen = [], [name], set()
        while stack:
            t = stack.pop()
            if not t or t in seen or t in self.initializers:
                continue
            seen.add(t)
            node = self.producer.get(t)
            if node is None or node.op_type in _NOT_FOLDABLE or len(nodes) >= limit:
                return None
            if node not in nodes:
                nodes.append(node)
                stack.extend(node.input)
        order = {id(n): i for i, n in enumerate(self.graph.node)}
        nodes.sort(key=lambda n: order[id(n)])
        used = {i for n in nodes for i in n.input}
        inits = [self.initializers[i] for i in used if i in self.initializers]
        if sum(int(np.prod(t.dims)) for t in inits) > 1 << 20:
            return None
        try:
            from onnx.reference import ReferenceEvaluator

            g = onnx.helper.make_graph(nodes, "const", [], [onnx.helper.make_empty_tensor_value_info(name)], inits)
            m = onnx.helper.make_model(g, opset_imports=list(self.model.opset_import))
            return np.asarray(ReferenceEvaluator(m).run(None, {})[0])
        except Exception:  # not evaluable here: treat as not constant
            return None

    def _const(self, name: str, depth: int) -> np.ndarray | None:
        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        node = self.producer.get(name)
        if node is None or depth > 8:
            return None
        if node.op_type == "Constant":
            return _constant_node_value(node)
        if node.op_type in ("Cast", "Identity", "Unsqueeze", "Reshape", "Squeeze"):
            x = self._const(node.input[0], depth + 1)
            if x is None:
                return None
            if node.op_type == "Cast":
                to = attr(node, "to")
                return x.astype(onnx.helper.tensor_dtype_to_np_dtype(to))
            if node.op_type == "Identity":
                return x
            if node.op_type == "Reshape":
                shape = self._const(node.input[1], depth + 1)
                if shape is None or (shape == 0).any():
                    return None
                return x.reshape(shape.astype(np.int64))
            axes = attr(node, "axes")
            if axes is None and len(node.input) > 1:
                a = self._const(node.input[1], depth + 1)
                axes = None if a is None else a.tolist()
            if node.op_type == "Squeeze":
                return np.squeeze(x, axis=tuple(axes)) if axes is not None else np.squeeze(x)
            if axes is None:
                return None
            out = x
            for ax in sorted(a if a >= 0 else a + x.ndim + len(axes) for a in axes):
                out = np.expand_dims(out, ax)
            return out
        return None

    def is_const(self, name: str) -> bool:
        return self.const_value(name) is not None


#: ops whose value depends on more than their inputs' values, or that are too costly to fold here.
_NOT_FOLDABLE = frozenset({"Shape", "Size", "Conv", "ConvTranspose", "MatMul", "Gemm", "RandomNormal",
                           "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial"})


def _constant_node_value(node: onnx.NodeProto) -> np.ndarray | None:
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


def attr(node: onnx.NodeProto, name: str, default=None):
    """The value of attribute ``name`` of ``node``, or ``default``."""
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _dims(type_proto: onnx.TypeProto) -> Shape | None:
    tt = type_proto.tensor_type
    if not tt.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim)


#: initializers with more elements than this are left out of the skeleton shape inference runs on
SKELETON_KEEP = 1 << 17


def skeleton(model: onnx.ModelProto, keep: int = SKELETON_KEEP) -> onnx.ModelProto:
    """A weightless copy for shape inference: large initializers become typed graph inputs.

    Shape inference needs the weights' shapes, not their values; small constants (reshape
    targets, grids, anchors) are kept because output shapes depend on their values. The copy costs
    the graph, not the weights, so a 2 GB model is analysed in a few MB.
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
        external = t.data_location == onnx.TensorProto.EXTERNAL and not t.raw_data
        if n <= keep and not external:
            g.initializer.append(t)
        elif t.name not in listed:
            g.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    return sk


def infer_shapes(model: onnx.ModelProto) -> dict[str, Shape]:
    """Shapes of every tensor ONNX shape inference can reach (static ints, symbolic strs, None).

    Runs on :func:`skeleton` (no weight is copied); a skeleton still too big to serialise in
    memory goes through the path-based API.
    """
    model = skeleton(model)
    if model.ByteSize() < PROTOBUF_LIMIT:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    else:  # models over 2 GB (tests force this branch)
        with tempfile.TemporaryDirectory() as d:
            src, dst = Path(d, "m.onnx"), Path(d, "s.onnx")
            onnx.save_model(model, str(src), save_as_external_data=True, location="m.data")
            onnx.shape_inference.infer_shapes_path(str(src), str(dst))
            inferred = onnx.load(str(dst), load_external_data=False)
    shapes: dict[str, Shape] = {}
    g = inferred.graph
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        s = _dims(vi.type)
        if s is not None:
            shapes[vi.name] = s
    for t in g.initializer:
        shapes[t.name] = tuple(t.dims)
    return shapes


def elem_type(model: onnx.ModelProto, name: str) -> int | None:
    for vi in list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info):
        if vi.name == name:
            return vi.type.tensor_type.elem_type
    return None


def max_rank(shapes: dict[str, Shape]) -> int:
    """The largest rank among the tensors in ``shapes`` (0 for an empty map)."""
    return max((len(s) for s in shapes.values()), default=0)


def is_static(shape: Shape | None) -> bool:
    return shape is not None and all(isinstance(d, int) and d > 0 for d in shape)


def model_size_on_disk(path: str | os.PathLike) -> int:
    p = Path(path)
    size = p.stat().st_size
    for side in p.parent.glob(p.name + "*.data"):
        size += side.stat().st_size
    return size
