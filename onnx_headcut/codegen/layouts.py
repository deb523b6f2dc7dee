"""The C++ loop over the raw rows, one function per raw layout.

Each function returns the text of the public ``decode(...)`` overloads for its layout plus
``decode_outputs`` (the harness's entry: one contiguous float buffer per raw output). Rows are
visited in the raw row order (level, anchor, y, x) whatever the layout, so candidates reach NMS in
the order :func:`onnx_headcut.decode.detect` sees them and score ties are broken the same way.

A new layout (split outputs, say) is one more function and one entry in :data:`LAYOUTS`.
"""

from __future__ import annotations

from collections.abc import Callable

from .spec import Spec


def _cell(spec: Spec) -> str:
    """The ``Cell`` a row is decoded at (anchor heads carry the anchor's size too)."""
    if spec.g.na > 1 or spec.decode == "anchor_grid":
        return "Cell{float(x), float(y), float(lv.stride), kAnchors[l][a][0], kAnchors[l][a][1]}"
    return "Cell{float(x), float(y), float(lv.stride)}"


def flat(spec: Spec) -> str:
    return f"""\
// The flat layout: one output (1, kRows, kWidth), row-major; ncnn and MNN hand it out as is.
inline std::vector<Detection> decode(const float* raw, const Options& opt = {{}}) {{
  const float gate = detail::gate(opt.conf);
  std::vector<Detection> cand;
  const float* row = raw;
  for (int l = 0; l < kNumLevels; ++l) {{
    const Level& lv = kLevels[l];
    for (int a = 0; a < kAnchorsPerCell; ++a)
      for (int y = 0; y < lv.h; ++y)
        for (int x = 0; x < lv.w; ++x, row += kWidth)
          if (detail::gate_value(detail::FlatRow{{row}}) >= gate)  // early rejection: nothing else is read
            detail::decode_row(detail::FlatRow{{row}}, detail::{_cell(spec)},
                               opt.conf, cand);
  }}
  return detail::nms(cand, opt);
}}

constexpr int kNumOutputs = 1;
constexpr std::size_t kOutputSizes[kNumOutputs] = {{std::size_t(kRows) * kWidth}};

// One buffer per raw output, in the order of the model's outputs, as an engine hands them out: the data
// and, for per-level outputs, the channel step of each (ncnn::Mat::cstep; none for the flat output).
inline std::vector<Detection> decode_outputs(const float* const* outputs, const std::size_t* /*csteps*/,
                                             const Options& opt = {{}}) {{
  return decode(outputs[0], opt);
}}

// One contiguous buffer per raw output, in the order of the model's outputs.
inline std::vector<Detection> decode_outputs(const float* const* outputs, const Options& opt = {{}}) {{
  return decode(outputs[0], opt);
}}
"""


def levels(spec: Spec) -> str:
    sizes = ",\n    ".join(f"std::size_t({spec.g.na} * kWidth * {h} * {w})" for h, w in spec.g.grids)
    return f"""\
// The levels layout: one output (1, kAnchorsPerCell * kWidth, h, w) per level, stride ascending.
// Column c of anchor a at (y, x) is plane.data[(a * kWidth + c) * plane.cstep + y * w + x]: cstep is
// h * w for a dense NCHW buffer (ONNX Runtime, MNN in NCHW) and ncnn::Mat::cstep for an ncnn Mat.
struct Plane {{
  const float* data;
  std::size_t cstep;
}};

inline std::vector<Detection> decode(const Plane (&levels)[kNumLevels], const Options& opt = {{}}) {{
  const float gate = detail::gate(opt.conf);
  std::vector<Detection> cand;
  for (int l = 0; l < kNumLevels; ++l) {{
    const Level& lv = kLevels[l];
    const std::size_t cstep = levels[l].cstep, n = std::size_t(lv.h) * lv.w;
    for (int a = 0; a < kAnchorsPerCell; ++a) {{
      const float* base = levels[l].data + std::size_t(a) * kWidth * cstep;
      // early rejection, kBlock pixels at a time: the best gate channel of each, read plane by plane
      for (std::size_t i0 = 0; i0 < n; i0 += detail::kBlock) {{
        float best[detail::kBlock];
        const std::size_t len = std::min(detail::kBlock, n - i0);
        detail::gate_block(base + i0, cstep, len, best);
        for (std::size_t k = 0; k < len; ++k)
          if (best[k] >= gate) {{
            const int y = int((i0 + k) / lv.w), x = int((i0 + k) % lv.w);
            const detail::PlaneRow row{{base + i0 + k, cstep}};
            detail::decode_row(row, detail::{_cell(spec)}, opt.conf, cand);
          }}
      }}
    }}
  }}
  return detail::nms(cand, opt);
}}

constexpr int kNumOutputs = kNumLevels;
constexpr std::size_t kOutputSizes[kNumOutputs] = {{
    {sizes}}};

// One buffer per raw output, in the order of the model's outputs, as an engine hands them out: the data
// and the channel step of each (ncnn::Mat::cstep; h * w when dense).
inline std::vector<Detection> decode_outputs(const float* const* outputs, const std::size_t* csteps,
                                             const Options& opt = {{}}) {{
  Plane planes[kNumLevels];
  for (int l = 0; l < kNumLevels; ++l) planes[l] = {{outputs[l], csteps[l]}};
  return decode(planes, opt);
}}

// One contiguous (dense NCHW) buffer per raw output, in the order of the model's outputs.
inline std::vector<Detection> decode_outputs(const float* const* outputs, const Options& opt = {{}}) {{
  std::size_t csteps[kNumLevels];
  for (int l = 0; l < kNumLevels; ++l) csteps[l] = std::size_t(kLevels[l].h) * kLevels[l].w;
  return decode_outputs(outputs, csteps, opt);
}}
"""


#: raw layout (the record's ``"layout"``) → its ``decode`` overloads
LAYOUTS: dict[str, Callable[[Spec], str]] = {
    "flat": flat,
    "levels": levels,
}
