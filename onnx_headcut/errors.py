"""One exception hierarchy; the CLI maps each class to an exit code and prints its message on one line."""

from __future__ import annotations

import re

from .text import printable


class HeadcutError(Exception):
    """Base class. ``exit_code`` is what the CLI returns; the message is one line for the user."""

    exit_code = 2

    def __str__(self) -> str:
        """One printable line: strings from the model are escaped (:func:`~onnx_headcut.text.printable`),
        so a tensor named ``"x\\nverify OK"`` cannot forge a report line; runs of spaces are collapsed."""
        return re.sub(" {2,}", " ", printable(super().__str__())).strip()


class InputError(HeadcutError):
    """The input file is missing, empty, unreadable or not a valid ONNX model."""


class TooLargeError(InputError):
    """A constant the model declares is larger than headcut will materialise (see
    :data:`onnx_headcut.graph.MAX_CONSTANT_ELEMENTS`); refused before anything is allocated."""


class OutputError(HeadcutError):
    """The output path cannot be written (missing folder, not writable, same as the input...)."""


class NoHeadError(HeadcutError):
    """No known detection head was recognised; the message says what was looked for."""


class AlreadyRawError(HeadcutError):
    """The model's outputs are already the raw prediction convs: there is no decode to cut."""

    exit_code = 4


class RewriteError(HeadcutError):
    """A graph rewrite cannot be done (for example a >4-D chain with no <=4-D equivalent)."""


class InternalError(HeadcutError):
    """headcut broke one of its own postconditions (a bug, never the user's input): exit 1, one line."""

    exit_code = 1


class VerificationError(HeadcutError):
    """The rewritten model does not reproduce the original within tolerance."""

    exit_code = 3


class UsageError(HeadcutError, ValueError):
    """A command-line option or argument is out of its range or does not apply."""
