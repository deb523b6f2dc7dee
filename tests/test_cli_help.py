"""Issue 13 items 6 and 7: the help text, options refused where they do not apply, the report's order,
and ``reg_max`` meaning what each upstream means."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import onnx
import pytest

from onnx_headcut import __version__
from onnx_headcut.errors import UsageError
from onnx_headcut.heads import Layout
from onnx_headcut.strip import strip
from onnx_headcut.synth import yolov5, yolov6_af, yolov6_v1, yolov8

VERBS = ["strip", "inspect", "convert", "verify", "detect", "sample", "codegen"]


def headcut(*args, env=None):
    p = subprocess.run([sys.executable, "-m", "onnx_headcut", *map(str, args)], capture_output=True, text=True,
                       env={**os.environ, "COLUMNS": "80", **(env or {})})
    return p.returncode, p.stdout, p.stderr


@pytest.mark.parametrize("verb", VERBS)
def test_help_has_no_type_names_no_braces_and_fits_80_columns(verb):
    code, out, err = headcut(verb, "--help")
    assert code == 0, err
    assert not re.search(r"<(bool|str|path|float|int|list\[\w+\])>", out), out
    assert "{" not in out.split("\n", 1)[0]  # usage line: MODEL, not {model}
    assert "…" not in out and max(len(line) for line in out.splitlines()) <= 80, out


@pytest.mark.parametrize("verb,option,choices", [("strip", "--layout", "[flat|levels|split|flat-split]"),
                                                 ("convert", "--to", "[mnn|ncnn|openvino|tflite|rknn|nncase]"),
                                                 ("verify", "--engine", "[ort|mnn|ncnn|openvino|tflite|rknn|nncase]"),
                                                 ("detect", "--engine", "[ort|mnn|ncnn|openvino|tflite|rknn|nncase]"),
                                                 ("codegen", "--lang", "[cpp]")])
def test_help_lists_the_choices(verb, option, choices):
    out = headcut(verb, "--help")[1]
    assert f"{option} {choices}" in out
    args = ["m.onnx"] if verb in ("convert", "codegen") else ["m.onnx", "x.onnx"]
    code, _, err = headcut(verb, *args, option, "bogus")
    assert code == 2 and "is not one of" in err


def test_usage_line_names_the_arguments():
    out = headcut("verify", "--help")[1]
    # CANDIDATE is optional: verify --int8 --layouts strips the original itself
    assert out.splitlines()[0] == "Usage: headcut verify [OPTIONS] ORIGINAL [CANDIDATE]"


def test_version_flag_and_command():
    assert headcut("--version")[:2] == (0, __version__ + "\n")
    assert headcut("version")[:2] == (0, __version__ + "\n")


def test_sample_help_names_every_family():
    out = headcut("sample", "--help")[1]
    assert "YOLOv6 0.1.0 exports" not in out and "yolov8" in out and "each" in out


@pytest.mark.parametrize("make,layout,match", [
    (lambda: yolov6_v1(width=8), Layout(keep_dfl=True),
     r"^--keep-dfl does not apply: the YOLOv6 0.1.0 head has no DFL"),
    (lambda: yolov6_af(width=8), Layout(keep_dfl=True),
     r"^--keep-dfl does not apply: the YOLOv6 .* has no DFL \(box branch of 4"),
    (lambda: yolov5(width=8), Layout("levels", keep_sigmoid=True),
     r"^--keep-sigmoid with --layout levels does not apply"),
    (lambda: yolov6_v1(width=8), Layout("split", score_sum=True),
     r"^--score-sum does not apply to the YOLOv6 0.1.0 head: its objectness"),
])
def test_options_that_do_not_apply_are_refused_before_any_work(make, layout, match, tmp_path):
    src = tmp_path / "in.onnx"
    onnx.save(make(), str(src))
    with pytest.raises(UsageError, match=match):
        strip(src, tmp_path / "raw.onnx", layout=layout)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.onnx"]


def test_keep_dfl_without_dfl_exit_2_one_line(tmp_path):
    src = tmp_path / "in.onnx"
    onnx.save(yolov6_v1(width=8), str(src))
    code, out, err = headcut("strip", src, "-o", tmp_path / "raw.onnx", "--keep-dfl")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--keep-dfl does not apply" in err, err
    code, _, err = headcut("strip", src, "-o", tmp_path / "raw.onnx", "--keep-dynamic-batch")
    assert code == 2 and "--keep-dynamic-batch does not apply" in err and "static batch" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.onnx"]


def test_folded_report_says_the_fold_first(tmp_path):
    src = tmp_path / "in.onnx"
    onnx.save(yolov6_af(width=8, dynamic_batch=True), str(src))
    code, out, err = headcut("strip", src, "-o", tmp_path / "raw.onnx")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("folded ") and "batch pinned to 1" in lines[0], lines[:3]
    assert lines[1].startswith("head ") and lines.index(next(x for x in lines if x.startswith("cut "))) > 0
    assert "dynamic batch kept" not in out and "kept" not in lines[0]


def test_kept_dynamic_batch_report_does_not_say_pinned(tmp_path):
    src = tmp_path / "in.onnx"
    onnx.save(yolov6_af(width=8, dynamic_batch=True), str(src))
    code, out, err = headcut("strip", src, "-o", tmp_path / "raw.onnx", "--keep-dynamic-batch")
    assert code == 0, err
    assert "pinned" not in out and "dynamic batch 'batch' kept" in out
    assert out.splitlines()[0].startswith("folded ") and "unfolded graph" in out.splitlines()[0]


@pytest.mark.parametrize("make,reg_max,bins,channels", [
    (lambda: yolov8(width=8), 16, 16, 64),          # Ultralytics: reg_max = 16 bins
    (lambda: yolov6_af(width=8, reg_max=16), 16, 17, 68),  # YOLOv6: reg_max = 16, 4*(16+1) = 68 channels
])
def test_reg_max_means_what_upstream_means(make, reg_max, bins, channels, tmp_path):
    src = tmp_path / "in.onnx"
    onnx.save(make(), str(src))
    res = strip(src, tmp_path / "raw.onnx")
    meta = res.metadata
    assert (meta["reg_max"], meta["dfl_bins"], meta["channels"][0]["size"]) == (reg_max, bins, channels)
    assert meta["schema"] == 5 and "DFL bins" in meta["reg_max_meaning"]
    from onnx_headcut.report import strip_text

    assert f"DFL {bins} bins per side (reg_max {reg_max} = " in strip_text(res)
    assert res.verification.ok  # the decode reads dfl_bins


def test_decode_reads_dfl_bins_not_reg_max(tmp_path):
    """A record whose reg_max is the Ultralytics one (16) decodes with its 16 bins, not 17."""
    import numpy as np

    from onnx_headcut.decode import decode
    from onnx_headcut.heads import Geometry

    src = tmp_path / "in.onnx"
    onnx.save(yolov8(width=8), str(src))
    meta = strip(src, tmp_path / "raw.onnx", verify=False).metadata
    assert Geometry.from_json(meta).reg_max == 15  # bins - 1, the internal count
    x = np.random.default_rng(0).normal(size=(1, meta["rows"], 64 + meta["num_classes"])).astype(np.float32)
    y = decode(x, meta)
    assert np.array_equal(decode(x, {**meta, "reg_max": 3}), y)  # reg_max is informative only
    with pytest.raises(Exception, match="dfl_bins 17 does not match the dfl block of 64 channels"):
        from onnx_headcut.metadata import check_metadata

        check_metadata({**meta, "dfl_bins": 17})


HEAVY = ("numpy", "onnx", "onnxruntime", "onnxsim", "onnx_graphsurgeon", "MNN", "ncnn", "torch", "PIL")


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["strip", "--help"], ["detect", "--help"]])
def test_help_and_version_import_nothing_heavy(argv):
    """Issue 13 item 8: start-up stays small because the heavy modules load only in the verb that runs
    (the time itself, 0.10-0.16 s on a fresh install, is measured by benchmarks/bench_startup.py)."""
    code = ("import sys, runpy; sys.argv = ['headcut', *sys.argv[1:]]\n"
            "try:\n    runpy.run_module('onnx_headcut', run_name='__main__')\n"
            "except SystemExit as e:\n    assert not e.code, e.code\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1] == "[]", p.stdout[-300:]
