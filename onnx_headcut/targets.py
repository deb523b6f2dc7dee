"""What a conversion target accepts, checked before any work (:func:`check_options`), and how a converted
model's tensors map back to the ONNX model's (:func:`match_outputs`)."""

from __future__ import annotations

import os
from pathlib import Path

import onnx

from .engines import MODULES, TARGETS
from .errors import UsageError, VerificationError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def check_options(to: str, int8: bool = False, calib: str | os.PathLike | None = None,
                  platform: str | None = None) -> None:
    """:class:`UsageError` (one line, exit 2) for a target, platform or calibration folder ``to`` cannot
    take, before anything is loaded or converted."""
    if to not in TARGETS:
        raise UsageError(f"unknown target {to!r} (choose from {', '.join(TARGETS)})")
    platforms = getattr(MODULES[to], "PLATFORMS", ("cpu",))
    if platform is not None and platform.lower() not in platforms:
        raise UsageError(f"--target-platform {platform}: {to} converts for {', '.join(platforms)} only")
    if platform is not None and platform.lower() in getattr(MODULES[to], "INT8_ONLY", ()) and not int8:
        raise UsageError(f"--target-platform {platform}: {to} builds only int8 models for it (give --int8 --calib DIR)")
    if calib is not None and not int8:
        raise UsageError("--calib is the int8 calibration folder: give it with --int8")
    if int8:
        if calib is None:
            raise UsageError("--int8 needs --calib DIR, a folder of calibration images")
        calibration_images(calib)
        if not getattr(MODULES[to], "INT8", False):
            raise UsageError(f"--int8: headcut does not quantize for {to} yet (fp32 only)")
        int8_platforms = getattr(MODULES[to], "INT8_PLATFORMS", None)  # a target quantizing for some only
        if int8_platforms and platform is not None and platform.lower() not in int8_platforms:
            raise UsageError(f"--int8 --target-platform {platform}: {to} quantizes for "
                             f"{', '.join(int8_platforms)} only")


def calibration_images(folder: str | os.PathLike) -> list[Path]:
    """The images in ``folder`` (sorted), or :class:`UsageError` when it is not a folder or has none."""
    d = Path(folder)
    if not d.is_dir():
        raise UsageError(f"--calib {folder}: not a folder (give a folder of calibration images)")
    found = sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise UsageError(f"--calib {folder}: no images in it ({', '.join(IMAGE_SUFFIXES)})")
    return found


def match_outputs(model: onnx.ModelProto, res: dict) -> dict:
    """The converted model's tensors matched to the ONNX model's by shape: a TFLite converter lays 4-D
    tensors out NHWC, renames them and reorders the outputs. Returns ``{"input": {name, layout, shape},
    "outputs": [{name, layout, shape, onnx}, ...]}`` with the outputs in the ONNX model's order (``layout``
    ``NHWC``/``NWC``: the ONNX tensor's NCHW/NCW transposed; ``same``: as in the ONNX model; an int8 tensor
    also has ``quantization``: ``{dtype, scale, zero_point}``); a shape matching none or several is a
    :class:`VerificationError` (nothing can be proven about it)."""

    def dims(v) -> list[int]:
        return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in v.type.tensor_type.shape.dim]

    def layouts(shape: list[int]) -> dict[str, list[int]]:
        if len(shape) == 4:
            return {"same": shape, "NHWC": [shape[0], shape[2], shape[3], shape[1]]}
        if len(shape) == 3 and shape[1] != shape[2]:
            return {"same": shape, "NWC": [shape[0], shape[2], shape[1]]}
        return {"same": shape}

    def pick(shape: list[int], pool: list[dict], what: str) -> dict:
        found = [(t, lay) for t in pool for lay, s in layouts(shape).items() if list(t["shape"]) == s]
        if len(found) != 1:
            have = ", ".join(f"{t['name']} {list(t['shape'])}" for t in pool)
            raise VerificationError(f"the converted {what} of shape {shape} matches {len(found)} of the converted "
                                    f"model's tensors ({have}); nothing written")
        got = {"name": found[0][0]["name"], "layout": found[0][1], "shape": list(found[0][0]["shape"])}
        if "quantization" in found[0][0]:  # an int8 tensor: its scale and zero point
            got["quantization"] = found[0][0]["quantization"]
        return got

    inits = {t.name for t in model.graph.initializer}
    inp = next(i for i in model.graph.input if i.name not in inits)
    io_in = pick(dims(inp), res["inputs"], "input")
    pool = list(res["outputs"])
    outs = []
    for o in model.graph.output:
        got = pick(dims(o), pool, f"output '{o.name}'")
        pool = [t for t in pool if t["name"] != got["name"]]
        outs.append({**got, "onnx": o.name})
    return {"input": io_in, "outputs": outs}
