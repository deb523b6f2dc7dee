"""What every matcher reads: the match context and small structural queries on the graph."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import onnx

from ..graph import GraphIndex, Shape, is_static
from ..numeric import cell_grid
from ..region import LAYOUT_OPS, Region
from .base import Head, Rejection

__all__ = ["MatchContext", "cell_grid", "feeds_sigmoid", "float_consts", "group_levels", "located", "reaches",
           "matcher", "region_consts", "rejecter", "Reject", "Group", "strip_sigmoid", "upstream"]

#: one pyramid level as the locator grouped it: (stride, (h, w), conv output tensors)
Group = tuple[int, tuple[int, int], list[str]]


@dataclass(frozen=True)
class MatchContext:
    """Everything a matcher gets: the graph, its shapes, the decode region of the output and the
    frontier convs grouped into pyramid levels (or the reason they are not a pyramid)."""

    ix: GraphIndex
    shapes: dict[str, Shape]
    region: Region
    input_name: str
    input_shape: tuple[int, ...]
    groups: list[Group] | str

    @property
    def out_shape(self) -> Shape | None:
        return self.shapes.get(self.region.output)

    def rows_output(self) -> str | None:
        """Why the output is not a static (1, N, C) tensor, or None."""
        s = self.out_shape
        if not is_static(s) or len(s) != 3 or s[0] != 1:
            return f"output '{self.region.output}' has shape {s}, expected static (1, N, C)"
        return None

    def pyramid(self, rows: bool = True) -> list[Group] | str:
        """The levels, or why there are none: the frontier is not a pyramid or (with ``rows``) the
        output is not a static (1, N, C) tensor."""
        why = self.rows_output() if rows else None
        return why if why is not None else self.groups

    def grids_text(self, levels) -> str:
        return (f"strides {[lv.stride for lv in levels]} = input {self.input_shape[-2]}x{self.input_shape[-1]} / grids "
                + ", ".join(f"{lv.grid[0]}x{lv.grid[1]}" for lv in levels))

    def ops_text(self) -> str:
        return f"decode ops {dict(sorted(self.region.ops.items()))}"


#: a matcher's ``no(reason)``: builds its :class:`Rejection`
Reject = Callable[[str], Rejection]
#: what :data:`onnx_headcut.heads.PATTERNS` holds: the match context in, a Head or the reason out
Matcher = Callable[["MatchContext"], "Head | Rejection"]


def rejecter(name: str) -> Reject:
    """``no(reason)`` for a matcher called ``name``."""
    return lambda reason: Rejection(name, reason)


def matcher(name: str, rows: bool = True):
    """Make ``fn(ctx, groups, no)`` a matcher ``(ctx) -> Head | Rejection`` called ``name``.

    The levels come from :meth:`MatchContext.pyramid` (with ``rows``, the output must be a static
    (1, N, C) tensor); when there are none the matcher is rejected with the reason and ``fn`` is
    not called. ``no(reason)`` builds the matcher's :class:`Rejection`.
    """
    def wrap(fn: Callable[[MatchContext, list[Group], Reject], Head | Rejection]) -> Matcher:
        no = rejecter(name)

        @functools.wraps(fn)
        def run(ctx: MatchContext) -> Head | Rejection:
            groups = ctx.pyramid(rows)
            return no(groups) if isinstance(groups, str) else fn(ctx, groups, no)

        run.pattern = name  # type: ignore[attr-defined]
        return run

    return wrap


def group_levels(shapes: dict[str, Shape], region: Region, input_shape) -> list[Group] | str:
    """[(stride, (h, w), [conv tensors])] stride ascending, or the reason the frontier is not a pyramid."""
    _, in_h, in_w = input_shape[-3:]
    by_grid: dict[tuple[int, int], list[str]] = {}
    for t in region.frontier:
        sh = shapes.get(t)
        if not is_static(sh) or len(sh) != 4 or sh[0] != 1:
            return f"prediction conv output '{t}' has shape {sh}, expected static (1, C, H, W)"
        by_grid.setdefault((sh[2], sh[3]), []).append(t)
    levels = []
    for h, w in sorted(by_grid, key=lambda g: -g[0] * g[1]):
        if in_h % h or in_w % w or in_h // h != in_w // w:
            return f"a {h}x{w} feature map does not divide the {in_h}x{in_w} input into one integer stride"
        levels.append((in_h // h, (h, w), by_grid[(h, w)]))
    return levels


def strip_sigmoid(ix: GraphIndex, t: str) -> tuple[str, bool]:
    """Follow ``t`` back through Identity/Cast and at most one Sigmoid: (source tensor, sigmoid seen)."""
    sig = False
    while (node := ix.producer.get(t)) is not None:
        if node.op_type in ("Identity", "Cast"):
            t = node.input[0]
        elif node.op_type == "Sigmoid" and not sig:
            t, sig = node.input[0], True
        else:
            break
    return t, sig


def float_consts(ix: GraphIndex, region: Region, op: str) -> Iterator[tuple[onnx.NodeProto, np.ndarray]]:
    """(node, value) for each ``op`` node in the region with a floating-point constant operand."""
    for n in region.nodes:
        if n.op_type != op:
            continue
        for i in n.input:
            v = ix.const_value(i)
            if v is not None and np.issubdtype(v.dtype, np.floating):
                yield n, v


def region_consts(ix: GraphIndex, region: Region) -> Iterator[tuple[onnx.NodeProto, int, np.ndarray]]:
    """(node, input index, value) for every constant float input of a region node."""
    live = set(region.frontier)
    for n in region.data_nodes:
        live.update(n.output)
    for n in region.nodes:
        for k, i in enumerate(n.input):
            if i and i not in live:
                v = ix.const_value(i)
                if v is not None and np.issubdtype(v.dtype, np.floating):
                    yield n, k, v


def feeds_sigmoid(ix: GraphIndex, t: str) -> bool:
    """True when ``t`` (through Identity/Cast) is read by a Sigmoid."""
    stack = [t]
    while stack:
        for c in ix.consumers.get(stack.pop(), []):
            if c.op_type == "Sigmoid":
                return True
            if c.op_type in ("Identity", "Cast"):
                stack.append(c.output[0])
    return False


def reaches(ix: GraphIndex, t: str, op: str, through=LAYOUT_OPS) -> bool:
    """True when ``t`` flows into an ``op`` node through layout ops only."""
    stack, seen = [t], set()
    while stack:
        x = stack.pop()
        if x in seen:
            continue
        seen.add(x)
        for c in ix.consumers.get(x, []):
            if c.op_type == op:
                return True
            if c.op_type in through:
                stack.extend(c.output)
    return False


def upstream(ix: GraphIndex, t: str, depth: int) -> list[onnx.NodeProto]:
    """The nodes up to ``depth`` steps upstream of tensor ``t``."""
    out, frontier = [], [t]
    for _ in range(depth):
        nxt = []
        for x in frontier:
            n = ix.producer.get(x)
            if n is not None:
                out.append(n)
                nxt += [i for i in n.input if i and i not in ix.initializers]
        frontier = nxt
    return out


def located(ctx: MatchContext, kind, family: str, version: str, num_classes: int, levels, reasons,
            **kw) -> Head:
    """The :class:`Head` a matcher found, with the input and output taken from the context."""
    return Head(kind=kind, family=family, version=version, input_name=ctx.input_name,
                input_shape=tuple(ctx.input_shape), output_name=ctx.region.output,
                output_shape=tuple(ctx.out_shape or ()), num_classes=num_classes, levels=tuple(levels),
                reasons=tuple(reasons), **kw)
