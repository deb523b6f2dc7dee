"""The C++ decode of one raw row, one function per decode kind, each the formula of its numpy twin.

Every function here takes a :class:`Spec` and returns the C++ text of ``decode_row``: given one raw
row (``at(c)`` is column ``c``) that passed the gate (the layout's loop rejects rows on the gate
logits of the kind's ``gate`` block, before anything is decoded), its cell, stride (and anchor), it pushes the
decoded box and score exactly as
:mod:`onnx_headcut.heads.grid_exp_obj`, :mod:`~onnx_headcut.heads.dist_anchor` and
:mod:`~onnx_headcut.heads.anchor_grid` compute them (float32, same operation order), so the
candidates and numbers match :func:`onnx_headcut.decode.detect`.

A head whose original ends in a top-k selection (YOLOv10, YOLO26 end-to-end; the record's
``selection``) gets :func:`dist_anchor_topk` instead: every class score of the row goes to the
selection (:data:`onnx_headcut.codegen.shared.TOPK`), with the corners the original selects from.
A new kind is one more function and one entry in :data:`KINDS`.
"""

from __future__ import annotations

from collections.abc import Callable

from .spec import Spec
from .tasks import call


def _score(spec: Spec, role: str, expr: str) -> str:
    """``expr`` as a score: the graph applied sigmoid already, or the decode applies it."""
    return expr if spec.sigmoid[role] else f"sigmoid({expr})"


def _gate(spec: Spec, role: str) -> str:
    what = "objectness" if role == "obj" else "best class"
    return (f"Called only for rows whose {what} reaches the gate: "
            + ("conf (the graph applied sigmoid)." if spec.sigmoid[role]
               else "logit(conf) = log(conf / (1 - conf)), as sigmoid(x) >= conf <=> x >= logit(conf)."))


def _push(spec: Spec) -> str:
    """Push the corners of the decoded row (a task head: then its extra columns)."""
    extra = ", {}" if call(spec) else ""
    return f"""\
  // corners as postprocess() makes them: x1 = cx - w / 2, x2 = cx + w / 2
  out.push_back({{cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, score, c{extra}}});
{call(spec)}"""


def grid_exp_obj(spec: Spec) -> str:
    return f"""\
// grid_exp_obj (YOLOv6 0.1.0, YOLOX): row [dx, dy, dw, dh, obj, cls * nc] at cell (gx, gy), stride s:
//   cx = (dx + gx) * s,  cy = (dy + gy) * s,  w = exp(dw) * s,  h = exp(dh) * s
//   score = sigmoid(obj) * max_c sigmoid(cls_c)
// {_gate(spec, "obj")}
template <class Row>
inline void decode_row(const Row& at, const Cell& cell, float conf, Candidates& out) {{
  const int c = best_class(at);  // sigmoid is monotonic: the best logit is the best score
  const float score = {_score(spec, "obj", "at(kObj)")} * {_score(spec, "cls", "at(kCls + c)")};
  if (score < conf) return;
  const float s = cell.stride;
  const float cx = (at(kBox + 0) + cell.gx) * s, cy = (at(kBox + 1) + cell.gy) * s;
  const float w = std::exp(at(kBox + 2)) * s, h = std::exp(at(kBox + 3)) * s;
{_push(spec)}}}
"""


def anchor_grid(spec: Spec) -> str:
    return f"""\
// anchor_grid (YOLOv5, YOLOv7): row [tx, ty, tw, th, obj, cls * nc] of anchor (aw, ah) pixels at cell
// (gx, gy), stride s; p = sigmoid(t):
//   cx = (2 * px + (gx - 0.5)) * s,  cy = (2 * py + (gy - 0.5)) * s,  w = (2 * pw)^2 * aw,  h = (2 * ph)^2 * ah
//   score = sigmoid(obj) * max_c sigmoid(cls_c)
// {_gate(spec, "obj")}
template <class Row>
inline void decode_row(const Row& at, const Cell& cell, float conf, Candidates& out) {{
  const int c = best_class(at);  // sigmoid is monotonic: the best logit is the best score
  const float score = {_score(spec, "obj", "at(kObj)")} * {_score(spec, "cls", "at(kCls + c)")};
  if (score < conf) return;
  const float s = cell.stride;
  const float cx = (sigmoid(at(kBox + 0)) * 2 + (cell.gx - 0.5f)) * s;
  const float cy = (sigmoid(at(kBox + 1)) * 2 + (cell.gy - 0.5f)) * s;
  const float tw = sigmoid(at(kBox + 2)) * 2, th = sigmoid(at(kBox + 3)) * 2;
  const float w = tw * tw * cell.aw, h = th * th * cell.ah;
{_push(spec)}}}
"""


def _distances(spec: Spec) -> tuple[str, str, str]:
    """(the DFL helper or nothing, the C++ of ``l = ..., t = ..., r = ..., b = ...`` after ``l = ``, its words)."""
    if not spec.dfl_bins:
        return "", "at(kReg + 0), t = at(kReg + 1), r = at(kReg + 2), b = at(kReg + 3)", "l, t, r, b"
    helper = f"""\
// distance = sum_i softmax(bins)_i * i over the {spec.dfl_bins} bin logits of one side (DFL)
template <class Row>
inline float dfl(const Row& at, int first) {{
  float m = at(first);
  for (int i = 1; i < kDflBins; ++i) m = std::max(m, at(first + i));
  float e[kDflBins], sum = 0;
  for (int i = 0; i < kDflBins; ++i) {{
    e[i] = std::exp(at(first + i) - m);
    sum += e[i];
  }}
  float d = 0;
  for (int i = 0; i < kDflBins; ++i) d += e[i] / sum * float(i);
  return d;
}}

"""
    sides = "dfl(at, kDfl + 0 * kDflBins), t = dfl(at, kDfl + 1 * kDflBins),\n" \
            "              r = dfl(at, kDfl + 2 * kDflBins), b = dfl(at, kDfl + 3 * kDflBins)"
    return helper, sides, "l, t, r, b from DFL bins"


def dist_anchor(spec: Spec) -> str:
    helper, sides, what = _distances(spec)
    return f"""\
{helper}// dist_anchor (YOLOv6 anchor-free, YOLOv8/11): row [{what}, cls * nc] at cell (gx, gy), stride s:
//   ax = gx + 0.5, ay = gy + 0.5;  x1 = ax - l, y1 = ay - t, x2 = ax + r, y2 = ay + b
//   cx = (x1 + x2) / 2 * s,  cy = (y1 + y2) / 2 * s,  w = (x2 - x1) * s,  h = (y2 - y1) * s
//   score = max_c sigmoid(cls_c)
// {_gate(spec, "cls")}
template <class Row>
inline void decode_row(const Row& at, const Cell& cell, float conf, Candidates& out) {{
  const int c = best_class(at);
  const float score = {_score(spec, "cls", "at(kCls + c)")};
  if (score < conf) return;
  const float l = {sides};
  const float ax = cell.gx + 0.5f, ay = cell.gy + 0.5f, s = cell.stride;
  const float x1 = ax - l, y1 = ay - t, x2 = ax + r, y2 = ay + b;
  const float cx = (x1 + x2) / 2 * s, cy = (y1 + y2) / 2 * s, w = (x2 - x1) * s, h = (y2 - y1) * s;
{_push(spec)}}}
"""


def dist_anchor_topk(spec: Spec) -> str:
    helper, sides, what = _distances(spec)
    return f"""\
{helper}// dist_anchor before an NMS-free top-k selection (YOLOv10, YOLO26 end-to-end): row [{what}, cls * nc]
// at cell (gx, gy), stride s, as Ultralytics' dist2bbox(xywh=False) * s:
//   ax = gx + 0.5, ay = gy + 0.5;  x1 = (ax - l) * s, y1 = (ay - t) * s, x2 = (ax + r) * s, y2 = (ay + b) * s
//   every class score sigmoid(cls_c) goes to the selection, the row's best one ranks it
// {_gate(spec, "cls")}
template <class Row>
inline void decode_row(const Row& at, const Cell& cell, float /*conf*/, Candidates& out) {{
  float best = 0;
  for (int c = 0; c < kNumClasses; ++c) {{
    const float score = {_score(spec, "cls", "at(kCls + c)")};
    out.scores.push_back(score);
    best = c == 0 ? score : std::max(best, score);
  }}
  const float l = {sides};
  const float ax = cell.gx + 0.5f, ay = cell.gy + 0.5f, s = cell.stride;
  out.rows.push_back({{(ax - l) * s, (ay - t) * s, (ax + r) * s, (ay + b) * s, best, 0}});
}}
"""


#: decode kind (the record's ``"decode"``) → its ``decode_row``
KINDS: dict[str, Callable[[Spec], str]] = {
    "grid_exp_obj": grid_exp_obj,
    "dist_anchor": dist_anchor,
    "anchor_grid": anchor_grid,
}

#: selection (the record's ``selection.kind``) → the ``decode_row`` of the kinds it follows
SELECTED: dict[str, dict[str, Callable[[Spec], str]]] = {
    "topk": {"dist_anchor": dist_anchor_topk},
}


def row_decode(spec: Spec) -> str:
    """The ``decode_row`` of ``spec``: its kind's, or the one that feeds its selection."""
    return SELECTED["topk"][spec.decode](spec) if spec.topk else KINDS[spec.decode](spec)
