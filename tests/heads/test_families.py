"""Family labels of the Ultralytics-style heads read from the structure (``heads/families.py``), and the
YOLOv9 dual head (``dual.py``): torch fixtures from the upstream blocks (``torch_ultralytics.py``) through
both exporters, the generator, the genuine Ultralytics 8.4 YOLOv8n export when ``../shared`` is there."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnx_headcut.check import deterministic_input, session
from onnx_headcut.decode import original_output
from onnx_headcut.graph import GraphIndex
from onnx_headcut.heads._match import upstream
from onnx_headcut.heads.families import DETECT_HEAD, FAMILIES, backbone, branch_convs, class_branch, ultralytics_family
from onnx_headcut.region import decode_region
from onnx_headcut.strip import inspect, strip
from onnx_headcut.synth.yolov8 import yolov8

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "ultralytics-8.4" / "yolov8n-tiny_320.onnx"

#: fixture: (family, version, what the reasons must say decided it)
CASES = {
    "yolov8": ("YOLOv8", "Ultralytics", "C2f blocks"),
    "yolo11": ("YOLO11", "Ultralytics", "C2PSA attention after SPPF"),
    "yolov10": ("YOLOv10", "Ultralytics", "SCDown"),
    "yolov9t": ("YOLOv9", "Ultralytics", "ADown/AConv downsampling"),
    "gelan": ("YOLOv9", "WongKinYiu", "WongKinYiu's DDetect"),
}


def _export(name: str, tmp_path: Path, dynamo: bool) -> Path:
    pytest.importorskip("torch")
    if dynamo:
        pytest.importorskip("onnxscript")
    import torch_ultralytics

    return torch_ultralytics.export(name, tmp_path / f"{name}.onnx", dynamo=dynamo)


def _strip_checked(src: Path, dst: Path):
    """strip, verified, layer 1 exact, one raw (1, 2100, 144) output; the metadata rebuilds the original."""
    res = strip(src, dst)
    assert res.verification.ok and res.verification.max_abs_err <= 1e-3
    assert all(c.layout.max_abs_err == 0 for c in res.verification.checks)  # layer 1 exact
    raw = onnx.load(str(dst))
    (out,) = raw.graph.output
    assert [d.dim_value for d in out.type.tensor_type.shape.dim] == [1, 2100, 144]
    assert set(decode_region(GraphIndex(raw), out.name).ops) <= {"Concat", "Reshape", "Transpose"}
    return res


@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
@pytest.mark.parametrize("name", list(CASES))
def test_family_from_structure(name, dynamo, tmp_path):
    family, version, decided = CASES[name]
    src = _export(name, tmp_path, dynamo)
    res = _strip_checked(src, tmp_path / "raw.onnx")
    assert (res.head.family, res.head.version) == (family, version), res.head.reasons
    assert any(decided in r for r in res.head.reasons), res.head.reasons
    assert (res.metadata["family"], res.metadata["version"]) == (family, version)
    assert res.metadata["reg_max"] == 16 and res.metadata["dfl_bins"] == 16


def test_plain_backbone_names_only_the_head(tmp_path):
    """The YOLOv8 Detect head on plain stride-2 convs (no C2f, SPPF, ...): "Ultralytics Detect head", and why."""
    pytest.importorskip("torch")
    import torch_families

    src = torch_families.export_yolov8(tmp_path / "in.onnx")
    res = strip(src, tmp_path / "raw.onnx")
    assert res.head.family == DETECT_HEAD and res.verification.ok
    assert any("only the head is named" in r for r in res.head.reasons)
    from onnx_headcut.report import strip_text

    assert f"head      {DETECT_HEAD}  decode=dist_anchor" in strip_text(res)  # not "... head Ultralytics"


def test_class_branch_walks_the_whole_chain():
    """YOLO11's first depthwise conv sits five nodes above the class conv (SiLU = Sigmoid + Mul after each conv):
    the walk reaches it and stops at the feature map both branches read; YOLOv8's generator has one 3x3 conv."""
    for kw, kind, n in ((dict(width=8, yolo11=True), "dw", 4), (dict(width=8), "plain", 1)):
        ix = GraphIndex(yolov8(**kw))
        cls = next(t for t in decode_region(ix, "output0").frontier if "cv3" in ix.producer[t].input[1])
        convs = branch_convs(ix, cls)
        assert class_branch(ix, cls)[0] == kind and len(convs) == n
        top = convs[-1]
        assert len(ix.consumers[top.input[0]]) >= 2  # the level's feature map: box and class branch read it
        if kind == "dw":
            near = convs[1]  # the depthwise conv nearest the class conv: what a 4-node look-up missed
            assert {a.name: a.i for a in near.attribute}["group"] == 16
            assert near in upstream(ix, cls, 5) and near not in upstream(ix, cls, 4)


def test_generated_labels_and_yolo26():
    m = yolov8(width=8, yolo11=True)
    ix = GraphIndex(m)
    convs = decode_region(ix, "output0").frontier
    box = next(t for t in convs if "cv2" in ix.producer[t].input[1])
    cls = next(t for t in convs if "cv3" in ix.producer[t].input[1])
    assert ultralytics_family(ix, box, cls, 16).name == "YOLO11"
    fam = ultralytics_family(ix, box, cls, 1)  # no DFL: what the YOLO26 matcher passes
    assert fam.name == "YOLO26" and any("no DFL" in r for r in fam.reasons)
    assert backbone(ix).attention == 1 and backbone(ix).sppf == 1
    assert set(FAMILIES) >= {"YOLOv8", "YOLOv9", "YOLOv10", "YOLO11", "YOLO26", DETECT_HEAD}


@pytest.mark.skipif(not REFERENCE.exists(), reason="the genuine Ultralytics 8.4 export is not here (../shared)")
def test_yolov8_fixture_matches_the_genuine_export(tmp_path):
    """Genuine Ultralytics 8.4 yolov8n: labelled YOLOv8; the torch fixture's decode region has its op histogram."""
    genuine = inspect(REFERENCE)
    assert (genuine.head.family, genuine.head.version) == ("YOLOv8", "Ultralytics")
    assert any("C2f blocks" in r for r in genuine.head.reasons)
    ours = inspect(_export("yolov8", tmp_path, False))
    assert ours.decode_ops == genuine.decode_ops and ours.cut.removed == genuine.cut.removed


# --- the YOLOv9 dual head (DualDDetect, not reparameterised) ------------------------------------------------

@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
def test_dual_head_cuts_the_inference_branch(dynamo, tmp_path):
    src = _export("dual", tmp_path, dynamo)
    m = onnx.load(str(src))
    outs = [o.name for o in m.graph.output]
    assert len(outs) == 2 and outs[0] == "output0"  # upstream names only y1, the auxiliary branch
    res = _strip_checked(src, tmp_path / "raw.onnx")
    assert (res.head.family, res.head.version) == ("YOLOv9", "WongKinYiu")
    assert res.head.output_name == outs[1]  # y2: the main branch, pred[0][1]
    (note,) = [n for n in res.head.notes if n.startswith("dual head")]
    assert f"kept output 1 '{outs[1]}'" in note and f"dropped output 0 '{outs[0]}'" in note and "pred[0][1]" in note
    assert res.metadata["original_output"]["name"] == outs[1]
    raw = onnx.load(str(tmp_path / "raw.onnx"))
    assert [o.name for o in raw.graph.output] == [outs[1]]
    # the raw model decodes to the kept original output, and not to the auxiliary one
    x = deterministic_input((1, 3, 320, 320), seed=5)
    y_main, y_aux = (session(str(src)).run([o], {"images": x})[0] for o in (outs[1], outs[0]))
    r = session(str(tmp_path / "raw.onnx")).run(None, {"images": x})[0]
    decoded = original_output(r, res.metadata)
    assert np.abs(decoded - y_main).max() <= 1e-3 < np.abs(decoded - y_aux).max()


def test_two_outputs_of_different_heads_are_refused(tmp_path, monkeypatch):
    """Two decoded outputs that are not one dual head: refused (exit 2 class), nothing written. Same output shape
    but 16 vs 8 DFL bins: "not one dual head"; different shapes: the two-output refusal as before."""
    import importlib

    from onnx_headcut.errors import NoHeadError

    gen = importlib.import_module("onnx_headcut.synth.yolov8")  # the module (the package exports the function)

    a = yolov8(width=8)
    monkeypatch.setattr(gen, "REG_MAX", 8)
    onnx.save(_two_models(a, yolov8(width=8, seed=1)), str(tmp_path / "two.onnx"))
    with pytest.raises(NoHeadError, match="not one dual head"):
        strip(tmp_path / "two.onnx", tmp_path / "raw.onnx")
    onnx.save(_two_models(a, yolov8(width=8, nc=5, seed=1)), str(tmp_path / "shapes.onnx"))
    with pytest.raises(NoHeadError, match="expected one decoded output, found 2"):
        strip(tmp_path / "shapes.onnx", tmp_path / "raw.onnx")
    assert not (tmp_path / "raw.onnx").exists()


def _two_models(a: onnx.ModelProto, b: onnx.ModelProto) -> onnx.ModelProto:
    """One graph with ``a``'s and ``b``'s nodes on the same input, ``b``'s names prefixed, both outputs."""
    b = onnx.compose.add_prefix(b, "b_", rename_inputs=False)
    g = onnx.helper.make_graph(list(a.graph.node) + list(b.graph.node), "two", list(a.graph.input),
                               [a.graph.output[0], b.graph.output[0]],
                               list(a.graph.initializer) + list(b.graph.initializer))
    m = onnx.helper.make_model(g, opset_imports=list(a.opset_import))
    m.ir_version = a.ir_version
    return m


def test_detect_on_the_dual_original_reads_the_inference_branch(tmp_path):
    """``detect`` on the dual-head original decodes output 1 (what strip kept), so it equals detect on the raw
    (at a threshold above the tied scores of the random weights, whose NMS order is arbitrary)."""
    from PIL import Image

    from onnx_headcut.detect import detect

    src = _export("dual", tmp_path, False)
    strip(src, tmp_path / "raw.onnx")
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (240, 320, 3), np.uint8)).save(tmp_path / "p.png")
    a, b = (detect(p, tmp_path / "p.png", conf=0.6) for p in (src, tmp_path / "raw.onnx"))
    assert a.kind == "decoded" and b.kind == "raw" and len(a.detections) == len(b.detections) > 0
    def rows(res):  # tied scores come out in either order: compare sorted rows
        return sorted((d.cls, round(d.score, 4), *np.round(d.box, 1).tolist()) for d in res.detections)

    assert rows(a) == rows(b)


def test_depthwise_head_without_telling_backbone_names_only_the_head():
    """YOLO11's class branch but no C2PSA attention (nor SCDown): YOLO11, YOLOv10, YOLO12 ... cannot be told
    apart, so the label is the head's, and the reasons say the backbone did not decide."""
    m = yolov8(width=8, yolo11=True)
    for n in m.graph.node:
        if n.op_type == "Softmax" and n.attribute[0].i == -1:  # the attention's, not the DFL's (axis 1)
            n.op_type = "Sigmoid"
            del n.attribute[:]
    ix = GraphIndex(m)
    convs = decode_region(ix, "output0").frontier
    box = next(t for t in convs if "cv2" in ix.producer[t].input[1])
    cls = next(t for t in convs if "cv3" in ix.producer[t].input[1])
    fam = ultralytics_family(ix, box, cls, 16)
    assert fam.name == DETECT_HEAD and backbone(ix).attention == 0
    assert any("depthwise + pointwise" in r for r in fam.reasons) and any("only the head" in r for r in fam.reasons)
