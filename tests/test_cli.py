"""The command line through a subprocess: exit codes, one-line messages, nothing written, input untouched."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
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
    m = helper.make_model(helper.make_graph(nodes, "c", [x], [y],
                                            [numpy_helper.from_array(np.ones((4, 3, 1, 1), np.float32), "w")]))
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
    if name == "random-bytes":
        (tmp_path / "r.onnx").write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)))
        return tmp_path / "r.onnx", tmp_path / "o.onnx"
    if name == "no-outputs":
        m = build("legacy")
        del m.graph.output[:]
        return _save(m, tmp_path / "n.onnx"), tmp_path / "o.onnx"
    if name == "missing-level":  # the stride-16 level no longer reaches the output, which still claims 2100 rows
        m = build("legacy")
        final = next(n for n in m.graph.node if n.output[0] == "outputs")
        del final.input[1]
        return _save(m, tmp_path / "l.onnx"), tmp_path / "o.onnx"
    if name == "grid-mismatch":
        m = build("legacy")
        for n in m.graph.node:
            if n.op_type == "Constant":
                v = onnx.numpy_helper.to_array(n.attribute[0].t)
                if v.ndim == 5 and v.shape[-1] == 2:
                    n.attribute[0].t.CopyFrom(onnx.numpy_helper.from_array(v + 0.5))
                    break
        return _save(m, tmp_path / "g.onnx"), tmp_path / "o.onnx"
    if name == "stride-not-dividing":  # a 330x330 input gives 42x42, 21x21, 11x11 maps
        m = build("legacy")
        for d in m.graph.input[0].type.tensor_type.shape.dim[2:]:
            d.dim_value = 330
        return _save(m, tmp_path / "s.onnx"), tmp_path / "o.onnx"
    if name == "already-raw":
        from onnx_headcut.strip import strip

        strip(good, tmp_path / "raw.onnx", verify=False)
        return tmp_path / "raw.onnx", tmp_path / "o.onnx"
    if name == "out-is-in":
        return good, good
    if name == "out-folder-through-file":
        (tmp_path / "afile").write_text("x")
        return good, tmp_path / "afile" / "o.onnx"
    if name == "out-folder-unwritable":
        return good, Path("/proc/o.onnx")
    if name == "out-exists":
        (tmp_path / "o.onnx").write_bytes(b"keep me")
        return good, tmp_path / "o.onnx"
    raise AssertionError(name)


def _save(m, p):
    onnx.save(m, str(p))
    return p


#: case: (exit code, what the one-line message must say)
CASES = {
    "missing": (2, "no such file"), "empty": (2, "the file is empty"), "corrupt": (2, "not a readable ONNX model"),
    "text": (2, "not a readable ONNX model"), "random-bytes": (2, "not a readable ONNX model"),
    "no-outputs": (2, "has no outputs"), "no-head": (2, "looked for"),
    "missing-level": (2, "does not match the levels"), "grid-mismatch": (2, "grid constant"),
    "stride-not-dividing": (2, "does not divide the 330x330 input"),
    "already-raw": (4, "already raw: written by headcut (YOLOv6 0.1.0, flat layout"),
    "out-is-in": (2, "the output is the input"), "out-folder-through-file": (2, "is not a folder"),
    "out-folder-unwritable": (2, "not writable"), "out-exists": (2, "already exists (use --force"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_one_line_nothing_written_input_untouched(case, tmp_path, write):
    src, dst = _case(case, tmp_path, write)
    before = {p.name: digest(p) for p in tmp_path.iterdir()}
    code, out, err = headcut("strip", src, "-o", dst)
    expected_code, expected_text = CASES[case]
    assert code == expected_code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("headcut: error:") and expected_text in lines[0], lines
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


def test_force_overwrites(write, tmp_path):
    src = write("legacy")
    (tmp_path / "raw.onnx").write_bytes(b"old")
    code, _, err = headcut("strip", src, "-o", tmp_path / "raw.onnx", "--force")
    assert code == 0, err
    assert onnx.load(str(tmp_path / "raw.onnx")).graph.output[0].name == "outputs"


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_interrupted_run_leaves_nothing(sig, tmp_path):
    """Kill strip while its staged files exist (during verification): nothing may be left behind."""
    import signal
    import time

    from onnx_headcut.synth import yolov6_af

    onnx.save(yolov6_af(width=32, size=(1280, 1280), reg_max=16), str(tmp_path / "big.onnx"))
    out = tmp_path / "out"
    out.mkdir()
    p = subprocess.Popen([sys.executable, "-m", "onnx_headcut", "strip", tmp_path / "big.onnx", "-o", out / "raw.onnx"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not any(out.iterdir()) and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert p.poll() is None, "strip finished before it could be interrupted"
    p.send_signal(getattr(signal, sig))
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130 and "interrupted; nothing written" in err and "Traceback" not in err
    assert list(out.iterdir()) == []


def test_output_folders_are_made_and_removed_again_on_failure(write, tmp_path):
    src = write("legacy")
    code, _, err = headcut("strip", src, "-o", tmp_path / "new" / "deeper" / "raw.onnx")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "new" / "deeper").iterdir()) == ["raw.head.json", "raw.onnx"]
    code, _, err = headcut("strip", src, "-o", tmp_path / "other" / "raw.onnx", "--tol", "1e-12")
    assert code == 3 and not (tmp_path / "other").exists()  # nothing written: not even the folder


def test_strip_without_output_writes_stem_raw_onnx_beside_the_input(write, tmp_path):
    src = write("legacy")
    code, out, err = headcut("strip", src)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.onnx", "in.raw.head.json", "in.raw.onnx"]
    assert "in.raw.onnx" in out.splitlines()[-1]
    code, _, err = headcut("strip", src)  # the default output is never overwritten without --force
    assert code == 2 and "already exists" in err
