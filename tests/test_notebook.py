"""notebooks/inspect_yolov6.ipynb runs clean (nbclient), and is committed without outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="notebook extra not installed")
nbclient = pytest.importorskip("nbclient", reason="notebook extra not installed")
pytest.importorskip("netron", reason="notebook extra not installed")
pytest.importorskip("matplotlib", reason="notebook extra not installed")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "inspect_yolov6.ipynb"


def test_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") and not c.get("execution_count") for c in nb.cells if c.cell_type == "code")
    assert NOTEBOOK.stat().st_size < 50_000


def test_notebook_runs_clean():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "max abs error" in text and "(exact)" in text and "Serving" in text
    assert "matched (same class, IoU >= 0.99), min IoU" in text
    images = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    assert images >= 5  # histogram, cut drawing, static picture, error plot, detections
