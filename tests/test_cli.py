"""The command line through a subprocess: exit codes, one-line messages, nothing written, input untouched."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from conftest import build, digest


def headcut(*args, cwd=None):
    p = subprocess.run([sys.executable, "-m", "onnx_headcut", *map(str, args)], capture_output=True, text=True, cwd=cwd)
    return p.returncode, p.stdout, p.stderr


def test_strip_prints_the_report(write, tmp_path):
    src = write("legacy-inplace")
    code, out, err = headcut("strip", src, "-o", tmp_path / "raw.onnx")
    assert code == 0, err
    assert "YOLOv6 0.1.0" in out and "40x40" in out and "max abs error" in out and "OK" in out
    assert "max rank  6 -> 4" in out and "ScatterND 6" in out
    assert (tmp_path / "raw.onnx").exists() and (tmp_path / "raw.head.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.onnx", "raw.head.json", "raw.onnx"]


def test_inspect_json(write):
    code, out, _ = headcut("inspect", write("legacy"), "--json")
    assert code == 0
    j = json.loads(out)
    assert j["head"]["family"] == "YOLOv6" and [lv["stride"] for lv in j["head"]["levels"]] == [8, 16, 32]


def _classifier(tmp_path):
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("GlobalAveragePool", ["c"], ["p"]),
             helper.make_node("Flatten", ["p"], ["y"])]
    m = helper.make_model(helper.make_graph(nodes, "c", [x], [y], [numpy_helper.from_array(np.ones((4, 3, 1, 1), np.float32), "w")]))
    p = tmp_path / "classifier.onnx"
    onnx.save(m, str(p))
    return p


def _case(name, tmp_path, write):
    """(input path, output path) for each bad case."""
    good = write("legacy")
    if name == "missing":
        return tmp_path / "nope.onnx", tmp_path / "o.onnx"
    if name == "empty":
        (tmp_path / "e.onnx").write_bytes(b"")
        return tmp_path / "e.onnx", tmp_path / "o.onnx"
    if name == "corrupt":
        data = good.read_bytes()
        (tmp_path / "t.onnx").write_bytes(data[: len(data) // 3])
        return tmp_path / "t.onnx", tmp_path / "o.onnx"
    if name == "text":
        (tmp_path / "t.onnx").write_text("this is not a model\n")
        return tmp_path / "t.onnx", tmp_path / "o.onnx"
    if name == "no-head":
        return _classifier(tmp_path), tmp_path / "o.onnx"
    if name == "out-is-in":
        return good, good
    if name == "out-folder-missing":
        return good, tmp_path / "missing" / "o.onnx"
    if name == "out-folder-unwritable":
        return good, Path("/proc/o.onnx")
    if name == "out-exists":
        (tmp_path / "o.onnx").write_bytes(b"keep me")
        return good, tmp_path / "o.onnx"
    raise AssertionError(name)


CASES = {
    "missing": "no such file", "empty": "the file is empty", "corrupt": "not a readable ONNX model",
    "text": "not a readable ONNX model", "no-head": "looked for", "out-is-in": "the output is the input",
    "out-folder-missing": "does not exist", "out-folder-unwritable": "not writable", "out-exists": "already exists",
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exit_2_one_line_nothing_written(case, tmp_path, write):
    src, dst = _case(case, tmp_path, write)
    before = {p.name: digest(p) for p in tmp_path.iterdir()}
    code, out, err = headcut("strip", src, "-o", dst)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("headcut: error:") and CASES[case] in lines[0]
    assert "Traceback" not in err + out
    assert {p.name: digest(p) for p in tmp_path.iterdir()} == before  # nothing new, nothing changed


def test_verification_failure_exit_3_and_nothing_written(write, tmp_path):
    src = write("legacy")
    code, out, err = headcut("strip", src, "-o", tmp_path / "raw.onnx", "--tol", "1e-12")
    assert code == 3 and "verification failed" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.onnx"]


def test_already_raw_exit_4(write, tmp_path):
    src = write("legacy")
    assert headcut("strip", src, "-o", tmp_path / "raw.onnx", "--no-verify")[0] == 0
    code, _, err = headcut("strip", tmp_path / "raw.onnx", "-o", tmp_path / "raw2.onnx")
    assert code == 4 and "already raw" in err


def test_help_lists_the_verbs():
    code, out, _ = headcut("--help")
    assert code == 0 and "strip" in out and "inspect" in out
