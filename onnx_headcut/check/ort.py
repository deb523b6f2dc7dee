"""The onnxruntime side: sessions, the original run with its prediction convs as extra outputs, the driver."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx

from ..errors import VerificationError
from ..heads import Geometry, Head
from ..images import read_rgb
from ..preprocess import ULTRALYTICS, Preprocess, letterbox, to_input
from .layers import check_outputs, check_split_outputs
from .results import DEFAULT_CONF, DEFAULT_IOU, DEFAULT_TOL, Allowed, Verification, check_options


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


def session(model, threads: int = 1, external_folder: str | None = None):
    """An onnxruntime CPU session on a path or serialized bytes, with graph optimisations off.

    ``external_folder`` is where a model given as bytes finds its external data files.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = threads
    so.log_severity_level = 4  # headcut reports failures itself, in one line
    if external_folder is not None:
        so.add_session_config_entry("session.model_external_initializers_file_folder_path", external_folder)
    src = os.fspath(model) if isinstance(model, (str, os.PathLike)) else model
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(buf, i: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


_GRAPH_FIELD = 7  # ModelProto.graph
_OUTPUT_FIELD = 12  # GraphProto.output


def _fields(buf: memoryview, start: int = 0, end: int | None = None):
    """(field number, wire type, field start, value start, value end) of each field of a message."""
    i, end = start, len(buf) if end is None else end
    while i < end:
        at = i
        key, i = _read_varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, j = _read_varint(buf, i)
            yield field, wire, at, i, j
        elif wire == 1:
            j = i + 8
            yield field, wire, at, i, j
        elif wire == 5:
            j = i + 4
            yield field, wire, at, i, j
        elif wire == 2:
            n, i = _read_varint(buf, i)
            j = i + n
            yield field, wire, at, i, j
        else:
            raise ValueError(f"unexpected protobuf wire type {wire}")
        i = j


def with_outputs(model_bytes: bytes, outputs: list[onnx.ValueInfoProto]) -> bytes:
    """The serialized model with ``outputs`` appended to its graph's outputs, edited at the wire level.

    Protobuf concatenates repeated fields, so the new outputs are appended to the graph message and
    only the graph's length prefix changes: the weights are copied once, never parsed. Names that
    already are graph outputs are not added again.
    """
    buf = memoryview(model_bytes)
    for field, wire, at, i, j in _fields(buf):
        if field != _GRAPH_FIELD or wire != 2:
            continue
        have = set()
        for f, w, _, a, b in _fields(buf, i, j):
            if f == _OUTPUT_FIELD and w == 2:
                have.add(onnx.ValueInfoProto.FromString(bytes(buf[a:b])).name)
        extra = b"".join(_varint(_OUTPUT_FIELD << 3 | 2) + _varint(len(v)) + v
                         for v in (o.SerializeToString() for o in outputs if o.name not in have))
        graph = bytes(buf[i:j]) + extra
        return bytes(buf[:at]) + _varint(_GRAPH_FIELD << 3 | 2) + _varint(len(graph)) + graph + bytes(buf[j:])
    raise ValueError("the model has no graph")


def reference_session(original, extra_outputs: list[onnx.ValueInfoProto]):
    """A session on ``original`` (path or bytes) that also returns the tensors named in ``extra_outputs``.

    The outputs are added to the serialized bytes in memory (:func:`with_outputs`); external data
    is read from the original's own folder. The user's files are only read.
    """
    folder = None
    if isinstance(original, (str, os.PathLike)):
        folder = str(Path(original).resolve().parent)
        original = Path(original).read_bytes()
    return session(with_outputs(original, extra_outputs), external_folder=folder)


def conv_outputs(head: Head) -> list[onnx.ValueInfoProto]:
    """Graph-output declarations (name only: onnxruntime infers type and shape) for the decoded tensor
    of ``head`` (an inner tensor in an end-to-end export), every prediction conv and the outputs the raw model
    keeps (segment: the prototypes, compared bit for bit in layer 1)."""
    names = dict.fromkeys([head.output_name] + [b.tensor for lv in head.levels for b in lv.branches]
                          + list(head.kept_outputs) + list(head.compared_outputs))
    return [onnx.ValueInfoProto(name=n) for n in names]


def deterministic_input(shape, dtype=np.float32, seed: int = 0) -> np.ndarray:
    """Uniform [0, 1) noise shaped like the input: every anchor gets a different value."""
    return np.random.default_rng(seed).random(tuple(shape), dtype=np.float32).astype(dtype)


def image_input(path: str | os.PathLike, shape, dtype=np.float32, pre: Preprocess = ULTRALYTICS) -> np.ndarray:
    """An image file preprocessed for the model's input as its family's predict does (``pre``:
    letterbox, channel order, scale; see :mod:`onnx_headcut.preprocess`), as NCHW floats."""
    img, _, _ = letterbox(read_rgb(path), tuple(shape[-2:]), pre)
    return to_input(img, pre).astype(dtype)


def verify(original, raw, head: Head, meta, images: tuple = (), tol: float = DEFAULT_TOL, seed: int = 0,
           batches: tuple = (1,), conf: float = DEFAULT_CONF, iou: float = DEFAULT_IOU,
           conv_source=None, sizes: tuple = ()) -> Verification:
    """Run ``original`` and ``raw`` (paths or bytes) and apply the three layers on each input.

    ``head`` is the located head (its branch tensors name the prediction convs in ``original``);
    ``meta`` is the raw model's head JSON. Each batch size in ``batches`` gets its own deterministic
    input (dynamic-batch models); each path in ``images`` is preprocessed as the record's
    ``preprocess`` says (its family's letterbox, channel order and scale).
    ``conv_source`` (bytes), when given, is the graph layer 1 reads the conv values from (the folded
    graph the head was located on, when folding renamed the convs' tensors in ``original``).
    ``sizes`` ((H, W), ...) are the input sizes of a head with a kept symbolic height and width: the random
    input is fed at each (batch 2 at the first), images at the record's input size; the head and the
    geometry are taken at each input's size.
    """
    check_options(tol, conf, iou)
    g = Geometry.of(meta)
    extra = conv_outputs(head)
    names = [o.name for o in extra[1:]]
    try:
        s_orig = reference_session(original, extra[:1] if conv_source is not None else extra)
        s_conv = reference_session(conv_source, extra[1:]) if conv_source is not None else None
    except Exception as e:
        raise VerificationError(f"onnxruntime cannot run the original model, so the cut cannot be checked "
                                f"({_first_line(e)}); use --no-verify to skip the check") from None
    try:
        s_raw = session(raw)
    except Exception as e:  # a bug in the cut, not in the input
        raise VerificationError(f"onnxruntime cannot load the raw model ({_first_line(e)})") from None
    inp = s_orig.get_inputs()[0]
    np_dtype = np.float16 if "float16" in inp.type else np.float32
    at = [tuple(g.input_shape[-2:])] if not sizes else [tuple(s) for s in sizes]
    feeds = [(f"random(seed={seed})" + (f", batch {n}" if n != 1 else "") + (f" at {hw[0]}x{hw[1]}" if sizes else ""),
              deterministic_input((n, *g.input_shape[1:-2], *hw), np_dtype, seed))
             for k, hw in enumerate(at) for n in (batches if k == 0 else (1,))]
    pre = Preprocess.of(meta)
    feeds += [(str(Path(p)), image_input(p, g.input_shape, np_dtype, pre)) for p in images]
    out_names = [n for n, _ in head.split_outputs] or [head.output_name]
    final = [head.final_output] if head.selection is not None else []  # an NMS-free export: also its (1, k, 6)
    checks = []
    for label, x in feeds:
        try:
            if s_conv is None:
                ys = s_orig.run([*final, *out_names, *names], {inp.name: x})
            else:
                ys = (s_orig.run([*final, *out_names], {inp.name: x})
                      + s_conv.run(names, {s_conv.get_inputs()[0].name: x}))
            if final:  # the decoded tensor goes to layer 2 beside the selected output
                ys = [(ys[0], ys[1]), *ys[2:]]
        except Exception as e:  # the input file is not a runnable model
            raise VerificationError(f"onnxruntime cannot run the original model on {label} ({_first_line(e)}); "
                                    "nothing written") from None
        try:
            r = s_raw.run(None, {s_raw.get_inputs()[0].name: x})
        except Exception as e:
            raise VerificationError(
                f"onnxruntime cannot run the raw model ({_first_line(e)}); nothing written") from None
        k = len(out_names)
        hw = tuple(x.shape[-2:])
        if head.split_outputs:
            checks.append(check_split_outputs(label, ys[:k], dict(zip(names, ys[k:])), r, head, meta))
        else:
            checks.append(check_outputs(label, ys[0], dict(zip(names, ys[1:])), r, head.at(hw), g.at(hw),
                                        Allowed.for_input(x.shape, np_dtype, tol), conf, iou))
    return Verification(tuple(checks))
