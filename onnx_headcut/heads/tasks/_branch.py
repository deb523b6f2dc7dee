"""What the task modules share: the extra branch of a detection head, located by structure.

A task head is a detection head plus one extra prediction conv per level whose output reaches the decoded
output through layout ops only (it is copied into the output's last columns, or decoded there by the task's own
formula). :func:`split_extra` takes those convs out of the levels, so that the detection matchers see the
detection head they know, and :func:`with_extra` puts them back into the located :class:`~..base.Head`.
"""

from __future__ import annotations

from dataclasses import replace

from ...region import LAYOUT_OPS
from .._match import Group, MatchContext
from ..base import Branch, Head


def forward_ops(ix, t: str, output: str) -> set[str] | None:
    """The op types between tensor ``t`` and ``output`` (every path forward from ``t``), or None when ``t`` does
    not reach ``output``."""
    ops, seen, stack, reached = set(), set(), [t], False
    while stack:
        x = stack.pop()
        if x == output:
            reached = True
            continue
        if x in seen:
            continue
        seen.add(x)
        for c in ix.consumers.get(x, []):
            ops.add(c.op_type)
            stack.extend(c.output)
    return ops if reached else None


def layout_only(ix, t: str, output: str) -> bool:
    """True when ``t`` reaches ``output`` and every op on the way only moves data."""
    ops = forward_ops(ix, t, output)
    return ops is not None and ops <= LAYOUT_OPS


def split_extra(ctx: MatchContext, channels: int, through) -> tuple[list[Group], list[str]] | str:
    """Per level, the one frontier conv of ``channels`` channels for which ``through(tensor)`` holds, taken out:
    (the levels without it, the extra convs level by level), or why there is no such conv on every level."""
    if isinstance(ctx.groups, str):
        return ctx.groups
    levels, extra = [], []
    for stride, (h, w), convs in ctx.groups:
        hits = [t for t in convs if ctx.shapes[t][1] == channels and through(t)]
        if len(hits) != 1:
            return f"the {h}x{w} level has {len(hits)} convs of {channels} channels in that branch, expected 1"
        extra.append(hits[0])
        levels.append((stride, (h, w), [t for t in convs if t != hits[0]]))
    return levels, extra


def detection_context(ctx: MatchContext, groups: list[Group], channels: int, axis: int) -> MatchContext:
    """``ctx`` as the detection matchers should see it: the levels without the extra convs and the output
    ``channels`` narrower on ``axis`` (the extra columns taken off)."""
    shape = list(ctx.out_shape or ())
    shape[axis] -= channels
    shapes = dict(ctx.shapes)
    shapes[ctx.region.output] = tuple(shape)
    return replace(ctx, shapes=shapes, groups=groups)


def with_extra(head: Head, ctx: MatchContext, role: str, convs: list[str], channels: int, **fields) -> Head:
    """``head`` (located on :func:`detection_context`) with the extra branch ``role`` on each level and the
    output's real shape."""
    levels = tuple(replace(lv, branches=(*lv.branches, Branch(role, t, channels)))
                   for lv, t in zip(head.levels, convs))
    return replace(head, levels=levels, output_shape=tuple(ctx.out_shape or ()), **fields)


def last_columns(ix, output: str, convs: list[str]) -> bool:
    """True when ``output`` is a Concat whose last input comes from ``convs`` alone (through layout ops), and
    no other input reads them: the extra block is the output's last columns."""
    node = ix.producer.get(output)
    while node is not None and node.op_type in ("Identity", "Transpose"):
        node = ix.producer.get(node.input[0])
    if node is None or node.op_type != "Concat" or len(node.input) < 2:
        return False
    wanted = set(convs)

    def sources(t: str) -> set[str]:
        out, stack, seen = set(), [t], set()
        while stack:
            x = stack.pop()
            if x in seen:
                continue
            seen.add(x)
            if x in wanted:
                out.add(x)
                continue
            n = ix.producer.get(x)
            if n is None or n.op_type == "Conv":
                out.add(x)
                continue
            stack.extend(i for i in n.input if i and i not in ix.initializers)
        return out

    last = sources(node.input[-1])
    return last == wanted and all(not (sources(i) & wanted) for i in node.input[:-1])


__all__ = ["detection_context", "forward_ops", "last_columns", "layout_only", "split_extra", "with_extra"]
