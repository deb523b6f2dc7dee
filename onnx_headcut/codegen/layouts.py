"""The C++ loop over the raw rows, one function per raw layout.

Each function returns the text of ``detail::decode_rows`` for its layout (the row loop with its early
rejection); :func:`public` wraps it in the header's public ``decode(...)`` overloads and
``decode_outputs`` (the harness's entry: one buffer per raw output, in the model's output order).
Rows are visited in the raw row order (level, anchor, y, x) whatever the layout, so candidates reach
NMS (or the top-k selection) in the order :func:`onnx_headcut.decode.detect` sees them and score ties
are broken the same way. A row is decoded only when its best gate column reaches the gate (the
logit of conf, or conf when the graph applied sigmoid), exactly as ``detect`` chooses candidates;
with a score-sum output, a row whose sum is below conf is rejected before its logits are read.

A dynamic head's functions take the network input ``Size`` and compute the grids from it.
"""

from __future__ import annotations

from collections.abc import Callable

from .spec import Spec
from .tasks import role


def _cell(spec: Spec) -> str:
    """The ``Cell`` a row is decoded at (anchor heads carry the anchor's size too)."""
    if spec.decode == "anchor_grid":
        return "Cell{float(x), float(y), float(lv.stride), kAnchors[l][a][0], kAnchors[l][a][1]}"
    return "Cell{float(x), float(y), float(lv.stride)}"


_SUM_GATE = """\
  // the score sum bounds every class score; conf less 1e-6 relative (a few float32 steps), so that a sum
  // rounded by the graph's own sigmoid never rejects a row whose score reaches conf
  const float sum_gate = opt.conf * (1 - 1e-6f);
"""


def flat(spec: Spec) -> str:
    return f"""\
// The flat layout: one output (1, rows, kWidth), row-major; ncnn and MNN hand it out as is.
inline std::vector<Detection> decode_rows(const float* const* outputs, const std::size_t* /*csteps*/,
                                          const Level* levels, const Options& opt) {{
  const float gate = detail::gate(opt.conf);
  Candidates cand;
  const float* row = outputs[0];
  for (int l = 0; l < kNumLevels; ++l) {{
    const Level& lv = levels[l];
    for (int a = 0; a < kAnchorsPerCell; ++a)
      for (int y = 0; y < lv.h; ++y)
        for (int x = 0; x < lv.w; ++x, row += kWidth)
          if (gate_value(FlatRow{{row}}, kGate) >= gate)  // early rejection: nothing else is read
            decode_row(FlatRow{{row}}, {_cell(spec)}, opt.conf, cand);
  }}
  return finish(cand, opt);
}}
"""


def flat_split(spec: Spec) -> str:
    ext = bool(role(spec))
    total = "kBoxWidth + kClsWidth" + (" + kExtraWidth" if ext else "")
    sums = (f"  const float* ext = outputs[2];  // the _{role(spec)} output\n" if ext else "") + \
        (f"  const float* sum = outputs[{spec.g.parts.index('sum')}];\n" if spec.g.score_sum else "")
    step = (", ext += kExtraWidth" if ext else "") + (", ++sum" if spec.g.score_sum else "")
    reject = "          if (*sum < sum_gate) continue;  // early rejection on the score sum: one read\n" \
        if spec.g.score_sum else ""
    return f"""\
// The flat-split layout: (1, rows, kBoxWidth) box columns and (1, rows, kClsWidth) score columns
// {f"and (1, rows, kExtraWidth) {role(spec)} columns " if ext else ""}\
{"and (1, rows, 1) score sums " if spec.g.score_sum else ""}as outputs of their own;
// a row is [box part, score part{", extra part" if ext else ""}] = {total} columns.
inline std::vector<Detection> decode_rows(const float* const* outputs, const std::size_t* /*csteps*/,
                                          const Level* levels, const Options& opt) {{
  const float gate = detail::gate(opt.conf);
{_SUM_GATE if spec.g.score_sum else ""}  Candidates cand;
  const float* box = outputs[0];
  const float* cls = outputs[1];
{sums}  for (int l = 0; l < kNumLevels; ++l) {{
    const Level& lv = levels[l];
    for (int a = 0; a < kAnchorsPerCell; ++a)
      for (int y = 0; y < lv.h; ++y)
        for (int x = 0; x < lv.w; ++x, box += kBoxWidth, cls += kClsWidth{step}) {{
{reject}          if (gate_value(FlatRow{{cls}}, kGate - kBoxWidth) >= gate)  // the gate columns are score columns
            decode_row(SplitRow{{box, cls, {"ext, 1, " if ext else ""}1, 1}},
                       {_cell(spec)}, opt.conf, cand);
        }}
  }}
  return finish(cand, opt);
}}
"""


def levels(spec: Spec) -> str:
    return f"""\
// The levels layout: one output (1, kAnchorsPerCell * kWidth, h, w) per level, stride ascending.
// Column c of anchor a at (y, x) is data[(a * kWidth + c) * cstep + y * w + x]: cstep is h * w for a
// dense NCHW buffer (ONNX Runtime, MNN in NCHW) and ncnn::Mat::cstep for an ncnn Mat.
inline std::vector<Detection> decode_rows(const float* const* outputs, const std::size_t* csteps,
                                          const Level* levels, const Options& opt) {{
  const float gate = detail::gate(opt.conf);
  Candidates cand;
  for (int l = 0; l < kNumLevels; ++l) {{
    const Level& lv = levels[l];
    const std::size_t cstep = csteps[l], n = std::size_t(lv.h) * lv.w;
    for (int a = 0; a < kAnchorsPerCell; ++a) {{
      const float* base = outputs[l] + std::size_t(a) * kWidth * cstep;
      // early rejection, kBlock pixels at a time: the best gate channel of each, read plane by plane
      for (std::size_t i0 = 0; i0 < n; i0 += kBlock) {{
        float best[kBlock];
        const std::size_t len = std::min(kBlock, n - i0);
        gate_block(base + i0, cstep, len, best, kGate);
        for (std::size_t k = 0; k < len; ++k)
          if (best[k] >= gate) {{
            const int y = int((i0 + k) / lv.w), x = int((i0 + k) % lv.w);
            decode_row(PlaneRow{{base + i0 + k, cstep}}, {_cell(spec)}, opt.conf, cand);
          }}
      }}
    }}
  }}
  return finish(cand, opt);
}}
"""


_SUM_OUT = " and a (1, kAnchorsPerCell, h, w) score sum"


def split(spec: Spec) -> str:
    n, ext = len(spec.g.parts), bool(role(spec))
    pointers = "const float* box = outputs[" + f"{n} * l] + std::size_t(a) * kBoxWidth * bstep;\n" \
        f"      const float* cls = outputs[{n} * l + 1] + std::size_t(a) * kClsWidth * cstep;\n"
    steps = f"const std::size_t bstep = csteps[{n} * l], cstep = csteps[{n} * l + 1], n = std::size_t(lv.h) * lv.w;"
    row = "SplitRow{box + i, cls + i, bstep, cstep}"
    if ext:
        pointers += f"      const float* ext = outputs[{n} * l + 2] + std::size_t(a) * kExtraWidth * estep;\n"
        steps += f"\n    const std::size_t estep = csteps[{n} * l + 2];  // the _{role(spec)} output"
        row = "SplitRow{box + i, cls + i, ext + i, bstep, cstep, estep}"
    if spec.g.score_sum:
        k = spec.g.parts.index("sum")
        loop = f"""\
      const float* sum = outputs[{n} * l + {k}] + std::size_t(a) * csteps[{n} * l + {k}];
      for (std::size_t i = 0; i < n; ++i) {{
        if (sum[i] < sum_gate) continue;  // early rejection on the score sum: one read per pixel
        if (gate_value(PlaneRow{{cls + i, cstep}}, kGate - kBoxWidth) >= gate) {{
          const int y = int(i / lv.w), x = int(i % lv.w);
          decode_row({row},
                     {_cell(spec)}, opt.conf, cand);
        }}
      }}"""
    else:
        loop = f"""\
      // early rejection, kBlock pixels at a time: the best gate channel of each, read plane by plane
      for (std::size_t i0 = 0; i0 < n; i0 += kBlock) {{
        float best[kBlock];
        const std::size_t len = std::min(kBlock, n - i0);
        gate_block(cls + i0, cstep, len, best, kGate - kBoxWidth);
        for (std::size_t k = 0; k < len; ++k)
          if (best[k] >= gate) {{
            const std::size_t i = i0 + k;
            const int y = int(i / lv.w), x = int(i % lv.w);
            decode_row({row},
                     {_cell(spec)}, opt.conf, cand);
          }}
      }}"""
    return f"""\
// The split layout: per level, stride ascending, a (1, kAnchorsPerCell * kBoxWidth, h, w) box output and a
// (1, kAnchorsPerCell * kClsWidth, h, w) score output\
{f" and a (1, kAnchorsPerCell * kExtraWidth, h, w) {role(spec)} output" if ext else ""}\
{_SUM_OUT if spec.g.score_sum else ""};
// a row is [box part, score part{", extra part" if ext else ""}]. Channel c of an output is cstep floats after
// channel c - 1 (h * w when dense, ncnn::Mat::cstep for an ncnn Mat).
inline std::vector<Detection> decode_rows(const float* const* outputs, const std::size_t* csteps,
                                          const Level* levels, const Options& opt) {{
  const float gate = detail::gate(opt.conf);
{_SUM_GATE if spec.g.score_sum else ""}  Candidates cand;
  for (int l = 0; l < kNumLevels; ++l) {{
    const Level& lv = levels[l];
    {steps}
    for (int a = 0; a < kAnchorsPerCell; ++a) {{
      {pointers}{loop}
    }}
  }}
  return finish(cand, opt);
}}
"""


def _part_widths(spec: Spec) -> list[str]:
    """The C++ constant of each output's channels per anchor, in the order of a level's (or the model's) outputs."""
    return [{"": "kWidth", "box": "kBoxWidth", "cls": "kClsWidth", "sum": "1"}.get(p, "kExtraWidth")
            for p in spec.g.parts]


def _sizes(spec: Spec) -> str:
    """The float count of each raw output: constants for a static head, a function of the input size for a
    dynamic one."""
    g = spec.g
    if not spec.dynamic:
        return "constexpr std::size_t kOutputSizes[kNumOutputs] = {" + \
            ", ".join(str(_prod(s)) for s in g.output_shapes()) + "};\n"
    if g.layout in ("levels", "split"):
        body = "\n".join(f"    out.push_back(n * {w});" for w in _part_widths(spec))
        loop = f"""\
  std::vector<std::size_t> out;
  for (const Level& lv : levels_at(input).at) {{
    const std::size_t n = std::size_t(kAnchorsPerCell) * lv.h * lv.w;  // rows of the level
{body}
  }}
  return out;"""
    else:
        loop = f"""\
  std::size_t rows = 0;
  for (const Level& lv : levels_at(input).at) rows += std::size_t(kAnchorsPerCell) * lv.h * lv.w;
  return {{{", ".join(f"rows * {w}" for w in _part_widths(spec))}}};"""
    return f"""\
// The float count of each raw output at the network input size `input` (see valid()).
inline std::vector<std::size_t> output_sizes(Size input) {{
{loop}
}}
"""


def public(spec: Spec) -> str:
    """The public overloads around ``detail::decode_rows``: the sizes of the outputs and ``decode_outputs``."""
    g = spec.g
    per_level, n = g.layout in ("levels", "split"), len(g.parts)
    names = ", ".join(p for p in g.parts if p)
    order = (f"per level, stride ascending{': ' + names if names else ''}" if per_level
             else f"{names} of all rows" if names else "all rows")
    size, levels = ("Size input, ", "levels_at(input).at") if spec.dynamic else ("", "kLevels")
    check = "  if (!valid(input)) return {};  // not a size this head takes\n" if spec.dynamic else ""
    if per_level:
        at = "lv.at" if spec.dynamic else "kLevels"
        dense = (("  const Levels lv = levels_at(input);\n" if spec.dynamic else "")
                 + "  std::size_t csteps[kNumOutputs];  // channels h * w apart\n"
                 + f"  for (int k = 0; k < kNumOutputs; ++k)\n"
                 f"    csteps[k] = std::size_t({at}[k / {n}].h) * {at}[k / {n}].w;\n")
        steps = "the channel step of each (ncnn::Mat::cstep; h * w when dense)"
    else:
        dense, steps = "  const std::size_t* csteps = nullptr;\n", "no channel step (flat outputs are read row by row)"
    return f"""\
constexpr int kNumOutputs = {len(g.output_shapes())};  // {order}
{_sizes(spec)}
// One buffer per raw output, in the order of the model's outputs, as an engine hands them out, and
// {steps}.{" The input size gives the grids." if spec.dynamic else ""}
inline std::vector<Detection> decode_outputs(const float* const* outputs, const std::size_t* csteps,
                                             {size}const Options& opt = {{}}) {{
{check}  return detail::decode_rows(outputs, csteps, {levels}, opt);
}}

// One contiguous (dense) buffer per raw output, in the order of the model's outputs.
inline std::vector<Detection> decode_outputs(const float* const* outputs, {size}const Options& opt = {{}}) {{
{check}{dense}  return decode_outputs(outputs, csteps, {"input, " if spec.dynamic else ""}opt);
}}
"""


def _prod(shape) -> int:
    out = 1
    for d in shape:
        out *= int(d)
    return out


#: raw layout (the record's ``"layout"``) → its ``detail::decode_rows``
LAYOUTS: dict[str, Callable[[Spec], str]] = {
    "flat": flat,
    "levels": levels,
    "split": split,
    "flat-split": flat_split,
}
