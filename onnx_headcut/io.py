"""Load and save ONNX files safely.

* :func:`load` checks the path and the bytes before anything else runs and turns every failure into
  an :class:`~onnx_headcut.errors.InputError` with a one-line reason.
* :func:`dependencies` lists the files a model is read from: the file itself and every external
  data file its tensors name. None of them is ever written, whatever ``--force`` says.
* :func:`save` writes a model, with its weights in ``<name>.data`` above the protobuf limit;
  :func:`read_limited` reads a small input file (names, head records) with a size limit.

Writing a command's outputs safely is :mod:`onnx_headcut.staging`.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import onnx

from .errors import InputError

#: protobuf cannot serialise a message of 2 GiB or more; above this, weights go to a side file.
PROTOBUF_LIMIT = 2**31 - 1
_EXTERNAL_THRESHOLD = 1_800_000_000


def load(path: str | os.PathLike) -> onnx.ModelProto:
    """Read an ONNX model (with its external-data side file, if any) or raise :class:`InputError`."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if not p.is_file():
        raise InputError(f"{p}: not a file")
    if p.stat().st_size == 0:
        raise InputError(f"{p}: the file is empty")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as e:  # protobuf DecodeError and friends: corrupt or not ONNX at all
        raise InputError(f"{p}: not a readable ONNX model ({type(e).__name__})") from None
    g = model.graph
    if model.ir_version <= 0 or not g.node or not g.input:
        raise InputError(f"{p}: not an ONNX model (no graph nodes or inputs found)")
    if not g.output:
        raise InputError(f"{p}: the model has no outputs")
    _check_opsets(model, p)
    _load_external(model, p)
    return model


def _check_opsets(model: onnx.ModelProto, p: Path) -> None:
    """Every operator domain the nodes use must have an ``opset_import`` (ONNX needs it to read the ops)."""
    imported = {o.domain if o.domain != "ai.onnx" else "" for o in model.opset_import}
    if "" not in imported and not model.opset_import:
        raise InputError(f"{p}: the model has no opset_import (which ONNX operator set its nodes use is unknown)")
    for n in model.graph.node:
        domain = n.domain if n.domain != "ai.onnx" else ""
        if domain not in imported:
            shown = domain or "ai.onnx (default)"
            raise InputError(f"{p}: node '{n.name or n.output[0]}' ({n.op_type}) uses operator domain {shown} "
                             "but the model has no opset_import for it")


def _load_external(model: onnx.ModelProto, p: Path) -> None:
    """Read the weights stored in side files, each checked by name first."""
    from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors, load_external_data_for_model

    files = []
    for t in _get_all_tensors(model):
        if t.data_location == onnx.TensorProto.EXTERNAL:
            loc = ExternalDataInfo(t).location
            if loc not in files:
                files.append(loc)
    if not files:
        return
    base = p.parent
    for loc in files:
        f = Path(loc)
        if not loc or f.is_absolute() or ".." in f.parts:
            raise InputError(f"{p}: external data location '{loc}' must be a relative path inside the model's folder")
        if not (base / f).is_file():
            raise InputError(f"{p}: external data file '{loc}' listed by '{p.name}' is missing")
    try:
        load_external_data_for_model(model, str(base))
    except Exception as e:  # a truncated side file, offsets past its end, ...
        raise InputError(f"{p}: external data of '{p.name}' is not readable ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None


def dependencies(path: str | os.PathLike) -> dict[Path, str]:
    """``{file: what it is}`` for every file the model at ``path`` is read from.

    That is the file itself and, for ONNX, each external data file named by a tensor with
    ``data_location == EXTERNAL`` (initializers, ``Constant`` attributes, subgraphs), resolved
    against the model's folder as onnx resolves it; for an ncnn ``.param``, its ``.bin``. A file
    that does not exist or does not parse yields just itself (:func:`load` reports why).
    """
    p = Path(path)
    deps = {p: "the input file"}
    if p.suffix.lower() == ".param":
        deps[p.with_suffix(".bin")] = f"the weights of {p}"
        return deps
    if not p.is_file() or not _may_name_external_data(p):
        return deps
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception:
        return deps
    for t in _tensors(model.graph):
        if t.data_location == onnx.TensorProto.EXTERNAL:
            loc = next((e.value for e in t.external_data if e.key == "location"), "")
            if loc:
                deps.setdefault(Path(os.path.dirname(str(p)), loc), f"the external data file of {p}")
    return deps


def _may_name_external_data(p: Path) -> bool:
    """False when the bytes cannot hold an external data reference (its ``location`` key is absent).

    Protobuf, JSON and text formats all store that key verbatim; scanning is far cheaper than a
    second parse of a large model that keeps its weights inside.
    """
    try:
        with open(p, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                return False
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                return mm.find(b"location") != -1
    except (OSError, ValueError):  # unreadable: load() says why
        return False


def _tensors(graph: onnx.GraphProto):
    yield from graph.initializer
    for sp in graph.sparse_initializer:
        yield sp.values
        yield sp.indices
    for node in graph.node:
        for a in node.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            if a.HasField("g"):
                yield from _tensors(a.g)
            for g in a.graphs:
                yield from _tensors(g)


def weight_bytes(model: onnx.ModelProto) -> int:
    """The size of the initializers, from their dims and types (``ByteSize()`` walks every byte: slow)."""
    total = 0
    for t in model.graph.initializer:
        n = 1
        for d in t.dims:
            n *= d
        total += n * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize if t.data_type else 0
    return total


def save(model: onnx.ModelProto, path: str | os.PathLike) -> list[Path]:
    """Save ``model`` to ``path``; weights go to ``<name>.data`` when the model is too big for protobuf.

    Returns the files written.
    """
    p = Path(path)
    if weight_bytes(model) > _EXTERNAL_THRESHOLD:
        data = p.name + ".data"  # tensors of 1 KiB or more go there (see save_external)
        save_external(model, p, data, size_threshold=1024)
        return [p, p.with_name(data)]
    onnx.save_model(model, str(p))
    return [p]


def save_external(model: onnx.ModelProto, path: Path, location: str, size_threshold: int = 1024) -> None:
    """Save with weights in ``location`` beside ``path``.

    ``onnx.save_model(save_as_external_data=True)`` refuses when a file named ``location`` exists in
    the *current* folder (it tests the relative path against the working directory), so the tensors
    are marked here and onnx only writes them next to ``path``.
    """
    import sys

    from onnx.external_data_helper import _get_initializer_tensors, set_external_data

    for t in _get_initializer_tensors(model):
        if t.HasField("raw_data") and sys.getsizeof(t.raw_data) >= size_threshold:
            set_external_data(t, location)
    onnx.save_model(model, str(path))


def read_limited(path: str | os.PathLike, limit: int, what: str) -> bytes:
    """The bytes of ``path``, reading at most ``limit`` (a FIFO, ``/dev/zero`` or a huge file is
    refused after ``limit`` bytes, never read to the end); :class:`InputError` on any failure."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise InputError(f"{p}: no such {what}") from None
    except IsADirectoryError:
        raise InputError(f"{p}: is a folder, not a {what}") from None
    except OSError as e:
        raise InputError(f"{p}: cannot read the {what} ({e.strerror or type(e).__name__})") from None
    if len(data) > limit:
        raise InputError(f"{p}: the {what} is larger than {limit} bytes, headcut's limit for it")
    return data
