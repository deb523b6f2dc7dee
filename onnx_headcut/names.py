"""Class names: from ``--names``, else the ones the model records, else COCO's 80, else ``class0``, ...

A names file (:func:`read_names`) is one of:

- **plain text**, one name per line. The file's final newline ends its last line and adds no name;
  a name may be blank. A file with exactly as many lines as the model has classes gives one name
  per line, blank lines included (a blank line is a blank name). Otherwise blank lines at the end
  are dropped, and if the count still differs, every blank line is ignored (a file with blank
  separator lines): the count left must be the model's.
- **JSON**: a list of names, an object ``{"0": "person", "1": "bicycle", ...}`` (the keys are the
  class ids 0 .. nc-1, in any order) or an object with such a ``"names"`` member; also the Python
  dict literal Ultralytics writes into ``metadata_props`` (``{0: 'person', 1: 'bicycle'}``).
- **YAML** (``.yaml``/``.yml``, or a file with a top-level ``names:`` key), as an Ultralytics data
  YAML writes it: ``names:`` followed by ``  0: person`` lines (or ``  - person`` lines, or a flow list).
  PyYAML reads it when it is installed; otherwise a small parser of that ``names:`` entry does.

Anything else is refused with one line (:class:`~onnx_headcut.errors.InputError`).
"""

from __future__ import annotations

import ast
import json
import os
import re
from pathlib import Path

from .errors import InputError
from .io import read_limited

#: a names file (or a model's ``names`` entry) is read up to this many bytes (1 MiB: ~10^5 class names)
MAX_NAMES_BYTES = 1 << 20

COCO = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)


class NamesError(ValueError):
    """A names mapping or list that is not class ids 0 .. n-1 to strings (the message says why)."""


class _Count(NamesError):
    """A names file with the wrong number of names."""


def as_names(value) -> list[str]:
    """A list of names from a parsed list, or a dict whose keys are the class ids 0 .. n-1
    (ints, or strings of digits as JSON writes them). Numbers become their text, None a blank name."""
    if isinstance(value, dict) and set(value) == {"names"}:
        value = value["names"]
    if isinstance(value, (list, tuple)):
        items = list(value)
    elif isinstance(value, dict):
        ids = {}
        for k, v in value.items():
            if isinstance(k, str) and re.fullmatch(r"\d{1,9}", k.strip()):
                k = int(k)
            if isinstance(k, bool) or not isinstance(k, int):
                raise NamesError(f"the key {str(k)[:40]!r} is not a class id")
            if k in ids:
                raise NamesError(f"class id {k} is given twice")
            ids[k] = v
        if sorted(ids) != list(range(len(ids))):
            missing = min(set(range(len(ids))) - set(ids))
            raise NamesError(f"the class ids are not 0 .. {len(ids) - 1} (no {missing})")
        items = [ids[i] for i in range(len(ids))]
    else:
        raise NamesError(f"a {type(value).__name__}, not a list or a mapping of class ids to names")
    out = []
    for i, v in enumerate(items):
        if v is None:
            v = ""
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            v = str(v)
        if not isinstance(v, str):
            raise NamesError(f"the name of class {i} is a {type(v).__name__}, not text")
        out.append(v.strip())
    return out


def parse_literal(text: str) -> list[str]:
    """The names of the Python dict (or list) literal Ultralytics writes in ``metadata_props["names"]``,
    read with :func:`ast.literal_eval` (never evaluated as code); at most :data:`MAX_NAMES_BYTES`."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_NAMES_BYTES:
        raise NamesError(f"larger than {MAX_NAMES_BYTES} bytes")
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as e:
        raise NamesError(f"not a Python literal ({type(e).__name__})") from None
    return as_names(value)


def _unquote(v: str) -> str:
    v = v.strip()
    if len(v) >= 2 and v[0] == v[-1] == "'":
        return v[1:-1].replace("''", "'")
    if len(v) >= 2 and v[0] == v[-1] == '"':
        try:
            return json.loads(v)
        except ValueError:
            raise NamesError(f"bad double-quoted name {v[:40]!r}") from None
    return v


def _uncomment(v: str) -> str:
    """``v`` without a trailing `` # comment`` (a ``#`` inside quotes is kept)."""
    quote = None
    for i, c in enumerate(v):
        if quote:
            quote = None if c == quote else quote
        elif c in "'\"" and not v[:i].strip():
            quote = c
        elif c == "#" and (i == 0 or v[i - 1] in " \t"):
            return v[:i].rstrip()
    return v.rstrip()


def _flow(v: str) -> list[str]:
    """A YAML flow list or mapping on one line: JSON, a Python literal, or ``[a, b, c]`` unquoted."""
    for parse in (json.loads, ast.literal_eval):
        try:
            return as_names(parse(v))
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
    inner = v[1:-1]
    if v.startswith("[") and v.endswith("]") and not any(c in inner for c in "'\"[]{}"):
        return [x.strip() for x in inner.split(",")] if inner.strip() else []
    if v.startswith("{") and v.endswith("}") and not any(c in inner for c in "'\"[]{}"):
        pairs = [x.split(":", 1) for x in inner.split(",") if x.strip()]
        if all(len(p) == 2 for p in pairs):
            return as_names({k.strip(): n.strip() for k, n in pairs})
    raise NamesError(f"cannot read the flow value {v[:40]!r}")


def parse_yaml_names(text: str) -> list[str]:
    """The ``names:`` entry of an Ultralytics data YAML, without PyYAML: a block mapping
    (``  0: person``), a block list (``  - person``) or a one-line flow list or mapping."""
    lines = text.splitlines()
    start = next((i for i, ln in enumerate(lines) if re.match(r"names\s*:", ln)), None)
    if start is None:
        raise NamesError("no top-level names: entry")
    rest = _uncomment(lines[start].split(":", 1)[1]).strip()
    if rest:
        return _flow(rest)
    mapping: dict[int, str] = {}
    seq: list[str] = []
    for n, ln in enumerate(lines[start + 1:], start + 2):
        if not ln.strip() or ln.lstrip().startswith("#"):
            continue
        if not ln[0].isspace() and not ln.startswith("-"):
            break  # the next top-level key
        body = ln.strip()
        m = re.fullmatch(r"(\d{1,9})\s*:(.*)", body)
        if m and not seq:
            k = int(m.group(1))
            if k in mapping:
                raise NamesError(f"line {n}: class id {k} is given twice")
            mapping[k] = _unquote(_uncomment(m.group(2)))
        elif body.startswith("-") and (body == "-" or body[1] in " \t") and not mapping:
            seq.append(_unquote(_uncomment(body[1:])))
        else:
            raise NamesError(f"line {n}: not a '<class id>: <name>' or '- <name>' entry")
    if not mapping and not seq:
        raise NamesError("the names: entry is empty")
    return as_names(mapping) if mapping else seq


def _yaml(text: str) -> list[str]:
    try:
        import yaml
    except ImportError:
        return parse_yaml_names(text)
    try:
        data = yaml.safe_load(text)
    except Exception as e:  # PyYAML's errors are many classes
        raise NamesError(f"not YAML ({type(e).__name__})") from None
    if not isinstance(data, dict) or "names" not in data:
        raise NamesError("no top-level names: entry")
    return as_names(data["names"])


def _lines(text: str, nc: int) -> list[str]:
    lines = text.split("\n")  # only a newline ends a line: a name may hold any other character
    if lines[-1] == "":
        lines.pop()  # the final newline ends the last line
    lines = [ln.strip() for ln in lines]
    if len(lines) == nc:
        return lines
    trimmed = list(lines)
    while trimmed and not trimmed[-1]:
        trimmed.pop()
    if len(trimmed) == nc:
        return trimmed
    filled = [ln for ln in lines if ln]
    if len(filled) == nc:
        return filled
    blank = len(trimmed) - len(filled)
    raise _Count(f"{len(trimmed)} names for a model with {nc} classes"
                 + (f" ({blank} of them blank; {len(filled)} without the blank lines)" if blank else ""))


def _structured(text: str):
    """The names of a JSON list or object (or of Ultralytics' Python dict literal); an exception
    that says why when it is JSON but not names, None when it is neither JSON nor a literal."""
    try:
        value = json.loads(text)
    except ValueError as e:
        try:  # the Python dict literal of Ultralytics' metadata
            return parse_literal(text)
        except NamesError as lit:
            return None if str(lit).startswith("not a Python literal") else lit
        return NamesError(f"not JSON ({str(e).splitlines()[0][:80]})")
    try:
        return as_names(value)
    except NamesError as e:
        return e


def read_names(path: str | os.PathLike, nc: int) -> tuple[str, ...]:
    """The ``nc`` class names in the names file at ``path`` (formats: see the module), or :class:`InputError`."""
    data = read_limited(path, MAX_NAMES_BYTES, "names file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: the names file is not UTF-8 text (byte 0x{data[e.start]:02x} at offset "
                         f"{e.start}); save it as UTF-8") from None
    head = text.lstrip()
    suffix = Path(path).suffix.lower()
    kind = "JSON"
    try:
        structured = _structured(text) if suffix == ".json" or head[:1] in ("{", "[") else None
        if isinstance(structured, Exception):
            raise structured
        if structured is None and suffix == ".json":
            raise NamesError("not JSON")
        if structured is not None:
            names = structured
        elif suffix in (".yaml", ".yml") or re.search(r"(?m)^names\s*:\s*(#.*)?$|^names\s*:\s*[\[{]", text):
            kind = "YAML"
            names = _yaml(text)
        else:
            kind = "text"
            names = _lines(text, nc)
    except _Count as e:
        raise InputError(f"{path}: {e}") from None
    except NamesError as e:
        raise InputError(f"{path}: not a names file headcut reads ({kind}: {e}); give one name per line, "
                         "a JSON list or {\"0\": name, ...} object, or a YAML names: mapping") from None
    if len(names) != nc:
        raise InputError(f"{path}: {len(names)} names for a model with {nc} classes")
    return tuple(names)


def class_names(nc: int, path: str | os.PathLike | None = None, recorded=None) -> tuple[str, ...]:
    """``nc`` names: from the names file at ``path``; else ``recorded`` (the names the model's head
    record or metadata carry) when there are ``nc`` of them; else COCO when nc == 80; else
    ``class0``, ``class1``, ..."""
    if path is not None:
        return read_names(path, nc)
    if recorded is not None and len(recorded) == nc:
        return tuple(str(n) for n in recorded)
    return COCO if nc == len(COCO) else tuple(f"class{i}" for i in range(nc))
