"""Class names and source metadata: read from an Ultralytics-style export, kept by strip, used by detect."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from onnx_headcut.detect import detect
from onnx_headcut.errors import InputError
from onnx_headcut.metadata import parse_metadata, read_metadata
from onnx_headcut.names import COCO, NamesError, parse_literal, parse_yaml_names, read_names
from onnx_headcut.strip import strip
from onnx_headcut.synth import yolov8

PHOTO = Path(__file__).resolve().parents[1] / "samples" / "images" / "chelsea.jpg"

#: what ``yolo export format=onnx`` writes besides ``names`` (values as Ultralytics spells them)
ULTRALYTICS_PROPS = {"description": "Ultralytics YOLOv8n model trained on data.yaml", "author": "Ultralytics",
                     "date": "2025-01-01T00:00:00", "version": "8.3.0", "license": "AGPL-3.0 License",
                     "docs": "https://docs.ultralytics.com", "stride": "32", "task": "detect", "batch": "1",
                     "imgsz": "[320, 320]", "args": "{'batch': 1, 'half': False, 'dynamic': False, 'nms': False}"}


def _export(path: Path, names: dict, **kw) -> dict:
    m = yolov8(nc=len(names), **kw)
    props = {**ULTRALYTICS_PROPS, "names": repr(names)}
    for k, v in props.items():
        m.metadata_props.add(key=k, value=v)
    onnx.save(m, str(path))
    return props


def headcut(*args):
    return subprocess.run([sys.executable, "-m", "onnx_headcut", *map(str, args)], capture_output=True, text=True)


def test_strip_keeps_names_and_metadata_props_and_detect_prints_them(tmp_path):
    props = _export(tmp_path / "one.onnx", {0: "item"})
    res = strip(tmp_path / "one.onnx", tmp_path / "raw.onnx")
    meta = read_metadata(tmp_path / "raw.onnx")
    assert meta["names"] == ["item"] == res.metadata["names"]
    assert meta["source_metadata"] == {"task": "detect", "imgsz": [320, 320], "stride": 32, "batch": 1,
                                       "args": {"batch": 1, "half": False, "dynamic": False, "nms": False}}
    assert json.loads((tmp_path / "raw.head.json").read_text())["names"] == ["item"]
    raw = onnx.load(str(tmp_path / "raw.onnx"))
    kept = {p.key: p.value for p in raw.metadata_props}
    assert {k: kept[k] for k in props} == props  # every entry of the original, unchanged
    assert set(kept) == set(props) | {"headcut"}
    for model in ("raw.onnx", "one.onnx"):  # the raw model's record; the original's metadata_props
        r = detect(tmp_path / model, PHOTO, conf=0.001)
        assert r.detections and {d.name for d in r.detections} == {"item"}
    p = headcut("detect", tmp_path / "raw.onnx", PHOTO, "--conf", "0.001")
    assert p.returncode == 0, p.stderr
    assert " item " in p.stdout and "class0" not in p.stdout


def test_147_classes_with_a_blank_name_through_mnn(tmp_path):
    names = {i: f"c{i}" for i in range(147)}
    names[73] = ""
    _export(tmp_path / "many.onnx", names)
    strip(tmp_path / "many.onnx", tmp_path / "raw.onnx")
    rec = read_metadata(tmp_path / "raw.onnx")["names"]
    assert len(rec) == 147 and rec[73] == "" and rec[146] == "c146"
    r = detect(tmp_path / "raw.onnx", PHOTO, conf=1e-4)
    assert r.detections and all(d.name == ("" if d.cls == 73 else f"c{d.cls}") for d in r.detections)
    pytest.importorskip("MNN", reason="engines extra not installed")
    from onnx_headcut.convert import convert

    (tmp_path / "mnn").mkdir()
    convert(tmp_path / "raw.onnx", "mnn", tmp_path / "mnn")
    side = json.loads((tmp_path / "mnn" / "raw.head.json").read_text())
    assert side["names"] == rec
    m = detect(tmp_path / "mnn" / "raw.mnn", PHOTO, conf=1e-4)
    assert m.engine == "mnn" and [d.name for d in m.detections] == [d.name for d in r.detections]
    p = headcut("detect", tmp_path / "mnn" / "raw.mnn", PHOTO, "--conf", "0.0001", "--json")
    assert p.returncode == 0, p.stderr
    assert [d["name"] for d in json.loads(p.stdout)["detections"]] == [d.name for d in r.detections]


def test_names_option_wins_and_coco_only_when_nothing_says_otherwise(tmp_path):
    _export(tmp_path / "one.onnx", {0: "item"})
    strip(tmp_path / "one.onnx", tmp_path / "raw.onnx")
    (tmp_path / "n.txt").write_text("widget\n")
    assert {d.name for d in detect(tmp_path / "raw.onnx", PHOTO, conf=0.001, names=tmp_path / "n.txt").detections} \
        == {"widget"}
    onnx.save(yolov8(nc=80), str(tmp_path / "coco.onnx"))  # no metadata_props: COCO's names
    r = detect(tmp_path / "coco.onnx", PHOTO, conf=1e-4)
    assert r.detections and all(d.name == COCO[d.cls] for d in r.detections)
    _export(tmp_path / "own80.onnx", {i: f"k{i}" for i in range(80)})
    r = detect(tmp_path / "own80.onnx", PHOTO, conf=1e-4)
    assert r.detections and all(d.name == f"k{d.cls}" for d in r.detections)


def test_unreadable_metadata_names_are_noted_not_used(tmp_path):
    m = yolov8(nc=2)
    m.metadata_props.add(key="names", value="__import__('os').system('echo hi')")
    onnx.save(m, str(tmp_path / "bad.onnx"))
    res = strip(tmp_path / "bad.onnx", tmp_path / "raw.onnx")
    assert "names" not in res.metadata
    assert any("metadata_props names were not used: not a Python literal" in n for n in res.metadata["notes"])
    m = yolov8(nc=2)
    m.metadata_props.add(key="names", value="{0: 'a'}")  # one name for two classes
    onnx.save(m, str(tmp_path / "short.onnx"))
    res = strip(tmp_path / "short.onnx", tmp_path / "raw2.onnx")
    assert "names" not in res.metadata and any("1 names for a head with 2 classes" in n for n in res.metadata["notes"])
    with pytest.raises(NamesError, match="larger than"):
        parse_literal("{0: '" + "x" * (1 << 20) + "'}")


def test_names_printed_escaped(tmp_path):
    _export(tmp_path / "m.onnx", {0: "a\nverify OK\u202e"})
    strip(tmp_path / "m.onnx", tmp_path / "raw.onnx")
    p = headcut("detect", tmp_path / "raw.onnx", PHOTO, "--conf", "0.001")
    assert p.returncode == 0, p.stderr
    assert "a\\nverify OK\\u202e" in p.stdout and "\nverify OK" not in p.stdout


def test_record_names_are_checked(tmp_path):
    onnx.save(yolov8(nc=2), str(tmp_path / "m.onnx"))
    meta = strip(tmp_path / "m.onnx", tmp_path / "raw.onnx", verify=False).metadata
    assert "names" not in meta  # the export says nothing: nothing recorded
    for bad in (["a"] * 3, "x", [1, 2], ["a", "b" * 257]):
        with pytest.raises(InputError, match="malformed headcut metadata: names must be"):
            parse_metadata(json.dumps({**meta, "names": bad}))
    assert parse_metadata(json.dumps({**meta, "names": ["", "b"]}))["names"] == ["", "b"]


# --- names files -------------------------------------------------------------------------------

def _names(tmp_path, text: str, nc: int, name: str = "names.txt"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return read_names(p, nc)


def test_plain_names_file_blank_lines(tmp_path):
    lines = [f"n{i}" for i in range(147)]
    lines[70] = ""
    got = _names(tmp_path, "\n".join(lines) + "\n", 147)  # the final newline adds no name
    assert len(got) == 147 and got[70] == "" and got[146] == "n146"
    assert _names(tmp_path, "\n".join(lines), 147) == got  # without the final newline: the same
    assert _names(tmp_path, "a\nb\n\n\n", 2) == ("a", "b")  # blank lines at the end dropped
    assert _names(tmp_path, "a\n\nb\n", 2) == ("a", "b")  # a blank separator when the count says so
    assert _names(tmp_path, "a\r\n\r\nb\r\n", 3) == ("a", "", "b")  # CRLF; the blank line is a name
    assert _names(tmp_path, "x\u2028y\n", 1) == ("x\u2028y",)  # only a newline ends a line
    with pytest.raises(InputError, match=r"names.txt: 146 names for a model with 147 classes \(1 of them blank"):
        _names(tmp_path, "\n".join(lines[:146]) + "\n", 147)


def test_yaml_and_json_names_files(tmp_path):
    yaml = "path: ../datasets/x\ntrain: images/train\nnames:\n  0: person\n  1: 'bi cycle'  # quoted\n  2:\n\nval: v\n"
    assert _names(tmp_path, yaml, 3, "data.yaml") == ("person", "bi cycle", "")
    assert parse_yaml_names(yaml) == ["person", "bi cycle", ""]  # the parser used without PyYAML
    assert _names(tmp_path, "names:\n- a\n- b\n", 2, "d.yml") == ("a", "b")
    assert _names(tmp_path, "nc: 2\nnames: [a, b]\n", 2, "d.yaml") == ("a", "b")
    assert _names(tmp_path, json.dumps({"1": "bicycle", "0": "person"}), 2, "n.json") == ("person", "bicycle")
    assert _names(tmp_path, json.dumps(["a", ""]), 2, "n.json") == ("a", "")
    assert _names(tmp_path, "{0: 'person', 1: ''}", 2) == ("person", "")  # Ultralytics' metadata literal
    assert _names(tmp_path, "[x] first\n{y}\n", 2) == ("[x] first", "{y}")  # text that only looks like JSON


@pytest.mark.parametrize("text,name,why", [
    ("names:\n  0: a\n  2: b\n", "d.yaml", "YAML: the class ids are not 0 .. 1 (no 1)"),
    ("names:\n  zero: a\n", "d.yaml", "YAML: line 2: not a '<class id>: <name>'"),
    ("train: x\n", "d.yaml", "YAML: no top-level names: entry"),
    ('{"a": "b"}', "n.json", "JSON: the key 'a' is not a class id"),
    ("not json", "n.json", "JSON: not JSON"),
    ('[1, {"x": 2}]', "n.json", "JSON: the name of class 1 is a dict"),
])
def test_bad_names_files_are_one_line_exit_2(tmp_path, text, name, why):
    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(InputError, match=why.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        read_names(p, 2)
    onnx.save(yolov8(nc=2), str(tmp_path / "m.onnx"))
    r = headcut("detect", tmp_path / "m.onnx", PHOTO, "--names", p)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and why.split(": ", 1)[1][:20] in r.stderr
