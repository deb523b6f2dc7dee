"""The README's Python API block runs as written (on the bundled samples, in a scratch folder)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_python_api_block_runs(tmp_path, monkeypatch):
    text = (ROOT / "README.md").read_text()
    start = text.index("## Python API")
    block = text[text.index("```python\n", start) + len("```python\n"):]
    block = block[:block.index("```")]
    (tmp_path / "samples").symlink_to(ROOT / "samples")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)  # noqa: S102 - the project's own README
    assert scope["res"].verification.ok and scope["res"].verification.checks[0].layout.max_abs_err == 0
    assert scope["boxes"].shape == (1, 2100, 85) and scope["dets"].shape[1] == 6
    assert scope["report"].max_rank_after <= 4
    assert sorted(os.listdir(tmp_path)) == ["raw-api.head.json", "raw-api.onnx", "samples"]
