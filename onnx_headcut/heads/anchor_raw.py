"""Anchor heads whose outputs already are the raw head, split per level and 5-D: YOLOv7 without ``--grid``.

``export.py`` without ``--grid`` sets ``Detect.export``, so ``forward`` returns the per-level maps
viewed and permuted, one output each, with no decode::

    Conv (1, na·no, h, w) ─► Reshape (1, na, no, h, w) ─► Transpose(0, 1, 3, 4, 2) ─► (1, na, h, w, no)

:func:`match_split_raw` recognises that structure (one conv per output, the reshape target and the
permutation checked against the conv's shape) and returns an ``anchor_grid`` head whose raw layout is
the one of a decoded YOLOv5/v7 export (rows level → anchor → y → x). The anchors live in the PyTorch
model, not in the graph, so they must be given (:func:`parse_anchors`, ``--anchors``) and are
recorded as given; nothing in the file can confirm them.
"""

from __future__ import annotations

import math

from ..errors import NoHeadError, UsageError
from ..graph import GraphIndex, Shape, is_static
from .anchor_grid import KIND
from .base import Branch, Head, Level

#: what ``--anchors`` looks like (YOLOv7's default anchors, one level per ``/``)
ANCHORS_EXAMPLE = "12,16,19,36,40,28/36,75,76,55,72,146/142,110,192,243,459,401"
_PERM = [0, 1, 3, 4, 2]


def parse_anchors(text: str) -> tuple[tuple[tuple[float, float], ...], ...]:
    """``"w,h,w,h,.../w,h,..."`` (one level per ``/``, stride ascending, as the ``anchors:`` rows of a
    YOLOv5/v7 yaml) → per level, per anchor (w, h) in pixels; :class:`UsageError` when malformed."""
    levels = []
    for k, part in enumerate(str(text).split("/")):
        try:
            vals = [float(v) for v in part.replace(" ", "").split(",") if v != ""]
        except ValueError:
            raise UsageError(f"--anchors: level {k} ({part.strip()!r}) is not a list of numbers; "
                             f"expected w,h pairs per level separated by '/', e.g. {ANCHORS_EXAMPLE}") from None
        if not vals or len(vals) % 2:
            raise UsageError(f"--anchors: level {k} has {len(vals)} values, expected w,h pairs "
                             f"(e.g. {ANCHORS_EXAMPLE})")
        if not all(math.isfinite(v) and v > 0 for v in vals):
            raise UsageError(f"--anchors: level {k} has a value that is not a positive finite number of pixels")
        levels.append(tuple((vals[i], vals[i + 1]) for i in range(0, len(vals), 2)))
    return tuple(levels)


def _conv_behind(ix: GraphIndex, shapes: dict[str, Shape], out: str) -> tuple[str, int, int] | str:
    """(conv tensor, na, no) behind one 5-D output, or why the output is not Conv → Reshape → Transpose."""
    tr = ix.producer.get(out)
    perm = next((list(a.ints) for a in tr.attribute if a.name == "perm"), None) if tr is not None else None
    if tr is None or tr.op_type != "Transpose" or perm != _PERM:
        return f"output '{out}' is not made by Transpose(perm={_PERM})"
    rs = ix.producer.get(tr.input[0])
    if rs is None or rs.op_type != "Reshape":
        return f"output '{out}': the Transpose does not read a Reshape"
    conv = ix.producer.get(rs.input[0])
    if conv is None or conv.op_type != "Conv":
        return f"output '{out}': the Reshape does not read a Conv"
    cs, os_ = shapes.get(rs.input[0]), shapes.get(out)
    if not (is_static(cs) and is_static(os_) and len(cs) == 4 and len(os_) == 5):
        return f"output '{out}' {os_} or its conv {cs} is not static"
    _, na, h, w, no = os_
    target = ix.const_value(rs.input[1])
    if cs[0] != 1 or os_[0] != 1 or (cs[2], cs[3]) != (h, w) or cs[1] != na * no or target is None or \
            [int(d) for d in target.reshape(-1)][1:] != [na, no, h, w]:
        return (f"output '{out}' {list(os_)} is not its conv {list(cs)} viewed as (1, na, no, h, w) "
                f"(reshape target {None if target is None else target.reshape(-1).tolist()})")
    return rs.input[0], int(na), int(no)


def match_split_raw(ix: GraphIndex, shapes: dict[str, Shape], outputs: list[str], input_name: str,
                    input_shape: tuple[int, ...], anchors: tuple | None) -> Head | str:
    """The head of an export whose outputs are YOLOv5/v7 prediction convs viewed 5-D, or why not.

    Without ``anchors`` it raises :class:`NoHeadError` (exit 2) saying they are needed and how to
    give them; with the wrong number of levels or anchors per level, :class:`UsageError`.
    """
    found = []
    for o in outputs:
        r = _conv_behind(ix, shapes, o)
        if isinstance(r, str):
            return r
        found.append((o, *r))
    if len({(na, no) for _, _, na, no in found}) != 1:
        return "the outputs disagree on anchors per cell or columns"
    na, no = found[0][2], found[0][3]
    if no < 6:
        return f"the outputs have {no} columns, fewer than 6"
    _, in_h, in_w = input_shape[-3:]
    by_stride = {}
    for o, conv, _, _ in found:
        h, w = shapes[conv][2:]
        if in_h % h or in_w % w or in_h // h != in_w // w:
            return f"the {h}x{w} map of output '{o}' does not divide the {in_h}x{in_w} input into one stride"
        if in_h // h in by_stride:
            return f"two outputs have the stride {in_h // h}"
        by_stride[in_h // h] = (o, conv, (h, w))
    strides = sorted(by_stride)
    shape_text = ", ".join(f"'{by_stride[s][0]}' {tuple(shapes[by_stride[s][0]])}" for s in strides)
    if anchors is None:
        raise NoHeadError(f"raw anchor head split over {len(outputs)} 5-D outputs ({shape_text}; YOLOv7 exported "
                          f"without --grid): the graph holds no anchors; give them with --anchors (strip, inspect), "
                          f"e.g. --anchors {ANCHORS_EXAMPLE} (pixels, one level per '/', stride ascending)")
    if len(anchors) != len(strides) or any(len(a) != na for a in anchors):
        raise UsageError(f"--anchors gives {len(anchors)} level(s) of {[len(a) for a in anchors]} anchors; the "
                         f"model has {len(strides)} levels of {na} anchors (strides {strides})")
    levels, first = [], 0
    for s in strides:
        o, conv, (h, w) = by_stride[s]
        levels.append(Level(s, (h, w), first, (Branch("pred", conv, na * no),)))
        first += na * h * w
    rounded = tuple(tuple((round(float(x), 4), round(float(y), 4)) for x, y in a) for a in anchors)
    reasons = (
        f"{len(levels)} outputs, each one prediction conv with {na}x({no - 5}+5) channels viewed (1, {na}, h, w, "
        f"{no}) by Reshape + Transpose{tuple(_PERM)} only: the raw head, not decoded ({shape_text})",
        f"strides {strides} = input {in_h}x{in_w} / grids " + ", ".join(f"{lv.grid[0]}x{lv.grid[1]}" for lv in levels),
        "anchors (pixels) from --anchors, not from the graph (it holds none): " + "; ".join(
            f"stride {s}: " + " ".join(f"{x:g}x{y:g}" for x, y in a) for s, a in zip(strides, rounded)),
        "YOLOv7's export.py writes this without --grid (Detect.export); a YOLOv5 Detect head in export mode "
        "would look the same: the decode recorded is YOLOv7's (2σ - 0.5 + g)·s, (2σ)²·anchor, which both share",
    )
    first_out = outputs[0]
    note = ("anchors from --anchors (the export holds none); the decode's geometry cannot be checked against "
            "the original, which has no decoded output")
    return Head(kind=KIND, family="YOLOv7", version="raw outputs (export.py without --grid)", input_name=input_name,
                input_shape=tuple(input_shape), output_name=first_out, output_shape=tuple(shapes[first_out]),
                num_classes=no - 5, levels=tuple(levels), reasons=reasons, notes=(note,), anchors=rounded,
                original_decoded=False,
                split_outputs=tuple((by_stride[s][0], tuple(shapes[by_stride[s][0]])) for s in strides),
                anchors_from="--anchors")


__all__ = ["ANCHORS_EXAMPLE", "match_split_raw", "parse_anchors"]
