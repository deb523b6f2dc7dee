"""The decode region of an output: the ops between the prediction convs and the decoded output.

:func:`decode_region` walks back from an output through decode-only ops (Sigmoid, Reshape,
Transpose, Slice, Add, Mul, Exp, Concat, ScatterND, Shape/Gather plumbing, ...) and stops at learned
Conv nodes. Those convs are the frontier; the visited nodes are the region to cut.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import cached_property

import onnx

from .graph import GraphIndex
from .numeric import is_bin_weights

#: ops that may appear between the prediction convs and the decoded output.
DECODE_OPS = frozenset({
    "Sigmoid", "Exp", "Softmax", "Add", "Sub", "Mul", "Div", "Pow",
    "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Concat", "Split", "Slice", "Gather",
    "ScatterND", "Expand", "Tile", "Shape", "ConstantOfShape", "Range", "Equal", "Where", "Cast",
    "Identity", "Constant", "ReduceSum",
    "Sin", "Cos",  # Ultralytics OBB rotates its boxes by the predicted angle
})
#: ops that only move data; a region made of these alone is already raw.
LAYOUT_OPS = frozenset({"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Concat", "Identity",
                        "Constant", "Shape", "Gather", "Cast", "Slice", "Split"})
#: what a raw layout ``strip`` writes may add to them: sigmoid scores (``--keep-sigmoid``, the anchor-free
#: ``levels`` layout) and the DFL expectation as Softmax + MatMul by 0..R-1 (``--keep-dfl``)
RAW_OPS = LAYOUT_OPS | {"Sigmoid", "Softmax", "MatMul"}


_COMPARISONS = frozenset({"Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual", "Not", "And", "Or", "Xor",
                          "ArgMax", "ArgMin", "Round", "Floor", "Ceil", "Sign", "Mod"})
_FLOAT_TYPES = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
                          onnx.TensorProto.BFLOAT16})


@dataclass(frozen=True)
class Region:
    """The result of walking back from one output."""

    output: str
    nodes: tuple[onnx.NodeProto, ...]  # decode nodes, in graph order
    frontier: tuple[str, ...]  # outputs of the prediction convs, in first-seen order
    blockers: tuple[str, ...]  # descriptions of what stopped the walk elsewhere

    @cached_property
    def data_nodes(self) -> tuple[onnx.NodeProto, ...]:
        """Region nodes that depend on the prediction convs (constant plumbing left out)."""
        live = set(self.frontier)
        out = []
        for n in self.nodes:  # graph order is topological
            if any(i in live for i in n.input):
                live.update(n.output)
                out.append(n)
        return tuple(out)

    @cached_property
    def _values(self) -> tuple[tuple[onnx.NodeProto, ...], frozenset[str]]:
        """(nodes, tensors) that depend on the *values* of the prediction convs: a Shape's output
        depends on their shape only, so it does not carry the dependence on."""
        live = set(self.frontier)
        out = []
        for n in self.nodes:
            if n.op_type != "Shape" and any(i in live for i in n.input):
                live.update(n.output)
                out.append(n)
        return tuple(out), frozenset(live)

    def value_nodes(self) -> tuple[tuple[onnx.NodeProto, ...], frozenset[str]]:
        """(nodes, tensors) that depend on the *values* of the prediction convs (computed once)."""
        return self._values

    def branching(self) -> str | None:
        """Why the decode computes something other than one formula of the head's values, or None.

        A decode headcut records is arithmetic and layout on the conv values. A comparison of those
        values, a Where whose condition depends on them, or a cast to an integer type makes the result
        depend on which branch each value takes: a check on one input cannot prove it for every input.
        """
        nodes, live = self.value_nodes()
        for n in nodes:
            if n.op_type in _COMPARISONS:
                return f"{n.op_type} compares the head's values"
            if n.op_type == "Where" and n.input[0] in live:
                return "a Where chooses by the head's values"
            if n.op_type == "Cast":
                to = next((a.i for a in n.attribute if a.name == "to"), None)
                if to not in _FLOAT_TYPES:
                    return f"a Cast turns the head's values into {onnx.TensorProto.DataType.Name(to or 0).lower()}"
        return None

    @cached_property
    def ops(self) -> Counter:
        """Histogram of the decode's data ops, as the reference tables count them."""
        return Counter(n.op_type for n in self.data_nodes)

    @property
    def keys(self) -> frozenset:
        return frozenset(n.output[0] for n in self.nodes)


def _is_fixed_dfl_conv(ix: GraphIndex, node: onnx.NodeProto) -> bool:
    """A 1x1 conv with constant weights 0, 1, ..., R-1 is the DFL expectation, part of the decode."""
    if len(node.input) < 2:
        return False
    w = ix.const_value(node.input[1])
    if w is None or w.ndim != 4 or w.shape[0] != 1 or w.shape[2:] != (1, 1):
        return False
    return is_bin_weights(w)


def _is_dfl_matmul(ix: GraphIndex, node: onnx.NodeProto) -> bool:
    """A MatMul by the constant column 0, 1, ..., R-1: the DFL expectation ``strip --keep-dfl`` writes."""
    if len(node.input) != 2:
        return False
    w = ix.const_value(node.input[1])
    return w is not None and w.ndim == 2 and w.shape[1] == 1 and is_bin_weights(w)


def decode_region(ix: GraphIndex, output: str) -> Region:
    """Walk back from ``output`` through :data:`DECODE_OPS`, stopping at learned Conv nodes."""
    seen_t: set[str] = set()
    seen_n: set[int] = set()
    frontier: list[str] = []
    blockers: list[str] = []
    stack = [output]
    while stack:
        t = stack.pop()
        if not t or t in seen_t or t in ix.initializers:
            continue
        seen_t.add(t)
        if t in ix.graph_inputs:
            blockers.append(f"graph input '{t}' reached without passing a conv")
            continue
        node = ix.producer.get(t)
        if node is None:
            continue
        if node.op_type == "Conv" and not _is_fixed_dfl_conv(ix, node):
            frontier.append(t)
            continue
        dfl_matmul = node.op_type == "MatMul" and _is_dfl_matmul(ix, node)
        if node.op_type in DECODE_OPS or node.op_type == "Conv" or dfl_matmul:
            if id(node) not in seen_n:
                seen_n.add(id(node))
                stack.extend(reversed(node.input))
            continue
        blockers.append(f"{node.op_type} produces '{t}'")
    order = {id(n): i for i, n in enumerate(ix.graph.node)}
    nodes = sorted((n for n in ix.graph.node if id(n) in seen_n), key=lambda n: order[id(n)])
    return Region(output, tuple(nodes), tuple(frontier), tuple(blockers))
