"""The C++ of the task heads codegen covers: their extra columns, carried by every detection.

A covered task head (:data:`~onnx_headcut.codegen.spec.COVERED_TASKS`: Ultralytics pose, YOLOv6 0.3.1 face) is a
detection head whose rows end in one extra block (``kpt``, ``lmk``) and whose NMS is the class-aware one; the
:class:`~onnx_headcut.codegen.spec.Spec` of such a head gets, here: its constants (``kNumPoints`` points of
``kPointDims`` values), ``fill_extra`` (the points of a decoded row, formula for formula
:func:`onnx_headcut.heads.tasks.pose.decode` / :func:`~onnx_headcut.heads.tasks.face.decode`, float32, same
operation order), the lines of ``to_image`` that move the points to image pixels (``(p - pad) / ratio``, not
clipped, as ``headcut detect``) and the harness's JSON key.
"""

from __future__ import annotations

from .spec import COVERED_TASKS as COVERED
from .spec import Spec

_POSE = """\
// pose (Ultralytics Pose, heads/tasks/pose.py): keypoint k of a row at cell (gx, gy), stride s, raw
// (x, y[, v]) in columns kKpt + k * kPointDims:
//   x = (raw_x * 2 + gx) * s,  y = (raw_y * 2 + gy) * s  (the cell itself: Ultralytics' anchor - 0.5)
//   visibility = sigmoid(raw_v)  (3 values per keypoint only)
template <class Row>
inline void fill_extra(const Row& at, const Cell& cell, Detection& d) {
  for (int k = 0; k < kNumPoints; ++k) {
    const int c = kKpt + k * kPointDims;
    d.extra[k * kPointDims + 0] = (at(c + 0) * 2 + cell.gx) * cell.stride;
    d.extra[k * kPointDims + 1] = (at(c + 1) * 2 + cell.gy) * cell.stride;
    if constexpr (kPointDims == 3) d.extra[k * kPointDims + 2] = sigmoid(at(c + 2));
  }
}
"""

_FACE = """\
// face (YOLOv6 0.3.1 face, heads/tasks/face.py): landmark k of a row at cell (gx, gy), stride s, raw (x, y) in
// columns kLmk + 2 k, offsets in stride units from the anchor point:
//   x = (raw_x + (gx + 0.5)) * s,  y = (raw_y + (gy + 0.5)) * s
template <class Row>
inline void fill_extra(const Row& at, const Cell& cell, Detection& d) {
  for (int k = 0; k < kNumPoints; ++k) {
    const int c = kLmk + 2 * k;
    d.extra[2 * k + 0] = (at(c + 0) + (cell.gx + 0.5f)) * cell.stride;
    d.extra[2 * k + 1] = (at(c + 1) + (cell.gy + 0.5f)) * cell.stride;
  }
}
"""


def role(spec: Spec) -> str:
    """The extra block's role of a covered task head ("" for a detection head)."""
    return COVERED[spec.g.task][0] if spec.g.task in COVERED else ""


def points(spec: Spec) -> tuple[int, int]:
    """(points per detection, values per point) of a covered task head; (0, 0) for a detection head."""
    if not role(spec):
        return 0, 0
    dims = spec.g.kpt_dims if spec.g.task == "pose" else 2
    return spec.part_width(role(spec)) // dims, dims


def constants(spec: Spec) -> str:
    """The header's constants of the extra columns (nothing for a detection head)."""
    if not role(spec):
        return ""
    n, dims = points(spec)
    what = ("keypoints: x, y in pixels" + (", visibility probability" if dims == 3 else "")
            if spec.g.task == "pose" else "landmarks: x, y in pixels")
    return (f"// every detection carries {n} {what} (Detection::extra, kNumExtra = kNumPoints * kPointDims)\n"
            f"constexpr int kNumPoints = {n}, kPointDims = {dims}, kNumExtra = {n * dims};\n")


def member(spec: Spec) -> str:
    """The ``Detection`` member holding the extra columns."""
    if not role(spec):
        return ""
    return "  float extra[kNumExtra];  // per point x, y (input pixels; image pixels after to_image)" + \
        (", visibility" if points(spec)[1] == 3 else "") + "\n"


def fill(spec: Spec) -> str:
    """``fill_extra`` of the task (nothing for a detection head)."""
    return {"pose": _POSE, "face": _FACE}.get(spec.g.task, "") + ("\n" if role(spec) else "")


def call(spec: Spec) -> str:
    """The line of ``decode_row`` that fills the extra columns of the row it just pushed."""
    return "  fill_extra(at, cell, out.back());  // the task's extra columns\n" if role(spec) else ""


def to_image(spec: Spec) -> str:
    """The lines of ``to_image`` moving the points to image pixels (not clipped, as headcut detect)."""
    if not role(spec):
        return ""
    return """\
    for (int k = 0; k < kNumPoints; ++k) {  // the points: (p - pad) / ratio, not clipped
      d.extra[k * kPointDims + 0] = (d.extra[k * kPointDims + 0] - left) / r;
      d.extra[k * kPointDims + 1] = (d.extra[k * kPointDims + 1] - top) / r;
    }
"""


def json_key(spec: Spec) -> str:
    """The harness's JSON key of the points ("" for a detection head)."""
    return COVERED[spec.g.task][1] if role(spec) else ""
