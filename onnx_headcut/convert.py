"""``headcut convert``: a raw ONNX model to MNN (``.mnn``) or ncnn (``.param`` + ``.bin``).

The head metadata travels with the converted files as ``<stem>.head.json`` so that
``headcut verify`` and C++ code can decode the engine's output. Files are staged and moved into
place only when the conversion succeeded.
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

import onnx

from .engines import EngineError, _need, pnnx_binary, worker
from .errors import OutputError
from .io import dependencies, load
from .metadata import embedded
from .staging import Staging, check_outputs


@dataclass(frozen=True)
class Converted:
    """What ``convert`` wrote and the blob names the C++ side binds to."""

    engine: str
    model: Path  # the .mnn or .param file
    files: tuple[Path, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def _head_json(model: onnx.ModelProto, source: str) -> str | None:
    meta = embedded(model, source)
    return None if meta is None else json.dumps(meta, indent=2) + "\n"


def _input_shape(model: onnx.ModelProto) -> list[int]:
    inits = {t.name for t in model.graph.initializer}
    inp = next(i for i in model.graph.input if i.name not in inits)
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in inp.type.tensor_type.shape.dim]
    return dims


def _same_head(side: Path, head: str) -> bool:
    """``side`` already holds exactly ``head`` (as JSON), so it need not be written."""
    try:
        return side.is_file() and json.loads(side.read_text()) == json.loads(head)
    except (OSError, ValueError):
        return False


def convert(onnx_path: str | os.PathLike, to: str, out_dir: str | os.PathLike | None = None,
            force: bool = False) -> Converted:
    """Convert ``onnx_path`` for engine ``to`` ("mnn" or "ncnn") into ``out_dir`` (default: beside it).

    The output set (``.mnn``, or ``.param`` + ``.bin``, and ``<stem>.head.json`` when the model has
    head metadata) is checked before converting: an existing member is an error unless ``force``,
    and the input or its external data never may be one. A ``.head.json`` that already holds the
    model's metadata (the sidecar ``strip`` wrote) is left as it is.
    """
    src = Path(onnx_path)
    model = load(src)
    out = Path(out_dir) if out_dir is not None else src.parent
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: is not a folder")
    stem = src.stem
    names = {"mnn": [f"{stem}.mnn"], "ncnn": [f"{stem}.param", f"{stem}.bin"]}.get(to)
    if names is None:
        raise EngineError(f"unknown target {to!r} (choose mnn or ncnn)")
    head = _head_json(model, str(src))
    side = out / f"{stem}.head.json"
    targets = [out / n for n in names] + ([side] if head is not None and not _same_head(side, head) else [])
    reads = dependencies(src)  # never written, even with force
    check_outputs(targets, reads, force)
    with Staging(out / names[0], targets=targets, protected=reads, force=force) as st:
        if to == "mnn":
            _need("MNN", "mnn")
            res = json.loads(worker(["mnn", "convert", str(src.resolve()), str(st.path(names[0]))]))
            inputs, outputs = res["inputs"], res["outputs"]
        else:
            _need("ncnn", "ncnn")
            inputs, outputs = _pnnx(src, _input_shape(model), st.path(names[0]), st.path(names[1]))
        if side in targets and head is not None:  # side is a target only with head metadata
            st.path(side.name).write_text(head)
        files = tuple(st.commit())
    return Converted(to, out / names[0], files, tuple(inputs), tuple(outputs))


def _pnnx(src: Path, shape: list[int], param: Path, binary: Path) -> tuple[list[str], list[str]]:
    """Run the pnnx binary in a scratch folder (it writes a dozen files); keep the ncnn pair only."""
    exe = pnnx_binary()
    with tempfile.TemporaryDirectory(prefix="headcut-pnnx-") as d:
        local = Path(d, "model.onnx")
        shutil.copy(src, local)
        for side in src.parent.glob(src.name + "*.data"):
            shutil.copy(side, Path(d, side.name))
        args = [str(exe), local.name, f"inputshape=[{','.join(map(str, shape))}]", "fp16=0", "optlevel=2"]
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
