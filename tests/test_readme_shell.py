"""Issue 13 item 5: every shell block of the README runs as written, in order, in one fresh folder.

The README's commands are executed (``headcut`` as this interpreter's ``-m onnx_headcut``) one after the
other, as a new user pastes them after cloning: they must all exit 0 and must not collide with each
other. The console example (the ``$ headcut strip ...`` block) must print what the README shows, paths
aside; its measured error values are checked against the tolerance it states instead of digit for digit
(onnxruntime's Exp differs in the last bits between CPUs). Install steps are not re-run here: the test
checks instead that CI (``.ci/run``) runs each of them.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
NUMBER = re.compile(r"\d+(?:\.\d+)?e-\d+")


def blocks() -> list[tuple[str, str]]:
    """(kind, text) of every fenced block but the Python ones (tests/test_readme.py runs those)."""
    out = []
    for lang, body in FENCE.findall(README):
        if lang == "bash":
            out.append(("bash", body))
        elif lang == "sh":  # a recipe for an engine's own virtualenv: .ci/engines runs it (checked below)
            out.append(("venv", body))
        elif not lang and body.startswith("$ "):
            out.append(("console", body))
        else:
            assert lang == "python", f"a README block this test does not know how to check: {lang!r}"
    return out


def commands(body: str) -> tuple[list[list[str]], list[list[str]]]:
    """The block's headcut commands to run, and the install / test-suite steps left to CI (as argv)."""
    run, left = [], []
    for line in body.splitlines():
        for part in line.split("#", 1)[0].split("&&"):
            argv = shlex.split(part)
            if not argv:
                continue
            if argv[0] == "pip" or argv == ["python", "-m", "pytest", "-q"]:
                left.append(argv)
            else:
                assert argv[0] == "headcut", f"README command that is not headcut or an install step: {part!r}"
                run.append(argv[1:])
    return run, left


def headcut(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "120"}
    return subprocess.run([sys.executable, "-m", "onnx_headcut", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def _openvino() -> bool:
    """OpenVINO can run here: in this Python, or in the one ``HEADCUT_PYTHON_OPENVINO`` names."""
    python = os.environ.get("HEADCUT_PYTHON_OPENVINO") or sys.executable
    code = "import importlib.util, sys; sys.exit(importlib.util.find_spec('openvino') is None)"
    return subprocess.run([python, "-c", code], capture_output=True).returncode == 0


def test_readme_shell_blocks_run_in_sequence(tmp_path):
    pytest.importorskip("MNN", reason="the README's engine block needs the engines extra")
    pytest.importorskip("ncnn", reason="the README's engine block needs the engines extra")
    (tmp_path / "samples").symlink_to(ROOT / "samples")
    kinds = [k for k, _ in blocks()]
    assert kinds.count("bash") >= 3 and kinds.count("console") == 1, kinds
    ran, left, not_run = 0, [], []
    openvino = _openvino()
    for kind, body in blocks():
        if kind == "venv":
            continue  # test_venv_recipes_are_what_ci_engines_runs
        if kind == "console":
            first, *expected = body.rstrip("\n").splitlines()
            p = headcut(shlex.split(first[2:])[1:], tmp_path)
            assert p.returncode == 0, p.stdout + p.stderr
            got = p.stdout.rstrip("\n").replace(str(tmp_path), "/home/me").splitlines()
            assert [NUMBER.sub("<n>", x) for x in got] == [NUMBER.sub("<n>", x) for x in expected], p.stdout
            decode = next(x for x in got if x.strip().startswith("decode"))
            errs, allowed = [float(v) for v in NUMBER.findall(decode.split("allowed")[0])], 1e-3
            assert errs and max(errs) < allowed, decode
            ran += 1
            continue
        run, skipped = commands(body)
        left += skipped
        for argv in run:
            if not openvino and ("openvino" in argv or any(a.endswith(".xml") for a in argv)):
                not_run.append(argv)  # the OpenVINO block: CI installs openvino (checked below)
                continue
            p = headcut(argv, tmp_path)
            assert p.returncode == 0, f"README: headcut {' '.join(argv)} -> exit {p.returncode}\n{p.stdout}{p.stderr}"
            ran += 1
    assert ran >= 8
    written = set(os.listdir(tmp_path))
    assert {"raw.onnx", "raw-inplace.onnx", "raw-af.onnx", "boxes.png", "raw.mnn", "raw.param"} <= written, written
    assert (tmp_path / "ov" / "raw.xml").is_file() == openvino and len(not_run) == (0 if openvino else 3), not_run
    # what the README tells a user to install, and its test command, are what CI runs from scratch
    ci = [shlex.split(x) for x in (ROOT / ".ci" / "run").read_text().splitlines() if x and not x.startswith("#")]
    ci_pip = [x[4:] for x in ci if x[:4] == ["python", "-m", "pip", "install"]]
    assert ["python", "-m", "pytest", "-q"] in ci and ["python", "-m", "pytest", "-q"] in left
    for step in left:
        if step[0] != "pip":
            continue
        if step[2:] in ([".[engines]"], ["."], [".[openvino]"]):
            # CI installs the same package, every extra
            assert ["-e", ".[test,engines,notebook,openvino]"] in ci_pip
        else:
            assert step[2:] in ci_pip, step


def test_venv_recipes_are_what_ci_engines_runs():
    """A README ``sh`` block (an engine's own virtualenv, e.g. RKNN's, which no single pip resolve holds) is not
    run here; every pinned requirement it installs must be one .ci/engines installs, so the two cannot drift."""
    recipes = [body for kind, body in blocks() if kind == "venv"]
    assert recipes, "the README has no engine virtualenv recipe"
    ci = (ROOT / ".ci" / "engines").read_text()
    for body in recipes:
        pins = [a for a in shlex.split(body.replace("\\\n", " "), comments=True) if re.search(r"[=<>]=", a)]
        assert pins, body
        for pin in pins:
            assert pin in ci, f"README recipe installs {pin!r}, which .ci/engines does not"
