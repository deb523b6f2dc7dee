"""notebooks/inspect_yolov6.ipynb runs clean (nbclient), and is committed without outputs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="notebook extra not installed")
nbclient = pytest.importorskip("nbclient", reason="notebook extra not installed")
pytest.importorskip("netron", reason="notebook extra not installed")
pytest.importorskip("matplotlib", reason="notebook extra not installed")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "inspect_yolov6.ipynb"


def test_notebook_extra_brings_jupyter_nbconvert():
    """Issue 13: ``jupyter nbconvert`` works after ``pip install ".[notebook]"``."""
    extra = re.search(r"^notebook = \[(.*)\]$", (ROOT / "pyproject.toml").read_text(), re.M)
    assert extra and re.search(r'"nbconvert[>=<~ ]', extra.group(1)), extra
    jupyter = Path(sys.executable).with_name("jupyter")
    p = subprocess.run([str(jupyter), "nbconvert", "--version"], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.strip()[:1].isdigit(), p.stderr[-500:]


def test_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") and not c.get("execution_count") for c in nb.cells if c.cell_type == "code")
    assert NOTEBOOK.stat().st_size < 50_000


def scratch_folders() -> set[str]:
    return {n for n in os.listdir(tempfile.gettempdir()) if n.startswith("headcut-notebook-")}


def test_notebook_runs_clean():
    before = scratch_folders()
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    assert scratch_folders() == before  # issue 13: a run leaves no headcut-notebook-* folder behind
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "max abs error" in text and "(exact)" in text and "Serving" in text
    assert "matched (same class, IoU >= 0.99), min IoU" in text
    assert "scratch folder removed: True" in text
    images = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    assert images >= 5  # histogram, cut drawing, static picture, error plot, detections
