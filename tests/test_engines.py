"""headcut convert + verify on MNN and ncnn, for a fixture of every supported head."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

pytest.importorskip("MNN", reason="engines extra not installed")
pytest.importorskip("ncnn", reason="engines extra not installed")

from conftest import model_conf  # noqa: E402

from onnx_headcut.check.engine import verify_engine  # noqa: E402
from onnx_headcut.convert import convert, param_blobs  # noqa: E402
from onnx_headcut.engines import EngineError, _need, pnnx_binary  # noqa: E402
from onnx_headcut.heads import Layout  # noqa: E402
from onnx_headcut.strip import read_metadata, strip  # noqa: E402
from onnx_headcut.synth import yolov5, yolov6_af, yolov6_v1, yolov8, yolox  # noqa: E402

HEADS = {
    "v0.1.0": (yolov6_v1, dict(width=8)),
    "anchor-free": (yolov6_af, dict(width=8)),
    "anchor-free-dfl": (yolov6_af, dict(width=8, reg_max=16)),
    "four-level-lite": (yolov6_af, dict(width=4, levels=4, size=(192, 320), shuffle=True, simplify=True)),
    "yolox": (yolox, dict(width=8)),
    "yolov5": (yolov5, dict(width=8)),
    "yolov7": (yolov5, dict(width=8, v7=True)),
    "yolov8": (yolov8, dict(width=8)),
}


@pytest.fixture(scope="module")
def raw_models(tmp_path_factory):
    out = {}
    for name, (make, kw) in HEADS.items():
        d = tmp_path_factory.mktemp(name)
        onnx.save(make(**kw), str(d / "original.onnx"))
        strip(d / "original.onnx", d / "raw.onnx")
        out[name] = d
    return out


@pytest.mark.parametrize("engine", ["mnn", "ncnn"])
@pytest.mark.parametrize("head", list(HEADS))
def test_convert_and_verify_raw_on_engine(head, engine, raw_models):
    d = raw_models[head]
    res = convert(d / "raw.onnx", engine, force=True)
    names = {p.name for p in res.files}
    # raw.head.json is strip's sidecar, already holding the model's metadata: left as it is, not rewritten
    assert names == ({"raw.mnn"} if engine == "mnn" else {"raw.param", "raw.bin"})
    assert json.loads((d / "raw.head.json").read_text()) == read_metadata(d / "raw.onnx")
    assert not list(d.glob("*pnnx*")) and not list(d.glob("*ncnn.py"))  # pnnx's scratch files stay out
    if engine == "mnn":
        assert res.inputs in (("images",), ("image_arrays",))
        assert res.outputs == (onnx.load(str(d / "raw.onnx")).graph.output[0].name,)
    else:
        assert (res.inputs, res.outputs) == (("in0",), ("out0",))
    (check,) = verify_engine(d / "original.onnx", res.model, conf=model_conf(d / "original.onnx"))
    assert check.engine == engine
    assert check.max_abs_err_boxes <= 1e-3 and check.max_abs_err_scores <= 1e-3
    assert check.layout is not None and check.layout.ok and check.layout.max_abs_err <= 1e-3
    det = check.detections
    assert det.n_ref == det.n_got == det.matched >= 5 and det.min_iou >= 0.99
    assert check.ok


def test_levels_layout_on_ncnn_and_mnn(tmp_path):
    onnx.save(yolov6_af(width=8, reg_max=16), str(tmp_path / "original.onnx"))
    strip(tmp_path / "original.onnx", tmp_path / "raw.onnx", layout=Layout("levels"))
    for engine in ("mnn", "ncnn"):
        res = convert(tmp_path / "raw.onnx", engine, force=True)
        assert len(res.outputs) == 3
        assert all(c.ok for c in verify_engine(tmp_path / "original.onnx", res.model))


def test_cli_convert_prints_blob_names_and_verify_fails_on_a_different_model(tmp_path):
    onnx.save(yolov6_af(width=8, seed=1), str(tmp_path / "a.onnx"))
    onnx.save(yolov6_af(width=8, seed=2), str(tmp_path / "b.onnx"))
    strip(tmp_path / "b.onnx", tmp_path / "raw_b.onnx")

    def headcut(*args):
        return subprocess.run([sys.executable, "-m", "onnx_headcut", *map(str, args)], capture_output=True, text=True)

    p = headcut("convert", tmp_path / "raw_b.onnx", "--to", "ncnn")
    assert p.returncode == 0 and "input     in0" in p.stdout and "outputs   out0" in p.stdout
    p = headcut("verify", tmp_path / "b.onnx", tmp_path / "raw_b.param")
    assert p.returncode == 0 and "OK" in p.stdout
    p = headcut("verify", tmp_path / "a.onnx", tmp_path / "raw_b.param")  # wrong original: must say so
    assert p.returncode == 3 and "differ" in p.stderr and "Traceback" not in p.stderr


def test_original_with_scatternd_fails_on_ncnn_with_the_reason(tmp_path):
    """convert runs what it wrote once: a .param ncnn cannot load is refused (exit 3), nothing written."""
    from onnx_headcut.errors import VerificationError

    onnx.save(yolov6_v1(width=8, inplace=True), str(tmp_path / "original.onnx"))
    with pytest.raises(VerificationError, match="does not run on ncnn, nothing written: .*layers ncnn does not have: "
                                                ".*ScatterND"):
        convert(tmp_path / "original.onnx", "ncnn")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["original.onnx"]


def test_param_blobs(tmp_path):
    p = tmp_path / "m.param"
    p.write_text("7767517\n3 3\nInput in0 0 1 in0\nConvolution c 1 1 in0 a 0=1\nSplit s 1 2 a out1 out0\n")
    assert param_blobs(p) == (["in0"], ["out0", "out1"])


def test_missing_engine_hint(monkeypatch):
    with pytest.raises(EngineError, match=r'pip install "onnx_headcut\[engines\]"'):
        _need("no_such_engine_module", "mnn")
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "pnnx" else real(n, *a))
    with pytest.raises(EngineError, match="--no-deps pnnx.*unpinned torch"):
        pnnx_binary()


def test_mnn_tools_package_is_never_imported(raw_models):
    """MNN.tools pip-installs a logging SDK and phones home on import: headcut must never load it."""
    code = ("import sys; from onnx_headcut.convert import convert; "
            "from onnx_headcut.check.engine import verify_engine; "
            "print('MNN.tools' in sys.modules, 'MNN' in sys.modules, 'torch' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.stdout.split()[-3:] == ["False", "False", "False"]
    src = Path(__file__).resolve().parents[1] / "onnx_headcut"
    for f in src.rglob("*.py"):
        text = f.read_text()
        assert "import MNN.tools" not in text and "from MNN.tools" not in text and "from MNN import tools" not in text


def test_readme_engine_table_is_current():
    """The README table is generated by scripts/engine_table.py; its verdicts must match a fresh run."""
    import importlib.util

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("engine_table", root / "scripts" / "engine_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    fresh = mod.verdicts(mod.table(["mnn", "ncnn"], int8=False))  # the targets every CI has, fp32
    readme = mod.verdicts((root / "README.md").read_text().split(mod.START)[1].split(mod.END)[0])
    assert set(fresh) == {"head", *(f"{t} fp32: original → raw" for t in ("mnn", "ncnn"))}
    for column, cells in fresh.items():
        assert readme.get(column) == cells, column


@pytest.mark.parametrize("head,layout", [("anchor-free-dfl", Layout("split", score_sum=True)),
                                         ("anchor-free-dfl", Layout("flat-split")),
                                         ("v0.1.0", Layout("split", keep_sigmoid=True)),
                                         ("v0.1.0", Layout("flat-split"))])
def test_split_layouts_on_ncnn_and_mnn(head, layout, tmp_path):
    """#15: the int8 layouts convert and verify on both engines, their outputs mapped by name (MNN) and
    in the ONNX model's order (ncnn's out0, out1, ...; the batch axis dropped and restored)."""
    make, kw = HEADS[head]
    onnx.save(make(**kw), str(tmp_path / "original.onnx"))
    res = strip(tmp_path / "original.onnx", tmp_path / "raw.onnx", layout=layout)
    names = [o["name"] for o in res.metadata["raw_outputs"]]
    assert len(names) == (len(layout.parts) * (3 if layout.kind == "split" else 1))
    for engine in ("mnn", "ncnn"):
        conv = convert(tmp_path / "raw.onnx", engine, force=True)
        assert list(conv.outputs) == (names if engine == "mnn" else [f"out{k}" for k in range(len(names))])
        (check,) = verify_engine(tmp_path / "original.onnx", conv.model, conf=model_conf(tmp_path / "original.onnx"))
        assert check.ok and check.engine == engine
        assert check.layout is not None and check.layout.ok and check.layout.max_abs_err <= 1e-3
        assert check.max_abs_err_boxes <= 1e-3 and check.max_abs_err_scores <= 1e-3
        assert check.detections.matched >= 5
