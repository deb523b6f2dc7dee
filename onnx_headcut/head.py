"""The frozen description of a detection head: what the locator found and what the decode needs.

A :class:`Head` is produced by :func:`onnx_headcut.locate.locate` and consumed by every later step
(cut, decode, verify, report). Its :meth:`Head.to_json` form is what ``strip`` writes into the raw
model's ``metadata_props`` (key ``headcut``) and into the ``*.head.json`` sidecar; a C++ port of the
decode needs nothing else.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

#: Decode kinds. Each names a formula in :mod:`onnx_headcut.decode`.
GRID_EXP_OBJ = "grid_exp_obj"

FORMULAS = {
    GRID_EXP_OBJ: (
        "per row [dx, dy, dw, dh, obj, cls*nc] of level with stride s at cell (gx, gy): "
        "cx = (dx + gx) * s, cy = (dy + gy) * s, w = exp(dw) * s, h = exp(dh) * s, "
        "obj = sigmoid(obj), cls = sigmoid(cls); decoded row = [cx, cy, w, h, obj, cls*nc]; "
        "score = obj * max(cls)"
    ),
}


@dataclass(frozen=True)
class Branch:
    """One prediction conv output feeding the decode: a block of channels of the raw layout."""

    role: str  # "box" | "obj" | "cls"
    tensor: str  # the conv output tensor in the source graph
    channels: int


@dataclass(frozen=True)
class Level:
    """One pyramid level: stride, grid (h, w) and the rows it occupies in the flat raw output."""

    stride: int
    grid: tuple[int, int]
    first_row: int
    branches: tuple[Branch, ...]

    @property
    def rows(self) -> int:
        return self.grid[0] * self.grid[1]


@dataclass(frozen=True)
class Head:
    """A located head. ``reasons`` says, in words, why the locator believes this is the head."""

    family: str
    version: str
    decode: str
    input_name: str
    input_shape: tuple[int, ...]
    output_name: str
    output_shape: tuple[int, ...]
    num_classes: int
    levels: tuple[Level, ...]
    region: frozenset = field(repr=False)  # output tensor names of the nodes to remove
    reasons: tuple[str, ...] = ()

    @property
    def rows(self) -> int:
        return sum(lv.rows for lv in self.levels)

    @property
    def channels(self) -> tuple[tuple[str, int], ...]:
        """Column blocks of one raw row, in order, e.g. ``(("box", 4), ("obj", 1), ("cls", 80))``."""
        return tuple((b.role, b.channels) for b in self.levels[0].branches)

    @property
    def width(self) -> int:
        return sum(n for _, n in self.channels)

    @property
    def strides(self) -> tuple[int, ...]:
        return tuple(lv.stride for lv in self.levels)

    def to_json(self, **extra) -> dict:
        """The metadata written next to the raw model (plain JSON types only)."""
        columns = {"box": "dx, dy, dw, dh", "obj": "objectness logit", "cls": "class logits"}
        d = {
            "family": self.family,
            "version": self.version,
            "decode": self.decode,
            "formula": FORMULAS[self.decode],
            "input": {"name": self.input_name, "shape": list(self.input_shape)},
            "num_classes": self.num_classes,
            "layout": "flat",
            "rows": self.rows,
            "channels": [{"name": r, "size": n, "columns": columns[r]} for r, n in self.channels],
            "levels": [
                {"stride": lv.stride, "grid": list(lv.grid), "first_row": lv.first_row, "rows": lv.rows}
                for lv in self.levels
            ],
            "original_output": {"name": self.output_name, "shape": list(self.output_shape)},
        }
        d.update(extra)
        return d


@dataclass(frozen=True)
class Geometry:
    """What the numpy decode needs; built from a :class:`Head` or from the recorded JSON."""

    decode: str
    num_classes: int
    strides: tuple[int, ...]
    grids: tuple[tuple[int, int], ...]
    input_shape: tuple[int, ...]

    @classmethod
    def of(cls, head: "Head | dict | str") -> "Geometry":
        if isinstance(head, Geometry):
            return head
        if isinstance(head, Head):
            return cls(head.decode, head.num_classes, head.strides,
                       tuple(lv.grid for lv in head.levels), tuple(head.input_shape))
        if isinstance(head, str):
            head = json.loads(head)
        return cls(head["decode"], int(head["num_classes"]),
                   tuple(int(lv["stride"]) for lv in head["levels"]),
                   tuple((int(lv["grid"][0]), int(lv["grid"][1])) for lv in head["levels"]),
                   tuple(head["input"]["shape"]))


def as_dict(obj) -> dict:
    return asdict(obj)
