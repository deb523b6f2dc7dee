"""``headcut``: a thin command line over :mod:`onnx_headcut.strip`.

Exit codes: 0 done; 2 bad input, bad output path or no recognisable head; 3 verification failed
(nothing written); 4 the model is already raw; 1 an internal error (a bug: please report it).
"""

from __future__ import annotations

import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperCommand


class _Command(TyperCommand):
    """Plain click help: arguments as ``MODEL`` (not ``{model}`` / ``<path>``), options with their metavar."""

    def collect_usage_pieces(self, ctx):
        pieces = [self.options_metavar] if self.options_metavar else []
        for p in self.get_params(ctx):
            if p.param_type_name == "argument":
                name = (p.metavar or p.name).upper()
                pieces.append(name + ("..." if p.nargs != 1 else "") if p.required else f"[{name}]")
        return pieces

    def format_options(self, ctx, formatter):
        args = [((p.metavar or p.name).upper(), p.help or "") for p in self.get_params(ctx)
                if p.param_type_name == "argument" and not p.hidden]
        opts = [r for p in self.get_params(ctx) if p.param_type_name == "option" and (r := p.get_help_record(ctx))]
        if args:
            with formatter.section("Arguments"):
                formatter.write_dl(args)
        if opts:
            with formatter.section("Options"):
                formatter.write_dl(opts)


class LayoutChoice(str, Enum):
    flat = "flat"
    levels = "levels"
    split_per_level = "split"  # (not "split": str.split)
    flat_split = "flat-split"


class Target(str, Enum):
    mnn = "mnn"
    ncnn = "ncnn"
    openvino = "openvino"
    tflite = "tflite"
    rknn = "rknn"
    nncase = "nncase"


class Lang(str, Enum):
    cpp = "cpp"


class EngineChoice(str, Enum):
    ort = "ort"
    mnn = "mnn"
    ncnn = "ncnn"
    openvino = "openvino"
    tflite = "tflite"
    rknn = "rknn"
    nncase = "nncase"


_ENGINES = "[ort|mnn|ncnn|openvino|tflite|rknn|nncase]"


app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None, help="Cut the decode off ONNX YOLO detectors and prove the cut exact.")

def _version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", help="print the version and exit", is_eager=True,
                                      callback=_version)) -> None:
    """Cut the decode off ONNX YOLO detectors and prove the cut exact."""


def _fit(text: str) -> str:
    """Wrap long report lines to the terminal (continuation lines indented under the value column)."""
    if not sys.stdout.isatty():
        return text
    import shutil
    import textwrap

    width = max(40, shutil.get_terminal_size().columns)
    out = []
    for line in text.splitlines():
        out += textwrap.wrap(line, width, subsequent_indent=" " * 10, break_on_hyphens=False) or [""]
    return "\n".join(out)


def _status(text: str):
    """A spinner on stderr while something slow runs (nothing when stderr is not a terminal)."""
    import contextlib

    if not sys.stderr.isatty():
        return contextlib.nullcontext()
    from rich.console import Console

    return Console(stderr=True).status(text)


def _anchors(text: str | None):
    """``--anchors`` parsed (:class:`~onnx_headcut.errors.UsageError` when malformed), or None."""
    from .heads.anchor_raw import parse_anchors

    return None if text is None else parse_anchors(text)


def _run(fn):
    """Call ``fn``; map headcut errors to one line and an exit code, never a traceback."""
    from .errors import HeadcutError

    try:
        return fn()
    except HeadcutError as e:
        typer.echo(f"headcut: error: {e}", err=True)
        raise typer.Exit(e.exit_code) from None
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        from .staging import remove_live

        remove_live()  # staging folders an interrupt caught outside their with block
        typer.echo("headcut: interrupted; nothing written", err=True)
        raise typer.Exit(130) from None
    except Exception as e:  # a bug: still one line, traceback on request
        if os.environ.get("HEADCUT_DEBUG"):
            raise
        from .text import printable

        typer.echo(f"headcut: internal error: {type(e).__name__}: {printable(e) or 'no message'} "
                   "(set HEADCUT_DEBUG=1 for a traceback)", err=True)
        raise typer.Exit(1) from None


@app.command(cls=_Command, short_help="cut the decode off, verify, write the raw model")
def strip(
    model: Path = typer.Argument(..., metavar="MODEL", help="decoded ONNX export (for example yolov6s.onnx)"),
    output: Optional[Path] = typer.Option(None, "-o", "--output", metavar="OUT.onnx",
                                          help="where to write the raw model (default: MODEL.raw.onnx beside it)"),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="check the cut in onnxruntime"),
    lower: bool = typer.Option(True, "--lower/--no-lower", help="rewrite >4-D chains to rank <= 4"),
    simplify: bool = typer.Option(False, "--simplify", help="run onnxsim on the raw model"),
    layout: LayoutChoice = typer.Option("flat", "--layout", metavar="[flat|levels|split|flat-split]",
                                      help="flat: one (1, N, C) output; levels: one (1, C, H, W) per level; split: "
                                           "per level a box and a class output (for int8); flat-split: (1, N, box) "
                                           "and (1, N, classes)"),
    keep_dfl: bool = typer.Option(False, "--keep-dfl", help="keep the DFL expectation in the graph (4 distances)"),
    keep_sigmoid: bool = typer.Option(False, "--keep-sigmoid", help="emit scores (sigmoid applied) instead of logits"),
    score_sum: bool = typer.Option(False, "--score-sum",
                                   help="split layouts: add the clipped sum of the class scores, for early rejection"),
    image: Optional[list[Path]] = typer.Option(None, "--image", metavar="IMAGE",
                                               help="also verify on this image (letterboxed; repeatable)"),
    tol: float = typer.Option(1e-3, "--tol", metavar="TOL",
                              help="decode error allowed: px per 640 px of input (boxes), and on scores; (0, 1]"),
    conf: float = typer.Option(0.25, "--conf", metavar="CONF", help="score threshold of the detection check"),
    iou: float = typer.Option(0.45, "--iou", metavar="IOU", help="NMS IoU threshold of the detection check"),
    force: bool = typer.Option(False, "--force", help="overwrite an existing output"),
    keep_dynamic_batch: bool = typer.Option(False, "--keep-dynamic-batch",
                                            help="keep a dynamic batch axis (default: static batch 1)"),
    anchors: Optional[str] = typer.Option(None, "--anchors", metavar="W,H,.../W,H,...",
                                          help="anchors (pixels) of a raw anchor head split over 5-D outputs "
                                               "(YOLOv7 without --grid), whose graph holds none: w,h pairs per "
                                               "level, levels stride ascending separated by '/'"),
    input_size: Optional[str] = typer.Option(None, "--input-size", metavar="HxW",
                                             help="pin a symbolic height and width (and batch 1) to HxW: a static "
                                                  "raw model (default: kept symbolic when the decode allows)"),
) -> None:
    """Cut the decode off MODEL and write the raw head to OUTPUT, verified."""
    def run():
        from . import pipeline
        from .heads import Layout
        from .report import strip_text

        with _status(f"stripping {model.name} (locate, cut, verify in onnxruntime)"):
            res = pipeline.strip(model, output, layout=Layout(layout.value, keep_dfl, keep_sigmoid, score_sum),
                                 verify=verify, lower=lower, simplify=simplify, images=tuple(image or ()), tol=tol,
                                 force=force, keep_dynamic_batch=keep_dynamic_batch, conf=conf, iou=iou,
                                 anchors=_anchors(anchors), input_size=input_size)
        return strip_text(res)

    typer.echo(_fit(_run(run)))


@app.command(cls=_Command, short_help="show the head and what strip would cut")
def inspect(
    model: Path = typer.Argument(..., metavar="MODEL", help="decoded ONNX export or raw model"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of text"),
    anchors: Optional[str] = typer.Option(None, "--anchors", metavar="W,H,.../W,H,...",
                                          help="anchors (pixels) of a raw anchor head split over 5-D outputs "
                                               "(YOLOv7 without --grid), whose graph holds none: w,h pairs per "
                                               "level, levels stride ascending separated by '/'"),
) -> None:
    """Show what strip would find and cut in MODEL, without writing anything."""

    def run():
        from . import pipeline
        from .report import inspect_text

        insp = pipeline.inspect(model, _anchors(anchors))
        return json.dumps(insp.to_json(), indent=2) if as_json else _fit(inspect_text(insp))

    typer.echo(_run(run))


@app.command(cls=_Command, short_help="convert for MNN, ncnn, OpenVINO, TFLite, RKNN or nncase, run once, check")
def convert(
    model: Path = typer.Argument(..., metavar="MODEL", help="raw (or decoded) ONNX model"),
    to: Target = typer.Option(..., "--to", metavar="[mnn|ncnn|openvino|tflite|rknn|nncase]",
                              help="the engine to convert for"),
    output: Optional[Path] = typer.Option(None, "-o", "--output", metavar="DIR",
                                          help="folder for the converted files (default: beside MODEL)"),
    int8: bool = typer.Option(False, "--int8", help="quantize to int8 (needs --calib)"),
    calib: Optional[Path] = typer.Option(None, "--calib", metavar="DIR", help="folder of calibration images"),
    platform: Optional[str] = typer.Option(None, "--target-platform", metavar="NAME",
                                           help="device the target converts for (openvino, tflite: cpu; "
                                                "rknn: rk3588, rk3576, ...; nncase: cpu, k230)"),
    force: bool = typer.Option(False, "--force", help="overwrite existing files"),
) -> None:
    """Convert MODEL for an edge engine and print the blob names the C++ side needs.

    Each target runs in a worker process, in this Python or the one HEADCUT_PYTHON_<TARGET> names
    (e.g. HEADCUT_PYTHON_TFLITE=venv/bin/python: an engine in its own virtualenv)."""
    def run():
        from .convert import convert as run_convert

        with _status(f"converting {model.name} for {to.value}"):
            return run_convert(model, to.value, output, force=force, int8=int8, calib=calib, platform=platform)

    from .report import convert_text

    typer.echo(convert_text(_run(run)))


@app.command(cls=_Command, short_help="run a raw/converted model, compare with the original")
def verify(
    original: Path = typer.Argument(..., metavar="ORIGINAL", help="the original decoded ONNX export"),
    candidate: Optional[Path] = typer.Argument(None, metavar="CANDIDATE",
                                               help="raw model (.onnx, .mnn, .param, .xml, .tflite, .rknn, .kmodel), "
                                                    "or a converted original (with --int8 and --layouts: optional)"),
    engine: Optional[EngineChoice] = typer.Option(None, "--engine", metavar=_ENGINES,
                                                help="engine to run on (default: from the file type)"),
    image: Optional[list[Path]] = typer.Option(None, "--image", metavar="IMAGE",
                                               help="also compare on this image (letterboxed; repeatable)"),
    conf: float = typer.Option(0.25, "--conf", metavar="CONF", help="score threshold for the detection comparison"),
    iou: float = typer.Option(0.45, "--iou", metavar="IOU", help="NMS IoU threshold"),
    tol: float = typer.Option(1e-3, "--tol", metavar="TOL",
                              help="decode error allowed: px per 640 px of input (boxes), and on scores; (0, 1]"),
    int8: bool = typer.Option(False, "--int8", help="quantize ORIGINAL and the raw models to int8 (onnxruntime QDQ) "
                                                   "and measure their detections against the fp32 original's"),
    calib: Optional[Path] = typer.Option(None, "--calib", metavar="DIR", help="--int8: calibration images"),
    eval_dir: Optional[Path] = typer.Option(None, "--eval", metavar="DIR",
                                            help="--int8: held-out images (default: every second --calib image)"),
    calib_method: str = typer.Option("minmax", "--calib-method", metavar="[minmax|percentile|entropy]",
                                     help="--int8: onnxruntime calibration method"),
    layouts: Optional[str] = typer.Option(None, "--layouts", metavar="LIST",
                                          help="--int8: also strip ORIGINAL into these layouts and measure each "
                                               "(e.g. flat,split,flat-split,split+dfl)"),
    min_recall: Optional[float] = typer.Option(None, "--min-recall", metavar="X",
                                               help="--int8: exit 3 when a raw model's recall is below X; an int8 "
                                                    "converted CANDIDATE: exit 3 when its recall or precision is "
                                                    "below X (default 0.8)"),
) -> None:
    """Run CANDIDATE on an engine and check it against ORIGINAL in onnxruntime (layout, decode, detections).

    An int8 CANDIDATE (headcut convert --int8) is checked by how many of ORIGINAL's detections it keeps.

    With --int8: quantize ORIGINAL and CANDIDATE (and ORIGINAL stripped into each of --layouts) with
    onnxruntime's static QDQ quantization on --calib images and report how many of the fp32 original's
    detections each int8 model keeps (same class, IoU >= 0.5), and which layout to use."""
    def run():
        from .errors import UsageError, VerificationError

        if int8:
            return _verify_int8(original, candidate, calib, eval_dir, calib_method, layouts, min_recall, conf, iou,
                                engine, image)
        if candidate is None:
            raise UsageError("verify needs CANDIDATE (only --int8 --layouts works without one)")
        extra = next((f for f, v in (("--calib", calib), ("--eval", eval_dir), ("--layouts", layouts))
                      if v is not None), None)
        if extra is not None:
            raise UsageError(f"{extra} belongs to verify --int8")
        from .check import DEFAULT_MIN_RECALL
        from .check.engine import quantized, verify_engine
        from .metadata import converted_record, head_for
        from .report import verify_text

        if min_recall is not None and not quantized(converted_record(candidate, head_for(candidate))):
            raise UsageError("--min-recall belongs to verify --int8, or to an int8 converted CANDIDATE")
        with _status(f"running {candidate.name} and {original.name}"):
            checks = verify_engine(original, candidate, engine and engine.value, tuple(image or ()), conf, iou, tol,
                                   min_recall=DEFAULT_MIN_RECALL if min_recall is None else min_recall)
        typer.echo(_fit(verify_text(checks)))
        bad = next((c for c in checks if not c.ok), None)
        if bad is not None:
            raise VerificationError(f"the candidate differs from the original on {bad.input}: {bad.failure()}")

    _run(run)


def _verify_int8(original, candidate, calib, eval_dir, method, layouts, min_recall, conf, iou, engine, image):
    """``verify --int8``: the measurement, its report, and the ``--min-recall`` check on each raw model."""
    from .check.int8 import parse_layouts, verify_int8
    from .errors import UsageError, VerificationError
    from .report import int8_text

    if calib is None:
        raise UsageError("--int8 needs --calib DIR (calibration images)")
    if engine is not None and engine.value != "ort" or image:
        raise UsageError("--int8 runs onnxruntime on the --calib/--eval images; --engine and --image do not apply")
    if min_recall is not None and not 0 <= min_recall <= 1:
        raise UsageError(f"--min-recall must be in [0, 1], not {min_recall}")
    lays = parse_layouts(layouts) if layouts is not None else ()
    with _status(f"quantizing {original.name} and the raw models to int8 (onnxruntime QDQ)"):
        rep = verify_int8(original, (candidate,) if candidate is not None else (), calib=calib, eval_dir=eval_dir,
                          method=method, layouts=lays, conf=conf, iou=iou)
    typer.echo(_fit(int8_text(rep)))
    low = next((r for r in rep.rows[1:] if min_recall is not None and not r.recall >= min_recall), None)
    if low is not None:
        raise VerificationError(f"int8 {low.name}: recall {low.recall:.3f} of the fp32 detections, below "
                                f"--min-recall {min_recall}")


@app.command(cls=_Command, short_help="detect objects in an image")
def detect(
    model: Path = typer.Argument(..., metavar="MODEL",
                                 help="original decoded export or raw model (.onnx, .mnn, .param, .xml, .tflite, "
                                      ".rknn, .kmodel)"),
    image: Path = typer.Argument(..., metavar="IMAGE", help="image file"),
    engine: Optional[EngineChoice] = typer.Option(None, "--engine", metavar=_ENGINES,
                                                help="engine to run on (default: from the file type)"),
    output: Optional[Path] = typer.Option(None, "-o", "--output", metavar="OUT.png",
                                          help="write the image with boxes drawn (.png/.jpg)"),
    conf: float = typer.Option(0.25, "--conf", metavar="CONF", help="score threshold"),
    iou: float = typer.Option(0.45, "--iou", metavar="IOU", help="NMS IoU threshold"),
    names: Optional[Path] = typer.Option(None, "--names", metavar="FILE",
                                         help="class names: one per line, JSON, or a YAML names: mapping "
                                              "(default: the model's own, else COCO)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
    force: bool = typer.Option(False, "--force", help="overwrite an existing output image"),
) -> None:
    """Detect objects in IMAGE: the family's own letterbox, run, decode, NMS, draw."""

    def run():
        from .detect import check_output, draw
        from .detect import detect as run_detect
        from .images import image_format

        if output is not None:
            image_format(output)  # an unknown extension fails before the model runs
            check_output(model, image, output, names, force)
        with _status(f"running {model.name}"):
            res = run_detect(model, image, engine and engine.value, conf, iou, names)
        if output is not None:
            draw(image, res, output, force=force, names=names)
        return res

    res = _run(run)
    if as_json:
        typer.echo(json.dumps(res.to_json(), indent=2))
        return
    from rich.console import Console
    from rich.text import Text

    from .report import detect_table
    from .text import printable

    console = Console(highlight=False)
    console.print(detect_table(res, conf))
    if res.note:
        console.print(Text(printable(f"note: {res.note}")))
    if len(res.detections) > 50:
        console.print(f"... {len(res.detections) - 50} more (use --json for all)")
    if output is not None:
        console.print(Text(printable(f"wrote {output}")))


@app.command(cls=_Command, short_help="write the C++ decode of a raw model")
def codegen(
    model: Path = typer.Argument(..., metavar="RAW", help="raw model from strip (.onnx, or .mnn/.param/.head.json)"),
    output: Optional[Path] = typer.Option(None, "-o", "--output", metavar="DIR",
                                          help="folder for <name>_decode.hpp and decode_main.cpp "
                                               "(default: beside RAW)"),
    lang: Lang = typer.Option("cpp", "--lang", metavar="[cpp]", help="the language to write"),
    force: bool = typer.Option(False, "--force", help="overwrite existing files"),
) -> None:
    """Write the decode of RAW's head as a dependency-free C++17 header, with a command-line harness."""
    def run():
        from .codegen import generate

        return generate(model, output if output is not None else model.parent, force=force, lang=lang.value)

    from .text import printable

    for p in _run(run):
        typer.echo(printable(f"wrote {p}"))


@app.command(cls=_Command, short_help="regenerate the bundled sample models")
def sample(
    output: Path = typer.Option(Path("samples"), "-o", "--output", metavar="DIR",
                                help="folder to write the sample models into"),
    family: Optional[str] = typer.Option(None, "--family", metavar="FAMILY",
                                         help="only this family: yolov6-0.1.0, yolov6-anchor-free, "
                                              "yolov6-dfl, yolov6-lite, yolox, yolov5, yolov7, yolov8"),
    force: bool = typer.Option(False, "--force", help="overwrite existing sample files"),
) -> None:
    """Regenerate the bundled sample models (decoded exports of each family, random weights)."""
    def run():
        from .errors import OutputError
        from .synth import write_samples

        if output.exists() and not output.is_dir():
            raise OutputError(f"{output}: is not a folder")
        return write_samples(output, family, force=force)

    from .text import printable

    for p in _run(run):
        typer.echo(printable(f"wrote {p}"))


@app.command(cls=_Command, short_help="print the version")
def version() -> None:
    """Print the version."""
    from . import __version__

    typer.echo(__version__)


def _terminate(signum, frame):  # SIGTERM → the same clean unwinding as Ctrl-C
    raise KeyboardInterrupt


def main() -> None:  # console-script entry
    import signal

    signal.signal(signal.SIGTERM, _terminate)
    app(prog_name="headcut")


if __name__ == "__main__":
    main()
