"""Read-only views of an ONNX graph: who produces and consumes each tensor, constant values, shapes."""

from __future__ import annotations

import os
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from .errors import TooLargeError
from .io import PROTOBUF_LIMIT, save_external

Shape = tuple  # of int (static) | str (symbolic) | None (unknown)

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


def check_input_size(name: str, shape, batch: int = 1) -> None:
    """Refuse to run a model whose input ``name`` of ``shape`` (symbolic dims count as ``batch``)
    would exceed :data:`MAX_INPUT_ELEMENTS`."""
    n = _prod(d if isinstance(d, int) and d > 0 else batch for d in shape)
    if n > MAX_INPUT_ELEMENTS:
        raise TooLargeError(f"input '{name}' {list(shape)} would hold {n} elements, above headcut's limit of "
                            f"{MAX_INPUT_ELEMENTS} for running the model")


def too_large(name: str, op: str, count: int) -> TooLargeError:
    """The one refusal for a constant above :data:`MAX_CONSTANT_ELEMENTS` (what, where, how big, the limit)."""
    return TooLargeError(f"constant '{name}' ({op}) would hold {count} elements, above headcut's limit of "
                         f"{MAX_CONSTANT_ELEMENTS}; refusing to materialise it")


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
        values = self._fold_numpy(nodes)
        if values is not None:
            for o, v in values.items():
                self._const_cache.setdefault(o, v)
            return values.get(name)
        used = {i for n in nodes for i in n.input}
        inits = [self.initializers[i] for i in used if i in self.initializers]
        if sum(int(np.prod(t.dims)) for t in inits) > 1 << 20:
            return None
        outs = [o for n in nodes for o in n.output if o]  # every intermediate too: later lookups hit the cache
        g = onnx.helper.make_graph(nodes, "const", [], [onnx.helper.make_empty_tensor_value_info(o) for o in outs],
                                   inits)
        m = onnx.helper.make_model(g, opset_imports=list(self.model.opset_import))
        if not _bounded(m, {o: n.op_type for n in nodes for o in n.output}):
            return None  # an output whose size cannot be known before running it: not evaluated
        try:
            from onnx.reference import ReferenceEvaluator

            values = ReferenceEvaluator(m).run(None, {})
        except Exception:  # not evaluable here: treat as not constant
            return None
        for o, v in zip(outs, values):
            self._const_cache.setdefault(o, np.asarray(v))
        return self._const_cache[name]

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

    def _fold_numpy(self, nodes) -> dict[str, np.ndarray] | None:
        """Evaluate a constant subgraph with numpy when it uses only the ops exporters put in grid and
        anchor chains (fast: no reference-evaluator start-up); None when another op appears."""
        env: dict[str, np.ndarray] = {}

        def get(t):
            if t in env:
                return env[t]
            v = self._const(t, depth=0) if (t in self.initializers or self.producer.get(t) is not None
                                            and self.producer[t].op_type == "Constant") else None
            if v is None:
                raise KeyError(t)
            return v

        try:
            for n in nodes:
                if n.op_type not in _NUMPY_FOLD:
                    return None
                ins = [get(i) if i else None for i in n.input]
                count = _declared_count(n, ins)  # before anything is allocated
                if count is not None and count > MAX_CONSTANT_ELEMENTS:
                    raise too_large(n.output[0], n.op_type, count)
                env[n.output[0]] = np.asarray(_NUMPY_FOLD[n.op_type](n, ins))
        except (KeyError, ValueError, TypeError, IndexError, OverflowError, ZeroDivisionError):
            return None
        return env

    def is_const(self, name: str) -> bool:
        return self.const_value(name) is not None


#: ops whose value depends on more than their inputs' values, or that are too costly to fold here.
_NOT_FOLDABLE = frozenset({"Shape", "Size", "Conv", "ConvTranspose", "MatMul", "Gemm", "RandomNormal",
                           "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial"})


def _axes(node, ins, k=1):
    a = attr(node, "axes")
    if a is None and len(ins) > k and ins[k] is not None:
        a = ins[k].tolist()
    return a


def _unsqueeze(node, ins):
    x, axes = ins[0], _axes(node, ins)
    for ax in sorted(a if a >= 0 else a + x.ndim + len(axes) for a in axes):
        x = np.expand_dims(x, ax)
    return x


def _slice(node, ins):
    x = ins[0]
    starts, ends = ins[1].tolist(), ins[2].tolist()
    axes = ins[3].tolist() if len(ins) > 3 and ins[3] is not None else list(range(len(starts)))
    steps = ins[4].tolist() if len(ins) > 4 and ins[4] is not None else [1] * len(starts)
    idx = [slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, axes, steps):
        idx[a] = slice(s, e, st)
    return x[tuple(idx)]


def _range_length(start, limit, delta) -> int:
    d = float(np.asarray(delta).reshape(-1)[0])
    if d == 0:
        raise ValueError("Range with delta 0")
    return max(0, int(np.ceil((float(np.asarray(limit).reshape(-1)[0]) - float(np.asarray(start).reshape(-1)[0])) / d)))


def _declared_count(node, ins) -> int | None:
    """How many elements ``node`` would produce from the values ``ins``, computed from shapes only;
    None for ops whose output is never larger than their inputs (Slice, Cast, Transpose, ...)."""
    op = node.op_type
    if op == "ConstantOfShape":
        dims = [int(d) for d in np.asarray(ins[0]).reshape(-1)]
        if any(d < 0 for d in dims):
            raise ValueError("negative dim")
        return _prod(dims)
    if op == "Expand":
        return _prod(np.broadcast_shapes(ins[0].shape, tuple(int(d) for d in np.asarray(ins[1]).reshape(-1))))
    if op == "Tile":
        reps = [int(r) for r in np.asarray(ins[1]).reshape(-1)]
        return _prod([d * r for d, r in zip(ins[0].shape, reps)]) if len(reps) == ins[0].ndim else None
    if op == "Range":
        return _range_length(*ins[:3])
    if op in ("Add", "Sub", "Mul"):
        return _prod(np.broadcast_shapes(ins[0].shape, ins[1].shape))
    if op == "Concat":
        return sum(int(x.size) for x in ins if x is not None)
    if op == "Gather":
        return _prod(ins[1].shape) * (int(ins[0].size) // max(1, ins[0].shape[attr(node, "axis", 0)]))
    return None


def _prod(dims) -> int:
    n = 1
    for d in dims:
        n *= int(d)
    return n


def _bounded(model: onnx.ModelProto, ops: dict[str, str]) -> bool:
    """True when shape inference bounds every output of ``model`` (a constant subgraph) within
    :data:`MAX_CONSTANT_ELEMENTS`; raises :func:`too_large` for one declared above it."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:
        return False
    known = {vi.name: _dims(vi.type) for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    for name, op in ops.items():
        dims = known.get(name)
        if dims is None or not all(isinstance(d, int) for d in dims):
            return False
        if _prod(dims) > MAX_CONSTANT_ELEMENTS:
            raise too_large(name, op, _prod(dims))
    return True


#: numpy for the ops of constant grid/anchor chains (see GraphIndex._fold_numpy)
_NUMPY_FOLD = {
    "Constant": lambda n, i: _constant_node_value(n),
    "Identity": lambda n, i: i[0],
    "Cast": lambda n, i: i[0].astype(onnx.helper.tensor_dtype_to_np_dtype(attr(n, "to"))),
    "Reshape": lambda n, i: i[0].reshape([d if d != 0 else i[0].shape[k] for k, d in enumerate(i[1].tolist())]),
    "Unsqueeze": _unsqueeze,
    "Squeeze": lambda n, i: np.squeeze(i[0], axis=tuple(_axes(n, i))) if _axes(n, i) is not None else np.squeeze(i[0]),
    "Concat": lambda n, i: np.concatenate(i, axis=attr(n, "axis")),
    "Expand": lambda n, i: i[0] * np.ones(i[1].tolist(), dtype=i[0].dtype),
    "Tile": lambda n, i: np.tile(i[0], i[1].tolist()),
    "Transpose": lambda n, i: np.transpose(i[0], attr(n, "perm")),
    "Gather": lambda n, i: np.take(i[0], i[1], axis=attr(n, "axis", 0)),
    "Add": lambda n, i: i[0] + i[1], "Sub": lambda n, i: i[0] - i[1], "Mul": lambda n, i: i[0] * i[1],
    "Range": lambda n, i: np.arange(i[0], i[1], i[2]).astype(i[0].dtype),
    "Slice": _slice,
    "ConstantOfShape": lambda n, i: _constant_of_shape(n, i[0]),
}


def _constant_of_shape(node, shape) -> np.ndarray:
    """ONNX ConstantOfShape: ``value`` (a one-element tensor; default float32 0) repeated to ``shape``."""
    value = np.zeros(1, np.float32)
    for a in node.attribute:
        if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
            value = numpy_helper.to_array(a.t)
    return np.full([int(d) for d in np.asarray(shape).reshape(-1)], value.reshape(-1)[0], dtype=value.dtype)


#: ops whose output is not a function of their inputs: never folded (not constant), but onnxruntime still
#: allocates what they declare, so their sizes are checked too
_RANDOM = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
                     "Bernoulli"})


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
        if _prod(sp.dims) > MAX_CONSTANT_ELEMENTS:
            raise too_large(sp.values.name or sp.indices.name, "sparse initializer", _prod(sp.dims))
    const = {t.name for t in g.initializer} | {sp.values.name for sp in g.sparse_initializer}

    def size(name: str) -> int | None:
        dims = shapes.get(name)
        return _prod(dims) if dims is not None and all(isinstance(d, int) for d in dims) else None

    for node in g.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "sparse_value" and _prod(a.sparse_tensor.dims) > MAX_CONSTANT_ELEMENTS:
                    raise too_large(node.output[0], "Constant sparse_value", _prod(a.sparse_tensor.dims))
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


def graph_names(g: onnx.GraphProto) -> set[str]:
    """Every name ``g`` uses: tensors (node inputs and outputs, initializers, graph inputs and outputs,
    value_info) and node names. A generated name must be none of them."""
    names = {t.name for t in g.initializer} | {t.values.name for t in g.sparse_initializer}
    names |= {v.name for v in list(g.input) + list(g.output) + list(g.value_info)}
    for n in g.node:
        names.update(n.input)
        names.update(n.output)
        names.add(n.name)
    names.discard("")
    return names


def fresh(taken: set[str], base: str) -> str:
    """``base``, or ``base_1``, ``base_2``, ... : the first not in ``taken`` (which it is then added to)."""
    name, k = base, 0
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    taken.add(name)
    return name


def check_graph(model: onnx.ModelProto, what: str = "the raw graph") -> None:
    """Postcondition before a graph is written: single assignment (no tensor written twice, or both
    written and an initializer or input), every node input defined, every output produced, no cycle.
    What ``onnx.checker`` would reject from headcut's own rewriting; raises
    :class:`~onnx_headcut.errors.InternalError` (a headcut bug, exit 1)."""
    from .errors import InternalError

    g = model.graph
    defined = {t.name for t in g.initializer} | {t.values.name for t in g.sparse_initializer} | {i.name for i in g.input}
    producer: dict[str, int] = {}
    for k, n in enumerate(g.node):
        for o in n.output:
            if not o:
                continue
            if o in producer or o in defined:
                raise InternalError(f"{what} is not valid ONNX: tensor '{o}' is written twice; nothing written "
                                    "(a headcut bug: please report it)")
            producer[o] = k
    known = defined | set(producer)
    indegree, users = [0] * len(g.node), defaultdict(list)
    for k, n in enumerate(g.node):
        for i in set(n.input):
            if not i:
                continue
            if i not in known:
                raise InternalError(f"{what} is not valid ONNX: node '{n.name}' reads '{i}', which nothing defines; "
                                    "nothing written (a headcut bug: please report it)")
            if i in producer:
                indegree[k] += 1
                users[producer[i]].append(k)
    for o in g.output:
        if o.name not in known:
            raise InternalError(f"{what} is not valid ONNX: output '{o.name}' is not produced; nothing written "
                                "(a headcut bug: please report it)")
    ready = [k for k, d in enumerate(indegree) if d == 0]
    seen = 0
    while ready:
        k = ready.pop()
        seen += 1
        for u in users[k]:
            indegree[u] -= 1
            if indegree[u] == 0:
                ready.append(u)
    if seen != len(g.node):
        stuck = next(g.node[k] for k, d in enumerate(indegree) if d > 0)
        raise InternalError(f"{what} is not valid ONNX: node '{stuck.name or stuck.output[0]}' is on a cycle; "
                            "nothing written (a headcut bug: please report it)")


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


#: the skeleton keeps integer initializers up to this many elements (reshape targets, slice bounds, ...)
#: and float ones up to SKELETON_KEEP_FLOAT; the rest become typed inputs
SKELETON_KEEP = 1 << 16
SKELETON_KEEP_FLOAT = 64


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


_INTEGER_TYPES = frozenset({onnx.TensorProto.INT64, onnx.TensorProto.INT32, onnx.TensorProto.INT8,
                            onnx.TensorProto.UINT8, onnx.TensorProto.INT16, onnx.TensorProto.BOOL})


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
