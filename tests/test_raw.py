"""Issue 13 item 4: every raw layout strip writes is recognised as raw (exit 4), with or without its
record; inspect describes raw models; Ultralytics pose and OBB exports are refused by name."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from onnx_headcut.errors import AlreadyRawError, NoHeadError
from onnx_headcut.heads import Layout
from onnx_headcut.locate import locate
from onnx_headcut.strip import inspect, strip
from onnx_headcut.synth import yolov5, yolov6_af, yolov6_v1, yolov8


def headcut(*args):
    p = subprocess.run([sys.executable, "-m", "onnx_headcut", *map(str, args)], capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


LAYOUTS = {
    "v1-levels": (lambda: yolov6_v1(width=8), Layout("levels")),
    "v1-keep-sigmoid": (lambda: yolov6_v1(width=8), Layout(keep_sigmoid=True)),
    "af-dfl-levels": (lambda: yolov6_af(width=8, reg_max=16), Layout("levels")),
    "af-dfl-keep-dfl": (lambda: yolov6_af(width=8, reg_max=16), Layout(keep_dfl=True)),
    "af-dfl-keep-dfl-sigmoid": (lambda: yolov6_af(width=8, reg_max=16), Layout(keep_dfl=True, keep_sigmoid=True)),
    "v8-keep-dfl": (lambda: yolov8(width=8), Layout(keep_dfl=True)),
    "v8-levels": (lambda: yolov8(width=8), Layout("levels")),
    "v5-levels": (lambda: yolov5(width=8), Layout("levels")),
}


def _raw(tmp_path, name):
    make, layout = LAYOUTS[name]
    src = tmp_path / "in.onnx"
    onnx.save(make(), str(src))
    strip(src, tmp_path / "raw.onnx", layout=layout, verify=False)
    return tmp_path / "raw.onnx"


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_every_raw_layout_is_already_raw_exit_4(name, tmp_path):
    raw = _raw(tmp_path, name)
    code, out, err = headcut("strip", raw, "-o", tmp_path / "again.onnx")
    assert code == 4, err
    assert len(err.strip().splitlines()) == 1 and "already raw: written by headcut" in err
    assert not (tmp_path / "again.onnx").exists()


@pytest.mark.parametrize("name", [n for n in LAYOUTS if n != "v1-keep-sigmoid"])
def test_raw_layout_without_its_record_is_raw_by_structure(name, tmp_path):
    m = onnx.load(str(_raw(tmp_path, name)))
    del m.metadata_props[:]
    with pytest.raises(AlreadyRawError, match=r"^already raw: .*convs through layout ops"):
        locate(m)


def test_sigmoid_scores_without_record_are_the_yolox_undecoded_head(tmp_path):
    """box 4 + obj/cls sigmoids flattened, no record: exactly a YOLOX export without its decode, which
    strip supports (it removes the sigmoids), so it is located rather than refused."""
    m = onnx.load(str(_raw(tmp_path, "v1-keep-sigmoid")))
    del m.metadata_props[:]
    h = locate(m)
    assert (h.family, h.version, h.original_decoded) == ("YOLOX", "undecoded", False)


def test_a_decode_beside_raw_ops_is_not_called_raw():
    """Exp (a decode) is not a raw layout's op: a YOLOv6 0.1.0 export stays a head, not 'already raw'."""
    assert locate(yolov6_v1(width=8)).family == "YOLOv6"


@pytest.mark.parametrize("name", ["v1-levels", "af-dfl-keep-dfl", "v8-keep-dfl"])
def test_inspect_describes_a_raw_model(name, tmp_path):
    raw = _raw(tmp_path, name)
    meta = json.loads(onnx.load(str(raw)).metadata_props[0].value)
    ri = inspect(raw)
    assert ri.written_by_headcut and ri.record == meta
    code, out, err = headcut("inspect", raw)
    assert code == 0, err
    assert "raw       already raw: written by headcut" in out
    assert f"head      {meta['family']} {meta['version']}" in out and f"layout    {meta['layout']}: " in out
    assert all(f"{lv['grid'][0]}x{lv['grid'][1]}" in out for lv in meta["levels"])
    assert " + ".join(f"{c['name']} {c['size']}" for c in meta["channels"]) in out.replace(" (sigmoid)", "")
    code, out, _ = headcut("inspect", raw, "--json")
    j = json.loads(out)
    assert code == 0 and j["raw"] is True and j["head"] == meta
    assert [o["name"] for o in j["outputs"]] == [o["name"] for o in meta["raw_outputs"]]


def test_inspect_describes_a_raw_model_without_record(tmp_path):
    m = onnx.load(str(_raw(tmp_path, "af-dfl-levels")))
    del m.metadata_props[:]
    onnx.save(m, str(tmp_path / "bare.onnx"))
    ri = inspect(tmp_path / "bare.onnx")
    assert not ri.written_by_headcut and len(ri.outputs) == 3 and ri.outputs[0][1] == (1, 84, 40, 40)
    code, out, _ = headcut("inspect", tmp_path / "bare.onnx")
    assert code == 0 and "already raw: 3 outputs" in out and "(1, 84, 40, 40)" in out


def test_verify_with_a_raw_original_is_exit_2(tmp_path):
    raw = _raw(tmp_path, "v1-keep-sigmoid")
    code, _, err = headcut("verify", raw, raw)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "ORIGINAL must be a decoded export" in err


def _extra_branch(k: int, trig: bool = False, nc: int = 80) -> onnx.ModelProto:
    """A YOLOv8 export with a third conv of ``k`` channels per level feeding the output, as Ultralytics'
    pose (k = 51, keypoints) and OBB (k = 1, angle; Sin/Cos rotate the boxes) heads do."""
    m = yolov8(width=8, nc=nc)
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    boxes = [n for n in g.node if n.op_type == "Conv" and len(n.input) > 1 and n.input[1].startswith("model.22.cv2.")
             and n.input[1].endswith(".2.weight")]
    assert len(boxes) == 3
    rng = np.random.default_rng(0)
    flat = []
    for i, n in enumerate(boxes):
        c = numpy_helper.to_array(inits[n.input[1]]).shape[1]
        g.initializer.append(numpy_helper.from_array(rng.normal(0, 0.1, (k, c, 1, 1)).astype(np.float32), f"cv4.{i}.w"))
        g.initializer.append(numpy_helper.from_array(np.array([1, k, -1], np.int64), f"cv4.{i}.shape"))
        g.node.extend([helper.make_node("Conv", [n.input[0], f"cv4.{i}.w"], [f"cv4.{i}"]),
                       helper.make_node("Reshape", [f"cv4.{i}", f"cv4.{i}.shape"], [f"cv4.{i}.flat"])])
        flat.append(f"cv4.{i}.flat")
    g.node.append(helper.make_node("Concat", flat, ["extra"], axis=-1))
    out = next(n for n in g.node if "output0" in n.output)
    extra = "extra"
    if trig:
        g.node.extend([helper.make_node("Sigmoid", ["extra"], ["angle"]), helper.make_node("Cos", ["angle"], ["cos"]),
                       helper.make_node("Sin", ["angle"], ["sin"]), helper.make_node("Add", ["cos", "sin"], ["rot"]),
                       helper.make_node("Mul", [out.input[0], "rot"], ["rotated"])])
        out.input[0] = "rotated"
        extra = "angle"
    out.input.append(extra)
    g.output[0].type.tensor_type.shape.dim[1].dim_value = 4 + nc + k
    order = {}  # re-sort topologically: the new nodes were appended after the final Concat
    nodes = list(g.node)
    produced = {i.name for i in g.input} | set(inits) | {t.name for t in g.initializer}
    done = []
    while nodes:
        for n in nodes:
            if all(not x or x in produced for x in n.input):
                done.append(n)
                produced.update(n.output)
                nodes.remove(n)
                break
        else:
            raise AssertionError(order)
    del g.node[:]
    g.node.extend(done)
    onnx.checker.check_model(m)
    return m


def test_pose_export_is_refused_by_name():
    """A third branch of 51 channels that the decode only concatenates: not upstream's keypoint decode (which
    headcut strips, tests/heads/test_pose.py), so refused by name with the pose matcher's reason."""
    with pytest.raises(NoHeadError, match=r"^Ultralytics pose export \(a keypoint branch of 51 channels = 17 keypoints "
                                          r"x 3 per level beside box 64 and cls 1, output \[1, 56, 2100\]\), "
                                          r"not proven: \d+x\d+ level: 0 kpt conv decoded as upstream"):
        locate(_extra_branch(51, nc=1))


def test_obb_export_is_refused_by_name():
    with pytest.raises(NoHeadError, match=r"^Ultralytics OBB export \(an angle branch of 1 channel per level beside "
                                          r"box 64 and cls 15, Cos/Sin in the decode, output \[1, 20, 2100\]\), "
                                          r"not proven: the rotated-box decode lacks its angle offset 0.25$"):
        locate(_extra_branch(1, trig=True, nc=15))


def test_pose_refusal_is_one_short_line_on_the_cli(tmp_path):
    onnx.save(_extra_branch(51, nc=1), str(tmp_path / "pose.onnx"))
    code, _, err = headcut("strip", tmp_path / "pose.onnx", "-o", tmp_path / "raw.onnx")
    assert code == 2 and len(err.strip().splitlines()) == 1 and len(err) < 250 and "pose" in err
