"""``headcut convert``: a raw ONNX model to MNN (``.mnn``), ncnn (``.param`` + ``.bin``), OpenVINO
(``.xml`` + ``.bin``) or TFLite (``.tflite``), each converted in the engine's worker (:mod:`.engines`).

The head metadata travels with the converted files as ``<stem>.head.json`` so that
``headcut verify`` and C++ code can decode the engine's output. Files are staged and moved into
place only when the conversion succeeded.

int8 (``int8=True, calib=DIR``): the images of ``DIR`` are letterboxed and scaled with the model's own
preprocess (:func:`~onnx_headcut.quantize.model_inputs`) into ONE float32 NCHW ``.npy`` (N, 3, H, W) in a
scratch folder; the target module's ``convert`` gets ``options["int8"]``, ``options["calib"]`` (that
file's path) and ``options["platform"]``, quantizes, and answers ``"precision": "int8"``, which goes into
the ``converted`` record of ``<model file name>.head.json`` (``raw.xml.head.json``) so that ``verify`` and
``detect`` know the model is quantized (``verify`` then checks detection agreement, not the three layers).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from . import engine_rewrites
from .check import deterministic_input, session
from .check.half import HALF_GROWTH, U16, output_magnitudes
from .engines import MODULES, EngineError, _need, pnnx_binary, run, worker
from .errors import HeadcutError, OutputError, VerificationError
from .graph import GraphIndex
from .io import dependencies, load, save
from .metadata import CONVERTED_SUFFIX, embedded
from .staging import Staging, check_outputs
from .targets import calibration_images, check_options, match_outputs


@dataclass(frozen=True)
class Converted:
    """What ``convert`` wrote and the blob names the C++ side binds to."""

    engine: str
    model: Path  # the .mnn, .param, .xml or .tflite file
    files: tuple[Path, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    #: the converted model's input and outputs as the engine names and lays them out, in the raw
    #: outputs' order (TFLite: NHWC, renamed, reordered), or None when the engine keeps ONNX's
    io: dict | None = None
    precision: str = "fp32"  # "int8" when the target quantized it


def _head_json(model: onnx.ModelProto, source: str) -> str | None:
    meta = embedded(model, source)
    return None if meta is None else json.dumps(meta, indent=2) + "\n"


def _input_shape(model: onnx.ModelProto) -> list[int]:
    return _input_shapes(model)[0]


def _input_shapes(model: onnx.ModelProto) -> list[list[int]]:
    """The input shapes a conversion is made and checked at: the input's own (symbolic dims 1), or for a raw
    model that keeps a symbolic height and width, each size its head record was verified at."""
    inits = {t.name for t in model.graph.initializer}
    inp = next(i for i in model.graph.input if i.name not in inits)
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in inp.type.tensor_type.shape.dim]
    meta = embedded(model)
    if meta is None or "dynamic_hw" not in meta or len(dims) != 4:
        return [dims]
    return [[*dims[:2], *hw] for hw in meta["dynamic_hw"]["verified_at"]] or [[*dims[:2], *meta["input"]["shape"][2:]]]


def _same_head(side: Path, head: str) -> bool:
    """``side`` already holds exactly ``head`` (as JSON), so it need not be written."""
    try:
        return side.is_file() and json.loads(side.read_text()) == json.loads(head)
    except (OSError, ValueError):
        return False


def convert(onnx_path: str | os.PathLike, to: str, out_dir: str | os.PathLike | None = None,
            force: bool = False, int8: bool = False, calib: str | os.PathLike | None = None,
            platform: str | None = None) -> Converted:
    """Convert ``onnx_path`` for target ``to`` (see :data:`~onnx_headcut.engines.TARGETS`) into ``out_dir``
    (default: beside it).

    The output set (the target's files, e.g. ``.mnn``, ``.param`` + ``.bin``, ``.xml`` + ``.bin``,
    ``.tflite``, and the head JSON when the model has head metadata) is checked before converting: an
    existing member is an error unless ``force``, and the input or its external data never may be
    one. The head JSON is ``<stem>.head.json``; a target that renames or re-lays the tensors (TFLite),
    an int8 conversion (``int8``, ``calib``: a folder of images; see the module's doc), or an output folder
    that already holds one writes ``<model file name>.head.json`` (``raw.tflite.head.json``,
    ``raw.xml.head.json``) instead, holding the head plus the ``converted`` record of its tensors
    (:class:`Converted.io`) and precision. A ``<stem>.head.json`` that already holds the model's metadata
    (the sidecar ``strip`` wrote) is left as it is. A decoded model (no head metadata) converted for a
    re-laying target or in int8 gets ``<model file name>.converted.json`` (``original.tflite.converted.json``)
    instead: the ``converted`` record alone, which ``verify`` reads
    (:func:`~onnx_headcut.metadata.converted_record`).
    """
    check_options(to, int8, calib, platform)
    src = Path(onnx_path)
    model = load(src)
    out = Path(out_dir) if out_dir is not None else src.parent
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: is not a folder")
    stem = src.stem
    target = MODULES[to]
    names = target.files(stem)
    head = _head_json(model, str(src))
    relaid = getattr(target, "RELAYS", False)
    own = out / f"{names[0]}.head.json"  # the converted model's own record (else a stale one would be read)
    recorded = relaid or int8 or own.exists()
    side = own if recorded else out / f"{stem}.head.json"
    if head is None:  # a decoded model: no head to record, but a relay or a precision is said beside it
        side = out / f"{names[0]}{CONVERTED_SUFFIX}"
        recorded = relaid or int8
    targets = [out / n for n in names] + ([side] if (recorded if head is None else not _same_head(side, head))
                                          else [])
    reads = dependencies(src)  # never written, even with force
    check_outputs(targets, reads, force)
    io, extra = None, {}
    with Staging(out / names[0], targets=targets, protected=reads, force=force) as st, \
            tempfile.TemporaryDirectory(prefix="headcut-calib-") as scratch:
        if to == "ncnn":
            _need("ncnn", "ncnn")
            inputs, outputs = _pnnx_checked(src, model, st.path(names[0]), st.path(names[1]))
        else:
            _need(getattr(target, "CONVERTER", target.PACKAGES[-1]), to)
            if int8 and getattr(target, "QUANTIZER", None):
                _need(target.QUANTIZER, to)
            options = {"input_shape": _input_shape(model), "input_name": _input_name(model), "int8": int8,
                       "calib": str(calibration_npy(src, model, calib, Path(scratch))) if int8 else None,
                       "platform": platform}
            given = _rewritten(src, model, target, Path(scratch))
            res = json.loads(worker([to, "convert", str(given.resolve()), str(st.path(names[0]).parent), stem,
                                     json.dumps(options)], timeout=1800 if int8 else 600))
            if int8 and res.get("precision") != "int8":
                raise VerificationError(f"{to} did not quantize {src.name} (it reports precision "
                                        f"{res.get('precision', 'fp32')}); nothing written")
            extra = {k: res[k] for k in ("precision", "quantizer", "calib_samples", "platform") if res.get(k)}
            if relaid:
                io = match_outputs(model, res)
                inputs, outputs = [io["input"]["name"]], [o["name"] for o in io["outputs"]]
            else:
                inputs, outputs = res["inputs"], res["outputs"]
            check_converted(src, model, to, st.path(names[0]), inputs, outputs, io, int8=int8,
                            half=res.get("precision") == "fp16")
            if recorded and io is None:  # names and layout kept: say so in the record
                io = {"input": {"name": inputs[0], "layout": "same"},
                      "outputs": [{"name": n, "layout": "same", "onnx": o.name}
                                  for n, o in zip(outputs, model.graph.output)]}
        if side in targets:
            record = {"engine": to, **(io or {}), "precision": extra.get("precision", "fp32"), **extra}
            if head is None:  # a decoded model's converted record on its own
                text = json.dumps(record, indent=2) + "\n"
            else:
                text = head if not recorded else json.dumps({**json.loads(head), "converted": record}, indent=2) + "\n"
            st.path(side.name).write_text(text)
        files = tuple(st.commit())
    return Converted(to, out / names[0], files, tuple(inputs), tuple(outputs), io, extra.get("precision", "fp32"))


def _input_name(model: onnx.ModelProto) -> str:
    inits = {t.name for t in model.graph.initializer}
    return next(i.name for i in model.graph.input if i.name not in inits)


def calibration_npy(src: Path, model: onnx.ModelProto, calib, folder: Path) -> Path:
    """The images of the ``calib`` folder letterboxed to the model's input size and scaled with its own
    preprocess (the head record's, or for a decoded model the located family's), saved as one float32
    NCHW ``.npy`` (N, 3, H, W) in ``folder``; its path."""
    from .pipeline import decoded_head
    from .preprocess import Preprocess
    from .quantize import model_inputs

    meta = embedded(model, str(src))
    if meta is not None:
        pre = Preprocess.of(meta)
    else:
        try:
            pre = decoded_head(src).preprocess
        except HeadcutError:  # not a detector headcut knows: Ultralytics' letterbox, RGB / 255
            pre = Preprocess()
    shape = _input_shape(model)
    xs = model_inputs(calibration_images(calib), (shape[2], shape[3]), pre)
    path = folder / "calib.npy"
    np.save(path, np.concatenate(xs).astype(np.float32))
    return path


def _rewritten(src: Path, model: onnx.ModelProto, target, scratch: Path) -> Path:
    """The file the target's converter is given: ``src``, or a copy in ``scratch`` rewritten around the
    converter's bugs (the target's ``ONNX_REWRITES``, see :mod:`.engine_rewrites`); ``check_converted``
    compares the result with the unchanged ``src``."""
    copy = model
    for name in getattr(target, "ONNX_REWRITES", ()):
        copy = getattr(engine_rewrites, name)(copy) or copy
    if copy is model:
        return src
    path = scratch / src.name
    save(copy, path)  # weights beside it in scratch when over protobuf's 2 GB
    return path


#: a conversion must reproduce the ONNX model's outputs within ``CONVERT_ATOL + CONVERT_RTOL * |value|``
CONVERT_ATOL, CONVERT_RTOL = 1e-3, 1e-3


def check_converted(src: Path, model: onnx.ModelProto, engine: str, converted: Path, inputs, outputs,
                    io: dict | None = None, int8: bool = False, half: bool = False) -> None:
    """Run ``converted`` once on ``engine`` (in the worker) and the ONNX model in onnxruntime on the
    same deterministic input; :class:`VerificationError` (exit 3, nothing written) when the engine
    cannot load or run it, or any output differs by more than :data:`CONVERT_ATOL` + :data:`CONVERT_RTOL`
    times the value (float16 models, or ``half``: an engine that computes in float16 such as RKNN's fp16 build:
    4e-3 each, 8 float16 ulps of 1; a ``half`` engine also 8·u·M on an output that is prediction convs' values laid
    out, M = Σ|w|·|x| + |b| of the conv, see :mod:`onnx_headcut.check.half`). An ``int8`` model
    cannot match within that: only its output count, shapes and finiteness are checked here, and
    ``verify`` measures its detections."""

    inits = {t.name for t in model.graph.initializer}
    inp = next(i for i in model.graph.input if i.name not in inits)
    dtype = onnx.helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type or onnx.TensorProto.FLOAT)
    xs = [deterministic_input(shape, np.float32, 0) for shape in _input_shapes(model)]
    names = [o.name for o in model.graph.output]
    s = session(str(src))
    if engine in ("ncnn", "tflite"):  # the engine's own tensor names (TFLite: restored to ONNX's order)
        in_name, out_names = inputs[0], list(outputs)
    else:
        in_name, out_names = inp.name, names
    try:
        outs = run(converted, xs, engine, in_name, out_names, options={"io": io, "precision": "f32"})
    except HeadcutError as e:
        raise VerificationError(f"the {engine} conversion of {src.name} does not run on {engine}, nothing written: "
                                f"{e}") from None
    mags = output_magnitudes(str(src), model, [x.astype(dtype) for x in xs], inp.name) if half else [{}] * len(xs)
    for x, ys, mag in zip(xs, outs, mags):
        _compare(src, engine, names, s.run(names, {inp.name: x.astype(dtype)}), ys, dtype,
                 "" if len(xs) == 1 else f" at {x.shape[2]}x{x.shape[3]}", int8, half, mag)


def _compare(src: Path, engine: str, names: list[str], refs, ys, dtype, at: str, int8: bool = False,
             half: bool = False, mags: dict | None = None) -> None:
    """``mags``: per output that is conv values laid out, what a float16 engine's error grows with
    (:mod:`onnx_headcut.check.half`): :data:`~onnx_headcut.check.half.HALF_GROWTH` · u · M more is allowed."""
    atol = rtol = 4e-3 if dtype == np.float16 or half else None
    atol, rtol = atol or CONVERT_ATOL, rtol or CONVERT_RTOL
    if len(ys) != len(refs):
        raise VerificationError(f"the {engine} conversion of {src.name} has {len(ys)} outputs, the ONNX model "
                                f"{len(refs)}; nothing written")
    for name, ref, y in zip(names, refs, ys):
        ref = np.asarray(ref, np.float32)
        if y.size != ref.size:
            raise VerificationError(f"the {engine} conversion of {src.name}: output '{name}' has shape "
                                    f"{list(y.shape)}, the ONNX model {list(ref.shape)}{at}; nothing written")
        y = np.asarray(y, np.float32).reshape(ref.shape)
        if int8:
            if not np.isfinite(y).all():
                raise VerificationError(f"the int8 {engine} conversion of {src.name}: output '{name}' is not finite"
                                        f"{at}; nothing written")
            continue
        grown = HALF_GROWTH * U16 * np.asarray(mags[name], np.float32).reshape(ref.shape) \
            if mags and name in mags and np.size(mags[name]) == ref.size else 0.0
        err = np.abs(y - ref) - (atol + rtol * np.abs(ref) + grown)
        if not np.isfinite(y).all() or (err > 0).any():
            k = int(np.nanargmax(np.where(np.isfinite(y), err, np.inf)))
            more = f" + {HALF_GROWTH:g}·u·{float(np.ravel(grown)[k]) / HALF_GROWTH / U16:.4g}" \
                if np.ndim(grown) else ""
            raise VerificationError(f"the {engine} conversion of {src.name} does not match onnxruntime{at}: output "
                                    f"'{name}' element {k}: {engine} {y.flat[k]:.6g}, onnxruntime {ref.flat[k]:.6g} "
                                    f"(allowed {atol:g} + {rtol:g}·|value|{more}); nothing written")


def _pnnx_checked(src: Path, model: onnx.ModelProto, param: Path, binary: Path) -> tuple[list[str], list[str]]:
    """pnnx, then :func:`check_converted`. A model with a YOLOX Focus stem is handed to pnnx rewritten
    (:func:`focus_to_space_to_depth`): measured with pnnx 20261020, the SpaceToDepth it reads becomes an
    ncnn Reorg whose channel order is sometimes ONNX's (block, channel) and sometimes PyTorch
    pixel_unshuffle's (channel, block), so both conv permutations are tried and the one whose ncnn
    outputs match onnxruntime is kept; neither matching is a refusal like any other."""
    shapes = _input_shapes(model)
    shape, shape2 = shapes[0], (shapes[1] if len(shapes) > 1 else None)
    copies = [focus_to_space_to_depth(model, order) for order in ("DCR", "CRD")]
    if copies[0] is None:
        inputs, outputs = _pnnx(src, shape, param, binary, shape2=shape2)
        check_converted(src, model, "ncnn", param, inputs, outputs)
        return inputs, outputs
    failure = None
    for copy in copies:
        inputs, outputs = _pnnx(src, shape, param, binary, copy, shape2=shape2)
        try:
            check_converted(src, model, "ncnn", param, inputs, outputs)
            return inputs, outputs
        except VerificationError as e:
            failure = failure or e
    assert failure is not None  # both copies were tried
    raise failure


def focus_to_space_to_depth(model: onnx.ModelProto, order: str = "DCR") -> onnx.ModelProto | None:
    """A copy of ``model`` with each YOLOX ``Focus`` stem rewritten for ncnn, or None when it has none.

    Focus is space-to-depth by four stepped Slices (``x[..., ::2, ::2]``, ``x[..., 1::2, ::2]``,
    ``x[..., ::2, 1::2]``, ``x[..., 1::2, 1::2]``) and a channel Concat; pnnx writes the stepped slices as
    ``Tensor.slice`` layers, which ncnn does not have, so the .param it writes cannot be loaded. The same
    values come from ``SpaceToDepth(2)`` (ncnn ``Reorg``) whose channels are in another order: the conv
    that reads the Concat gets its input channels permuted to match ``order`` (``DCR``: ONNX's
    (block, channel); ``CRD``: pixel_unshuffle's (channel, block)). Only the
    copy handed to pnnx changes (the raw model is untouched); :func:`check_converted` then compares the
    ncnn model with the unchanged ONNX model in onnxruntime.
    """
    ix = GraphIndex(model)
    inits = {t.name: t for t in model.graph.initializer}
    rewrites = []
    for cat in model.graph.node:
        channel_axis = any(a.name == "axis" and a.i == 1 for a in cat.attribute)
        if cat.op_type != "Concat" or len(cat.input) != 4 or not channel_axis:
            continue
        offsets, source = [], None
        for t in cat.input:
            sl = ix.producer.get(t)
            if sl is None or sl.op_type != "Slice" or len(sl.input) != 5 or len(ix.consumers.get(t, [])) != 1:
                break
            values = [ix.const_value(i) for i in sl.input[1:]]
            if any(v is None for v in values):
                break
            starts, ends, axes, steps = (np.asarray(v) for v in values)
            if list(axes.reshape(-1)) != [2, 3] or \
                    list(steps.reshape(-1)) != [2, 2] or min(ends.reshape(-1)) < 1 << 30:
                break
            offsets.append(tuple(int(v) for v in starts.reshape(-1)))
            source = source or sl.input[0]
            if sl.input[0] != source:
                break
        else:
            users = ix.consumers.get(cat.output[0], [])
            if sorted(offsets) != [(0, 0), (0, 1), (1, 0), (1, 1)] or len(users) != 1 or users[0].op_type != "Conv" or \
                    users[0].input[1] not in inits or len(ix.consumers.get(users[0].input[1], [])) != 1 or \
                    any(a.name == "group" and a.i != 1 for a in users[0].attribute):
                continue
            rewrites.append((cat, users[0], offsets, source))
    if not rewrites:
        return None
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes = list(out.graph.node)
    inits = {t.name: t for t in out.graph.initializer}
    drop = set()
    for cat, conv, offsets, source in rewrites:
        w = numpy_helper.to_array(inits[conv.input[1]])
        c = w.shape[1] // 4
        permuted = np.empty_like(w)
        for k, (r, col) in enumerate(offsets):  # Concat block k holds offset (r, col); SpaceToDepth puts it at 2r + col
            j = 2 * r + col
            if order == "DCR":  # ONNX: channel (2r + col) * C + ch
                permuted[:, j * c:(j + 1) * c] = w[:, k * c:(k + 1) * c]
            else:  # pixel_unshuffle: channel ch * 4 + 2r + col
                permuted[:, j::4] = w[:, k * c:(k + 1) * c]
        inits[conv.input[1]].CopyFrom(numpy_helper.from_array(permuted, conv.input[1]))
        drop |= {cat.output[0], *cat.input}
        at = next(i for i, n in enumerate(nodes) if n.output and n.output[0] == cat.input[0])
        assert source is not None  # four Slices of one tensor were matched
        nodes.insert(at, onnx.helper.make_node("SpaceToDepth", [source], [cat.output[0]], blocksize=2,
                                               name=f"headcut/focus/{cat.name}"))
    kept = [n for n in nodes if not (n.op_type in ("Slice", "Concat") and n.output[0] in drop)]
    del out.graph.node[:]
    out.graph.node.extend(kept)
    return out


def _pnnx(src: Path, shape: list[int], param: Path, binary: Path,
          model: onnx.ModelProto | None = None, shape2: list[int] | None = None) -> tuple[list[str], list[str]]:
    """Run the pnnx binary in a scratch folder (it writes a dozen files); keep the ncnn pair only.
    ``model``, when given, is converted instead of the file (a rewritten copy of it)."""
    exe = pnnx_binary()
    with tempfile.TemporaryDirectory(prefix="headcut-pnnx-") as d:
        local = Path(d, "model.onnx")
        if model is not None:
            onnx.save(model, str(local))
        else:
            shutil.copy(src, local)
        for side in src.parent.glob(src.name + "*.data"):
            shutil.copy(side, Path(d, side.name))
        args = [str(exe), local.name, f"inputshape=[{','.join(map(str, shape))}]", "fp16=0", "optlevel=2"]
        if shape2 is not None:  # a second size: pnnx writes the shapes that follow the input as expressions
            args.insert(3, f"inputshape2=[{','.join(map(str, shape2))}]")
        p = subprocess.run(args, cwd=d, capture_output=True, text=True, timeout=600)
        made = Path(d, "model.ncnn.param")
        if p.returncode != 0 or not made.exists():
            lines = [ln for ln in (p.stderr + p.stdout).splitlines() if ln.strip()]
            raise EngineError(f"pnnx could not convert {src.name}: "
                              + (lines[-1][:300] if lines else f"exit {p.returncode}"))
        shutil.move(str(made), param)
        shutil.move(str(Path(d, "model.ncnn.bin")), binary)
    return param_blobs(param)


def param_blobs(param: str | os.PathLike) -> tuple[list[str], list[str]]:
    """(input blobs, output blobs) of an ncnn .param: Input layers' tops; blobs nobody consumes."""
    lines = Path(param).read_text().split("\n")[2:]
    inputs, produced, consumed = [], [], set()
    for ln in lines:
        parts = ln.split()
        if len(parts) < 4:
            continue
        kind, n_in, n_out = parts[0], int(parts[2]), int(parts[3])
        bottoms = parts[4:4 + n_in]
        tops = parts[4 + n_in:4 + n_in + n_out]
        consumed.update(bottoms)
        produced += tops
        if kind == "Input":
            inputs += tops
    outputs = [b for b in produced if b not in consumed and b not in inputs]

    def key(name: str):
        m = re.fullmatch(r"out(\d+)", name)
        return (0, int(m.group(1))) if m else (1, produced.index(name))

    return inputs, sorted(outputs, key=key)
