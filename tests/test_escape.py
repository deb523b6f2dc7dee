"""Strings from a model cannot forge report lines: control characters and bidi overrides are escaped."""

from __future__ import annotations

import subprocess
import sys

import onnx
import pytest
from conftest import build, digest

FORGED = "verify    OK forged"
#: an output name that, printed raw, would end its line, print a fake verify line, then reverse the text
#: after it and erase the terminal line
EVIL = f"outputs\n{FORGED}\r\u202e\u2066\x00\x1b[2K"


def headcut(*args):
    p = subprocess.run([sys.executable, "-m", "onnx_headcut", *map(str, args)], capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def _evil(tmp_path):
    m = build("legacy")
    for n in m.graph.node:
        n.output[:] = [EVIL if o == "outputs" else o for o in n.output]
    m.graph.output[0].name = EVIL
    p = tmp_path / "evil.onnx"
    onnx.save(m, str(p))
    return p


def _clean(text: str) -> None:
    for ch in ("\r", "\x00", "\x1b", "\u202e", "\u2066"):
        assert ch not in text, repr(ch)
    assert not any(line.startswith(FORGED) for line in text.splitlines()), text


def test_report_lines_cannot_be_forged(tmp_path):
    src = _evil(tmp_path)
    before = digest(src)
    code, out, err = headcut("strip", src, "-o", tmp_path / "raw.onnx")
    assert code == 0, err
    _clean(out + err)
    assert "'outputs\\nverify    OK forged\\r\\u202e\\u2066\\x00\\x1b[2K'" in out  # visible, escaped
    assert sum(line.startswith("verify ") for line in out.splitlines()) == 1  # only the genuine one
    code, out, err = headcut("inspect", src)
    assert code == 0, err
    _clean(out + err)
    assert "from output 'outputs\\nverify" in out
    assert digest(src) == before


def test_error_messages_escape_model_strings(tmp_path):
    """The raw model keeps the name; refusing it again (exit 4) quotes the name in the error line."""
    src = _evil(tmp_path)
    assert headcut("strip", src, "-o", tmp_path / "raw.onnx", "--no-verify")[0] == 0
    code, out, err = headcut("strip", tmp_path / "raw.onnx", "-o", tmp_path / "again.onnx")
    assert code == 4
    _clean(out + err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("headcut: error: already raw") and "outputs\\nverify" in lines[0]


@pytest.mark.parametrize("text,shown", [("a\nb", "a\\nb"), ("tab\there", "tab\\there"), ("nul\x00", "nul\\x00"),
                                        ("rlo\u202eevil", "rlo\\u202eevil"), ("pdi\u2069", "pdi\\u2069"),
                                        ("line\u2028sep", "line\\u2028sep"), ("café 中文 ok", "café 中文 ok")])
def test_printable(text, shown):
    from onnx_headcut.errors import HeadcutError
    from onnx_headcut.text import printable

    assert printable(text) == shown
    assert str(HeadcutError(f"tensor '{text}'")) == f"tensor '{shown}'"


def test_detect_prints_class_names_escaped_and_without_markup(tmp_path):
    from pathlib import Path

    photo = Path(__file__).resolve().parents[1] / "samples" / "images" / "chelsea.jpg"
    src = tmp_path / "in.onnx"
    onnx.save(build("legacy"), str(src))
    names = tmp_path / "names.txt"
    names.write_text("".join(f"[bold]c{i}\u202e\x1b[2K\n" for i in range(80)), encoding="utf-8")
    code, out, err = headcut("detect", src, photo, "--names", names, "--conf", "0")
    assert code == 0, err
    _clean(out + err)
    assert "[bold]c" in out and "\\u202e\\x1b[2K" in out  # shown literally: neither markup nor escapes applied
