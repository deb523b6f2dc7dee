"""The numpy reference decode, NMS and letterbox, on numbers worked out by hand."""

from __future__ import annotations

import numpy as np

from onnx_headcut.decode import (
    anchor_grid,
    class_span,
    decode,
    detect,
    letterbox,
    nms,
    postprocess,
    scale_boxes,
    sigmoid,
)

HEAD = {  # two levels on a 32x64 input, nc = 2: the JSON strip records
    "decode": "grid_exp_obj", "num_classes": 2, "input": {"name": "x", "shape": [1, 3, 32, 64]},
    "channels": [{"name": "box", "size": 4, "sigmoid": False}, {"name": "obj", "size": 1, "sigmoid": False},
                 {"name": "cls", "size": 2, "sigmoid": False}],
    "levels": [{"stride": 8, "grid": [4, 8], "first_row": 0, "rows": 32},
               {"stride": 16, "grid": [2, 4], "first_row": 32, "rows": 8}],
}


def test_anchor_grid_is_row_major_per_level():
    cells, strides = anchor_grid(HEAD)
    assert cells.shape == (40, 2) and strides.shape == (40, 1)
    assert cells[0].tolist() == [0, 0] and cells[1].tolist() == [1, 0] and cells[8].tolist() == [0, 1]
    assert cells[31].tolist() == [7, 3] and cells[32].tolist() == [0, 0] and cells[39].tolist() == [3, 1]
    assert strides[31, 0] == 8 and strides[32, 0] == 16


def test_decode_formula_by_hand():
    raw = np.zeros((1, 40, 7), np.float32)
    raw[0, 9] = [0.25, -0.5, np.log(2.0), 0.0, 0.0, 2.0, -2.0]  # level 0, cell gx=1, gy=1
    raw[0, 39] = [0.5, 0.5, 0.0, np.log(3.0), 1.0, 0.0, 0.0]  # level 1, cell gx=3, gy=1
    out = decode(raw, HEAD)
    np.testing.assert_allclose(out[0, 9], [(0.25 + 1) * 8, (-0.5 + 1) * 8, 16, 8, 0.5,
                                           1 / (1 + np.exp(-2)), 1 / (1 + np.exp(2))], rtol=1e-6)
    np.testing.assert_allclose(out[0, 39], [3.5 * 16, 1.5 * 16, 16, 48, 1 / (1 + np.exp(-1)), 0.5, 0.5], rtol=1e-6)


def test_sigmoid_is_stable():
    s = sigmoid(np.array([-1000.0, 0.0, 1000.0], np.float32))
    assert s.tolist() == [0.0, 0.5, 1.0]


def test_nms_is_greedy_and_class_aware_in_detect():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], np.float32)
    assert nms(boxes, np.array([0.9, 0.8, 0.7]), 0.5).tolist() == [0, 2]
    raw = np.full((1, 40, 7), -10.0, np.float32)
    raw[0, 9, :5] = [0, 0, 0, 0, 5]
    raw[0, 10, :5] = [0, 0, 0, 0, 5]  # neighbour cell, same size: overlaps 1/3
    raw[0, 9, 5] = 5  # class 0
    raw[0, 10, 6] = 5  # class 1: different class, never suppressed
    det = detect(raw, HEAD, conf=0.25, iou=0.2)
    assert sorted(det[:, 5].tolist()) == [0.0, 1.0]
    full = decode(raw, HEAD)[0]
    np.testing.assert_allclose(det[det[:, 5] == 0][0, :4],
                               [full[9, 0] - 4, full[9, 1] - 4, full[9, 0] + 4, full[9, 1] + 4])


def test_classes_never_suppress_each_other_with_negative_coordinates():
    """The class offset was max |coordinate| + 1: a class-1 box reaching to y = -640 then landed on a class-0 box
    at the far corner (IoU 0.95 after the offset) and was suppressed."""
    decoded = np.zeros((1, 2, 7), np.float32)
    for i, (x1, y1, x2, y2, cls) in enumerate([(600, 0, 640, 40, 0), (-40, -640, 0, -600, 1)]):
        decoded[0, i, :5] = [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, 1.0]
        decoded[0, i, 5 + cls] = 0.9 - 0.1 * i
    det = postprocess(decoded, conf=0.25, iou=0.45)
    assert det[:, 5].tolist() == [0.0, 1.0]
    np.testing.assert_allclose(det[1, :4], [-40, -640, 0, -600])
    assert class_span(np.array([[-40, -640, 0, -600], [600, 0, 640, 40]], np.float32)) == 2 * 640 + 1


def test_letterbox_and_back():
    img = np.zeros((100, 200, 3), np.uint8)
    out, r, pad = letterbox(img, (320, 320))
    assert out.shape == (320, 320, 3) and r == 1.6 and pad == (0.0, 80.0)
    assert (out[:80] == 114).all() and (out[80:240] == 0).all()
    back = scale_boxes(np.array([[0, 80, 320, 240]], np.float32), r, pad)
    np.testing.assert_allclose(back, [[0, 0, 200, 100]])


def _one_box():
    """A flat raw output of HEAD with one confident box: level 0, cell gx=1 gy=2, wh 16x16 → xyxy (4, 12, 20, 28)."""
    raw = np.full((1, 40, 7), -8.0, np.float32)
    raw[0, 17] = [0.5, 0.5, np.log(2.0), np.log(2.0), 6.0, 6.0, -6.0]
    return raw


def test_detect_takes_the_list_of_session_outputs():
    """#15: ``detect(session.run(None, ...), meta)`` on the flat layout read the one-element list as
    the levels layout and returned wrong boxes (y1 = -58 for a box whose y1 is 96 on a real model)."""
    raw = _one_box()
    alone = detect(raw, HEAD, conf=0.5)
    assert alone[:, :4].tolist() == [[4.0, 12.0, 20.0, 28.0]]
    for listed in ([raw], (raw,)):
        np.testing.assert_array_equal(detect(listed, HEAD, conf=0.5), alone)
        np.testing.assert_array_equal(decode(listed, HEAD), decode(raw, HEAD))


def test_decode_refuses_outputs_the_layout_does_not_have():
    import pytest

    raw = _one_box()
    split = dict(HEAD, layout="flat-split", channels=[dict(c, output="box" if c["name"] == "box" else "cls")
                                                      for c in HEAD["channels"]])
    box, cls = raw[..., :4], raw[..., 4:]
    np.testing.assert_array_equal(detect([box, cls], split, conf=0.5), detect(raw, HEAD, conf=0.5))
    cases = [(raw, HEAD, [raw, raw], "2 raw outputs given, the flat layout of this head has 1"),
             (raw, HEAD, raw[:, :39], r"raw output 0 has shape \[1, 39, 7\], the flat layout of this head gives "
                                      r"\[1, 40, 7\]"),
             (raw, split, raw, "the flat-split layout has 2 outputs; pass the list of session outputs"),
             (raw, split, [box], "1 raw outputs given, the flat-split layout of this head has 2"),
             (raw, split, [cls, box], r"raw output 0 has shape \[1, 40, 3\]")]
    for _, head, given, message in cases:
        for fn in (detect, decode):
            with pytest.raises(ValueError, match=message):
                fn(given, head)
