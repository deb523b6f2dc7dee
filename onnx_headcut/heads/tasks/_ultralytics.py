"""What the Ultralytics task heads (``Pose``, ``OBB``: ``Detect`` plus a ``cv4`` branch per level) share when
they are located: the three prediction convs of each level told apart by what the decode does with them, and
the decode's constants checked against the levels.

Per level, ``Detect``'s box conv (4 x 16 DFL bins: it reaches the Softmax), its class conv (read through a
Sigmoid and nothing else before the output) and the task's ``cv4`` conv (everything else: the task module
says what its decode must do). The output is channel-first ``(1, 4 + nc + extra, N)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import onnx

from ...graph import is_static
from ...region import LAYOUT_OPS
from .._match import Group, MatchContext, Reject, cell_grid, region_consts
from ..base import Branch, Level, Rejection
from ..dist_anchor import stride_mismatch, unexplained


def decode_consumers(ctx: MatchContext, t: str, follow: Callable[[onnx.NodeProto], bool] = lambda n: True
                     ) -> Iterator[onnx.NodeProto]:
    """The decode nodes that read ``t``, directly or through the outputs of decode nodes ``follow`` accepts."""
    inside = {id(n) for n in ctx.region.data_nodes}
    stack, seen = [t], set()
    while stack:
        x = stack.pop()
        if x in seen:
            continue
        seen.add(x)
        for c in ctx.ix.consumers.get(x, []):
            if id(c) in inside:
                yield c
                if follow(c):
                    stack.extend(c.output)


def downstream(ctx: MatchContext, t: str) -> set[str]:
    """The op types of the decode nodes that read ``t``, directly or through other decode nodes."""
    return {c.op_type for c in decode_consumers(ctx, t)}


def levels_of(ctx: MatchContext, groups: list[Group], no: Reject, role: str,
              is_extra: Callable[[set[str]], bool]) -> tuple[list[Level], int, int, int] | Rejection:
    """(levels, nc, extra channels, box channels) of a channel-first Ultralytics head with one extra branch
    ``role`` per level, told by ``is_extra(ops downstream of the conv)``; or the Rejection."""
    out_shape = ctx.out_shape
    if not is_static(out_shape) or len(out_shape) != 3 or out_shape[0] != 1:
        return no(f"output '{ctx.region.output}' has shape {out_shape}, expected static (1, 4+nc+extra, N)")
    n_rows = sum(h * w for _, (h, w), _ in groups)
    if out_shape[2] != n_rows:
        return no(f"output {list(out_shape)} is not channel-first (1, C, {n_rows})")
    levels, first, widths = [], 0, None
    for stride, (h, w), convs in groups:
        if len(convs) != 3:
            return no(f"the {h}x{w} level has {len(convs)} prediction convs, expected 3 (box, cls, {role})")
        ops = {t: downstream(ctx, t) for t in convs}
        box = [t for t in convs if "Softmax" in ops[t]]
        cls = [t for t in convs if ops[t] <= LAYOUT_OPS | {"Sigmoid"} and "Sigmoid" in ops[t]]
        extra = [t for t in convs if t not in box + cls and is_extra(ops[t])]
        if (len(box), len(cls), len(extra)) != (1, 1, 1):
            return no(f"{h}x{w} level: {len(extra)} {role} conv decoded as upstream (DFL box {len(box)}, "
                      f"sigmoid cls {len(cls)})")
        c = tuple(ctx.shapes[t][1] for t in (box[0], cls[0], extra[0]))
        if widths is not None and c != widths:
            return no(f"branch widths differ between levels ({widths} vs {c})")
        widths = c
        if c[0] % 4 or c[0] <= 4:
            return no(f"the {h}x{w} level's box conv has {c[0]} channels, not 4 x DFL bins")
        levels.append(Level(stride, (h, w), first, (Branch("dfl", box[0], c[0]), Branch("cls", cls[0], c[1]),
                                                    Branch(role, extra[0], c[2]))))
        first += h * w
    assert widths is not None  # locate() refuses a decode without prediction convs
    if out_shape[1] != 4 + widths[1] + widths[2]:
        return no(f"output {list(out_shape)} does not hold 4 + cls {widths[1]} + {role} {widths[2]} channels")
    return levels, widths[1], widths[2], widths[0]


def check_constants(ctx: MatchContext, levels: list[Level], no: Reject,
                    scalars: dict[tuple[str, float], str], kpt_anchors: bool = False) -> list[str] | Rejection:
    """Every float constant of the decode explained, or the Rejection: anchor points at cell + 0.5 (and with
    ``kpt_anchors`` the keypoints' ``anchors - 0.5`` = the cell itself), per-row strides, :func:`unexplained`'s
    halving and DFL weights, and the task's own ``scalars`` {(op, value): meaning}. Returns what was seen."""
    n_rows = sum(lv.rows for lv in levels)
    cells = np.concatenate([cell_grid(*lv.grid) for lv in levels])
    seen: set[str] = set()
    on_values = {id(x) for x in ctx.region.value_nodes()[0]}
    for n, _, v in region_consts(ctx.ix, ctx.region):
        if v.size == 2 * n_rows and 2 in v.shape:
            a = v.reshape(-1, n_rows).T if v.shape[-1] == n_rows else v.reshape(-1, 2)
            if np.array_equal(a, cells + 0.5):
                seen.add("anchor points (cell + 0.5)")
            elif kpt_anchors and np.array_equal(a, cells):
                seen.add("keypoint anchors (anchor points - 0.5 = the cell)")
            else:
                return no(f"anchor-point constant of shape {list(v.shape)} matches neither the cell centres"
                          + (" nor the cells" if kpt_anchors else ""))
        elif v.size == n_rows and n.op_type == "Mul":
            if (why := stride_mismatch(v, levels)) is not None:
                return no(why)
            seen.add("per-row strides")
        elif id(n) in on_values and v.size == 1 and (key := _scalar(n.op_type, v, scalars)) is not None:
            seen.add(scalars[key])
        elif id(n) in on_values and (why := unexplained(n, v)) is not None:
            return no(why)
    if "anchor points (cell + 0.5)" not in seen:
        return no("no anchor-point constant (cell + 0.5) found in the decode")
    return sorted(seen)


def _scalar(op: str, v: np.ndarray, scalars: dict[tuple[str, float], str]) -> tuple[str, float] | None:
    x = float(v.reshape(-1)[0])
    return next((k for k in scalars if k[0] == op and np.float32(k[1]) == np.float32(x)), None)
