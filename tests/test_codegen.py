"""Issue 17: ``headcut codegen`` writes a C++17 decode that gives the numpy reference's detections.

For a raw model of every head kind and layout strip writes, the generated header and harness are
compiled with ``g++ -std=c++17 -O2 -Wall -Wextra -Werror`` (once per case), fed the raw outputs
onnxruntime gives for a random input and for letterboxed images, and compared with
:func:`onnx_headcut.decode.detect`: same count (> 0), same classes, IoU >= 0.999, scores within 1e-5.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import digest

from onnx_headcut.check.ort import deterministic_input, session
from onnx_headcut.codegen import generate, outputs, spec_of
from onnx_headcut.decode import decode, detect, letterbox, scale_boxes, to_input
from onnx_headcut.errors import InputError, OutputError
from onnx_headcut.heads import Layout
from onnx_headcut.images import read_rgb
from onnx_headcut.preprocess import Preprocess
from onnx_headcut.strip import read_metadata, strip
from onnx_headcut.synth import yolov5, yolov6_af, yolov6_v1, yolov8, yolox

GXX = shutil.which("g++")
needs_gxx = pytest.mark.skipif(GXX is None, reason="no C++ compiler (g++) on this machine")
PHOTO = Path(__file__).resolve().parents[1] / "samples" / "images" / "chelsea.jpg"

#: every head kind and raw layout strip writes today: name → (decoded export, layout)
CASES = {
    "v6-0.1.0": (lambda: yolov6_v1(nc=5, width=8, size=(256, 320)), Layout()),
    "v6-0.1.0-levels": (lambda: yolov6_v1(nc=5, width=8), Layout("levels")),
    "v6-0.1.0-keep-sigmoid": (lambda: yolov6_v1(nc=5, width=8), Layout(keep_sigmoid=True)),
    "yolox": (lambda: yolox(nc=4), Layout()),
    "yolox-undecoded-levels-keep-sigmoid": (lambda: yolox(nc=4, decode=False), Layout("levels", keep_sigmoid=True)),
    "v6-af": (lambda: yolov6_af(nc=3), Layout()),
    "v6-af-dfl": (lambda: yolov6_af(nc=3, reg_max=16, size=(320, 256)), Layout()),
    "v6-af-dfl-keep-dfl": (lambda: yolov6_af(nc=3, reg_max=16), Layout(keep_dfl=True)),
    "v6-af-levels": (lambda: yolov6_af(nc=3, reg_max=16), Layout("levels")),
    "v6-lite-4-levels": (lambda: yolov6_af(nc=3, levels=4), Layout()),
    "v8": (lambda: yolov8(nc=3), Layout()),
    "v8-keep-dfl-keep-sigmoid": (lambda: yolov8(nc=3), Layout(keep_dfl=True, keep_sigmoid=True)),
    "v8-levels": (lambda: yolov8(nc=3), Layout("levels")),
    "v5": (lambda: yolov5(nc=4), Layout()),
    "v5-keep-sigmoid": (lambda: yolov5(nc=4), Layout(keep_sigmoid=True)),
    "v5-levels": (lambda: yolov5(nc=4), Layout("levels")),
    "v7": (lambda: yolov5(nc=4, v7=True), Layout()),
}


def headcut(*args):
    p = subprocess.run([sys.executable, "-m", "onnx_headcut", *map(str, args)], capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


FLAGS = ("-std=c++17", "-O2", "-Wall", "-Wextra", "-Werror")
CACHE = Path(tempfile.gettempdir()) / "headcut-test-codegen"
_built: dict[str, tuple[Path, Path]] = {}


def built(name: str, tmp_path_factory) -> tuple[Path, Path]:
    """(raw model, compiled decode_main) of a case, stripped and compiled once per session."""
    if name not in _built:
        d = tmp_path_factory.mktemp(name)
        make, layout = CASES[name]
        onnx.save(make(), str(d / "in.onnx"))
        strip(d / "in.onnx", d / "raw.onnx", layout=layout, verify=False)
        _built[name] = d / "raw.onnx", compiled(*generate(d / "raw.onnx", d / "cpp"))
    return _built[name]


def compiled(hpp: Path, main: Path) -> Path:
    """``decode_main`` built from the generated files, cached in the temp folder by their content."""
    key = hashlib.sha256(hpp.read_bytes() + main.read_bytes() + " ".join(FLAGS).encode()).hexdigest()[:20]
    exe = CACHE / key / "decode_main"
    if not exe.is_file():
        (CACHE / key).mkdir(parents=True, exist_ok=True)
        p = subprocess.run([str(GXX), *FLAGS, str(main), "-o", str(exe) + ".tmp"], capture_output=True, text=True)
        assert p.returncode == 0, p.stderr[-3000:]
        os.replace(str(exe) + ".tmp", exe)
    return exe


def raw_outputs(raw: Path, x: np.ndarray) -> list[np.ndarray]:
    meta = read_metadata(raw)
    return session(raw).run(None, {meta["input"]["name"]: x})


def conf_for(ys, meta, k: int = 40) -> float:
    """A threshold between the k-th and (k+1)-th best decoded scores: random weights score low."""
    d = decode(ys if meta["layout"] == "levels" else ys[0], meta)[0]
    s = np.sort(d[:, 4] * d[:, 5:].max(1))[::-1]
    return float((s[k - 1] + s[k]) / 2)


def run_cpp(exe: Path, ys, tmp: Path, *args) -> np.ndarray:
    files = []
    for i, y in enumerate(ys):
        f = tmp / f"out{i}.bin"
        np.ascontiguousarray(y, dtype="<f4").tofile(f)
        files.append(f)
    p = subprocess.run([str(exe), *map(str, files), *map(str, args)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    rows = [json.loads(line) for line in p.stdout.splitlines()]
    assert all(set(r) == {"box", "score", "class"} for r in rows)
    return np.array([[*r["box"], r["score"], r["class"]] for r in rows], np.float64).reshape(-1, 6)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    iw = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    area = lambda x: np.clip(x[:, 2] - x[:, 0], 0, None) * np.clip(x[:, 3] - x[:, 1], 0, None)  # noqa: E731
    inter = iw * ih
    return inter / np.maximum(area(a) + area(b) - inter, 1e-9)


def assert_same(ref: np.ndarray, got: np.ndarray) -> None:
    assert len(ref) > 0, "no detections: the comparison would prove nothing"
    assert len(got) == len(ref)
    np.testing.assert_array_equal(got[:, 5], ref[:, 5])
    np.testing.assert_allclose(got[:, 4], ref[:, 4], rtol=0, atol=1e-5)
    # untrained heads predict inverted boxes (x2 < x1); compare their corner-ordered spans
    a, b = np.sort(ref[:, [0, 2]], 1), np.sort(got[:, [0, 2]], 1)
    c, d = np.sort(ref[:, [1, 3]], 1), np.sort(got[:, [1, 3]], 1)
    overlap = iou(np.stack([a[:, 0], c[:, 0], a[:, 1], c[:, 1]], 1), np.stack([b[:, 0], d[:, 0], b[:, 1], d[:, 1]], 1))
    degenerate = (a[:, 1] - a[:, 0] < 1e-3) | (c[:, 1] - c[:, 0] < 1e-3)  # a clipped box of zero area
    assert (overlap[~degenerate] >= 0.999).all(), overlap.min()
    np.testing.assert_allclose(got[:, :4], ref[:, :4], rtol=1e-4, atol=1e-2)


@needs_gxx
@pytest.mark.parametrize("name", list(CASES))
def test_cpp_decode_equals_numpy_on_random_input(name, tmp_path_factory, tmp_path):
    raw, exe = built(name, tmp_path_factory)
    meta = read_metadata(raw)
    ys = raw_outputs(raw, deterministic_input(meta["input"]["shape"]))
    conf = conf_for(ys, meta)
    ref = detect(ys if meta["layout"] == "levels" else ys[0], meta, conf, 0.45).astype(np.float64)
    assert_same(ref, run_cpp(exe, ys, tmp_path, "--conf", repr(conf), "--iou", "0.45"))


def _image(name: str) -> np.ndarray:
    if name == "photo":
        return read_rgb(PHOTO)
    return np.random.default_rng(3).integers(0, 256, (517, 333, 3), dtype=np.uint8)  # portrait, odd sizes


@needs_gxx
@pytest.mark.parametrize("image", ["photo", "portrait"])
@pytest.mark.parametrize("name", ["v6-0.1.0", "yolox", "v6-af-dfl", "v8-levels", "v5"])
def test_cpp_decode_equals_numpy_on_a_letterboxed_image(name, image, tmp_path_factory, tmp_path):
    raw, exe = built(name, tmp_path_factory)
    meta = read_metadata(raw)
    rgb = _image(image)
    pre = Preprocess.of(meta)
    boxed, ratio, pad = letterbox(rgb, tuple(meta["input"]["shape"][-2:]), pre)
    ys = raw_outputs(raw, to_input(boxed, pre))
    conf = conf_for(ys, meta)
    ref = detect(ys if meta["layout"] == "levels" else ys[0], meta, conf, 0.45)
    h0, w0 = rgb.shape[:2]
    boxes = scale_boxes(ref[:, :4], ratio, pad)  # what headcut detect reports
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w0)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h0)
    ref = np.concatenate([boxes, ref[:, 4:]], 1).astype(np.float64)
    assert_same(ref, run_cpp(exe, ys, tmp_path, "--conf", repr(conf), "--image-size", w0, h0))


@needs_gxx
def test_harness_refuses_a_raw_file_of_the_wrong_size(tmp_path_factory, tmp_path):
    _, exe = built("v8-levels", tmp_path_factory)
    (tmp_path / "short.bin").write_bytes(b"\0" * 12)
    p = subprocess.run([str(exe), *[tmp_path / "short.bin"] * 3], capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "12 bytes, expected" in p.stderr
    p = subprocess.run([str(exe), tmp_path / "short.bin"], capture_output=True, text=True)
    assert p.returncode == 2 and "expected 3 raw output file(s), got 1" in p.stderr


def test_header_has_the_record_constants(tmp_path):
    m = yolov5(nc=2)
    src = tmp_path / "v5.onnx"
    onnx.save(m, str(src))
    strip(src, tmp_path / "my model.raw.onnx", verify=False)
    hpp, main = generate(tmp_path / "my model.raw.onnx", tmp_path / "out")
    assert (hpp.name, main.name) == ("my_model_raw_decode.hpp", "decode_main.cpp")
    text = hpp.read_text()
    assert "namespace my_model_raw_decode {" in text
    assert "constexpr Level kLevels[kNumLevels] = {{8, 40, 40}, {16, 20, 20}, {32, 10, 10}};" in text
    assert "{{10.0f, 13.0f}, {16.0f, 30.0f}, {33.0f, 23.0f}}" in text
    assert "constexpr int kRows = 6300;" in text and "constexpr int kWidth = 7;" in text
    assert '#include "my_model_raw_decode.hpp"' in main.read_text()


def test_class_names_become_escaped_literals(tmp_path):
    meta = read_metadata(_strip_v8(tmp_path))
    meta["names"] = ['a"b', "c\\d", "caf\u00e9", "x\ny??="]
    hpp, _ = generate(meta, tmp_path / "out", name="named")
    text = hpp.read_text()
    assert '"a\\"b",\n    "c\\\\d",\n    "caf\\303\\251",\n    "x\\012y\\077\\077="};' in text


def _strip_v8(tmp_path: Path, layout: Layout = Layout()) -> Path:
    onnx.save(yolov8(nc=4), str(tmp_path / "v8.onnx"))
    strip(tmp_path / "v8.onnx", tmp_path / "v8.raw.onnx", layout=layout, verify=False)
    return tmp_path / "v8.raw.onnx"


@pytest.mark.parametrize("change, says", [
    (lambda m: m.update(layout="split"), "does not cover the 'split' layout yet"),
    (lambda m: m.update(decode="topk"), "does not cover the 'topk' decode yet"),
    (lambda m: m["input"].update(shape=[1, 3, "height", "width"]), "does not cover a dynamic input size yet"),
    (lambda m: m["channels"].append({"name": "kpt", "size": 51}), "column blocks ['dfl', 'cls', 'kpt']"),
])
def test_uncovered_records_are_refused_naming_what(change, says, tmp_path):
    meta = read_metadata(_strip_v8(tmp_path))
    change(meta)
    with pytest.raises(InputError, match=re.escape(says)):
        generate(meta, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_refuses_an_uncovered_record_exit_2_one_line(tmp_path):
    raw = _strip_v8(tmp_path)
    meta = read_metadata(raw)
    meta["dynamic_hw"] = {"height": "h", "width": "w", "multiple_of": 32, "verified_at": [[320, 320], [160, 224]]}
    (tmp_path / "dyn.head.json").write_text(json.dumps(meta))  # a well-formed record of a symbolic-size head
    code, out, err = headcut("codegen", tmp_path / "dyn.head.json", "-o", tmp_path / "out")
    assert code == 2 and err.count("\n") == 1 and "does not cover a dynamic input size yet" in err, err
    assert not (tmp_path / "out").exists()


def test_cli_writes_both_files_and_never_overwrites_without_force(tmp_path):
    raw = _strip_v8(tmp_path, Layout("levels"))
    out = tmp_path / "new" / "folder"
    code, stdout, err = headcut("codegen", raw, "-o", out)
    assert code == 0, err
    hpp, main = outputs(out, "v8.raw")
    assert stdout.splitlines() == [f"wrote {hpp}", f"wrote {main}"]
    before = {p.name: digest(p) for p in (hpp, main)}
    main.write_text("// mine\n")
    hpp.unlink()  # one member exists: the whole set is refused, the other is not written either
    code, _, err = headcut("codegen", raw, "-o", out)
    assert code == 2 and err.count("\n") == 1 and f"{main}: already exists (use --force to overwrite)" in err
    assert not hpp.exists() and main.read_text() == "// mine\n"
    code, _, err = headcut("codegen", raw, "-o", out, "--force")
    assert code == 0, err
    assert {p.name: digest(p) for p in (hpp, main)} == before
    assert sorted(p.name for p in out.iterdir()) == sorted([hpp.name, main.name])  # no staging or lock left


def test_cli_default_folder_is_beside_the_model_and_decoded_models_are_refused(tmp_path):
    raw = _strip_v8(tmp_path)
    code, _, err = headcut("codegen", raw)
    assert code == 0, err
    assert (tmp_path / "v8_raw_decode.hpp").is_file() and (tmp_path / "decode_main.cpp").is_file()
    code, _, err = headcut("codegen", tmp_path / "v8.onnx", "-o", tmp_path / "x")
    assert code == 2 and err.count("\n") == 1 and "no headcut head record" in err
    code, _, err = headcut("codegen", raw, "-o", tmp_path / "y", "--lang", "rust")
    assert code == 2 and not (tmp_path / "y").exists()


def test_output_folder_that_is_a_file_is_refused(tmp_path):
    raw = _strip_v8(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is not a folder"):
        generate(raw, tmp_path / "file")


def test_spec_of_reads_sigmoid_and_dfl_from_the_record(tmp_path):
    s = spec_of(read_metadata(_strip_v8(tmp_path)), "v8.raw")
    assert (s.name, s.decode, s.dfl_bins, s.rows, s.columns) == ("v8_raw", "dist_anchor", 16, 2100,
                                                                 {"dfl": 0, "cls": 64})
    assert s.sigmoid == {"dfl": False, "cls": False}


PADDED = r"""
#include "HEADER"
#include <cstdio>
#include <vector>
// the same level outputs, dense and with channels cstep = h * w + 5 apart (as an ncnn::Mat pads them)
int main() {
  namespace d = NS;
  std::vector<std::vector<float>> dense, padded;
  std::vector<const float*> pd, pp;
  std::vector<std::size_t> steps;
  unsigned s = 1;
  for (int l = 0; l < d::kNumLevels; ++l) {
    const std::size_t hw = std::size_t(d::kLevels[l].h) * d::kLevels[l].w, c = d::kOutputSizes[l] / hw;
    dense.emplace_back(d::kOutputSizes[l]);
    padded.emplace_back(c * (hw + 5), -1e30f);
    for (std::size_t i = 0; i < dense[l].size(); ++i) {
      s = s * 1103515245u + 12345u;
      dense[l][i] = float((s >> 8) % 1000) / 100.f - 5.f;
      padded[l][(i / hw) * (hw + 5) + i % hw] = dense[l][i];
    }
    steps.push_back(hw + 5);
  }
  for (auto& v : dense) pd.push_back(v.data());
  for (auto& v : padded) pp.push_back(v.data());
  const auto a = d::decode_outputs(pd.data(), {0.9f, 0.45f});
  const auto b = d::decode_outputs(pp.data(), steps.data(), {0.9f, 0.45f});
  bool same = a.size() == b.size();
  for (std::size_t i = 0; same && i < a.size(); ++i)
    same = a[i].x1 == b[i].x1 && a[i].y2 == b[i].y2 && a[i].score == b[i].score && a[i].cls == b[i].cls;
  std::printf("%zu %d\n", a.size(), int(same));
}
"""


@needs_gxx
@pytest.mark.parametrize("name", ["v8-levels", "v5-levels"])
def test_levels_decode_reads_channels_cstep_apart(name, tmp_path_factory, tmp_path):
    raw, _ = built(name, tmp_path_factory)
    hpp, _ = generate(raw, tmp_path / "src")
    (tmp_path / "src" / "padded.cpp").write_text(PADDED.replace("HEADER", hpp.name).replace("NS", "raw_decode"))
    exe = compiled(hpp, tmp_path / "src" / "padded.cpp")
    count, same = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()
    assert int(count) > 0 and same == "1"


def test_cli_never_writes_through_a_link_and_never_over_its_input(tmp_path):
    raw = _strip_v8(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "elsewhere.hpp").write_text("// mine\n")
    (out / "v8_raw_decode.hpp").symlink_to(tmp_path / "elsewhere.hpp")
    code, _, err = headcut("codegen", raw, "-o", out, "--force")
    assert code == 2 and err.count("\n") == 1 and "is a symbolic link" in err
    assert (tmp_path / "elsewhere.hpp").read_text() == "// mine\n" and not (out / "decode_main.cpp").exists()
    before = digest(raw)
    (out / "v8_raw_decode.hpp").unlink()
    os.link(raw, out / "decode_main.cpp")  # the input under an output's name: never written, even forced
    code, _, err = headcut("codegen", raw, "-o", out, "--force")
    assert code == 2 and err.count("\n") == 1 and "the output is the input file" in err, err
    assert digest(raw) == before and not (out / "v8_raw_decode.hpp").exists()
