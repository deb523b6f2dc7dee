"""Prove a cut exact, in three layers that a wrong cut cannot pass.

The original runs once in onnxruntime with its prediction-conv outputs added as extra graph
outputs (:func:`with_outputs`, on the serialized bytes: nothing of the user's file changes), the
raw model runs beside it, and per input:

1. **layout** — the raw outputs must *be* the prediction convs' values, rearranged: numpy lays the
   conv outputs out as the metadata says (:func:`expected_raw`) and the raw outputs must equal them
   exactly. Only what the chosen layout keeps in the graph (``--keep-sigmoid``, ``--keep-dfl``) is
   computed, and those columns are allowed a few ulps. This proves the cut itself.
2. **decode** — the numpy decode of the raw outputs must equal the original's output element by
   element within ``atol + rtol·|original|``, where ``atol`` is fixed by the *input size* and the
   dtype (``tol`` px per 640 px of input for boxes, ``tol`` for scores) and ``rtol`` is the dtype's
   rounding (1e-5 for float32). No value in the output can widen the tolerance of another; the worst
   element is reported with its row, level and column. This proves the recorded geometry.
3. **detections** — class-aware NMS on both sides at the requested ``conf`` (never lowered), with
   no top-k cap that could split ties; every detection must have a same-class partner with
   IoU >= :data:`MIN_IOU`. This proves what a user sees.

Graph optimisations are off on both sides so that onnxruntime's own fusions can neither hide nor
cause a difference. Any layer failing is a :class:`~onnx_headcut.errors.VerificationError` (exit 3).
"""

from __future__ import annotations

from .layers import (
    check_outputs,
    check_split_outputs,
    decode_check,
    detection_check,
    expected_raw,
    gap_threshold,
    layout_check,
    match_detections,
)
from .ort import conv_outputs, deterministic_input, image_input, reference_session, session, verify, with_outputs
from .results import (
    DEFAULT_CONF,
    DEFAULT_IOU,
    DEFAULT_MIN_RECALL,
    DEFAULT_TOL,
    MIN_IOU,
    AgreementCheck,
    Allowed,
    Check,
    DecodeCheck,
    DetectionCheck,
    LayoutCheck,
    Verification,
    check_options,
)

__all__ = ["DEFAULT_CONF", "DEFAULT_IOU", "DEFAULT_MIN_RECALL", "DEFAULT_TOL", "MIN_IOU", "AgreementCheck", "Allowed",
           "Check", "DecodeCheck",
           "DetectionCheck", "LayoutCheck", "Verification", "check_options", "check_outputs", "check_split_outputs",
           "conv_outputs", "decode_check", "detection_check", "deterministic_input", "expected_raw", "gap_threshold",
           "image_input", "layout_check", "match_detections", "reference_session", "session", "verify", "with_outputs"]
