"""``headcut verify``: run a model on an engine and compare it with the original in onnxruntime.

The candidate is either a raw model written by ``strip`` (then converted or not) — its outputs are
checked against the original's prediction convs and go through the numpy decode, with the head read
from its metadata or its ``*.head.json`` — or a decoded model (an original converted as is), whose
output is compared directly. The layers are those of :mod:`onnx_headcut.check`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from ..convert import convert, param_blobs
from ..decode import canonical
from ..engines import check_engine, engine_for, run, run_options
from ..errors import UsageError
from ..heads import Geometry
from ..io import load
from ..metadata import converted_record, head_for
from ..pipeline import decoded_reference
from ..preprocess import Preprocess
from . import (
    DEFAULT_CONF,
    DEFAULT_IOU,
    DEFAULT_MIN_RECALL,
    DEFAULT_TOL,
    Allowed,
    Check,
    check_options,
    check_outputs,
    check_split_outputs,
    conv_outputs,
    deterministic_input,
    gap_threshold,
    image_input,
    reference_session,
)
from .engine_int8 import agreement_check, scene_inputs
from .half import conv_magnitudes

#: layer 1 on an engine: its conv arithmetic differs from onnxruntime's, so the raw values are
#: compared within ``tol`` + this relative term instead of exactly
ENGINE_LAYOUT_RTOL = 1e-3
#: precisions an engine reports (``run``'s info) that mean it computed in float16
HALF = ("fp16", "f16")
#: layer 1 on a float16 engine: ``|a - b| <= t + t·|b|`` per raw value, ``t`` = 4 float16 ulps of 1 (3.9e-3;
#: each raw value is the last of a chain of convs each rounded to 11 significant bits); layer 2 then uses the
#: float16 allowance of :class:`~onnx_headcut.check.Allowed` (4 ulps of the input side in px, 4 of 1 in score)
HALF_LAYOUT_TOL = 4 * float(np.spacing(np.float16(1.0)))


def conf_reached_by(original: str | os.PathLike, k: int = 20, seed: int = 0) -> float:
    """A threshold that ``k`` detections of ``original`` reach on verify's random input
    (:func:`~onnx_headcut.check.gap_threshold`): for comparing models with random weights, whose
    scores are all tiny. Pass it as ``conf`` explicitly; headcut never lowers a threshold by itself."""

    head, ref = decoded_reference(original, "ORIGINAL")
    s = reference_session(ref, conv_outputs(head)[:1])
    y = s.run([head.final_output], {s.get_inputs()[0].name: deterministic_input(head.input_shape, seed=seed)})[0]
    if head.selection is not None:  # NMS-free: the selected rows' scores
        return gap_threshold(y[0][:, 4], k=k)
    rows = canonical(y, Geometry.of(head))[0]
    return gap_threshold(rows[:, 4] * rows[:, 5:5 + head.num_classes].max(1), k=k)  # a task's extras are no scores


def _given_anchors(meta) -> tuple | None:
    """The anchors a raw record says were given with ``--anchors`` (the original's graph holds none), or None."""
    if meta is None or meta.get("anchors_from") != "--anchors":
        return None
    return tuple(tuple((float(w), float(h)) for w, h in lv["anchors"]) for lv in meta["levels"])


def _same_model(original, head, candidate, meta) -> None:
    """:class:`UsageError` when ``candidate`` cannot be a cut or conversion of ``original`` (input size,
    class count or rows differ): a comparison of two different models is a user mistake, not a failure."""
    if meta is not None:
        theirs = tuple(meta["input"]["shape"])
        why = []
        if meta["decode"] != head.decode:
            why.append(f"decode {head.decode} vs {meta['decode']}")
        if tuple(theirs[-2:]) != tuple(head.input_shape[-2:]):
            why.append(f"input {list(head.input_shape[-2:])} vs {list(theirs[-2:])}")
        if meta["num_classes"] != head.num_classes:
            why.append(f"{head.num_classes} vs {meta['num_classes']} classes")
        if "rows" in meta and meta["rows"] != head.rows:
            why.append(f"{head.rows} vs {meta['rows']} rows")
    elif Path(candidate).suffix.lower() == ".onnx":

        m = load(candidate)
        inits = {t.name for t in m.graph.initializer}
        ins = [i for i in m.graph.input if i.name not in inits]
        dims = tuple(d.dim_value for d in ins[0].type.tensor_type.shape.dim) if ins else ()
        why = [f"input {list(head.input_shape[-2:])} vs {list(dims[-2:])}"] if len(dims) == 4 and \
            all(dims[-2:]) and tuple(dims[-2:]) != tuple(head.input_shape[-2:]) else []
    else:
        why = []
    if why:
        raise UsageError(f"{candidate} is not a cut or conversion of {original}: {', '.join(why)}")


def quantized(record: dict | None) -> bool:
    """``convert``'s record of a converted model (:func:`~onnx_headcut.metadata.converted_record`) says it is
    int8 (``precision``)."""
    return bool(record) and (record or {}).get("precision") == "int8"


def verify_engine(original: str | os.PathLike, candidate: str | os.PathLike, engine: str | None = None,
                  images: tuple = (), conf: float = DEFAULT_CONF, iou: float = DEFAULT_IOU, tol: float = DEFAULT_TOL,
                  seed: int = 0, int8: bool | None = None, min_recall: float = DEFAULT_MIN_RECALL) -> list[Check]:
    """Run ``original`` in onnxruntime and ``candidate`` on ``engine``; the three layers of
    :mod:`onnx_headcut.check` on each input.

    A raw candidate (head metadata beside or inside it) is laid out against the original's
    prediction convs (layer 1, within ``tol`` + :data:`ENGINE_LAYOUT_RTOL`: engines compute the convs
    their own way), decoded and compared with the original's output (layer 2) and its detections
    (layer 3, at ``conf``). A decoded candidate (an original converted as is) skips layer 1.

    An int8 candidate (the ``precision`` of what ``convert`` recorded: a raw model's ``converted`` record,
    a decoded original's ``.converted.json``; or ``int8=True`` for a model converted elsewhere) is instead
    checked by detection agreement over all inputs plus generated scenes (:mod:`.engine_int8`, recall and
    precision >= ``min_recall``): one :class:`Check`.
    """
    check_options(tol, conf, iou)
    if not 0 <= min_recall <= 1:
        raise UsageError(f"--min-recall must be in [0, 1], not {min_recall}")
    engine = engine or engine_for(candidate)
    check_engine(candidate, engine, convertible=True)
    if engine != "ort" and Path(candidate).suffix.lower() == ".onnx":
        # an ONNX candidate for MNN/ncnn: what the user means is "convert it and run that"

        with tempfile.TemporaryDirectory(prefix="headcut-verify-") as d:
            converted = convert(candidate, engine, d)
            return verify_engine(original, converted.model, engine, images, conf, iou, tol, seed, int8, min_recall)
    meta = head_for(candidate)
    record = converted_record(candidate, meta)
    int8 = quantized(record) if int8 is None else int8
    head, ref = decoded_reference(original, "ORIGINAL", _given_anchors(meta))
    if meta is not None and head.dynamic_hw is not None:  # a symbolic-size original: compare at the candidate's size
        try:
            head = head.at(meta["input"]["shape"][-2:])
        except ValueError:
            pass  # _same_model says what differs
    _same_model(original, head, candidate, meta)
    extra = conv_outputs(head)
    if meta is None and int8:  # a converted original: a segment head's masks need the prototypes (and coefficients)
        extra = [o for o in extra if o.name in (extra[0].name, *head.kept_outputs, *head.compared_outputs)]
    s = reference_session(ref, extra if meta is not None or int8 else extra[:1])
    names = [o.name for o in extra[1:]] if meta is not None or int8 else []
    inp = s.get_inputs()[0]
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape[:-2]] + list(head.input_shape[-2:])
    sizes = [tuple(v) for v in meta["dynamic_hw"]["verified_at"]] if meta is not None and "dynamic_hw" in meta \
        else [tuple(shape[-2:])]
    feeds = [(f"random(seed={seed})" + (f" at {hw[0]}x{hw[1]}" if len(sizes) > 1 else ""),
              deterministic_input([*shape[:-2], *hw], np.float32, seed)) for hw in sizes]
    pre = Preprocess.of(meta) if meta is not None else head.preprocess
    feeds += [(str(p), image_input(p, shape, pre=pre)) for p in images]
    if int8:
        if head.split_outputs:
            raise UsageError(f"{original} has no decoded output (its outputs are the raw head), so an int8 "
                             "candidate's detections have nothing to be compared with")
        feeds += scene_inputs(shape, pre)
    xs = [x for _, x in feeds]
    out_names = [n for n, _ in head.split_outputs] or [head.output_name]
    final = [head.final_output] if head.selection is not None else []  # an NMS-free export: also its (1, k, 6)
    refs = [s.run([*final, *out_names, *names], {inp.name: x}) for x in xs]
    if final:  # layer 2 compares the selected output beside the decoded tensor (one run of the original)
        refs = [[(r[0], r[1]), *r[2:]] for r in refs]
    raw_names: list[str] | None
    if meta is not None:
        in_name = meta["input"]["name"]
        raw_names = [o["name"] for o in meta.get("raw_outputs", [])] or None
    else:
        in_name, raw_names = inp.name, None
    if engine == "ncnn":
        ins, outs = param_blobs(candidate)
        in_name, raw_names = ins[0], outs
    info: dict = {}
    results = run(candidate, xs, engine, in_name, raw_names, options=run_options(engine, record), info=info)
    if info.get("precision") and info.get("device"):  # OpenVINO, RKNN: say which precision ran (OpenVINO: f32 asked)
        engine = f"{engine} ({info['device']} {info['precision']})"
    if int8:
        quantizer = str((record or {}).get("quantizer", "unrecorded quantizer"))
        n_random = len(sizes)
        label = f"{n_random} random + {len(images)} image + {len(xs) - n_random - len(images)} scene inputs"
        others = [dict(zip(names, r[len(out_names):])) for r in refs]  # the prototypes and coefficients, by name
        return [agreement_check(head, meta, xs, refs, results, conf, iou, engine, quantizer, min_recall, label,
                                others)]
    # an engine that computes in half precision (RKNN's fp16 build): the tolerances of a float16 model
    dtype: type = np.float32
    layout_atol, layout_rtol = tol, ENGINE_LAYOUT_RTOL
    mags: list = [None] * len(xs)
    if info.get("precision") in HALF:
        dtype, layout_atol, layout_rtol = np.float16, max(tol, HALF_LAYOUT_TOL), HALF_LAYOUT_TOL
        if meta is not None:  # the float16 error grows with what each conv sums (check/half.py)
            preds = [b.tensor for lv in head.levels for b in lv.branches]
            mags = conv_magnitudes(str(original), load(original), preds, [{inp.name: x} for x in xs]) or mags
    checks = []
    k = len(out_names)
    for (label, x), ref, ys, mag in zip(feeds, refs, results, mags):
        if head.split_outputs:  # the original is the raw head split per level: layer 1 only (it says so)
            if meta is None:
                raise UsageError(f"{candidate} has no head metadata, and {original} has no decoded output to "
                                 "compare a converted original with")
            checks.append(check_split_outputs(label, ref[:k], dict(zip(names, ref[k:])), list(ys), head, meta,
                                              engine, layout_atol=layout_atol, layout_rtol=layout_rtol, mags=mag))
            continue
        convs = dict(zip(names, ref[k:])) if meta is not None else None
        hw = tuple(x.shape[-2:])
        g = Geometry.of(meta).at(hw) if meta is not None else None
        checks.append(check_outputs(label, ref[0], convs, list(ys), head.at(hw) if g is not None else head, g,
                                    Allowed.for_input(x.shape, dtype, tol), conf, iou, engine,
                                    layout_atol=layout_atol, layout_rtol=layout_rtol, mags=mag))
    return checks
