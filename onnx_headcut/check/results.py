"""What a verification found: the three layers' results on one input, and their tolerances."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import UsageError, VerificationError

#: box error allowed per 640 px of input size (pixels), and score error allowed (absolute)
DEFAULT_TOL = 1e-3
DEFAULT_CONF = 0.25
DEFAULT_IOU = 0.45
#: a detection and its partner on the other side must overlap at least this much
MIN_IOU = 0.99
#: the masks of a matched pair of segment detections must overlap at least this much
MIN_MASK_IOU = 0.99
_BOX_SCALE = 640.0
#: relative term of layer 2 (the dtype's rounding through a decode of a few ops)
_RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float16): 4e-3}


def check_options(tol: float = DEFAULT_TOL, conf: float = DEFAULT_CONF, iou: float = DEFAULT_IOU) -> None:
    """Refuse tolerances and thresholds outside their meaningful range (:class:`UsageError`, exit 2).

    ``tol`` must be finite, > 0 and <= 1 (scores live in [0, 1]: a larger tolerance checks nothing);
    ``conf`` and ``iou`` must lie in [0, 1].
    """
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and 0 < tol <= 1):
        raise UsageError(f"--tol must be a finite number in (0, 1], not {tol!r}")
    for name, v in (("--conf", conf), ("--iou", iou)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and 0 <= v <= 1):
            raise UsageError(f"{name} must be in [0, 1], not {v!r}")


@dataclass(frozen=True)
class Allowed:
    """Layer 2's tolerance: ``|a - b| <= atol + rtol * |a|`` per element, ``atol`` fixed by the input size."""

    box_atol: float
    score_atol: float
    rtol: float

    @classmethod
    def for_input(cls, input_shape, dtype, tol: float = DEFAULT_TOL) -> Allowed:
        dt = np.dtype(dtype)
        side = float(max(int(d) for d in input_shape[-2:]))
        box, score = tol * max(1.0, side / _BOX_SCALE), tol
        if dt == np.float16:  # the original's own decode rounds to half precision at each op
            box = max(box, 4 * float(np.spacing(np.float16(side))))
            score = max(score, 4 * float(np.spacing(np.float16(1.0))))
        return cls(box, score, _RTOL.get(dt, 1e-5))

    def __str__(self) -> str:
        return f"{self.box_atol:.2g} px boxes, {self.score_atol:.2g} scores, + {self.rtol:.0e}·|value|"


@dataclass(frozen=True)
class LayoutCheck:
    """Layer 1: the raw outputs against the prediction convs' values laid out in numpy."""

    max_abs_err: float
    values: int  # how many values were compared
    exact_values: int  # of which pure data movement (allowed error 0)
    worst: str  # where the largest violation is ("" when none)
    ok: bool
    source: str = "the prediction convs' outputs"  # what the raw outputs were compared with

    def __str__(self) -> str:
        computed = self.values - self.exact_values
        what = (f"{self.values} values = {self.source} rearranged" +
                (f" ({computed} computed in the graph: sigmoid/DFL, a few ulps allowed)" if computed else ""))
        exact = " (exact)" if self.max_abs_err == 0 else ""
        return f"{what}: max abs error {self.max_abs_err:.3g}{exact}" + ("" if self.ok else f"; {self.worst}")


@dataclass(frozen=True)
class DecodeCheck:
    """Layer 2: the numpy decode of the raw outputs against the original's output."""

    max_abs_err_boxes: float
    max_abs_err_scores: float
    allowed: Allowed
    worst: str
    ok: bool

    @property
    def max_abs_err(self) -> float:
        return max(self.max_abs_err_boxes, self.max_abs_err_scores)

    def __str__(self) -> str:
        return (f"max abs error {self.max_abs_err:.3g} (boxes {self.max_abs_err_boxes:.3g} px, scores "
                f"{self.max_abs_err_scores:.3g}); allowed {self.allowed}" + ("" if self.ok else f"; {self.worst}"))


@dataclass(frozen=True)
class DetectionCheck:
    """Layer 3: detections after class-aware NMS on both sides, paired by anchor row."""

    conf: float
    iou: float
    n_ref: int
    n_got: int
    matched: int  # kept on both sides from the same anchor row, same class, IoU >= MIN_IOU
    min_iou: float  # over the matched pairs (1.0 when there are none)
    borderline: int = 0  # rows whose score is within the score tolerance of conf on one side only
    nms: bool = True  # False: an NMS-free (top-k) export, whose detections are its rows above conf
    mask_iou: float | None = None  # segment heads: min mask IoU over the matched detections (None: no masks)

    @property
    def ok(self) -> bool:
        masks_ok = self.mask_iou is None or self.mask_iou >= MIN_MASK_IOU
        return self.n_ref == self.n_got == self.matched and masks_ok

    def __str__(self) -> str:
        how = f"NMS IoU {self.iou:g}" if self.nms else "top-k, no NMS"
        head = f"conf {self.conf:g}, {how}: {self.n_ref} vs {self.n_got} detections"
        edge = (f"; {self.borderline} row(s) within the score tolerance of conf on one side only left out"
                if self.borderline else "")
        if self.n_ref == self.n_got == 0:
            return head + f" (no score reaches {self.conf:g} on either side){edge}"
        masks = "" if self.mask_iou is None else f", min mask IoU {self.mask_iou:.4f} (>= {MIN_MASK_IOU} needed)"
        return head + (f", {self.matched} matched (same anchor and class, IoU >= {MIN_IOU}), "
                       f"min IoU {self.min_iou:.4f}{masks}{edge}")


#: ``verify`` of an int8 converted model: the share of the fp32 original's detections it must keep (recall),
#: and of its own detections that must be the original's (precision), unless ``--min-recall`` says otherwise
#: (int8 moves scores near the threshold: measured 0.875 / 1.0 on the trained sample's raw head, NNCF)
DEFAULT_MIN_RECALL = 0.8


@dataclass(frozen=True)
class AgreementCheck:
    """An int8 model's detections against the fp32 original's over all inputs (same class, IoU >= 0.5, one to
    one; :func:`onnx_headcut.check.int8.agreement`), with the decoded outputs' max errors, which are reported
    but do not gate (int8 cannot pass the exact three layers).

    A task head's figures over the matched pairs are reported and do not gate either, as the keypoint distance
    does not: the mean keypoint distance (pose, px), the mean and min mask IoU (segment; each side's masks from its
    own coefficients and prototypes), the mean angle error (OBB, radians). A mask threshold would need a measured
    int8 baseline on trained weights, which there is not (random-weight fixtures' masks say nothing of a trained
    model's), and a threshold fitted to what these fixtures happen to give would only certify them; the gate stays
    recall and precision. ``nan`` where the head has no such figure (or no pair matched)."""

    quantizer: str  # e.g. "NNCF 3.4.0", or "int8" when the record does not say
    inputs: int
    conf: float
    reference: int  # fp32 detections over all inputs
    detections: int  # int8 detections
    matched: int
    mean_iou: float  # over matched pairs (nan without any)
    score_error: float  # mean |score| error over matched pairs (nan without any)
    max_abs_err_boxes: float  # decoded output against the original's, every row (px; nan: not comparable)
    max_abs_err_scores: float
    min_recall: float = DEFAULT_MIN_RECALL
    task: str = "detect"
    keypoint_error: float = math.nan  # pose: mean keypoint distance (px) over matched pairs
    mask_iou: float = math.nan  # segment: mean IoU of the matched pairs' masks
    min_mask_iou: float = math.nan  # segment: the lowest of them
    angle_error: float = math.nan  # obb: mean angle error (radians) over matched pairs

    @property
    def recall(self) -> float:
        return self.matched / self.reference if self.reference else math.nan

    @property
    def precision(self) -> float:
        return self.matched / self.detections if self.detections else math.nan

    @property
    def ok(self) -> bool:
        """Some fp32 detections to agree on, and recall and precision both at least ``min_recall``."""
        return self.reference > 0 and self.recall >= self.min_recall and self.precision >= self.min_recall

    def __str__(self) -> str:
        def f(v: float, d: int = 3) -> str:
            return "-" if v != v else f"{v:.{d}f}"

        if not self.reference:
            return (f"conf {self.conf:g}: the fp32 original detects nothing on the {self.inputs} inputs, so there "
                    "is nothing to agree on")
        return (f"conf {self.conf:g}: {self.matched} of {self.reference} fp32 detections kept (recall "
                f"{f(self.recall)}), {self.detections} int8 detections (precision {f(self.precision)}; same class, "
                f"IoU >= 0.5), mean IoU {f(self.mean_iou)}, mean score error {f(self.score_error, 4)}; "
                f"required >= {self.min_recall:g} each" + self._task_text(f))

    def _task_text(self, f) -> str:
        """The task's figures (reported, not required), after the detection figures."""
        if self.task == "pose":
            return f"; mean keypoint error {f(self.keypoint_error, 2)} px (reported, not required)"
        if self.task == "segment":
            return f"; mask IoU mean {f(self.mask_iou)}, min {f(self.min_mask_iou)} (reported, not required)"
        if self.task == "obb":
            return f"; mean angle error {f(self.angle_error, 4)} rad (reported, not required)"
        return ""


@dataclass(frozen=True)
class Check:
    """The three layers on one input.

    ``decode`` and ``detections`` are None when the original has no decoded output to compare with
    (its outputs already are the raw head, split per level: YOLOv7 without ``--grid``); ``outputs`` then
    compares the raw outputs with the original's outputs, rearranged. A layer that is None was not
    run: :meth:`not_checked` says so and the report prints it, it never counts as passed.
    """

    input: str  # "random(seed=0)" or an image path
    layout: LayoutCheck | None  # None: the candidate is a decoded model (nothing to lay out)
    decode: DecodeCheck | None
    detections: DetectionCheck | None
    engine: str = "ort"
    outputs: LayoutCheck | None = None  # the raw outputs against the original's raw outputs (split heads)
    #: an int8 model: its detection agreement over all inputs, in place of the three layers
    agreement: AgreementCheck | None = None

    @property
    def ok(self) -> bool:
        """Every layer that ran passed (and at least one ran)."""
        ran = [x for x in (self.layout, self.outputs, self.decode, self.detections, self.agreement) if x is not None]
        return bool(ran) and all(x.ok for x in ran)

    def not_checked(self) -> tuple[str, ...]:
        """The layers that did not run (there was nothing to compare them with)."""
        if self.agreement is not None:
            return ()
        return tuple(n for n, x in (("decode", self.decode), ("detections", self.detections)) if x is None)

    @property
    def max_abs_err(self) -> float:
        if self.decode is None:
            return max((x.max_abs_err for x in (self.layout, self.outputs) if x is not None), default=0.0)
        return self.decode.max_abs_err

    @property
    def max_abs_err_boxes(self) -> float:
        if self.decode is None:
            return self.agreement.max_abs_err_boxes if self.agreement is not None else math.nan
        return self.decode.max_abs_err_boxes

    @property
    def max_abs_err_scores(self) -> float:
        if self.decode is None:
            return self.agreement.max_abs_err_scores if self.agreement is not None else math.nan
        return self.decode.max_abs_err_scores

    @property
    def tolerance(self) -> float:
        return self.decode.allowed.box_atol if self.decode is not None else 0.0

    def failure(self) -> str | None:
        """One sentence naming the first layer that failed, or None."""
        if self.layout is not None and not self.layout.ok:
            return f"layer 1 (raw = conv outputs): {self.layout}"
        if self.outputs is not None and not self.outputs.ok:
            return f"layer 1 (raw = the original's raw outputs): {self.outputs}"
        if self.decode is not None and not self.decode.ok:
            return f"layer 2 (decode = original): {self.decode}"
        if self.detections is not None and not self.detections.ok:
            return f"layer 3 (detections): {self.detections}"
        if self.agreement is not None and not self.agreement.ok:
            return f"int8 detection agreement: {self.agreement}"
        return None


@dataclass(frozen=True)
class Verification:
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def max_abs_err(self) -> float:
        return max(c.max_abs_err for c in self.checks)

    @property
    def tolerance(self) -> float:
        return min(c.tolerance for c in self.checks)

    def raise_if_failed(self) -> None:
        for c in self.checks:
            why = c.failure()
            if why:
                raise VerificationError(f"verification failed on {c.input}: {why}; nothing written")
