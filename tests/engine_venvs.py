"""What the engine tests share (tests/test_targets*.py, test_target_rknn.py, test_target_nncase.py): why a target
cannot run here (its worker interpreter, ``HEADCUT_PYTHON_<TARGET>``, lacks its packages), the CLI as a child
process, and the check of a mistake a user can make (one line, exit 2)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from onnx_headcut.engines import EngineError, interpreter, python_variable


def has(python: str, modules: tuple[str, ...]) -> bool:
    """``python`` can import each of ``modules`` (found, not imported: an engine import takes seconds)."""
    code = "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in sys.argv[1:]))"
    return subprocess.run([python, "-c", code, *modules], capture_output=True).returncode == 0


def skip_reason(engine: str, modules: tuple[str, ...], own_venv: str | None = None) -> str | None:
    """Why ``engine``'s tests skip here, or None. ``own_venv``: the engine runs only in a virtualenv of its own
    (``HEADCUT_PYTHON_<ENGINE>`` must be set; the text says where one comes from)."""
    var = python_variable(engine)
    if own_venv is not None and not os.environ.get(var, "").strip():
        return f"{var} is not set ({own_venv})"
    try:
        python = interpreter(engine)
    except EngineError as e:
        return str(e)
    if not has(python, modules):
        where = f"{var}={python}" if os.environ.get(var) else f"{var} is not set and this Python"
        return f"{engine} not installed: {where} lacks {', '.join(modules)}"
    return None


def needs(engine: str, modules: tuple[str, ...], own_venv: str | None = None):
    """Skip unless ``engine`` runs here (see :func:`skip_reason`)."""
    reason = skip_reason(engine, modules, own_venv)
    return pytest.mark.skipif(reason is not None, reason=reason or "")


def headcut(*args, env=None):
    """The CLI in a child process, ``env`` added to this one's."""
    return subprocess.run([sys.executable, "-m", "onnx_headcut", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def one_line_exit_2(p, *words):
    """``p`` failed as a user's mistake: exit 2, one line on stderr holding each of ``words``, no traceback."""
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    for w in words:
        assert w in lines[0], lines[0]
