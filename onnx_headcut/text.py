"""Strings from a model (tensor and node names, metadata, class names) made safe to print.

A model is untrusted input: a tensor named ``"x\\nverify    OK"`` or one carrying a Unicode bidi
override would otherwise forge or reorder lines of headcut's report. :func:`printable` is the one
place that escapes them; the report, the CLI and :class:`~onnx_headcut.errors.HeadcutError` all go
through it.
"""

from __future__ import annotations

_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\0": "\\x00"}


def _escape(c: str) -> str:
    if c in _SHORT:
        return _SHORT[c]
    o = ord(c)
    return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}"


def printable(text: object) -> str:
    """``text`` with every character that is not printable on one line escaped, Python-style.

    Escaped: control characters (C0, DEL, C1: ``\\n``, ``\\r``, NUL, ESC, ...), line and paragraph
    separators, bidi embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069, LRM/RLM) and
    every other format or unassigned character (``str.isprintable`` is False); a plain space is kept.

    >>> printable("out\\nverify    OK\\u202e")
    'out\\\\nverify    OK\\\\u202e'
    """
    s = str(text)
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() or c == " " else _escape(c) for c in s)


def printable_lines(lines) -> str:
    """Join report lines with newlines, each line escaped first (so no line can contain a line break)."""
    return "\n".join(printable(ln) for ln in lines)
