"""Issue 11 (items 3-5): bounded memory, every user-caused failure is exit 2 in one line, no
generated name collides with the model's own.

Each CLI case runs ``python -m onnx_headcut`` in a subprocess and asserts the exit code, the one
``headcut: error:`` line and what it says, no traceback, nothing written and every file that was
there before byte-identical.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import build, digest
from onnx import TensorProto, helper, numpy_helper

PHOTO = Path(__file__).resolve().parents[1] / "samples" / "images" / "chelsea.jpg"
STRIDE8 = "/detect/Constant_36_output_0"  # the level-0 xy stride constant of the generated 0.1.0 export


def headcut(*args, cwd=None):
    p = subprocess.run([sys.executable, "-m", "onnx_headcut", *map(str, args)], capture_output=True, text=True,
                       cwd=cwd)
    return p.returncode, p.stdout, p.stderr


def snapshot(folder: Path) -> dict:
    return {p.name: digest(p) for p in sorted(folder.iterdir()) if p.is_file()}


def refused(result, code: int, *texts: str) -> str:
    """Assert one ``headcut: error:`` line carrying each of ``texts``, exit ``code``, no traceback."""
    rc, out, err = result
    lines = err.strip().splitlines()
    assert rc == code, (rc, err)
    assert len(lines) == 1 and lines[0].startswith("headcut: error: "), lines
    for t in texts:
        assert t in lines[0], (t, lines[0])
    assert "Traceback" not in out + err
    return lines[0]


def _c(name: str, value) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value)))


def _stride_from(nodes: list[onnx.NodeProto], last: str) -> onnx.ModelProto:
    """The generated 0.1.0 export with its stride-8 constant replaced by ``nodes`` ending in ``last``
    (then sliced to one element and reshaped to a scalar: the value is still 8 when computed)."""
    m = build("legacy")
    g = m.graph
    k = next(i for i, n in enumerate(g.node) if n.output[0] == STRIDE8)
    del g.node[k]
    tail = nodes + [_c("hc_z", np.zeros(1, np.int64)), _c("hc_o", np.ones(1, np.int64)),
                    helper.make_node("Flatten", [last], ["hc_flat"], axis=0),
                    _c("hc_z2", np.zeros(2, np.int64)), _c("hc_o2", np.ones(2, np.int64)),
                    helper.make_node("Slice", ["hc_flat", "hc_z2", "hc_o2"], ["hc_one"]),
                    _c("hc_scalar", np.array([], np.int64)),
                    helper.make_node("Reshape", ["hc_one", "hc_scalar"], [STRIDE8])]
    for i, n in enumerate(tail):
        g.node.insert(k + i, n)
    return m


def _constant_of_shape(n: int) -> list[onnx.NodeProto]:
    return [_c("hc_shape", np.array([n], np.int64)),
            helper.make_node("ConstantOfShape", ["hc_shape"], ["hc_big"],
                             value=numpy_helper.from_array(np.array([8.0], np.float32)))]


# --------------------------------------------------------------------------------------------- memory


def test_huge_constant_of_shape_is_refused_with_small_peak_rss(tmp_path):
    """588 KB on disk declaring 2^30 floats (4 GiB): refused from the declared size, RSS stays small."""
    src = tmp_path / "cos.onnx"
    onnx.save(_stride_from(_constant_of_shape(1 << 30), "hc_big"), str(src))
    assert src.stat().st_size < 1 << 20
    before = snapshot(tmp_path)
    probe = ("import resource, subprocess, sys; p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
             "print(p.returncode); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
             "sys.stderr.write(p.stderr)")
    for verb in (["inspect", src], ["strip", src, "-o", tmp_path / "raw.onnx"]):
        p = subprocess.run([sys.executable, "-c", probe, sys.executable, "-m", "onnx_headcut", *map(str, verb)],
                           capture_output=True, text=True)
        code, rss_kb = (int(v) for v in p.stdout.split())
        refused((code, "", p.stderr), 2, "cos.onnx: constant 'hc_big' (ConstantOfShape) would hold 1073741824 "
                "elements, above headcut's limit of 16777216")
        assert rss_kb < 1_500_000, f"peak RSS {rss_kb / 1e6:.2f} GB"
    assert snapshot(tmp_path) == before


def test_huge_constant_behind_shape_plumbing_is_refused_before_onnxsim(tmp_path):
    """ConstantOfShape(Shape(image) * k): only known once shapes are propagated, i.e. on the fold path."""
    m = build("legacy")
    nodes = [helper.make_node("Shape", [m.graph.input[0].name], ["hc_s"]),
             _c("hc_k", np.array([1, 1, 100_000, 1], np.int64)),
             helper.make_node("Mul", ["hc_s", "hc_k"], ["hc_bigshape"]),
             helper.make_node("ConstantOfShape", ["hc_bigshape"], ["hc_big"],
                              value=numpy_helper.from_array(np.array([8.0], np.float32)))]
    src = tmp_path / "plumbing.onnx"
    onnx.save(_stride_from(nodes, "hc_big"), str(src))
    before = snapshot(tmp_path)
    refused(headcut("inspect", src), 2, "constant 'hc_big' (ConstantOfShape) would hold 30720000000 elements")
    assert snapshot(tmp_path) == before


def test_the_same_chain_below_the_limit_still_strips(tmp_path):
    """The refusal is about size, not about the ops: 2^16 floats behind the stride strip and verify."""
    src = tmp_path / "small.onnx"
    onnx.save(_stride_from(_constant_of_shape(1 << 16), "hc_big"), str(src))
    code, out, err = headcut("strip", src, "-o", tmp_path / "raw.onnx")
    assert code == 0, err
    assert "OK" in out and (tmp_path / "raw.onnx").exists()


def _one(nodes, inits=()) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    return helper.make_model(helper.make_graph(nodes + [helper.make_node("Add", ["x", "big"], ["y"])], "g", [x], [y],
                                               list(inits)), opset_imports=[helper.make_opsetid("", 17)])


_F = np.array([1.0], np.float32)
#: constant chains that each declare more than the limit (2^24 elements), by op
CHAINS = {
    "ConstantOfShape": ([_c("s", np.array([1 << 13, 1 << 13], np.int64)),
                         helper.make_node("ConstantOfShape", ["s"], ["big"])], 1 << 26),
    "Expand": ([_c("v", _F), _c("s", np.array([1 << 25], np.int64)), helper.make_node("Expand", ["v", "s"], ["big"])],
               1 << 25),
    "Tile": ([_c("v", np.ones((2, 2), np.float32)), _c("r", np.array([1 << 12, 1 << 12], np.int64)),
              helper.make_node("Tile", ["v", "r"], ["big"])], 1 << 26),
    "Range": ([_c("a", np.array(0.0, np.float32)), _c("b", np.array(float(1 << 25), np.float32)),
               _c("d", np.array(1.0, np.float32)), helper.make_node("Range", ["a", "b", "d"], ["big"])], 1 << 25),
    "Mul": ([_c("a", np.ones((1 << 13, 1), np.float32)), _c("b", np.ones((1, 1 << 13), np.float32)),
             helper.make_node("Mul", ["a", "b"], ["big"])], 1 << 26),
    # Neg is not in headcut's numpy folder: the reference-evaluator path must refuse it too
    "Neg": ([_c("s", np.array([1 << 25], np.int64)), helper.make_node("ConstantOfShape", ["s"], ["c"]),
             helper.make_node("Neg", ["c"], ["big"])], 1 << 25),
}


@pytest.mark.parametrize("op", list(CHAINS))
def test_constant_folding_refuses_a_declared_size_above_the_limit(op):
    import resource

    from onnx_headcut.errors import TooLargeError
    from onnx_headcut.graph import GraphIndex, check_constant_sizes, infer_shapes

    nodes, count = CHAINS[op]
    m = _one(nodes)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(TooLargeError, match=rf"would hold {count} elements, above headcut's limit of 16777216"):
        GraphIndex(m).const_value("big")
    with pytest.raises(TooLargeError, match=rf"'(big|c)' \(\w+\) would hold {count} elements"):
        check_constant_sizes(m, infer_shapes(m))
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KB: nothing was materialised


def test_large_weights_held_by_the_file_are_not_refused(monkeypatch):
    """Only what the graph *creates* is limited: casting a weight the file holds passes, expanding it does not."""
    import onnx_headcut.graph as graph_mod
    from onnx_headcut.errors import TooLargeError
    from onnx_headcut.graph import GraphIndex, check_constant_sizes, infer_shapes

    monkeypatch.setattr(graph_mod.sizes, "MAX_CONSTANT_ELEMENTS", 1000)
    w = numpy_helper.from_array(np.arange(4000, dtype=np.float32), "w")
    cast = _one([helper.make_node("Cast", ["w"], ["big"], to=TensorProto.FLOAT)], [w])
    check_constant_sizes(cast, infer_shapes(cast))
    assert GraphIndex(cast).const_value("big").shape == (4000,)
    grow = _one([_c("s", np.array([2, 4000], np.int64)), helper.make_node("Expand", ["w", "s"], ["big"])], [w])
    with pytest.raises(TooLargeError,
                       match="'big' \\(Expand\\) would hold 8000 elements, above headcut's limit of 1000"):
        check_constant_sizes(grow, infer_shapes(grow))


def test_names_file_read_is_bounded(write, tmp_path):
    src = write("legacy")
    before = snapshot(tmp_path)
    refused(headcut("detect", src, PHOTO, "--names", "/dev/zero"), 2,
            "/dev/zero: the names file is larger than 1048576 bytes")
    assert snapshot(tmp_path) == before


def test_image_read_is_bounded(write, tmp_path):
    src = write("legacy")
    refused(headcut("detect", src, "/dev/zero"), 2, "/dev/zero: the image file is larger than 134217728 bytes")
    refused(headcut("strip", src, "-o", tmp_path / "raw.onnx", "--image", "/dev/zero"), 2, "the image file is larger")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.onnx"]


def _png_header(w: int, h: int) -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def test_decompression_bomb_is_refused_before_decoding(write, tmp_path):
    src = write("legacy")
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header(100_000, 100_000))  # 10^10 pixels declared in 100 bytes
    small = tmp_path / "small.png"  # below Pillow's own 2x bomb error, above headcut's limit
    small.write_bytes(_png_header(10_000, 10_000))
    before = snapshot(tmp_path)
    refused(headcut("detect", src, bomb), 2, "bomb.png: the image declares", "above headcut's limit of 67108864 pixels")
    refused(headcut("detect", src, small), 2, "small.png: the image declares 10000x10000 pixels, above headcut's limit")
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------------------ exit 2, one line


def test_model_without_opset_import(tmp_path):
    m = build("legacy")
    del m.opset_import[:]
    src = tmp_path / "noopset.onnx"
    onnx.save(m, str(src))
    before = snapshot(tmp_path)
    for verb in (["inspect", src], ["strip", src, "-o", tmp_path / "raw.onnx"], ["detect", src, PHOTO]):
        refused(headcut(*verb), 2, "noopset.onnx: the model has no opset_import")
    assert snapshot(tmp_path) == before


def _raw(tmp_path) -> onnx.ModelProto:
    from onnx_headcut.strip import strip

    onnx.save(build("legacy"), str(tmp_path / "orig.onnx"))
    strip(tmp_path / "orig.onnx", tmp_path / "good.onnx", verify=False)
    (tmp_path / "good.head.json").unlink()  # the embedded record is the one under test
    return onnx.load(str(tmp_path / "good.onnx"))


def _broken(meta: dict, case: str):
    if case == "not-json":
        return "{not json"
    meta = json.loads(json.dumps(meta))
    if case == "list":
        return "[1, 2]"
    if case == "missing-levels":
        del meta["levels"]
    elif case == "stride-string":
        meta["levels"][0]["stride"] = "8"
    elif case == "grid-one-dim":
        meta["levels"][1]["grid"] = [20]
    elif case == "huge-classes":
        meta["num_classes"] = 10 ** 9
    elif case == "channels-not-list":
        meta["channels"] = {"box": 4}
    return json.dumps(meta)


METADATA = {"not-json": "not JSON", "list": "the record must be a JSON object, not list",
            "missing-levels": "levels is missing",
            "stride-string": "levels[0].stride must be an integer", "grid-one-dim": "levels[1].grid must be [h, w]",
            "huge-classes": "num_classes must be an integer in [1, 65536]",
            "channels-not-list": "channels must be a list, not dict"}


@pytest.mark.parametrize("case", list(METADATA))
def test_malformed_metadata_is_exit_2_for_every_verb(case, tmp_path):
    from onnx_headcut.strip import read_metadata

    raw = _raw(tmp_path)
    meta = read_metadata(raw)
    for p in raw.metadata_props:
        if p.key == "headcut":
            p.value = _broken(meta, case)
    bad = tmp_path / "bad.onnx"
    onnx.save(raw, str(bad))
    before = snapshot(tmp_path)
    for verb in (["inspect", bad], ["detect", bad, PHOTO], ["verify", tmp_path / "orig.onnx", bad],
                 ["convert", bad, "--to", "mnn"]):
        refused(headcut(*verb), 2, "bad.onnx: malformed headcut metadata: " + METADATA[case])
    assert snapshot(tmp_path) == before


def test_malformed_sidecar_is_exit_2(tmp_path):
    _raw(tmp_path)
    (tmp_path / "good.head.json").write_bytes(b"\xff\xfe not utf-8")
    before = snapshot(tmp_path)
    refused(headcut("detect", tmp_path / "good.onnx", PHOTO), 2,
            "good.head.json: malformed headcut metadata: not UTF-8")
    assert snapshot(tmp_path) == before


def test_latin1_names_file(write, tmp_path):
    src = write("legacy")
    names = tmp_path / "names.txt"
    names.write_bytes("".join(f"caf\xe9 {i}\n" for i in range(80)).encode("latin-1"))
    before = snapshot(tmp_path)
    refused(headcut("detect", src, PHOTO, "--names", names), 2,
            "names.txt: the names file is not UTF-8 text (byte 0xe9 at offset 3)")
    assert snapshot(tmp_path) == before


def test_unknown_image_extension_is_refused_before_the_model_runs(tmp_path):
    """The model does not even exist: the extension is checked first."""
    refused(headcut("detect", tmp_path / "nope.onnx", PHOTO, "-o", tmp_path / "out.xyz"), 2,
            "out.xyz: unknown image extension '.xyz'", ".png")
    refused(headcut("detect", tmp_path / "nope.onnx", PHOTO, "-o", tmp_path / "out"), 2,
            "unknown image extension '(none)'")
    assert list(tmp_path.iterdir()) == []


def test_missing_external_data_file_is_named(tmp_path):
    onnx.save(build("legacy"), str(tmp_path / "x.onnx"), save_as_external_data=True, location="w.bin", size_threshold=0)
    (tmp_path / "w.bin").unlink()
    before = snapshot(tmp_path)
    for verb in (["inspect", tmp_path / "x.onnx"], ["strip", tmp_path / "x.onnx", "-o", tmp_path / "raw.onnx"]):
        refused(headcut(*verb), 2, "external data file 'w.bin' listed by 'x.onnx' is missing")
    assert snapshot(tmp_path) == before


_FORCED_EXTERNAL = ("import sys; import onnx_headcut.io as io; io._EXTERNAL_THRESHOLD = 0; "
                    "from onnx_headcut.cli import main; sys.argv = ['headcut', *sys.argv[1:]]; main()")


def test_current_folder_holding_out_onnx_data(write, tmp_path):
    """onnx's external-data save tests the data file's relative name against the *working* folder: a
    user's unrelated ``raw.onnx.data`` there made a large-model strip fail with exit 1."""
    src = write("legacy")
    here, out = tmp_path / "here", tmp_path / "out"
    here.mkdir(), out.mkdir()
    (here / "raw.onnx.data").write_bytes(b"the user's own file")
    before = snapshot(here)
    p = subprocess.run([sys.executable, "-c", _FORCED_EXTERNAL, "strip", str(src), "-o", str(out / "raw.onnx")],
                       capture_output=True, text=True, cwd=here)
    assert p.returncode == 0, p.stderr
    assert sorted(f.name for f in out.iterdir()) == ["raw.head.json", "raw.onnx", "raw.onnx.data"]
    assert snapshot(here) == before
    onnx.checker.check_model(str(out / "raw.onnx"))


def test_path_based_shape_inference_ignores_the_current_folder(tmp_path, monkeypatch):
    import onnx_headcut.graph as graph_mod
    from onnx_headcut.graph import infer_shapes

    m = build("legacy")
    expected = infer_shapes(m)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.data").write_bytes(b"keep")
    monkeypatch.setattr(graph_mod.shapes, "PROTOBUF_LIMIT", 0)
    assert infer_shapes(m) == expected
    assert (tmp_path / "m.data").read_bytes() == b"keep"


# ------------------------------------------------------------------------------ names


def test_generated_names_never_collide_with_the_models(tmp_path):
    """The model already uses names headcut generates (tensors and node names): before, exit 3
    (onnxruntime: duplicate definition) or, with --no-verify, a non-SSA file written with exit 0."""
    from onnx_headcut.graph import infer_shapes
    from onnx_headcut.locate import locate

    m = build("legacy")
    g = m.graph
    head = locate(m, infer_shapes(m))
    final = next(n for n in g.node if head.output_name in n.output)
    rename = {head.levels[0].branches[0].tensor: "headcut/l0/concat",
              head.levels[0].branches[1].tensor: "headcut/l0/flat_shape",
              head.levels[1].branches[0].tensor: "headcut/concat",
              final.input[0]: f"{head.output_name}__decoded_by_headcut"}
    for n in g.node:
        n.input[:] = [rename.get(i, i) for i in n.input]
        n.output[:] = [rename.get(o, o) for o in n.output]
    g.node[0].name, g.node[1].name = "headcut/l0/rows/Transpose", "headcut/l0/concat/Concat"
    onnx.checker.check_model(m)
    src = tmp_path / "taken.onnx"
    onnx.save(m, str(src))
    before = digest(src)
    for k, extra in enumerate([[], ["--no-verify"], ["--layout", "levels"], ["--layout", "levels", "--no-verify"]]):
        dst = tmp_path / f"raw{k}.onnx"
        code, out, err = headcut("strip", src, "-o", dst, *extra)
        assert code == 0, err
        assert ("OK" in out) == ("--no-verify" not in extra)
        onnx.checker.check_model(onnx.load(str(dst)), full_check=True)
    assert digest(src) == before


def test_postcondition_rejects_a_cyclic_or_non_ssa_graph():
    from onnx_headcut.errors import InternalError
    from onnx_headcut.graph import check_graph

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    ok = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]))
    check_graph(ok)
    twice = helper.make_graph([helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Neg", ["x"], ["y"])],
                              "g", [x], [y])
    with pytest.raises(InternalError, match="tensor 'y' is written twice"):
        check_graph(helper.make_model(twice))
    cycle = helper.make_graph([helper.make_node("Add", ["x", "b"], ["a"], name="n1"),
                               helper.make_node("Relu", ["a"], ["b"], name="n2"),
                               helper.make_node("Identity", ["a"], ["y"])], "g", [x], [y])
    with pytest.raises(InternalError, match="is on a cycle"):
        check_graph(helper.make_model(cycle))
    assert InternalError("x").exit_code == 1


_SMALL_INPUT_LIMIT = ("import sys; import onnx_headcut.graph.sizes as g; g.MAX_INPUT_ELEMENTS = 1000; "
                      "from onnx_headcut.cli import main; sys.argv = ['headcut', *sys.argv[1:]]; main()")


def test_an_input_too_large_to_run_is_refused_before_it_is_allocated(write, tmp_path):
    """strip verifies and detect letterboxes into the declared input size: refused above the limit
    (lowered to 1000 elements here; the real limit is 2^26) before any input tensor exists."""
    src = write("legacy")
    before = snapshot(tmp_path)
    for verb in (["strip", src, "-o", tmp_path / "raw.onnx"], ["detect", src, PHOTO]):
        p = subprocess.run([sys.executable, "-c", _SMALL_INPUT_LIMIT, *map(str, verb)], capture_output=True, text=True)
        refused((p.returncode, p.stdout, p.stderr), 2,
                "input 'image_arrays' [1, 3, 320, 320] would hold 307200 elements, above headcut's limit of 1000")
    assert snapshot(tmp_path) == before
    p = subprocess.run([sys.executable, "-c", _SMALL_INPUT_LIMIT, "strip", str(src), "-o", str(tmp_path / "raw.onnx"),
                        "--no-verify"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr  # nothing runs without verification
