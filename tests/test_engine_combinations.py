"""Issue 13 item 3: wrong engine/file combinations and mismatched pairs are exit 2 with one line;
verify converts an .onnx candidate for MNN/ncnn in a private folder; convert runs what it wrote once
and refuses (exit 3, nothing written) a conversion the engine cannot load or that does not match."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_headcut.strip import strip
from onnx_headcut.synth import yolov6_af, yolov6_v1

needs_engines = pytest.mark.skipif(
    any(__import__("importlib.util").util.find_spec(m) is None for m in ("MNN", "ncnn", "pnnx")),
    reason="engines extra not installed")


def headcut(*args):
    p = subprocess.run([sys.executable, "-m", "onnx_headcut", *map(str, args)], capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("headcut: error:") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def pair(tmp_path):
    src = tmp_path / "orig.onnx"
    onnx.save(yolov6_v1(width=8), str(src))
    strip(src, tmp_path / "raw.onnx", verify=False)
    return src, tmp_path / "raw.onnx"


def test_detect_an_mnn_file_on_ort_is_exit_2(pair, tmp_path):
    fake = tmp_path / "raw.mnn"
    fake.write_bytes(b"\x00" * 64)
    (tmp_path / "raw.head.json").exists()
    photo = __import__("pathlib").Path(__file__).resolve().parents[1] / "samples" / "images" / "chelsea.jpg"
    code, _, err = headcut("detect", fake, photo, "--engine", "ort")
    assert code == 2 and "--engine ort runs .onnx files, and this is an MNN model" in one_line(err)


def test_detect_an_onnx_file_on_ncnn_is_exit_2_with_the_convert_hint(pair):
    _, raw = pair
    photo = __import__("pathlib").Path(__file__).resolve().parents[1] / "samples" / "images" / "chelsea.jpg"
    code, _, err = headcut("detect", raw, photo, "--engine", "ncnn")
    assert code == 2 and "headcut convert raw.onnx --to ncnn" in one_line(err)


def test_verify_pairs_with_different_input_sizes_are_exit_2(tmp_path):
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    onnx.save(yolov6_v1(width=8), str(a))
    onnx.save(yolov6_v1(width=8, size=(640, 640)), str(b))
    strip(b, tmp_path / "raw640.onnx", verify=False)
    code, _, err = headcut("verify", a, tmp_path / "raw640.onnx")
    line = one_line(err)
    assert code == 2 and "is not a cut or conversion of" in line and "input [320, 320] vs [640, 640]" in line
    code, _, err = headcut("verify", a, b)  # two decoded exports of different sizes
    assert code == 2 and "input [320, 320] vs [640, 640]" in one_line(err)


def test_verify_pairs_of_different_heads_are_exit_2(tmp_path):
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    onnx.save(yolov6_v1(width=8), str(a))
    onnx.save(yolov6_af(width=8), str(b))
    strip(b, tmp_path / "rawb.onnx", verify=False)
    code, _, err = headcut("verify", a, tmp_path / "rawb.onnx")
    assert code == 2 and "decode grid_exp_obj vs dist_anchor" in one_line(err)


@needs_engines
@pytest.mark.parametrize("engine", ["mnn", "ncnn"])
def test_verify_an_onnx_candidate_on_an_engine_converts_it_privately(engine, pair, tmp_path):
    src, raw = pair
    before = sorted(p.name for p in tmp_path.iterdir())
    code, out, err = headcut("verify", src, raw, "--engine", engine)
    assert code == 0, err
    assert f"verify    random(seed=0) on {engine}: OK" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # the conversion lived in a private folder


def _focus(tmp_path):
    """YOLOX's Focus (space-to-depth by four stepped Slices, then a Concat and a conv): pnnx writes
    Tensor.slice layers for the stepped slices, which ncnn does not have."""
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 32, 32])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])
    inits = [numpy_helper.from_array(np.random.default_rng(0).normal(size=(4, 12, 1, 1)).astype(np.float32), "w")]
    nodes, parts = [], []
    for k, (r, c) in enumerate([(0, 0), (1, 0), (0, 1), (1, 1)]):
        for nm, v in (("s", [r, c]), ("e", [2 ** 63 - 1] * 2), ("a", [2, 3]), ("t", [2, 2])):  # as torch exports ::2
            inits.append(numpy_helper.from_array(np.array(v, np.int64), f"{nm}{k}"))
        nodes.append(helper.make_node("Slice", ["images", f"s{k}", f"e{k}", f"a{k}", f"t{k}"], [f"p{k}"]))
        parts.append(f"p{k}")
    nodes += [helper.make_node("Concat", parts, ["cat"], axis=1), helper.make_node("Conv", ["cat", "w"], ["y"])]
    m = helper.make_model(helper.make_graph(nodes, "focus", [x], [y], inits),
                          opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    p = tmp_path / "focus.onnx"
    onnx.save(m, str(p))
    return p


@needs_engines
def test_convert_refuses_what_ncnn_cannot_load_exit_3_nothing_written(tmp_path):
    src = tmp_path / "orig.onnx"
    onnx.save(yolov6_v1(width=8, inplace=True), str(src))  # its ScatterND decode has no ncnn layer
    out = tmp_path / "out"
    out.mkdir()
    code, _, err = headcut("convert", src, "--to", "ncnn", "-o", out)
    line = one_line(err)
    assert code == 3 and "does not run on ncnn, nothing written: " in line and "ScatterND" in line, line
    assert list(out.iterdir()) == []


@needs_engines
def test_yolox_focus_converts_to_ncnn(tmp_path):
    """pnnx turns YOLOX's Focus slices into Tensor.slice, which ncnn lacks; convert hands pnnx the
    equivalent SpaceToDepth (ncnn Reorg) with the next conv's channels permuted, then checks the result."""
    from onnx_headcut.check import deterministic_input, session
    from onnx_headcut.convert import convert, focus_to_space_to_depth

    src = _focus(tmp_path)
    m = onnx.load(str(src))
    fixed = focus_to_space_to_depth(m)
    assert [n.op_type for n in fixed.graph.node] == ["SpaceToDepth", "Conv"]
    x = deterministic_input((1, 3, 32, 32))
    a = session(str(src)).run(None, {"images": x})[0]
    b = session(fixed.SerializeToString()).run(None, {"images": x})[0]
    assert np.abs(a - b).max() <= 1e-5 and np.abs(a).max() > 0.1
    assert focus_to_space_to_depth(yolov6_v1(width=8)) is None
    res = convert(src, "ncnn", tmp_path)
    text = res.model.read_text()
    assert "Reorg" in text and "Tensor.slice" not in text
    assert onnx.load(str(src)) == m  # the ONNX file is not changed


@needs_engines
def test_convert_checks_the_outputs_against_onnxruntime(pair, tmp_path, monkeypatch):
    """A converted model whose outputs differ from onnxruntime's is refused (exit 3)."""
    from onnx_headcut import convert as conv
    from onnx_headcut.errors import VerificationError

    _, raw = pair
    real = conv.check_converted
    monkeypatch.setattr(conv, "CONVERT_ATOL", 0.0)
    monkeypatch.setattr(conv, "CONVERT_RTOL", 0.0)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(VerificationError, match=r"does not match onnxruntime: output 'outputs' element \d+"):
        conv.convert(raw, "mnn", out)
    assert list(out.iterdir()) == []
    monkeypatch.undo()
    res = conv.convert(raw, "mnn", out)
    assert res.model.exists() and real is conv.check_converted
