"""Load and save ONNX files safely.

* :func:`load` checks the path and the bytes before anything else runs and turns every failure into
  an :class:`~onnx_headcut.errors.InputError` with a one-line reason.
* :func:`check_output_path` refuses an output that would overwrite the input, or that sits in a
  missing or read-only folder, before any work is done.
* :class:`Staging` writes every output file into a private folder next to the destination and
  moves them into place only when :meth:`Staging.commit` is called: an error or an interrupt
  leaves nothing behind, and the input is never opened for writing.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import onnx

from .errors import InputError, OutputError

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


def check_output_path(src: str | os.PathLike, dst: str | os.PathLike, force: bool = False) -> Path:
    """Return ``dst`` as a Path after checking it can be written without touching ``src``."""
    s, d = Path(src), Path(dst)
    if d.suffix.lower() != ".onnx":
        raise OutputError(f"{d}: the output must end in .onnx")
    same = d.resolve() == s.resolve() or (d.exists() and s.exists() and os.path.samefile(s, d))
    if same:
        raise OutputError(f"{d}: the output is the input file; choose another output path")
    folder = d.resolve().parent
    if not folder.is_dir():
        raise OutputError(f"{folder}: the output folder does not exist")
    try:  # os.access says yes to root even on read-only mounts: really try
        fd, probe = tempfile.mkstemp(prefix=".headcut-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError:
        raise OutputError(f"{folder}: the output folder is not writable") from None
    if d.exists() and not force:
        raise OutputError(f"{d}: already exists (use --force to overwrite)")
    return d


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
        data = p.name + ".data"
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


class Staging:
    """A private folder beside the destination; files move into place on :meth:`commit` only.

    >>> with Staging(Path("out/raw.onnx")) as st:     # doctest: +SKIP
    ...     save(model, st.path("raw.onnx"))
    ...     st.commit()                                # nothing is visible in out/ before this
    """

    def __init__(self, destination: Path):
        self.folder = Path(destination).resolve().parent
        try:
            self.tmp = Path(tempfile.mkdtemp(prefix=".headcut-", dir=self.folder))
        except OSError as e:
            raise OutputError(f"{self.folder}: cannot write there ({e.strerror})") from None

    def path(self, name: str) -> Path:
        return self.tmp / name

    def commit(self) -> list[Path]:
        """Move every staged file into the destination folder (``os.replace``: atomic per file)."""
        moved = []
        for f in sorted(self.tmp.iterdir()):
            target = self.folder / f.name
            os.replace(f, target)
            moved.append(target)
        return moved

    def __enter__(self) -> "Staging":
        return self

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


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
