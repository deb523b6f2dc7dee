"""Raw anchor heads split over 5-D outputs (YOLOv7 ``export.py`` without ``--grid``), #14 part 4.

The graph holds no anchors: ``--anchors`` is required and recorded as given. Layer 1 proves the raw
outputs equal the convs laid out and the original's three outputs rearranged, element for element;
layers 2 and 3 have no decoded original to compare with and must be reported as not checked.
Fixtures: the generator ``synth.multiout.yolov7_raw`` and the torch ``Detect`` with ``export = True``
(``tests/torch_multiout.py``), legacy exporter opset 12 and dynamo.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest

from onnx_headcut.check import check_split_outputs, deterministic_input, session
from onnx_headcut.errors import NoHeadError, UsageError
from onnx_headcut.graph import infer_shapes, max_rank
from onnx_headcut.heads import Layout
from onnx_headcut.heads.anchor_raw import parse_anchors
from onnx_headcut.locate import locate
from onnx_headcut.report import strip_text
from onnx_headcut.strip import strip
from onnx_headcut.synth import yolov5
from onnx_headcut.synth.multiout import yolov7_raw

ANCHORS = "12,16,19,36,40,28/36,75,76,55,72,146/142,110,192,243,459,401"
V7 = [[[12, 16], [19, 36], [40, 28]], [[36, 75], [76, 55], [72, 146]], [[142, 110], [192, 243], [459, 401]]]


def headcut(*args):
    p = subprocess.run([sys.executable, "-m", "onnx_headcut", *map(str, args)], capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


@pytest.fixture
def src(tmp_path):
    p = tmp_path / "v7raw.onnx"
    onnx.save(yolov7_raw(width=8), str(p))
    return p


def _original_rows(path, x):
    """The original's three (1, 3, h, w, 85) outputs flattened level → anchor → y → x, in numpy."""
    ys = session(str(path)).run(None, {"images": x})
    assert [y.ndim for y in ys] == [5, 5, 5]
    ys = sorted(ys, key=lambda y: -y.shape[2])  # stride ascending
    return np.concatenate([y.reshape(y.shape[0], -1, y.shape[-1]) for y in ys], 1), ys


def check_split_strip(path, dst, layout=Layout()):
    res = strip(path, dst, anchors=parse_anchors(ANCHORS), layout=layout)
    h = res.head
    assert (h.family, h.decode, h.anchors_from, len(h.split_outputs)) == ("YOLOv7", "anchor_grid", "--anchors", 3)
    meta = res.metadata
    assert [lv["anchors"] for lv in meta["levels"]] == V7 and meta["anchors_from"] == "--anchors"
    assert meta["original_output"]["decoded"] is False and len(meta["original_output"]["outputs"]) == 3
    assert [lv["stride"] for lv in meta["levels"]] == [8, 16, 32] and meta["rows"] == 3 * (1600 + 400 + 100)
    raw = onnx.load(str(dst))
    assert max_rank(infer_shapes(raw)) <= 4 and {n.op_type for n in raw.graph.node} <= {"Conv", "Mul", "Sigmoid",
                                                                                         "Reshape", "Transpose",
                                                                                         "Concat", "Identity"}
    for c in res.verification.checks:  # layer 1 twice, exact; layers 2 and 3 not run, and said so
        assert c.ok and c.layout.max_abs_err == 0 and c.outputs.max_abs_err == 0 and c.layout.values == 535500
        assert c.decode is None and c.detections is None and c.not_checked() == ("decode", "detections")
    text = strip_text(res)
    assert "layer 1 only; decode and detections not checked" in text and text.count("NOT CHECKED") == 2
    assert "anchors from --anchors" in text
    return res, raw


def test_generated_split_head_is_lowered_named_and_recorded(src, tmp_path):
    res, raw = check_split_strip(src, tmp_path / "raw.onnx")
    assert [(o.name, [d.dim_value for d in o.type.tensor_type.shape.dim]) for o in raw.graph.output] == \
        [("output", [1, 6300, 85])]
    x = deterministic_input((1, 3, 320, 320), seed=5)  # independent of the check: numpy on both models
    rows, _ = _original_rows(src, x)
    assert np.array_equal(session(str(tmp_path / "raw.onnx")).run(None, {"images": x})[0], rows)


def test_levels_layout_gives_one_conv_map_per_level(src, tmp_path):
    res, raw = check_split_strip(src, tmp_path / "raw.onnx", Layout("levels"))
    assert [(o.name, [d.dim_value for d in o.type.tensor_type.shape.dim]) for o in raw.graph.output] == \
        [("output_s8", [1, 255, 40, 40]), ("output_s16", [1, 255, 20, 20]), ("output_s32", [1, 255, 10, 10])]
    x = deterministic_input((1, 3, 320, 320), seed=6)
    _, ys = _original_rows(src, x)
    got = session(str(tmp_path / "raw.onnx")).run(None, {"images": x})
    for y, g in zip(ys, got):
        assert np.array_equal(g, y.transpose(0, 1, 4, 2, 3).reshape(g.shape))


def test_keep_sigmoid_is_layer_1_within_ulps(src, tmp_path):
    res = strip(src, tmp_path / "raw.onnx", anchors=parse_anchors(ANCHORS), layout=Layout(keep_sigmoid=True))
    c = res.verification.checks[0]
    assert c.ok and 0 < c.layout.max_abs_err < 1e-6 and c.layout.exact_values == 6300 * 4  # the box columns


def test_layer_1_fails_on_a_wrong_raw_output(src, tmp_path):
    """The check can fail: one value moved, or two levels swapped, is caught against both references."""
    res = strip(src, tmp_path / "raw.onnx", anchors=parse_anchors(ANCHORS))
    x = deterministic_input((1, 3, 320, 320))
    _, ys = _original_rows(src, x)
    names = [b.tensor for lv in res.head.levels for b in lv.branches]
    convs = dict(zip(names, session(_with_outputs(src, names)).run(names, {"images": x})))
    raw = session(str(tmp_path / "raw.onnx")).run(None, {"images": x})
    ok = check_split_outputs("x", ys, convs, raw, res.head, res.metadata)
    assert ok.ok
    bad = raw[0].copy()
    bad[0, 4800, 3] += 1e-3  # first row of level 1
    c = check_split_outputs("x", ys, convs, [bad], res.head, res.metadata)
    assert not c.ok and not c.layout.ok and not c.outputs.ok and "layer 1" in c.failure()
    swapped = list(reversed(ys))
    c = check_split_outputs("x", swapped, convs, raw, res.head, res.metadata)
    assert not c.ok


def _with_outputs(path, names):
    from onnx_headcut.check import with_outputs

    return with_outputs(path.read_bytes(), [onnx.ValueInfoProto(name=n) for n in names])


def test_locate_without_anchors_says_how_to_give_them(src):
    with pytest.raises(NoHeadError, match="holds no anchors; give them with --anchors"):
        locate(onnx.load(str(src)))


@pytest.mark.parametrize("anchors,why", [
    ("12,16,19,36/36,75,76,55,72,146/142,110,192,243,459,401", r"level\(s\) of \[2, 3, 3\] anchors"),
    ("12,16,19,36,40,28/36,75,76,55,72,146", "gives 2 level"),
])
def test_wrong_anchor_count_is_refused(src, tmp_path, anchors, why):
    with pytest.raises(UsageError, match=why):
        strip(src, tmp_path / "raw.onnx", anchors=parse_anchors(anchors))
    assert not (tmp_path / "raw.onnx").exists()


@pytest.mark.parametrize("text", ["12,16,x", "12,16,19", "", "12,-16", "12,16,19,nan"])
def test_malformed_anchors_are_refused(text):
    with pytest.raises(UsageError, match="--anchors"):
        parse_anchors(text)


def test_cli_exit_codes(src, tmp_path):
    code, out, err = headcut("strip", src, "-o", tmp_path / "raw.onnx")
    assert code == 2 and err.count("\n") == 1 and "--anchors" in err and "5-D outputs" in err and not out
    code, _, err = headcut("strip", src, "-o", tmp_path / "raw.onnx", "--anchors", "12,16,19,36,40,28")
    assert code == 2 and err.count("\n") == 1 and "gives 1 level" in err
    code, _, err = headcut("strip", src, "-o", tmp_path / "raw.onnx", "--anchors", "1,2/x")
    assert code == 2 and err.count("\n") == 1
    assert not (tmp_path / "raw.onnx").exists()
    code, out, err = headcut("strip", src, "-o", tmp_path / "raw.onnx", "--anchors", ANCHORS)
    assert code == 0, err
    assert "NOT CHECKED" in out and "outputs 535500 values = the original's 3 raw outputs rearranged" in out
    code, out, _ = headcut("inspect", src, "--anchors", ANCHORS)
    assert code == 0 and "YOLOv7 raw outputs" in out and "0..4799" in out


def test_anchors_on_a_head_that_has_them_are_refused(tmp_path):
    p = tmp_path / "v7.onnx"
    onnx.save(yolov5(width=8, v7=True), str(p))
    code, _, err = headcut("strip", p, "-o", tmp_path / "raw.onnx", "--anchors", ANCHORS)
    assert code == 2 and "--anchors does not apply" in err and "from the graph" in err


@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy-opset12", "dynamo"])
def test_torch_export_without_grid(dynamo, tmp_path):
    pytest.importorskip("torch")
    import torch_multiout

    path = torch_multiout.export_yolov7_raw(tmp_path / "v7.onnx", dynamo=dynamo)
    m = onnx.load(str(path))
    names = [o.name for o in m.graph.output]
    assert names[0] == "output" and len(names) == 3
    if not dynamo:  # the legacy exporter numbers the outputs it was not given names for
        assert all(n.isdigit() for n in names[1:])
    res, raw = check_split_strip(path, tmp_path / "raw.onnx")
    assert [o.name for o in raw.graph.output] == ["output"]
    x = deterministic_input((1, 3, 320, 320), seed=3)
    rows, _ = _original_rows(path, x)
    assert np.array_equal(session(str(tmp_path / "raw.onnx")).run(None, {"images": x})[0], rows)


@pytest.mark.parametrize("engine", ["mnn", "ncnn"])
def test_convert_and_verify_on_engine(engine, src, tmp_path):
    pytest.importorskip("MNN" if engine == "mnn" else "ncnn")
    from onnx_headcut.check.engine import verify_engine
    from onnx_headcut.convert import convert

    strip(src, tmp_path / "raw.onnx", anchors=parse_anchors(ANCHORS))
    res = convert(tmp_path / "raw.onnx", engine, force=True)
    model = next(p for p in res.files if p.suffix in (".mnn", ".param"))
    checks = verify_engine(src, model)
    for c in checks:
        assert c.ok and c.engine == engine and c.layout.max_abs_err < 1e-3 and c.outputs.max_abs_err < 1e-3
        assert c.not_checked() == ("decode", "detections")


def test_verify_command_reads_the_anchors_from_the_raw_record(src, tmp_path):
    """``headcut verify ORIGINAL RAW`` needs no --anchors: the raw model records them; it runs layer 1 only
    and says so (exit 0), and a raw model that differs from the original is caught (exit 3)."""
    strip(src, tmp_path / "raw.onnx", anchors=parse_anchors(ANCHORS))
    code, out, err = headcut("verify", src, tmp_path / "raw.onnx")
    assert code == 0, err
    assert "layer 1 only" in out and "outputs 535500 values = the original's 3 raw outputs" in out
    other = tmp_path / "other.onnx"
    onnx.save(yolov7_raw(width=8, seed=1), str(other))  # same geometry, other weights
    code, out, err = headcut("verify", other, tmp_path / "raw.onnx")
    assert code == 3 and "layer 1" in err and "DIFFERENT" in out


@pytest.mark.parametrize("keep", [False, True], ids=["pinned", "kept"])
def test_torch_export_without_grid_dynamic_batch(keep, tmp_path):
    """``--dynamic-batch`` without ``--grid``: folded (batch pinned) to locate; the batch pinned to 1 by
    default, or kept and layer 1 run at batch 1 and 2."""
    pytest.importorskip("torch")
    import torch_multiout

    path = torch_multiout.export_yolov7_raw(tmp_path / "v7.onnx", dynamic_batch=True)
    assert onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    res = strip(path, tmp_path / "raw.onnx", anchors=parse_anchors(ANCHORS), keep_dynamic_batch=keep)
    assert [c.input for c in res.verification.checks] == ["random(seed=0)"] + (["random(seed=0), batch 2"] * keep)
    for c in res.verification.checks:
        assert c.ok and c.layout.max_abs_err == 0 and c.outputs.max_abs_err == 0 and c.decode is None
    out = onnx.load(str(tmp_path / "raw.onnx")).graph.output[0].type.tensor_type.shape.dim
    assert (out[0].dim_param if keep else out[0].dim_value) == ("batch" if keep else 1)
    x = deterministic_input((2 if keep else 1, 3, 320, 320), seed=4)
    rows, _ = _original_rows(path, x)
    assert np.array_equal(session(str(tmp_path / "raw.onnx")).run(None, {"images": x})[0], rows)
