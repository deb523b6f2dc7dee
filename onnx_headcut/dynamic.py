"""Exports with a symbolic image height and width (YOLOv5/v7/v9 ``--dynamic``, Ultralytics ``dynamic=True``).

Their decode computes grids and strides at run time from the feature maps' shapes (Shape → Gather →
Range chains), so no constant can be matched on the graph as it is. :func:`locate_dynamic` pins a
copy to a probe size with onnxsim (the ``imgsz`` the export records, else 640) and locates the head
there, then pins a second copy to another size (half the height, three quarters of the width,
rounded down to the largest stride) and locates it again: the same prediction convs, classes,
anchors and strides must be found, with each grid the input size divided by the stride. Only then
is the decode size-independent, and the raw graph (cut from the original, reshape targets ``-1``)
keeps the symbolic axes; verification then runs at both sizes.

``--input-size HxW`` (:func:`parse_size`) pins height and width instead, for engines that need
static shapes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import onnx

from .errors import AlreadyRawError, HeadcutError, NoHeadError, UsageError
from .graph import infer_shapes
from .heads import DynamicHW, Head
from .metadata import METADATA_KEY, _json_value
from .simplify import fold

#: the probe size when the export records no ``imgsz`` (the upstream exporters' default)
DEFAULT_SIZE = 640
#: the largest input side ``--input-size`` accepts
MAX_SIDE = 1 << 14


def image_input(model: onnx.ModelProto) -> onnx.ValueInfoProto | None:
    """The graph input that is not an initializer (the image), if there is exactly one."""
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    return inputs[0] if len(inputs) == 1 else None


def symbolic_hw(model: onnx.ModelProto) -> tuple[str, str] | None:
    """The names of the image input's height and width when either is not a fixed number, else None."""
    inp = image_input(model)
    dims = inp.type.tensor_type.shape.dim if inp is not None else []
    if len(dims) != 4 or all(d.HasField("dim_value") and d.dim_value > 0 for d in dims[2:]):
        return None
    return tuple(d.dim_param or (str(d.dim_value) if d.HasField("dim_value") else "?") for d in dims[2:])  # type: ignore[return-value]


def parse_size(text) -> tuple[int, int]:
    """``"HxW"`` (or an ``(h, w)`` pair) as two positive ints; :class:`UsageError` (one line) otherwise."""
    if isinstance(text, (tuple, list)) and len(text) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                                   for v in text):
        h, w = text
    else:
        m = re.fullmatch(r"\s*(\d{1,6})\s*[xX]\s*(\d{1,6})\s*", str(text))
        if not m:
            raise UsageError(f"--input-size must be HxW, two whole numbers (e.g. 640x640), not {str(text)[:40]!r}")
        h, w = int(m.group(1)), int(m.group(2))
    if not (0 < h <= MAX_SIDE and 0 < w <= MAX_SIDE):
        raise UsageError(f"--input-size {h}x{w}: each side must be in [1, {MAX_SIDE}]")
    return h, w


def check_multiple(size: tuple[int, int], head: Head) -> None:
    """:class:`UsageError` unless both sides of ``size`` are multiples of the head's largest stride."""
    m = max(head.strides)
    if size[0] % m or size[1] % m:
        near = f"{max(m, size[0] // m * m)}x{max(m, size[1] // m * m)}"
        raise UsageError(f"--input-size {size[0]}x{size[1]} is not a multiple of the largest stride {m} "
                         f"(strides {list(head.strides)}); use e.g. {near}")


def probe_size(model: onnx.ModelProto) -> tuple[int, int]:
    """The export's own ``imgsz`` (Ultralytics' metadata_props) when it is one or two positive ints, else 640x640."""
    props = {p.key: p.value for p in model.metadata_props if p.key != METADATA_KEY}
    v = _json_value(props.get("imgsz", ""))
    if isinstance(v, int) and not isinstance(v, bool):
        v = [v, v]
    if isinstance(v, list) and len(v) == 2 and all(isinstance(d, int) and not isinstance(d, bool)
                                                   and 0 < d <= MAX_SIDE for d in v):
        return v[0], v[1]
    return DEFAULT_SIZE, DEFAULT_SIZE


def second_size(size: tuple[int, int], multiple: int) -> tuple[int, int]:
    """Another size with both sides changed: half the height and three quarters of the width, rounded down to
    ``multiple`` (at least ``multiple``)."""
    def down(v: int) -> int:
        return max(multiple, v // multiple * multiple)
    h, w = down(size[0] // 2), down(size[1] * 3 // 4)
    if h == size[0]:
        h = size[0] + multiple
    if w == size[1]:
        w = size[1] + multiple
    return h, w


@dataclass(frozen=True)
class DynamicLocate:
    """The head located on a copy pinned to ``size``; ``dynamic`` when a second size proved the decode
    size-independent, else ``why`` it is not (the raw graph is then pinned to ``size``)."""

    work: onnx.ModelProto  # the copy pinned to ``size``
    shapes: dict
    head: Head
    size: tuple[int, int]
    dynamic: DynamicHW | None
    why: str = ""


def _pinned(model: onnx.ModelProto, size: tuple[int, int], locate) -> tuple[onnx.ModelProto, dict, Head]:
    work = fold(model, size)
    shapes = infer_shapes(work)
    return work, shapes, locate(work, shapes)


def _same_head(a: Head, b: Head, size_b: tuple[int, int]) -> str:
    """Why ``b`` (located at ``size_b``) is not ``a`` at another size, or ''."""
    if (a.kind, a.family, a.num_classes, a.strides, a.anchors, a.reg_max) != \
            (b.kind, b.family, b.num_classes, b.strides, b.anchors, b.reg_max):
        return (f"at {size_b[0]}x{size_b[1]} the head reads differently ({b.family} {b.decode}, strides "
                f"{list(b.strides)}, vs {a.family} {a.decode}, strides {list(a.strides)})")
    if [[br.tensor for br in lv.branches] for lv in a.levels] != [[br.tensor for br in lv.branches] for lv in b.levels]:
        return f"at {size_b[0]}x{size_b[1]} other convs feed the decode"
    want = [(size_b[0] // s, size_b[1] // s) for s in b.strides]
    got = [lv.grid for lv in b.levels]
    if got != want:
        return f"at {size_b[0]}x{size_b[1]} the grids are {got}, not the input size / stride {want}"
    return ""


def locate_dynamic(model: onnx.ModelProto, locate) -> DynamicLocate:
    """Locate the head of an export with symbolic height and width (``locate(model, shapes)`` is the
    locator), at its probe size and again at :func:`second_size`; see the module docstring."""
    axes = symbolic_hw(model)
    assert axes is not None
    inp = image_input(model)
    assert inp is not None  # symbolic_hw found it
    fixed = [d.dim_value for d in inp.type.tensor_type.shape.dim[2:] if d.HasField("dim_value") and d.dim_value > 0]
    if fixed:
        free, pinned = ("width", "height") if axes[0].isdigit() else ("height", "width")
        raise NoHeadError(f"no YOLO head: input '{inp.name}' has a symbolic {free} but a fixed {pinned} ({fixed[0]}); "
                          "headcut keeps both symbolic or neither: use --input-size HxW")
    size = probe_size(model)
    try:
        work, shapes, head = _pinned(model, size, locate)
    except AlreadyRawError:
        raise
    except NoHeadError as e:
        raise NoHeadError(f"{e} (input with symbolic height and width, located at {size[0]}x{size[1]})") from None
    except HeadcutError as e:
        raise NoHeadError(f"no YOLO head: the input has symbolic height and width and folding it at "
                          f"{size[0]}x{size[1]} failed ({e}); use --input-size HxW") from None
    m = max(head.strides)
    other = second_size(size, m)
    try:
        why = _same_head(head, _pinned(model, other, locate)[2], other)
    except HeadcutError as e:  # NoHeadError included: the decode reads differently at another size
        reason = str(e).split("): ", 1)[-1]  # the matchers' reasons, without the list of what was looked for
        why = f"at {other[0]}x{other[1]}: {reason[:200]}{'...' if len(reason) > 200 else ''}"
    dyn = None if why else DynamicHW(axes, m, (size, other))
    return DynamicLocate(work, shapes, head, size, dyn, why)
