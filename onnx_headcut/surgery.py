"""General graph passes. :func:`rewrite_5d` lowers >4-D Reshape → Transpose (→ Reshape) chains.

Many edge converters (ncnn, MNN, TNN, NPU toolchains) handle at most 4-D tensors. The layout chains
exporters write for ``view(...).permute(...)`` often go through 5-D shapes that carry size-1 axes or
axes that move together. Such a chain has an equivalent of lower rank::

    x (1,85,H,W) ─► Reshape (1,1,85,H,W) ─► Transpose perm (0,1,3,4,2) ─► Reshape (1,H*W,85)
                       ⇓ drop the size-1 axis, merge H and W (adjacent before and after)
    x (1,85,H,W) ─► Reshape (1,85,H*W)   ─► Transpose perm (0,2,1)     ─► Reshape (1,H*W,85)

    x (1,C,H,W)  ─► Reshape (1,g,C/g,H,W) ─► Transpose perm (0,2,1,3,4) ─► Reshape (1,C,H,W)
                       ⇓ merge H and W
    x (1,C,H,W)  ─► Reshape (1,g,C/g,H*W) ─► Transpose perm (0,2,1,3)   ─► Reshape (1,C,H,W)

The element order of the data is unchanged, so whatever reads the chain's result through a Reshape
sees identical values. A leading batch axis of size 1 that stays in front is kept when the result
still fits in 4-D, because converters expect an N-first layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from .errors import RewriteError
from .graph import GraphIndex, fresh, graph_names, infer_shapes, is_static, max_rank

MAX_RANK = 4


@dataclass(frozen=True)
class Lowered:
    """One rewritten chain: the Reshape target and Transpose perm, before and after."""

    reshape: str  # the Reshape node's output tensor
    shape_before: tuple[int, ...]
    perm_before: tuple[int, ...]
    shape_after: tuple[int, ...]
    perm_after: tuple[int, ...]

    def __str__(self) -> str:
        return (f"Reshape{list(self.shape_before)}+Transpose{list(self.perm_before)} -> "
                f"Reshape{list(self.shape_after)}+Transpose{list(self.perm_after)}")


@dataclass(frozen=True)
class RewriteReport:
    lowered: tuple[Lowered, ...] = ()
    unlowered: tuple[str, ...] = ()  # why a >4-D tensor is still there
    max_rank_before: int = 0
    max_rank_after: int = 0
    notes: tuple[str, ...] = field(default=())

    @property
    def changed(self) -> bool:
        return bool(self.lowered)


def reduce_permutation(shape, perm, keep_batch: bool = True) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The smallest (shape, perm) with the same element order as ``transpose(reshape(x, shape), perm)``.

    Size-1 axes are dropped and axes that are adjacent, in order, both before and after the
    permutation are merged. With ``keep_batch`` a size-1 axis 0 that stays first is kept when the
    result has rank <= 4.

    >>> reduce_permutation((1, 1, 85, 20, 20), (0, 1, 3, 4, 2))
    ((1, 85, 400), (0, 2, 1))
    >>> reduce_permutation((1, 2, 58, 20, 20), (0, 2, 1, 3, 4))
    ((1, 2, 58, 400), (0, 2, 1, 3))
    """
    shape, perm = tuple(int(d) for d in shape), tuple(int(p) for p in perm)
    order = [p for p in perm if shape[p] != 1]  # output order of the kept input axes
    groups: list[list[int]] = []
    for a in order:
        if groups and a == groups[-1][-1] + 1:
            groups[-1].append(a)
        else:
            groups.append([a])
    by_input = sorted(groups, key=lambda g: g[0])
    new_shape = tuple(int(np.prod([shape[a] for a in g])) for g in by_input)
    new_perm = tuple(by_input.index(g) for g in groups)
    if not new_shape:
        return (1,), (0,)
    if keep_batch and shape and shape[0] == 1 and perm[0] == 0 and len(new_shape) < MAX_RANK:
        return (1,) + new_shape, (0,) + tuple(p + 1 for p in new_perm)
    return new_shape, new_perm


def _unique(graph: onnx.GraphProto, base: str) -> str:
    """``base`` or ``base_<k>``: unused by any tensor or node of ``graph`` (see :func:`graph_names`)."""
    return fresh(graph_names(graph), base)


def _set_shape_input(model: onnx.ModelProto, node: onnx.NodeProto, shape) -> None:
    name = _unique(model.graph, f"{node.output[0]}__headcut_shape")
    model.graph.initializer.append(numpy_helper.from_array(np.asarray(shape, dtype=np.int64), name))
    node.input[1] = name


def _set_perm(node: onnx.NodeProto, perm) -> None:
    for a in node.attribute:
        if a.name == "perm":
            del a.ints[:]
            a.ints.extend(int(p) for p in perm)
            return
    node.attribute.append(onnx.helper.make_attribute("perm", list(perm)))


def _pin_targets(model, ix: GraphIndex, shapes, reshapes) -> bool:
    """Make each Reshape in ``reshapes`` independent of its input's shape (constant, no 0 = copy dim).

    Needed because the chain's intermediate shape changes. Returns False where that is impossible.
    """
    for u in reshapes:
        tgt = ix.const_value(u.input[1])
        copies = tgt is not None and (tgt == 0).any() and not any(a.name == "allowzero" and a.i for a in u.attribute)
        if tgt is None or copies:
            out_shape = shapes.get(u.output[0])
            if not is_static(out_shape):
                return False
            _set_shape_input(model, u, out_shape)
    return True


def rewrite_5d(model: onnx.ModelProto, strict: bool = True,
               inplace: bool = False) -> tuple[onnx.ModelProto, RewriteReport]:
    """Rewrite every Reshape → Transpose (→ Reshape) chain above rank 4 into rank <= 4.

    Takes any ONNX model with static shapes around its >4-D chains. Returns ``(model, report)``:
    the report lists each chain changed, and why any tensor of rank > 4 remains. Nodes outside the
    matched chains are left as they are. With ``strict`` (the default), a remaining >4-D tensor
    raises :class:`~onnx_headcut.errors.RewriteError` with the reason instead.
    """
    if not inplace:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        model = copy
    shapes = infer_shapes(model)
    rank_before = max_rank(shapes)
    ix = GraphIndex(model)
    outputs = {o.name for o in model.graph.output}
    lowered, unlowered = [], []

    explained: set[str] = set()

    def skip(node: onnx.NodeProto, reason: str) -> None:
        unlowered.append(reason)
        explained.add(node.output[0])
        explained.update(u.output[0] for u in ix.consumers.get(node.output[0], []) if u.op_type == "Transpose")

    for node in list(model.graph.node):
        if node.op_type != "Reshape":
            continue
        target = shapes.get(node.output[0])
        if target is None or len(target) <= MAX_RANK:
            continue
        where = f"Reshape to {list(target)}"
        if not is_static(target):
            skip(node, f"{where}: shape is not static")
            continue
        users = ix.consumers.get(node.output[0], [])
        if node.output[0] in outputs or not users:
            skip(node, f"{where}: the 5-D tensor is a graph output")
            continue
        if all(u.op_type == "Reshape" for u in users):  # Reshape → Reshape: any order-preserving rank works
            if not _pin_targets(model, ix, shapes, users):
                skip(node, f"{where}: a following Reshape's target is computed at run time")
                continue
            flat = (target[0], int(np.prod(target[1:])))
            _set_shape_input(model, node, flat)
            lowered.append(Lowered(node.output[0], tuple(target), (), flat, ()))
            continue
        if len(users) != 1 or users[0].op_type != "Transpose":
            ops = sorted({u.op_type for u in users})
            skip(node, f"{where}: consumed by {', '.join(ops)}, which needs the {len(target)}-D shape")
            continue
        tr = users[0]
        perm = onnx.helper.get_attribute_value(next(a for a in tr.attribute if a.name == "perm"))
        after = ix.consumers.get(tr.output[0], [])
        bad = sorted({u.op_type for u in after if u.op_type != "Reshape"})
        if tr.output[0] in outputs or bad or not after:
            what = ", ".join(bad) if bad else "the graph output"
            skip(node, f"{where} + Transpose{list(perm)}: the permuted {len(target)}-D tensor "
                             f"feeds {what}, which needs that shape")
            continue
        new_shape, new_perm = reduce_permutation(target, perm)
        if len(new_shape) > MAX_RANK:
            skip(node, f"{where} + Transpose{list(perm)}: no equivalent of rank <= {MAX_RANK} "
                             f"(reduces to {list(new_shape)} perm {list(new_perm)})")
            continue
        if not _pin_targets(model, ix, shapes, after):
            skip(node, f"{where}: a following Reshape's target is computed at run time")
            continue
        _set_shape_input(model, node, new_shape)
        _set_perm(tr, new_perm)
        lowered.append(Lowered(node.output[0], tuple(target), tuple(perm), new_shape, new_perm))

    if lowered:  # shapes recorded for the rewritten tensors are stale: let inference redo them
        stale = {lo.reshape for lo in lowered} | {u.output[0] for lo in lowered
                                                  for u in ix.consumers.get(lo.reshape, [])}
        keep = [vi for vi in model.graph.value_info if vi.name not in stale]
        del model.graph.value_info[:]
        model.graph.value_info.extend(keep)
    after_shapes = infer_shapes(model) if lowered else shapes
    rank_after = max_rank(after_shapes)
    for name, s in after_shapes.items():  # postcondition: every >4-D tensor left is accounted for
        if len(s) > MAX_RANK and name not in explained:
            prod = ix.producer.get(name)
            what = f"{prod.op_type} output" if prod is not None else "initializer or input"
            unlowered.append(f"{what} '{name}' of shape {list(s)} is not part of a Reshape→Transpose chain")
    report = RewriteReport(tuple(lowered), tuple(dict.fromkeys(unlowered)), rank_before, rank_after)
    if strict and report.unlowered:
        raise RewriteError("cannot lower to rank <= 4: " + "; ".join(report.unlowered[:4]))
    return model, report
