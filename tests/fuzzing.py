"""Mutation fuzzing of the fixture graphs: every outcome must be a verified graph or a clear error.

A case takes one generated export, applies one to three mutations — drop a node, change a
constant, alter a shape, reorder a node's inputs, change a grid/stride/anchor constant of the
decode, turn a decode op into another (Add→Sub, Exp→Sigmoid, ...) — and runs
:func:`onnx_headcut.strip.strip` on it. Acceptable: success with a passing verification whose
layer 1 shows the raw outputs are the conv values, or a :class:`~onnx_headcut.errors.HeadcutError`
(one line, an exit code), with no file left behind and the input unchanged. Anything else — another
exception, a leftover file, a modified input — is a finding.

Used by ``tests/test_fuzz.py`` (a bounded run) and ``scripts/fuzz.py`` (a long one).
"""

from __future__ import annotations

import hashlib
import random
import shutil
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from onnx_headcut.errors import HeadcutError

MUTATIONS = ("drop_node", "change_constant", "alter_shape", "reorder_inputs", "decode_constant", "decode_op")
#: op types a decode op may be turned into (same arity), to make decodes that differ from the recorded geometry
SWAPS = {"Add": ("Sub", "Mul"), "Sub": ("Add",), "Mul": ("Add", "Div"), "Div": ("Mul",), "Exp": ("Sigmoid", "Relu"),
         "Sigmoid": ("Exp", "Relu"), "Pow": ("Mul",)}


def _decode_nodes(model: onnx.ModelProto) -> list:
    from onnx_headcut.graph import GraphIndex
    from onnx_headcut.region import decode_region

    try:
        return list(decode_region(GraphIndex(model), model.graph.output[0].name).nodes) if model.graph.output else []
    except Exception:  # noqa: BLE001 - a graph mutated into nonsense has no region to pick from
        return []


def _constant_tensors(model: onnx.ModelProto, nodes) -> list[onnx.TensorProto]:
    """The float constants (initializers or Constant nodes) read by ``nodes``: grids, strides, anchors."""
    names = {i for n in nodes for i in n.input}
    out = [t for t in model.graph.initializer if t.name in names]
    out += [a.t for n in model.graph.node if n.op_type == "Constant" and n.output[0] in names for a in n.attribute
            if a.type == onnx.AttributeProto.TENSOR]
    return [t for t in out if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)]


def base_models() -> dict[str, bytes]:
    """The fixture graphs that get mutated (small, one per head pattern)."""
    from onnx_headcut.synth import yolov5, yolov6_af, yolov6_v1, yolov8, yolox

    makers = {
        "yolov6-0.1.0": lambda: yolov6_v1(width=4, size=(128, 128)),
        "yolov6-0.1.0-inplace": lambda: yolov6_v1(width=4, size=(128, 128), inplace=True),
        "yolov6-af": lambda: yolov6_af(width=4, size=(128, 128)),
        "yolov6-dfl": lambda: yolov6_af(width=4, size=(128, 128), reg_max=16),
        "yolov6-lite": lambda: yolov6_af(width=4, size=(128, 192), levels=4, shuffle=True),
        "yolov5": lambda: yolov5(width=4, size=(128, 128)),
        "yolov8": lambda: yolov8(width=4, size=(128, 128)),
        "yolox": lambda: yolox(width=4, size=(128, 128)),
    }
    return {k: f().SerializeToString() for k, f in makers.items()}


def _change_element(tensors: list, rng: random.Random, new_value):
    """Set one element of one of ``tensors`` to ``new_value(old, floating)``; (name, index, value), or
    None for an empty tensor."""
    t = rng.choice(tensors)
    a = numpy_helper.to_array(t).copy()
    if a.size == 0:
        return None
    flat = a.reshape(-1)
    j = rng.randrange(flat.size)
    flat[j] = new_value(flat[j], np.issubdtype(a.dtype, np.floating))
    t.CopyFrom(numpy_helper.from_array(a, t.name))
    return t.name or "Constant", j, flat[j]


def mutate(model: onnx.ModelProto, rng: random.Random) -> list[str]:
    """Apply 1-3 random mutations in place; returns their descriptions."""
    done = []
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(MUTATIONS)
        g = model.graph
        if kind == "drop_node" and len(g.node) > 1:
            i = rng.randrange(len(g.node))
            done.append(f"drop node {i} ({g.node[i].op_type})")
            del g.node[i]
        elif kind == "change_constant":
            tensors = list(g.initializer) + [a.t for n in g.node if n.op_type == "Constant" for a in n.attribute
                                             if a.type == onnx.AttributeProto.TENSOR]
            if not tensors:
                continue
            changed = _change_element(tensors, rng, lambda v, floating: rng.choice(
                [v * rng.uniform(-3, 3), v + 0.5, 0.0, np.inf] if floating else [v + 1, v - 1, 0, -1]))
            if changed is None:
                continue
            done.append(f"change {changed[0]}[{changed[1]}]")
        elif kind == "alter_shape":
            vis = list(g.input) + list(g.output) + list(g.value_info)
            dims = [(v, d) for v in vis for d in v.type.tensor_type.shape.dim]
            if not dims:
                continue
            v, d = rng.choice(dims)
            new = rng.choice([1, 2, 3, 7, 64, 0])
            done.append(f"shape of {v.name}: {d.dim_value or d.dim_param} -> {new or 'symbolic'}")
            if new:
                d.dim_value = new
            else:
                d.dim_param = "n"
        elif kind == "decode_constant":  # a grid, stride or anchor value of the decode
            tensors = _constant_tensors(model, _decode_nodes(model))
            if not tensors:
                continue
            changed = _change_element(tensors, rng, lambda v, _: rng.choice([v * 2, v / 2, v + 1, v - 0.5, -v]))
            if changed is None:
                continue
            done.append(f"change decode constant {changed[0]}[{changed[1]}] -> {changed[2]:g}")
        elif kind == "decode_op":  # an op of the decode turned into another of the same arity
            nodes = [n for n in _decode_nodes(model) if n.op_type in SWAPS]
            if not nodes:
                continue
            n = rng.choice(nodes)
            new = rng.choice(SWAPS[n.op_type])
            done.append(f"decode {n.op_type} -> {new}")
            n.op_type = new
        elif kind == "reorder_inputs":
            multi = [n for n in g.node if len(n.input) >= 2]
            if not multi:
                continue
            n = rng.choice(multi)
            i, j = rng.sample(range(len(n.input)), 2)
            n.input[i], n.input[j] = n.input[j], n.input[i]
            done.append(f"swap inputs {i},{j} of a {n.op_type}")
    return done


@dataclass(frozen=True)
class Outcome:
    case: str
    kind: str  # "verified" | "refused" | "finding"
    detail: str


def run_case(base: str, data: bytes, seed: int, workdir: Path) -> Outcome:
    """Mutate ``data`` with ``seed`` and strip it; classify what happened."""
    from onnx_headcut.pipeline import strip

    rng = random.Random(seed)
    m = onnx.ModelProto()
    m.ParseFromString(data)
    with np.errstate(all="ignore"):
        what = mutate(m, rng)
    case = f"{base} seed={seed}: " + "; ".join(what)
    d = Path(tempfile.mkdtemp(dir=workdir))
    try:
        src = d / "in.onnx"
        src.write_bytes(m.SerializeToString())
        before = hashlib.sha256(src.read_bytes()).hexdigest()
        try:
            res = strip(src, d / "out.onnx")
        except HeadcutError as e:
            left = sorted(p.name for p in d.iterdir() if p.name != "in.onnx")
            if left:
                return Outcome(case, "finding", f"refused ({e}) but left {left}")
            if "\n" in str(e):
                return Outcome(case, "finding", f"multi-line message: {e!r}")
            kind = "refused"
            detail = f"{type(e).__name__}: {e}"
        except Exception:  # noqa: BLE001 - any other exception is what we hunt for
            return Outcome(case, "finding", traceback.format_exc(limit=6))
        else:
            if res.verification is None or not res.verification.ok:
                return Outcome(case, "finding", "output written without a passing verification")
            if not all(c.layout is not None and c.layout.ok for c in res.verification.checks):
                return Outcome(case, "finding", "output written although the raw outputs are not the conv values")
            kind, detail = "verified", f"max abs error {res.verification.max_abs_err:.2g}"
        if hashlib.sha256(src.read_bytes()).hexdigest() != before:
            return Outcome(case, "finding", "the input file was modified")
        return Outcome(case, kind, detail)
    finally:
        shutil.rmtree(d, ignore_errors=True)
