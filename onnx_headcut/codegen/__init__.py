"""``headcut codegen``: the C++ decode of a raw model, generated from its head record.

:func:`generate` writes ``<name>_decode.hpp`` (dependency-free C++17: the model's constants, the
kind's row decode with early rejection on logits, class-aware NMS or the recorded top-k selection,
letterbox undo; a dynamic head's calls take the input size) and ``decode_main.cpp`` (a harness: raw
outputs from float32 files in, JSON lines out) into a folder. The pieces: :mod:`.spec` (what the
record says, refused when not covered), :mod:`.kinds` (one ``decode_row`` per decode kind),
:mod:`.layouts` (one row loop per raw layout: flat, levels, split, flat-split), :mod:`.tasks` (the
keypoints of a pose head, the landmarks of a face head, carried by its detections), :mod:`.cpp` (the
header), :mod:`.shared` (its NMS, top-k selection and letterbox), :mod:`.harness` (the harness).
Both files appear together or not at all (:class:`~onnx_headcut.staging.Staging`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import InputError, UsageError
from ..heads import Geometry
from ..io import dependencies, read_limited
from ..metadata import head_for, parse_metadata
from ..staging import Staging, check_outputs
from .cpp import header
from .harness import harness
from .spec import Spec, identifier, spec_of

__all__ = ["LANGUAGES", "Spec", "generate", "outputs", "read_head", "spec_of"]

#: the languages codegen writes
LANGUAGES = ("cpp",)


def read_head(source: str | os.PathLike) -> dict[str, Any]:
    """The head record of a raw model (``.onnx`` with its embedded record, ``.mnn``/``.param`` with
    their ``*.head.json``) or of a ``*.head.json`` itself."""
    p = Path(source)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    if p.name.lower().endswith(".json"):
        return parse_metadata(read_limited(p, 1 << 20, "head record"), str(p))
    head = head_for(p)
    if head is None:
        raise InputError(f"{p}: no headcut head record, so not a raw model from headcut strip "
                         "(run headcut strip first)")
    return head


def _stem(p: Path) -> str:
    name = p.name
    for suffix in (".head.json", ".onnx", ".param", ".mnn", ".json"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return p.stem


def outputs(out_dir: str | os.PathLike, name: str) -> tuple[Path, Path]:
    """What :func:`generate` writes into ``out_dir`` for a model called ``name``."""
    d = Path(out_dir)
    return d / f"{identifier(name)}_decode.hpp", d / "decode_main.cpp"


def generate(source: str | os.PathLike | dict[str, Any] | Geometry, out_dir: str | os.PathLike,
             force: bool = False, lang: str = "cpp", name: str | None = None) -> list[Path]:
    """Write the C++ decode of ``source`` into ``out_dir``; return the paths written (header, harness).

    ``source`` is a raw model (or its ``*.head.json``), a head record (dict) or a
    :class:`~onnx_headcut.heads.Geometry`; ``name`` (default: the model's file name without its
    suffixes, else ``model``) names the header and its namespace. A missing ``out_dir`` is made;
    an existing output is an :class:`~onnx_headcut.errors.OutputError` unless ``force``, and the
    source is never one. A head the generator does not cover is an
    :class:`~onnx_headcut.errors.InputError` naming what, before anything is written.
    """
    if lang not in LANGUAGES:
        raise UsageError(f"--lang must be one of {', '.join(LANGUAGES)}, not {lang!r}")
    protected: dict[Path, str] = {}
    if isinstance(source, (str, os.PathLike)):
        src = Path(source)
        head: dict[str, Any] | Geometry = read_head(src)
        name = name or _stem(src)
        protected = {**dependencies(src), src.with_name(_stem(src) + ".head.json"): f"the head record of {src}"}
        label = src.name
    else:
        head, name, label = source, name or "model", "a raw model"
    spec = spec_of(head, name)
    hpp, main = outputs(out_dir, spec.name)
    check_outputs((hpp, main), protected, force)
    with Staging(hpp, targets=(hpp, main), protected=protected, force=force) as st:
        st.path(hpp.name).write_text(header(spec, label))
        st.path(main.name).write_text(harness(spec))
        st.commit()
    return [hpp, main]
