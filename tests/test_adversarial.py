"""Wrong cuts must never be certified: exports whose decode differs from what the locator reads.

Each model below passes the locator's structural and constant checks (or is refused by them) but
decodes differently from the geometry headcut records. ``strip`` must exit 3 and write nothing, and
``headcut verify`` of a raw model written with ``--no-verify`` must say DIFFERENT and exit 3 — with
one level-2 wh logit of 30 present in every model, which used to inflate the tolerance to 6e8 px.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from conftest import digest
from onnx import numpy_helper

from onnx_headcut.synth import yolov6_v1


def headcut(*args):
    p = subprocess.run([sys.executable, "-m", "onnx_headcut", *map(str, args)], capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def _const(model: onnx.ModelProto, name: str) -> np.ndarray:
    for t in model.graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output[0] == name:
            return numpy_helper.to_array(n.attribute[0].t)
    raise KeyError(name)


def _set_const(model: onnx.ModelProto, name: str, value: np.ndarray) -> None:
    for t in model.graph.initializer:
        if t.name == name:
            t.CopyFrom(numpy_helper.from_array(value.astype(numpy_helper.to_array(t).dtype), name))
            return
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output[0] == name:
            n.attribute[0].t.CopyFrom(numpy_helper.from_array(value.astype(np.float32)))
            return
    raise KeyError(name)


def _producer(model, tensor):
    return next(n for n in model.graph.node if tensor in n.output)


def _consumers(model, tensor):
    return [n for n in model.graph.node if tensor in n.input]


def _exps(model):
    return [n for n in model.graph.node if n.op_type == "Exp"]  # one per level, stride ascending


def big_logit(model: onnx.ModelProto) -> onnx.ModelProto:
    """Level 2's dw logit becomes 30 everywhere (wh = e^30 * 32 ~ 3.4e14 px): the value that used to
    widen the tolerance of every other element."""
    conv = next(n for n in model.graph.node if n.op_type == "Conv" and "reg_preds.2" in n.input[1])
    w, b = _const(model, conv.input[1]).copy(), _const(model, conv.input[2]).copy()
    w[2] = 0
    b[2] = 30.0
    _set_const(model, conv.input[1], w)
    _set_const(model, conv.input[2], b)
    return model


def doubled_stride(model):
    """Level 0's wh is multiplied by 16 instead of its stride 8 (16 is a stride of the model)."""
    mul = _consumers(model, _exps(model)[0].output[0])[0]
    k = next(i for i in mul.input if i != _exps(model)[0].output[0])
    _set_const(model, k, np.array(16.0, np.float32))
    return model


def swapped_levels(model):
    """The final Concat joins level 1 before level 0: rows no longer ascend by stride."""
    cat = next(n for n in model.graph.node if n.output[0] == "outputs")
    cat.input[0], cat.input[1] = cat.input[1], cat.input[0]
    return model


def add_to_sub(model):
    """Level 1 computes xy = (d - grid) * s."""
    add = next(n for n in model.graph.node if n.op_type == "Add" and
               _const(model, n.input[1]).shape[2:4] == (20, 20))
    add.op_type = "Sub"
    return model


def exp_to_sigmoid(model):
    """Level 0 computes wh = sigmoid(d) * s."""
    _exps(model)[0].op_type = "Sigmoid"
    return model


def shifted_grid(model):
    """Level 2's grid constant is shifted by one cell in x."""
    add = next(n for n in model.graph.node if n.op_type == "Add" and
               _const(model, n.input[1]).shape[2:4] == (10, 10))
    g = _const(model, add.input[1]).copy()
    g[..., 0] += 1
    _set_const(model, add.input[1], g)
    return model


#: mutation: exit code strip must give (3: the verification catches it; 2: the locator already refuses,
#: with what its one line must say)
WRONG = {"doubled-stride": (doubled_stride, 3), "swapped-levels": (swapped_levels, 3),
         "add-to-sub": (add_to_sub, 2), "exp-to-sigmoid": (exp_to_sigmoid, 3), "shifted-grid": (shifted_grid, 2)}
REFUSAL = {"add-to-sub": "the decode has Sub on the head's values", "shifted-grid": "grid constant"}


@pytest.mark.parametrize("case", list(WRONG))
def test_a_wrong_cut_is_never_written(case, tmp_path):
    mutate, expected = WRONG[case]
    onnx.save(mutate(big_logit(yolov6_v1(width=8))), str(tmp_path / "in.onnx"))
    before = digest(tmp_path / "in.onnx")
    code, out, err = headcut("strip", tmp_path / "in.onnx", "-o", tmp_path / "raw.onnx")
    assert code == expected, (out, err)
    line = err.strip().splitlines()
    assert len(line) == 1 and "Traceback" not in err
    if expected == 3:
        assert "verification failed" in line[0] and "nothing written" in line[0]
        assert "layer 2 (decode = original)" in line[0] and "worst at row" in line[0] and "level" in line[0]
    else:
        assert REFUSAL[case] in line[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.onnx"] and digest(tmp_path / "in.onnx") == before


@pytest.mark.parametrize("case", [c for c, (_, e) in WRONG.items() if e == 3])
def test_headcut_verify_says_different(case, tmp_path):  # (refused cases have no raw model to verify)
    """A raw model written without the check (--no-verify) is caught by ``headcut verify``."""
    mutate, _ = WRONG[case]
    onnx.save(mutate(big_logit(yolov6_v1(width=8))), str(tmp_path / "in.onnx"))
    code, _, err = headcut("strip", tmp_path / "in.onnx", "-o", tmp_path / "raw.onnx", "--no-verify")
    assert code == 0, err
    code, out, err = headcut("verify", tmp_path / "in.onnx", tmp_path / "raw.onnx")
    assert code == 3 and "DIFFERENT" in out and "layer 2" in err and "Traceback" not in err


def test_the_large_logit_alone_verifies_with_the_input_size_tolerance(tmp_path):
    """The unmodified model with the 3.4e14 px boxes is a correct cut: it passes, and the box
    tolerance printed is the input size's (1e-3 px at 320), not one scaled by the data."""
    onnx.save(big_logit(yolov6_v1(width=8)), str(tmp_path / "in.onnx"))
    code, out, err = headcut("strip", tmp_path / "in.onnx", "-o", tmp_path / "raw.onnx")
    assert code == 0, err
    assert "allowed 0.001 px boxes, 0.001 scores, + 1e-05·|value|" in out and "(exact)" in out


def test_layer_1_catches_a_tail_that_is_not_the_convs(tmp_path):
    """A raw model whose output is not the conv values (one column scaled) fails layer 1 even though
    layer 2 would be fooled by a matching change to the metadata."""
    from onnx_headcut.check import verify
    from onnx_headcut.strip import inspect

    onnx.save(yolov6_v1(width=8), str(tmp_path / "in.onnx"))
    code, _, err = headcut("strip", tmp_path / "in.onnx", "-o", tmp_path / "raw.onnx")
    assert code == 0, err
    raw = onnx.load(str(tmp_path / "raw.onnx"))
    out = raw.graph.output[0].name
    prod = _producer(raw, out)
    prod.output[0] = "pre"
    scale = numpy_helper.from_array(np.array(1.0 + 1e-6, np.float32), "scale")
    raw.graph.initializer.append(scale)
    raw.graph.node.append(onnx.helper.make_node("Mul", ["pre", "scale"], [out]))
    onnx.save(raw, str(tmp_path / "bad.onnx"))
    meta = __import__("json").loads(raw.metadata_props[0].value)
    res = verify(tmp_path / "in.onnx", tmp_path / "bad.onnx", inspect(tmp_path / "in.onnx").head, meta)
    (c,) = res.checks
    assert c.decode.ok and not c.layout.ok and not c.ok  # layer 2 alone would have passed it
    assert "layer 1" in c.failure()


@pytest.mark.parametrize("opt,value", [("--tol", "inf"), ("--tol", "0"), ("--tol", "-1"), ("--tol", "nan"),
                                       ("--tol", "2"), ("--conf", "1.5"), ("--conf", "-0.1"), ("--iou", "2")])
def test_tolerances_are_range_checked(opt, value, tmp_path):
    onnx.save(yolov6_v1(width=8), str(tmp_path / "in.onnx"))
    for verb in (["strip", tmp_path / "in.onnx", "-o", tmp_path / "raw.onnx"],
                 ["verify", tmp_path / "in.onnx", tmp_path / "in.onnx"]):
        code, _, err = headcut(*verb, opt, value)
        assert code == 2 and opt in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.onnx"]


def saturated(model):
    """Objectness and class logits of +30 everywhere: every score is exactly 1.0, 8400 ties."""
    for n in model.graph.node:
        if n.op_type == "Conv" and ("obj_preds" in n.input[1] or "cls_preds" in n.input[1]):
            b = _const(model, n.input[2]).copy()
            b[:] = 30.0
            _set_const(model, n.input[2], b)
    return model


def test_tied_scores_are_not_split_by_a_cap(tmp_path):
    """8400 rows all scoring 1.0: both sides keep the same detections (no top-300 cap among ties),
    at the conf asked for, never a lowered one."""
    onnx.save(saturated(yolov6_v1(width=8, size=(640, 640))), str(tmp_path / "in.onnx"))
    code, out, err = headcut("strip", tmp_path / "in.onnx", "-o", tmp_path / "raw.onnx", "--conf", "0.6")
    assert code == 0, err
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("detect"))
    n = int(line.split(": ")[1].split(" vs ")[0])
    assert "conf 0.6," in line and n > 300 and f"{n} vs {n} detections, {n} matched" in line
    code, out, err = headcut("verify", tmp_path / "in.onnx", tmp_path / "raw.onnx", "--conf", "0.6")
    assert code == 0 and "OK" in out and "conf 0.6," in out, err


def test_nothing_passing_conf_is_said(tmp_path):
    onnx.save(yolov6_v1(width=8), str(tmp_path / "in.onnx"))
    code, out, err = headcut("strip", tmp_path / "in.onnx", "-o", tmp_path / "raw.onnx", "--conf", "0.9")
    assert code == 0, err
    assert "0 vs 0 detections (no score reaches 0.9 on either side)" in out


def test_layer_1_reads_the_convs_from_the_located_graph_when_the_original_renamed_them(tmp_path):
    """When folding renamed the prediction convs' tensors, layer 1 reads them from the graph the
    head was located on (``conv_source``), and layer 2 still compares with the user's original."""
    from onnx_headcut.check import verify
    from onnx_headcut.strip import inspect

    onnx.save(yolov6_v1(width=8), str(tmp_path / "located.onnx"))
    code, _, err = headcut("strip", tmp_path / "located.onnx", "-o", tmp_path / "raw.onnx")
    assert code == 0, err
    head = inspect(tmp_path / "located.onnx").head
    renamed = yolov6_v1(width=8)
    convs = {b.tensor for lv in head.levels for b in lv.branches}
    for n in renamed.graph.node:
        n.output[:] = [o + "_renamed" if o in convs else o for o in n.output]
        n.input[:] = [i + "_renamed" if i in convs else i for i in n.input]
    onnx.save(renamed, str(tmp_path / "original.onnx"))
    raw = onnx.load(str(tmp_path / "raw.onnx"))
    meta = __import__("json").loads(raw.metadata_props[0].value)
    res = verify(tmp_path / "original.onnx", tmp_path / "raw.onnx", head, meta,
                 conv_source=(tmp_path / "located.onnx").read_bytes())
    assert res.ok and res.checks[0].layout.max_abs_err == 0
    from onnx_headcut.errors import VerificationError

    with pytest.raises(VerificationError, match="cannot run the original"):
        verify(tmp_path / "original.onnx", tmp_path / "raw.onnx", head, meta)  # the tensors are not there


def _insert_after(model, node, new_nodes):
    i = list(model.graph.node).index(node)
    for j, n in enumerate(new_nodes):
        model.graph.node.insert(i + 1 + j, n)


def branch_on_values(model):
    """Level 0's wh uses stride 16 where trunc(dw) == 1: a branch verify's random input never takes
    (its level-0 dw logits lie in (-0.1, 0)), common with trained weights."""
    h = onnx.helper
    exp0 = _exps(model)[0]
    mul0 = _consumers(model, exp0.output[0])[0]
    old = mul0.output[0]
    mul0.output[0] = old + "_s8"
    _insert_after(model, mul0, [
        h.make_node("Constant", [], ["k16"], value=numpy_helper.from_array(np.array(16.0, np.float32))),
        h.make_node("Mul", [exp0.output[0], "k16"], ["wh16"]),
        h.make_node("Cast", [exp0.input[0]], ["dw_int"], to=onnx.TensorProto.INT32),
        h.make_node("Constant", [], ["k1"], value=numpy_helper.from_array(np.array(1, np.int32))),
        h.make_node("Equal", ["dw_int", "k1"], ["cond"]),
        h.make_node("Where", ["cond", "wh16", old + "_s8"], [old])])
    return model


def shifted_boxes(model, shift=0.9):
    """Level 0's box centres minus 0.9 px: under float16's rounding tolerance at 320 px (1 px)."""
    add0 = next(n for n in model.graph.node if n.op_type == "Add" and _const(model, n.input[1]).shape[2:4] == (40, 40))
    mul0 = _consumers(model, add0.output[0])[0]
    old = mul0.output[0]
    mul0.output[0] = old + "_pre"
    _insert_after(model, mul0, [
        onnx.helper.make_node("Constant", [], ["kshift"], value=numpy_helper.from_array(np.array(shift, np.float32))),
        onnx.helper.make_node("Sub", [old + "_pre", "kshift"], [old])])
    return model


def test_a_decode_that_branches_on_the_head_values_is_refused(tmp_path):
    onnx.save(branch_on_values(yolov6_v1(width=4, nc=3, size=(128, 128))), str(tmp_path / "in.onnx"))
    code, _, err = headcut("strip", tmp_path / "in.onnx", "-o", tmp_path / "raw.onnx")
    assert code == 2 and "branches on its values" in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.onnx"]


def test_an_offset_the_formula_does_not_have_is_refused_even_under_the_fp16_tolerance(tmp_path):
    from onnx_headcut.synth.builder import to_half

    m = shifted_boxes(yolov6_v1(width=4, nc=3))
    to_half(m)
    onnx.save(m, str(tmp_path / "in.onnx"))
    code, _, err = headcut("strip", tmp_path / "in.onnx", "-o", tmp_path / "raw.onnx")
    assert code == 2 and "the decode has Sub on the head's values" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.onnx"]


def test_an_anchor_free_decode_with_an_extra_scale_is_refused(tmp_path):
    """YOLOv6 anchor-free: the boxes scaled by 1.001 before the output; only anchor points, strides,
    /2 and the DFL weights may appear on the data path."""
    from onnx_headcut.synth import yolov6_af

    m = yolov6_af(width=8)
    out = m.graph.output[0].name
    final = next(n for n in m.graph.node if out in n.output)
    final.output[0] = "pre_scale"
    m.graph.node.append(onnx.helper.make_node("Constant", [], ["k"],
                                              value=numpy_helper.from_array(np.array(1.001, np.float32))))
    m.graph.node.append(onnx.helper.make_node("Mul", ["pre_scale", "k"], [out]))
    onnx.save(m, str(tmp_path / "in.onnx"))
    code, _, err = headcut("strip", tmp_path / "in.onnx", "-o", tmp_path / "raw.onnx")
    assert code == 2 and "that the anchor-free formula does not have" in err, err


def test_layer_3_class_near_ties_are_not_a_disagreement_but_a_class_swap_is():
    """Two classes whose scores tie within the score tolerance may come out of argmax either way on two
    runtimes (a random-weight YOLOv8 gave class 65 at 5.3349e-5 and class 11 at 5.3351e-5 on one side, the
    reverse on the other): layer 3 takes the reference's class there. A clear swap still fails."""
    from onnx_headcut.check.layers import detection_check

    rows = np.zeros((1, 3, 5 + 4), np.float32)
    rows[0, :, :4] = [[50, 50, 20, 20], [150, 150, 20, 20], [250, 60, 30, 30]]
    rows[0, :, 4] = 1
    rows[0, 0, 5:] = [0.9, 0.1, 0.0, 0.0]
    rows[0, 1, 5:] = [0.0, 0.7, 0.7 - 2e-7, 0.0]  # class 1 by a hair
    rows[0, 2, 5:] = [0.0, 0.0, 0.0, 0.6]
    got = rows.copy()
    got[0, 1, 5:] = [0.0, 0.7 - 2e-7, 0.7, 0.0]  # the hair the other way
    d = detection_check(rows, got, conf=0.25, iou=0.45)
    assert (d.n_ref, d.n_got, d.matched) == (3, 3, 3)
    swapped = rows.copy()
    swapped[0, 1, 5:] = [0.0, 0.2, 0.7, 0.0]  # class 2 clearly
    d = detection_check(rows, swapped, conf=0.25, iou=0.45)
    assert d.matched == 2 and not d.ok
