"""The head record: the one place that writes it into a raw model and reads it back.

``strip`` stores :meth:`~onnx_headcut.heads.Head.to_json` in the raw model's
``metadata_props["headcut"]`` (:func:`embed`) and as ``<stem>.head.json`` beside it; ``detect``,
``verify``, ``convert`` and ``inspect`` read it with :func:`embedded` / :func:`read_metadata` /
:func:`parse_metadata`, which check every field they use (a record is input: nothing it says may
make headcut decode with a wrong geometry or allocate wildly). ``schema`` versions the record.

The record also carries what the export itself says (:func:`source_metadata`): the class ``names``
and the Ultralytics ``task``/``imgsz``/``stride``/``batch``/``end2end``/``args`` entries, and the
``preprocess`` its family's predict applies (:mod:`onnx_headcut.preprocess`). The original's other
``metadata_props`` entries are copied into the raw model beside the ``headcut`` one.
"""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path
from typing import Any

import onnx

from .errors import HeadcutError, InputError
from .heads import ALL, SCHEMA
from .heads.base import LAYOUTS, PART, SELECTIONS, SPLIT, TASK_ROLES
from .io import load, read_limited
from .names import NamesError, parse_literal
from .preprocess import Preprocess

#: the ``metadata_props`` key of the head record
METADATA_KEY = "headcut"

#: the ``metadata_props`` entries of an Ultralytics export the head record keeps (as ``source_metadata``),
#: beside ``names``; every entry of the original stays in the raw model's ``metadata_props`` as it was
SOURCE_KEYS = ("task", "imgsz", "stride", "batch", "end2end", "args")
#: the longest class name a record may carry
MAX_NAME_CHARS = 256
#: a ``source_metadata`` value longer than this (64 KiB) is left out of the record
MAX_SOURCE_VALUE = 1 << 16


def embed(model: onnx.ModelProto, meta: dict[str, Any]) -> None:
    """Make ``meta`` the model's only ``metadata_props`` entry under :data:`METADATA_KEY`."""
    keep = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    model.metadata_props.add(key=METADATA_KEY, value=json.dumps(meta))


def _json_value(text: str):
    """A metadata value as plain JSON: the Python literal it spells (``[640, 640]``, ``32``,
    ``{'batch': 1}``) when it is one made of JSON types, else the text itself."""
    try:
        v = ast.literal_eval(text.strip())
        json.dumps(v, allow_nan=False)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text
    return v if v is None or isinstance(v, (bool, int, float, str, list, dict)) else text


def source_metadata(model: onnx.ModelProto, num_classes: int) -> tuple[dict[str, Any], tuple[str, ...]]:
    """What the head record keeps of an export's own ``metadata_props`` (Ultralytics writes ``names``,
    ``imgsz``, ``stride``, ``task``, ``batch``, ``args``): ``({"names": [...], "source_metadata":
    {...}}, notes)``, each part only when present. ``names`` (a Python dict literal, read with
    :func:`ast.literal_eval`, at most :data:`~onnx_headcut.names.MAX_NAMES_BYTES`) becomes a list
    indexed by class id; names that cannot be read or do not match ``num_classes`` are left out with
    a note saying why."""
    props = {p.key: p.value for p in model.metadata_props if p.key != METADATA_KEY}
    out: dict[str, Any] = {}
    notes = []
    if "names" in props:
        try:
            names = parse_literal(props["names"])
            if len(names) != num_classes:
                raise NamesError(f"{len(names)} names for a head with {num_classes} classes")
            if any(len(n) > MAX_NAME_CHARS for n in names):
                raise NamesError(f"a name is longer than {MAX_NAME_CHARS} characters")
            out["names"] = names
        except NamesError as e:
            notes.append(f"the model's metadata_props names were not used: {e}")
    kept = {k: _json_value(props[k]) for k in SOURCE_KEYS if k in props and len(props[k]) <= MAX_SOURCE_VALUE}
    if kept:
        out["source_metadata"] = kept
    return out, tuple(notes)


def model_names(path: str | os.PathLike, num_classes: int) -> list[str] | None:
    """The class names in the ``metadata_props`` of the ONNX model at ``path`` (an original export),
    when they can be read and there are ``num_classes`` of them; else None."""
    model = onnx.load(str(path), load_external_data=False)
    return source_metadata(model, num_classes)[0].get("names")


def embedded(model: onnx.ModelProto, source: str = "the model") -> dict[str, Any] | None:
    """The checked head record embedded in ``model``, or None when it has none."""
    for p in model.metadata_props:
        if p.key == METADATA_KEY:
            return parse_metadata(p.value, source)
    return None


def read_metadata(model: onnx.ModelProto | str | os.PathLike) -> dict[str, Any]:
    """The head record ``strip`` stored in a raw model (a path or a loaded model)."""
    source = "the model"
    if not isinstance(model, onnx.ModelProto):
        source = str(model)
        model = onnx.load(str(model), load_external_data=False)
    meta = embedded(model, source)
    if meta is None:
        raise HeadcutError("no headcut metadata in this model (was it written by headcut strip?)")
    return meta


def head_for(candidate: str | os.PathLike) -> dict | None:
    """The head JSON of a raw model, or None for a decoded one.

    For ``.onnx`` the metadata ``strip`` embedded (``metadata_props["headcut"]``) is what counts; a
    ``<stem>.head.json`` beside it must say the same, and one beside an ``.onnx`` without embedded
    metadata is stale (:class:`InputError` in both cases: a wrong head would decode garbage).
    ``.mnn``, ``.param``, ``.xml`` and ``.tflite`` carry no metadata: their sidecar is the head, and
    ``<name>.head.json`` (``raw.tflite.head.json``: the head plus the ``converted`` record of a target
    that renames and re-lays the tensors) comes before ``<stem>.head.json``.
    """
    p = Path(candidate)
    side = p.with_name(p.stem + ".head.json")
    if p.suffix.lower() != ".onnx" and p.with_name(p.name + ".head.json").is_file():
        side = p.with_name(p.name + ".head.json")
    sidecar = parse_metadata(read_limited(side, 1 << 20, "head record"), str(side)) if side.is_file() else None
    if p.suffix.lower() != ".onnx":
        return sidecar
    m = load(p)
    inside = embedded(m, str(p))
    if inside is not None:
        if sidecar is not None and sidecar != inside:
            raise InputError(f"{side}: disagrees with the head metadata embedded in {p} (which headcut uses); "
                             "remove or replace the sidecar")
        return inside
    if sidecar is not None:
        raise InputError(f"{side}: lies beside {p}, which has no headcut metadata (a raw model strip wrote has it); "
                         "remove the stale sidecar")
    return None


#: bounds on recorded numbers: a metadata record is input, and nothing it says may make headcut allocate wildly
_MAX_CLASSES, _MAX_GRID, _MAX_STRIDE, _MAX_CHANNELS = 1 << 16, 1 << 14, 1 << 12, 1 << 17


class _Bad(Exception):
    pass


def _int(v, where: str, lo: int = 1, hi: int = 1 << 31) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise _Bad(f"{where} must be an integer in [{lo}, {hi}], not {v!r}"[:200])
    return v


def _get(d: dict, key: str, where: str, kind: type):
    if key not in d:
        raise _Bad(f"{where}{key} is missing")
    v = d[key]
    if not isinstance(v, kind) or (kind in (list, dict) and isinstance(v, bool)):
        raise _Bad(f"{where}{key} must be a {kind.__name__}, not {type(v).__name__}")
    return v


def _objects(meta: dict, key: str):
    """(``"key[k]."``, item) for each item of the non-empty list of objects ``meta[key]``."""
    items = _get(meta, key, "", list)
    if not items:
        raise _Bad(f"{key} is empty")
    for k, item in enumerate(items):
        if not isinstance(item, dict):
            raise _Bad(f"{key}[{k}] must be an object")
        yield f"{key}[{k}].", item


def check_metadata(meta, source: str = "headcut metadata") -> dict:
    """``meta`` (parsed JSON) if it is a well-formed head record, else :class:`~onnx_headcut.errors.InputError`
    saying which field is wrong. Checks every key the decode, detect, verify and convert read."""
    try:
        if not isinstance(meta, dict):
            raise _Bad(f"the record must be a JSON object, not {type(meta).__name__}")
        decode = _get(meta, "decode", "", str)
        known = [k.name for k in ALL]
        if decode not in known:
            raise _Bad(f"decode {decode!r} is not one of {', '.join(known)}"[:200])
        _int(meta.get("num_classes"), "num_classes", 1, _MAX_CLASSES)
        inp = _get(meta, "input", "", dict)
        _get(inp, "name", "input.", str)
        shape = _get(inp, "shape", "input.", list)
        if not 3 <= len(shape) <= 4 or not all(isinstance(d, str) or _int(d, "input.shape[]", 1, 1 << 16)
                                                for d in shape):
            raise _Bad(f"input.shape must be 3 or 4 dims, not {shape!r}"[:200])
        for w, lv in _objects(meta, "levels"):
            _int(lv.get("stride"), w + "stride", 1, _MAX_STRIDE)
            grid = _get(lv, "grid", w, list)
            if len(grid) != 2:
                raise _Bad(f"{w}grid must be [h, w], not {grid!r}"[:200])
            for d in grid:
                _int(d, w + "grid[]", 1, _MAX_GRID)
            if "anchors" in lv:
                anchors = _get(lv, "anchors", w, list)
                if not anchors or not all(isinstance(a, list) and len(a) == 2 and all(
                        isinstance(v, (int, float)) and not isinstance(v, bool) for v in a) for a in anchors):
                    raise _Bad(f"{w}anchors must be a list of [w, h] numbers")
        if "dynamic_hw" in meta:
            _check_dynamic(meta, shape)
        elif not all(isinstance(d, int) for d in shape[1:]):
            raise _Bad(f"input.shape may name only the batch axis (a record without dynamic_hw), not {shape!r}"[:200])
        for w, c in _objects(meta, "channels"):
            _get(c, "name", w, str)
            _int(c.get("size"), w + "size", 1, _MAX_CHANNELS)
            if "sigmoid" in c and not isinstance(c["sigmoid"], bool):
                raise _Bad(f"{w}sigmoid must be true or false")
        _check_layout(meta)
        _check_task(meta)
        _int(meta.get("reg_max", 0), "reg_max", 0, 1 << 10)
        bins = _int(meta.get("dfl_bins", 0), "dfl_bins", 0, 1 << 10)
        dfl = [c["size"] for c in meta["channels"] if c.get("name") == "dfl"]
        if dfl and (bins < 2 or dfl[0] != 4 * bins):
            raise _Bad(f"dfl_bins {bins} does not match the dfl block of {dfl[0]} channels (4 * dfl_bins)")
        for key in ("ones_column",):
            if key in meta and not isinstance(meta[key], bool):
                raise _Bad(f"{key} must be true or false")
        if not isinstance(meta.get("schema", 1), int) or meta.get("schema", 1) > SCHEMA:
            raise _Bad(f"schema {meta.get('schema')!r} is newer than this headcut reads ({SCHEMA}); upgrade headcut")
        if "original_output" in meta:
            orig = _get(meta, "original_output", "", dict)
            if orig.get("boxes", "xywh") not in ("xywh", "xyxy"):
                raise _Bad(f"original_output.boxes must be 'xywh' or 'xyxy', not {orig.get('boxes')!r}"[:200])
        if "selection" in meta:
            _check_selection(_get(meta, "selection", "", dict), meta)
        if "preprocess" in meta:
            try:
                Preprocess.from_json(meta["preprocess"])
            except ValueError as e:
                raise _Bad(str(e)) from None
        if "names" in meta:
            names = _get(meta, "names", "", list)
            if len(names) != meta["num_classes"] or not all(isinstance(n, str) and len(n) <= MAX_NAME_CHARS
                                                           for n in names):
                raise _Bad(f"names must be a list of num_classes ({meta['num_classes']}) strings of at most "
                           f"{MAX_NAME_CHARS} characters")
        if "converted" in meta:
            _check_converted(meta)
        if "source_metadata" in meta:
            _get(meta, "source_metadata", "", dict)
        for k, o in enumerate(meta.get("raw_outputs", []) if isinstance(meta.get("raw_outputs", []), list)
                              else [None]):
            if not isinstance(o, dict):
                raise _Bad("raw_outputs must be a list of {name, shape} objects")
            _get(o, "name", f"raw_outputs[{k}].", str)
            _get(o, "shape", f"raw_outputs[{k}].", list)
    except _Bad as e:
        raise InputError(f"{source}: malformed headcut metadata: {e}") from None
    return meta


def _check_layout(meta: dict) -> None:
    """The layout fields: a known layout; split layouts name, per channel block, the output it is in (box
    values in ``box``, objectness and classes in ``cls``), and ``score_sum`` (only there, and only for
    heads without objectness); ``raw_outputs``, when recorded, are as many as the layout has."""
    layout = meta.get("layout", "flat")
    if layout not in LAYOUTS:
        raise _Bad(f"layout must be one of {', '.join(LAYOUTS)}, not {layout!r}"[:200])
    channels = meta["channels"]
    if layout in SPLIT:
        for k, c in enumerate(channels):
            if c["name"] not in PART or c.get("output") != PART[c["name"]]:
                raise _Bad(f"channels[{k}] ({c['name']!r}) must say output {PART.get(c['name'], 'box or cls')!r} "
                           f"in the {layout} layout, not {c.get('output')!r}"[:200])
        if not isinstance(meta.get("score_sum", False), bool):
            raise _Bad("score_sum must be true or false")
        if meta.get("score_sum") and (any(c["name"] == "obj" for c in channels) or
                                      not any(c["name"] == "cls" for c in channels)):
            raise _Bad("score_sum is recorded for a head with objectness or without classes")
    elif "score_sum" in meta or any("output" in c for c in channels):
        raise _Bad(f"score_sum and channel outputs belong to the split layouts, not {layout}")
    if isinstance(meta.get("raw_outputs"), list):
        extra = sum(c["name"] in TASK_ROLES for c in channels)  # a task's extra block: an output of its own
        parts = (2 + extra + bool(meta.get("score_sum"))) if layout in SPLIT else 1
        n = parts * (len(meta["levels"]) if layout in ("levels", "split") else 1)
        if "protos" in meta:  # a segment head's prototypes, kept after the raw outputs
            n += 1
        if len(meta["raw_outputs"]) != n:
            raise _Bad(f"{len(meta['raw_outputs'])} raw_outputs for the {layout} layout of "
                       f"{len(meta['levels'])} levels, which has {n}")


#: what a ``converted`` record may say its model computes in (``int8``: verified by detection agreement)
PRECISIONS = ("fp32", "fp16", "int8")


def _check_task(meta: dict) -> None:
    """``task`` (absent: detect) is a known one whose extra block the channels hold, once and last; a pose
    record's ``keypoints`` {count, dims} match that block."""
    from .heads.tasks import TASKS

    task = meta.get("task", "detect")
    roles = {t.TASK: t.ROLE for t in TASKS}
    if task != "detect" and task not in roles:
        raise _Bad(f"task must be detect or one of {', '.join(roles)}, not {task!r}"[:200])
    names = [c["name"] for c in meta["channels"]]
    extra = [n for n in names if n in TASK_ROLES]
    want = [roles[task]] if task != "detect" else []
    if extra != want or (want and names[-1] != want[0]):
        raise _Bad(f"the {task} task has the extra channel block {want or 'none'} last, the record has {names}"[:200])
    if task == "pose":
        k = _get(meta, "keypoints", "", dict)
        count, dims = _int(k.get("count"), "keypoints.count", 1, 1 << 10), _int(k.get("dims"), "keypoints.dims", 2, 3)
        size = next(c["size"] for c in meta["channels"] if c["name"] == "kpt")
        if count * dims != size:
            raise _Bad(f"keypoints {count} x {dims} do not match the kpt block of {size} channels")
    elif "keypoints" in meta:
        raise _Bad(f"keypoints belong to the pose task, not {task}")


def _check_converted(meta: dict) -> None:
    """The ``converted`` record: ``{"engine", "input": {name, layout}, "outputs": [{name, layout}, ...],
    "precision"}``, one output per raw output; ``precision`` (default fp32) one of :data:`PRECISIONS`."""
    conv = _get(meta, "converted", "", dict)
    _get(conv, "engine", "converted.", str)
    for w, t in [("converted.input.", _get(conv, "input", "converted.", dict)),
                 *((f"converted.outputs[{k}].", o) for k, o in enumerate(_get(conv, "outputs", "converted.", list)))]:
        if not isinstance(t, dict):
            raise _Bad(f"{w[:-1]} must be an object")
        _get(t, "name", w, str)
        if t.get("layout") not in ("same", "NHWC", "NWC"):
            raise _Bad(f"{w}layout must be 'same', 'NHWC' or 'NWC', not {t.get('layout')!r}"[:200])
    if conv.get("precision", "fp32") not in PRECISIONS:
        raise _Bad(f"converted.precision must be one of {', '.join(PRECISIONS)}, not {conv.get('precision')!r}"[:200])
    raw = meta.get("raw_outputs")
    if isinstance(raw, list) and raw and len(conv["outputs"]) != len(raw):
        raise _Bad(f"converted.outputs has {len(conv['outputs'])} entries for {len(raw)} raw outputs")


def _check_selection(sel: dict, meta: dict) -> None:
    """A recorded NMS-free selection: ``{"kind": "topk", "k": K, "nms": false, ...}`` on a head whose decode
    gives boxes and class scores (``dist_anchor``), at most as many rows as the head has anchors."""
    if sel.get("kind") not in SELECTIONS:
        raise _Bad(f"selection.kind must be one of {', '.join(SELECTIONS)}, not {sel.get('kind')!r}"[:200])
    rows = meta.get("rows")
    _int(sel.get("k"), "selection.k", 1, rows if isinstance(rows, int) and not isinstance(rows, bool) and rows > 0
         else 1 << 20)
    if sel.get("nms", False) is not False:
        raise _Bad("selection.nms must be false (a top-k selection applies no NMS)")
    if meta["decode"] != "dist_anchor":
        raise _Bad(f"a top-k selection is recorded only for the dist_anchor decode, not {meta['decode']!r}")


def _check_dynamic(meta: dict, shape: list) -> None:
    """A ``dynamic_hw`` record: its names and multiple, levels at ``input.shape`` whose strides divide the
    multiple and whose grids are the input size / stride, and the sizes it was verified at."""
    d = _get(meta, "dynamic_hw", "", dict)
    _get(d, "height", "dynamic_hw.", str)
    _get(d, "width", "dynamic_hw.", str)
    m = _int(d.get("multiple_of"), "dynamic_hw.multiple_of", 1, _MAX_STRIDE)
    if len(shape) != 4 or not all(isinstance(v, int) and v % m == 0 for v in shape[2:]):
        raise _Bad(f"input.shape {shape!r} of a dynamic_hw record must end in a height and width that are multiples "
                   f"of multiple_of ({m})"[:200])
    for w, lv in _objects(meta, "levels"):
        s = lv["stride"]
        if m % s or lv["grid"] != [shape[2] // s, shape[3] // s]:
            raise _Bad(f"{w}grid {lv['grid']!r} with stride {s} is not input.shape / stride, or the stride does not "
                       f"divide multiple_of ({m})"[:200])
    for k, v in enumerate(_get(d, "verified_at", "dynamic_hw.", list)):
        if not (isinstance(v, list) and len(v) == 2 and all(_int(x, f"dynamic_hw.verified_at[{k}][]", 1, 1 << 16) % m
                                                            == 0 for x in v)):
            raise _Bad(f"dynamic_hw.verified_at[{k}] must be [h, w], multiples of {m}")


#: the record ``convert`` writes beside a converted *decoded* model (no head to record): ``raw.tflite`` →
#: ``raw.tflite.converted.json``, holding what a head record's ``converted`` holds
CONVERTED_SUFFIX = ".converted.json"


def converted_record(candidate: str | os.PathLike, meta: dict | None = None) -> dict | None:
    """What ``convert`` recorded of the converted model ``candidate`` (engine, tensors, precision,
    quantizer): its head record's ``converted`` (``meta``, a raw model's), else for a decoded original
    converted as is the ``<name>.converted.json`` beside it; None when neither says anything."""
    if meta is not None:
        return meta.get("converted")
    p = Path(candidate)
    side = p.with_name(p.name + CONVERTED_SUFFIX)
    if p.suffix.lower() == ".onnx" or not side.is_file():
        return None
    text = read_limited(side, 1 << 20, "converted record")
    try:
        record = json.loads(text)
    except (ValueError, RecursionError, UnicodeDecodeError) as e:
        raise InputError(f"{side}: malformed converted record: not JSON ({str(e).splitlines()[0][:120]})") from None
    try:
        _check_converted({"converted": record})
    except _Bad as e:
        raise InputError(f"{side}: malformed converted record: {e}") from None
    return record


def parse_metadata(text, source: str = "headcut metadata") -> dict:
    """Parse and check a head record (the ``headcut`` metadata value or a ``*.head.json`` file's text)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InputError(f"{source}: malformed headcut metadata: not UTF-8 (byte {e.start})") from None
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise InputError(f"{source}: malformed headcut metadata: not JSON ({str(e).splitlines()[0][:120]})") from None
    return check_metadata(meta, source)
