"""The pipeline behind ``headcut strip`` and ``headcut inspect``: load → locate → cut → rewrite → save → verify.

Imported by users as :mod:`onnx_headcut.strip`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import onnx

from . import __version__, topk
from .check import DEFAULT_CONF, DEFAULT_IOU, DEFAULT_TOL, Verification, check_options
from .check import verify as run_verify
from .cut import CutReport, cut
from .dual import DualOutputs, dual_outputs
from .dynamic import DynamicLocate, check_multiple, image_input, locate_dynamic, parse_size, symbolic_hw
from .errors import AlreadyRawError, HeadcutError, NoHeadError, TooLargeError, UsageError
from .graph import GraphIndex, check_constant_sizes, check_graph, check_input_size, infer_shapes, max_rank
from .heads import Head, Layout
from .io import dependencies, load, save
from .locate import locate
from .metadata import METADATA_KEY, embed, embedded, source_metadata
from .region import decode_region
from .simplify import fold, needs_folding
from .simplify import simplify as onnxsim_simplify
from .staging import Staging, check_output_path, strip_outputs
from .surgery import RewriteReport, rewrite_5d
from .wrappers import find_nms, nms_candidates

#: the raw output's name for an end-to-end export with several outputs (YOLOv6's name for its decoded output)
RAW_OUTPUT_NAME = "outputs"


@dataclass(frozen=True)
class Inspection:
    """What ``strip`` would find and cut in a model, without writing anything."""

    path: str
    head: Head
    cut: CutReport
    decode_ops: dict  # data ops of the decode region, constants left out
    max_rank: int
    folded: bool  # onnxsim had to fold shape plumbing before the head could be read
    source_nodes: int  # node count of the file as given (before any folding)

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "head": self.head.to_json(),
            "why": list(self.head.reasons),
            "decode_ops": self.decode_ops,
            "would_remove": {"nodes": self.cut.removed, "ops": self.cut.removed_ops},
            "max_rank": self.max_rank,
            "folded_with_onnxsim": self.folded,
            "source_nodes": self.source_nodes,
        }


@dataclass(frozen=True)
class RawInspection:
    """``inspect`` on a model that is already raw: why, its outputs, and its head record if headcut wrote it."""

    path: str
    reason: str  # the one line ``strip`` refuses it with (exit 4)
    outputs: tuple[tuple[str, tuple], ...]  # (name, shape) of each graph output
    record: dict | None = None  # the checked headcut record (None: raw by structure, no record)

    @property
    def written_by_headcut(self) -> bool:
        return self.record is not None

    def to_json(self) -> dict:
        return {"path": self.path, "raw": True, "written_by_headcut": self.written_by_headcut,
                "reason": self.reason, "outputs": [{"name": n, "shape": list(s)} for n, s in self.outputs],
                "head": self.record}


@dataclass(frozen=True)
class StripResult:
    """What ``strip`` did: the head, the cut, the rank rewrite, the check and the files written."""

    inspection: Inspection
    rewrite: RewriteReport | None
    verification: Verification | None
    max_rank_after: int
    simplified: bool
    files: tuple[Path, ...]
    metadata: dict
    layout: Layout = Layout()
    batch: int | str = 1  # 1, or the symbolic batch axis kept (``keep_dynamic_batch``)

    @property
    def head(self) -> Head:
        return self.inspection.head


@dataclass(frozen=True)
class _Located:
    work: onnx.ModelProto  # the graph the cut is made on
    head: Head
    folded: bool
    reference: bytes | None = None  # what verification compares with, when not the input file itself
    shapes: dict | None = None  # the shapes of ``work`` the locator inferred (reused, not recomputed)
    dynamic: DynamicLocate | None = None  # symbolic height and width: how they were located
    internal_output: bool = True  # with a ``reference``: the decoded tensor is internal (end-to-end NMS), so
    # the raw output is named after the model's; False: it is one of the model's outputs (a dual head)


def _locate_file(model: onnx.ModelProto, path, anchors: tuple | None = None,
                 input_size: tuple[int, int] | None = None) -> _Located:
    """:func:`_locate` on the model read from ``path``: recorded metadata and constant sizes checked
    first; a refusal names the file. ``anchors`` (``--anchors``) must be needed: a head whose graph
    holds its anchors, or has none, refuses them. ``input_size`` (H, W) pins a symbolic height and width first."""
    embedded(model, str(path))  # a raw model: its record must at least be well-formed
    try:
        if input_size is not None:
            found = _locate_pinned(model, path, input_size, anchors)
        else:
            found = _locate(model, anchors=anchors)
    except TooLargeError as e:
        raise TooLargeError(f"{path}: {e}") from None
    if anchors is not None and found.head.anchors_from != "--anchors":
        where = "reads its anchors from the graph" if found.head.anchors else "has no anchors"
        raise UsageError(f"--anchors does not apply: the {found.head.family} {found.head.version} head of {path} "
                         f"{where}")
    return found


def _locate_pinned(model: onnx.ModelProto, path, size: tuple[int, int], anchors: tuple | None = None) -> _Located:
    """``--input-size``: the model with its symbolic height and width (and batch) pinned by onnxsim, located."""
    axes, image = symbolic_hw(model), image_input(model)
    if axes is None or image is None:
        dims = [d.dim_value for d in image.type.tensor_type.shape.dim] if image is not None else []
        raise UsageError(f"--input-size does not apply: the input of {path} has a static size "
                         f"{'x'.join(map(str, dims[2:])) or '?'}")
    check_constant_sizes(model, infer_shapes(model))
    inp = image.type.tensor_type.shape.dim
    for k, name in ((2, "height"), (3, "width")):
        if inp[k].HasField("dim_value") and inp[k].dim_value > 0 and inp[k].dim_value != size[k - 2]:
            raise UsageError(f"--input-size {size[0]}x{size[1]}: the input's {name} is fixed at {inp[k].dim_value}")
    try:
        pinned = fold(model, size)
        inner = _locate(pinned, anchors=anchors)
    except HeadcutError as e:
        try:  # say so when the size is what is wrong
            check_multiple(size, locate_dynamic(model, locate).head)
        except NoHeadError:
            pass
        raise e from None
    check_multiple(size, inner.head)
    note = (f"symbolic height and width {list(axes)} pinned to {size[0]}x{size[1]} (--input-size): the raw graph "
            "is static")
    return replace(inner, folded=True, head=replace(inner.head, notes=inner.head.notes + (note,)))


def _locate(model: onnx.ModelProto, shapes: dict | None = None, anchors: tuple | None = None) -> _Located:
    """Locate directly; fold shape plumbing with onnxsim first when the graph needs it.

    An end-to-end export is first truncated at the decoded tensor that feeds its NMS. Any constant
    the graph declares above :data:`~onnx_headcut.graph.MAX_CONSTANT_ELEMENTS` is refused first.
    """
    shapes = shapes if shapes is not None else infer_shapes(model)
    check_constant_sizes(model, shapes)
    nms = find_nms(model)
    if nms:
        return _locate_before_nms(model, nms[0].op_type, shapes)
    if topk.find_topk(model):
        return _locate_before_topk(model, shapes)
    dual = dual_outputs(model, shapes)
    if dual is not None:
        return _locate_dual(model, dual)
    if symbolic_hw(model) is not None:
        check_constant_sizes(model, _propagated(model, shapes))
        d = locate_dynamic(model, locate)
        return _Located(d.work, d.head, True, shapes=d.shapes, dynamic=d)
    if needs_folding(model):
        try:
            return _Located(model, locate(model, shapes, anchors), False, shapes=shapes)
        except NoHeadError as direct:
            # onnxsim materialises what it folds: check the sizes with shapes propagated through the plumbing
            check_constant_sizes(model, _propagated(model, shapes))
            try:
                folded = fold(model)
            except HeadcutError:
                raise direct from None
            shapes = infer_shapes(folded)
            return _Located(folded, locate(folded, shapes, anchors), True, shapes=shapes)
    return _Located(model, locate(model, shapes, anchors), False, shapes=shapes)


def _propagated(model: onnx.ModelProto, shapes: dict) -> dict:
    """Shapes propagated through the shape plumbing (what onnxsim will materialise), else ``shapes``."""
    try:
        return infer_shapes(model, data_prop=True)
    except Exception:  # onnx's data propagation gave up: the sizes known without it were checked already
        return shapes


def _locate_before_nms(model: onnx.ModelProto, nms: str, shapes: dict) -> _Located:
    """An end-to-end export: the head feeding its NMS, located in the model truncated there."""
    tried = []
    for truncated, t, s in nms_candidates(model, shapes):
        try:
            inner = _locate(truncated)
        except (NoHeadError, AlreadyRawError) as e:  # a per-level (1, C, H*W) reshape of the convs is raw-looking
            tried.append(f"'{t}' {list(s)}: {e}")
            continue
        tail = len(model.graph.node) - len(truncated.graph.node)
        note = (f"end-to-end export: the {nms} NMS and the box/score conversion before it ({tail} nodes) were "
                "removed with the decode; verified against the decoded tensor that fed them")
        return _Located(inner.work, replace(inner.head, notes=inner.head.notes + (note,)), inner.folded,
                        truncated.SerializeToString())
    raise NoHeadError(f"end-to-end export with {nms}: no decoded (1, N, C) tensor with a known decode found "
                      f"before the NMS" + (f" (tried {'; '.join(tried[:2])})" if tried else ""))


def _locate_dual(model: onnx.ModelProto, dual: DualOutputs) -> _Located:
    """A dual-head export: the inference branch's head, located in the model truncated to its output; the
    auxiliary output must locate as the same head (geometry, classes, DFL) or nothing is cut."""
    kept, dropped = dual.models(model)
    inner = _locate(kept)
    h = inner.head
    try:
        other = _locate(dropped).head
    except NoHeadError as e:
        raise NoHeadError(f"two decoded outputs: '{dual.kept}' is a {h.family} head but '{dual.dropped}' is not "
                          f"({str(e)[:160]}); a dual head needs both") from None

    def geometry(x: Head) -> tuple:
        return x.decode, x.num_classes, x.strides, tuple(lv.grid for lv in x.levels), x.reg_max, x.channel_first

    if geometry(other) != geometry(h) or h.decode != "dist_anchor" or not h.channel_first:
        raise NoHeadError(f"two decoded outputs that are not one dual head: '{dual.kept}' is a {h.family} "
                          f"{h.decode} head, '{dual.dropped}' a {other.family} {other.decode} head of other geometry")
    return _Located(inner.work, replace(h, notes=h.notes + (dual.note(),)), inner.folded, kept.SerializeToString(),
                    internal_output=False)


def _locate_before_topk(model: onnx.ModelProto, shapes: dict) -> _Located:
    """An NMS-free export: the head feeding its top-k selection, located in the model truncated there;
    the selection is checked node for node (:func:`onnx_headcut.topk.check_tail`) and recorded."""
    tried = []
    for truncated, t, s in topk.candidates(model, shapes):
        try:
            inner = _locate(truncated)
        except (NoHeadError, AlreadyRawError) as e:  # a tensor past the decode (the class scores) is raw-looking
            tried.append(f"'{t}' {list(s)}: {e}")
            continue
        head = inner.head
        if head.decode != "dist_anchor" or not head.xyxy or not head.channel_first:
            raise NoHeadError(f"NMS-free (top-k) export: the decode before the selection is {head.family} "
                              f"{head.decode} with {'x1, y1, x2, y2' if head.xyxy else 'cx, cy, w, h'} boxes; headcut "
                              "records a top-k selection only after Ultralytics' x1, y1, x2, y2 decode")
        sel = topk.check_tail(model, shapes, t, head.num_classes)
        family = "YOLOv10" if head.dfl else "YOLO26"
        why = (f"NMS-free top-k tail after the decoded '{t}' {list(s)}: TopK({sel.k}) of the best class score, "
               f"TopK({sel.k}) of the flattened scores, class = index % {head.num_classes}; no NMS")
        label = ("DFL with NMS-free top-k selection: YOLOv10 (v10Detect)" if head.dfl
                 else "reg_max 1 with NMS-free top-k selection: YOLO26 (one-to-one head)")
        note = (f"NMS-free export: the top-{sel.k} selection ({len(model.graph.node) - len(truncated.graph.node)} "
                "nodes) was removed with the decode and is recorded as 'selection'; the decode reproduces it")
        head = replace(head, family=family, selection=sel, reasons=head.reasons + (why, label),
                       notes=head.notes + (note,))
        return _Located(inner.work, head, inner.folded, shapes=inner.shapes)
    raise NoHeadError("NMS-free (top-k) export: no decoded (1, 4+nc, N) tensor with a known decode found before "
                      "the TopK" + (f" (tried {'; '.join(tried[:2])})" if tried else ""))


def inspect(path: str | os.PathLike, anchors: tuple | None = None) -> Inspection | RawInspection:
    """Find the head of the model at ``path`` and describe the cut ``strip`` would make; for a model
    that is already raw (a headcut record, or convs through layout ops only), a :class:`RawInspection`.
    ``anchors``: as for :func:`strip`."""
    model = load(path)
    outs = tuple((o.name, tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                                for d in o.type.tensor_type.shape.dim)) for o in model.graph.output)
    try:
        found = _locate_file(model, path, anchors)
    except AlreadyRawError as e:
        return RawInspection(str(path), str(e), outs, embedded(model, str(path)))
    head = found.head
    if found.dynamic is not None and found.dynamic.dynamic is not None:  # what strip would keep
        head = replace(head, dynamic_hw=found.dynamic.dynamic)
    return _inspection(path, found.work, head, found.folded, len(model.graph.node), inplace=True,
                       shapes=found.shapes)[0]


def decoded_head(path: str | os.PathLike, role: str = "the model", anchors: tuple | None = None) -> Head:
    """The head of the decoded export at ``path``; :class:`UsageError` when it is already raw (``role``
    names what the command expected, e.g. "ORIGINAL"). ``anchors``: as for :func:`strip`."""
    insp = inspect(path, anchors)
    if isinstance(insp, RawInspection):
        raise UsageError(f"{path}: {role} must be a decoded export, but it is {insp.reason.split(';')[0]}")
    return insp.head


def decoded_reference(path: str | os.PathLike, role: str = "the model",
                      anchors: tuple | None = None) -> tuple[Head, str | os.PathLike | bytes]:
    """:func:`decoded_head` and what onnxruntime runs as the original: the file itself, or for an
    end-to-end NMS export the model truncated at the decoded tensor that fed the NMS (as ``strip``
    verifies against; onnxruntime has no ``EfficientNMS_TRT``)."""
    head = decoded_head(path, role, anchors)
    model = load(path)
    if not find_nms(model):
        return head, path
    found = _locate_file(model, path, anchors)
    return head, found.reference if found.reference is not None else path


def _inspection(path, work: onnx.ModelProto, head: Head, folded: bool, source_nodes: int,
                layout: Layout = Layout(), batch: int | str = 1, inplace: bool = False, shapes: dict | None = None,
                output_name: str | None = None):
    shapes = shapes if shapes is not None else infer_shapes(work)
    ops = dict(sorted(decode_region(GraphIndex(work), head.output_name).ops.items()))
    raw, report = cut(work, head, layout, batch, inplace=inplace, output_name=output_name)
    return Inspection(str(path), head, report, ops, max_rank(shapes), folded, source_nodes), raw


def strip(src: str | os.PathLike, dst: str | os.PathLike | None = None, *, layout: Layout = Layout(),
          verify: bool = True, lower: bool = True, simplify: bool = False, images: tuple = (), tol: float = DEFAULT_TOL,
          force: bool = False, keep_dynamic_batch: bool = False, conf: float = DEFAULT_CONF,
          iou: float = DEFAULT_IOU, anchors: tuple | None = None,
          input_size: str | tuple[int, int] | None = None) -> StripResult:
    """Cut the decode off the detector at ``src`` and write the raw model to ``dst``
    (default :func:`default_output`: ``<stem>.raw.onnx`` beside ``src``; a missing folder is made).

    ``layout`` chooses the raw layout: flat (one (1, N, C) output, the default) or one output per
    level, logits or sigmoid scores, DFL bins or distances (see :class:`~onnx_headcut.heads.Layout`).
    A dynamic-batch export gives a static batch-1 raw graph unless ``keep_dynamic_batch``, which
    cuts the unfolded graph and keeps the batch axis symbolic (verified at batch 1 and 2).
    An export with a symbolic height and width keeps them when its decode is size-independent (see
    :mod:`onnx_headcut.dynamic`; verified at two sizes, the metadata's ``dynamic_hw`` says so);
    ``input_size`` (``"HxW"`` or ``(h, w)``) pins them, and the batch to 1, for engines that need static shapes.

    The output set is ``dst``, ``dst.data`` (a model too big for protobuf) and the sidecar: an
    existing member is an error unless ``force``, and ``src``, its external data or an image never
    may be one (see :func:`~onnx_headcut.io.check_output_path`).

    Writes ``dst`` and ``<dst stem>.head.json`` (the head geometry, the preprocessing and the class
    names the source records, also stored in ``dst``'s ``metadata_props["headcut"]``; the source's
    other ``metadata_props`` entries are kept in ``dst``). With ``verify`` (the default) both models run
    in onnxruntime and
    the three layers of :mod:`onnx_headcut.check` must pass — raw outputs equal to the prediction
    convs' values rearranged, their decode equal to the original output within ``tol`` (px per 640 px
    of input; scores), the same detections at ``conf``/``iou`` — otherwise
    :class:`VerificationError` is raised and nothing is written. ``src`` is only ever read.

    ``anchors`` (per level, per anchor (w, h) pixels; :func:`~onnx_headcut.heads.anchor_raw.parse_anchors`)
    is for an export whose outputs already are a YOLOv5/v7 raw head split per level (YOLOv7 without
    ``--grid``): its graph holds no anchors. They are recorded as given; verification then proves the
    raw outputs equal the original's outputs and the convs (layer 1), and says that the decode and
    detection layers have no decoded original to compare with.
    """
    check_options(tol, conf, iou)
    size = parse_size(input_size) if input_size is not None else None
    if size is not None and keep_dynamic_batch:
        raise UsageError("--input-size pins the batch to 1 too; it does not go with --keep-dynamic-batch")
    dst = default_output(src) if dst is None else dst
    inputs = {**dependencies(src), **{Path(i): "an --image input" for i in images}}  # never written, even forced
    dst = check_output_path(src, dst, force=force, protected=inputs)
    model = load(src)
    found = _locate_file(model, src, anchors, size)
    head = found.head
    head.check_layout(layout)
    if keep_dynamic_batch and _dynamic_batch(model) is None:
        raise UsageError(f"--keep-dynamic-batch does not apply: the input '{head.input_name}' of {src} has a "
                         "static batch")
    work, head, sizes = _dynamic_hw(model, found, head, size is not None)
    if verify:  # verification feeds inputs of these sizes (batch 2 for a kept dynamic batch)
        try:
            for hw in sizes or (head.input_shape[-2:],):
                check_input_size(head.input_name, (*head.input_shape[:-2], *hw), 2 if keep_dynamic_batch else 1)
        except TooLargeError as e:
            raise TooLargeError(f"{src}: {e}") from None
    batch: int | str = 1  # 1, or the name of a kept dynamic batch dim
    if found.folded:
        batch_name = _dynamic_batch(model)
        if keep_dynamic_batch and batch_name and found.reference is None and \
                (found.dynamic is None or work is model) and \
                all(b.tensor in _tensor_names(model) for lv in head.levels for b in lv.branches):
            work, batch = model, batch_name
            head = replace(head, notes=head.notes + (f"dynamic batch '{batch_name}' kept",))
        elif batch_name:
            why = "" if not keep_dynamic_batch else " (--keep-dynamic-batch is not possible for this graph)"
            head = replace(head, notes=head.notes + (f"dynamic batch '{batch_name}' pinned to 1: the raw graph "
                                                     f"is {'static' if work is not model else 'batch 1'}{why}",))
    n_source = len(model.graph.node)
    own, own_notes = source_metadata(model, head.num_classes)  # names, imgsz, ... the export records
    props = [(p.key, p.value) for p in model.metadata_props if p.key != METADATA_KEY]
    head = replace(head, notes=head.notes + own_notes)
    out_name = None
    # end-to-end (NMS or top-k): the decoded tensor is internal, so the raw output is named after the model's
    if (found.reference is not None and found.internal_output) or head.selection is not None:
        outs = [o.name for o in model.graph.output]
        out_name = outs[0] if len(outs) == 1 else RAW_OUTPUT_NAME
        head = replace(head, notes=head.notes + (f"raw output named '{out_name}' (the decoded tensor "
                                                 f"'{head.output_name}' that fed the "
                                                 f"{'top-k selection' if head.selection else 'NMS'} is internal "
                                                 "to the export)",))
    conv_source = None  # where layer 1 reads the prediction convs, when the reference lacks their tensors
    if verify and found.reference is None and not {b.tensor for lv in head.levels for b in lv.branches} <= \
            _tensor_names(model):
        conv_source = work.SerializeToString()  # before the cut, which is made in place
    insp, raw = _inspection(src, work, head, found.folded, n_source, layout, batch, inplace=True,
                            shapes=found.shapes if work is found.work else None, output_name=out_name)
    reference = found.reference if found.reference is not None else src
    del model, found, work

    rw = None
    if lower:
        raw, rw = rewrite_5d(raw, strict=False, inplace=True)
    if simplify:
        raw = onnxsim_simplify(raw)
    rank_after = rw.max_rank_after if rw is not None and not simplify else max_rank(infer_shapes(raw))

    meta = head.to_json(
        layout,
        headcut_version=__version__,
        removed={"nodes": insp.cut.removed, "ops": insp.cut.removed_ops},
        raw_outputs=[{"name": n, "shape": list(sh)} for n, sh in insp.cut.outputs],
        **own,
    )
    check_graph(raw)  # postcondition: single assignment, everything defined, acyclic
    del raw.metadata_props[:]
    for k, v in props:  # the original's own entries (Ultralytics' names, imgsz, ...) stay as they were
        raw.metadata_props.add(key=k, value=v)
    embed(raw, meta)
    sidecar_name = dst.stem + ".head.json"

    with Staging(dst, targets=strip_outputs(dst), protected=inputs, force=force) as st:
        staged = st.path(dst.name)
        save(raw, staged)
        st.path(sidecar_name).write_text(json.dumps(meta, indent=2) + "\n")
        result = None
        if verify:
            result = run_verify(reference, staged, head, meta, images=tuple(images), tol=tol,
                                batches=(1, 2) if batch != 1 else (1,), conf=conf, iou=iou, conv_source=conv_source,
                                sizes=sizes)
            result.raise_if_failed()
        files = tuple(st.commit())
    return StripResult(insp, rw, result, rank_after, simplify, files, meta, head.effective(layout), batch)


def _dynamic_hw(model: onnx.ModelProto, found: _Located, head: Head, pinned: bool):
    """(graph to cut, head, sizes to verify at) for a symbolic height and width: the original graph and a head
    with ``dynamic_hw`` when the locator proved the decode size-independent and the convs' tensors are in
    it; else the pinned copy, said in a note. Others: ``(found.work, head, ())``."""
    axes = symbolic_hw(model)
    if axes is None or pinned:
        return found.work, head, ()
    d = found.dynamic
    convs = {b.tensor for lv in head.levels for b in lv.branches}
    if d is not None and d.dynamic is not None and found.reference is None and convs <= _tensor_names(model):
        (h0, w0), (h1, w1) = d.dynamic.verified
        note = (f"symbolic height and width {list(axes)} kept: each level's grid is the input size / its stride "
                f"(sides multiples of {d.dynamic.multiple}); verified at {h0}x{w0} and {h1}x{w1}")
        return model, replace(head, dynamic_hw=d.dynamic, notes=head.notes + (note,)), d.dynamic.verified
    at = "x".join(map(str, head.input_shape[-2:]))
    why = (d.why if d is not None and d.why else "the decoded tensor is inside an end-to-end export" if
           found.reference is not None else "the prediction convs' tensors are renamed once folded")
    note = (f"symbolic height and width {list(axes)} pinned to {at}: the raw graph is static ({why}); "
            "--input-size HxW pins another size")
    return found.work, replace(head, notes=head.notes + (note,)), ()


def default_output(src: str | os.PathLike) -> Path:
    """Where ``strip`` writes without ``-o``: ``<stem>.raw.onnx`` beside the input, as onnxsim-style tools do."""
    p = Path(src)
    return p.with_name(p.stem + ".raw.onnx")


def _dynamic_batch(model: onnx.ModelProto) -> str | None:
    """The symbolic name of the image input's batch axis, if it has one."""
    inits = {t.name for t in model.graph.initializer}
    for i in model.graph.input:
        if i.name not in inits:
            d = i.type.tensor_type.shape.dim
            return d[0].dim_param or None if d and not d[0].HasField("dim_value") else None
    return None


def _tensor_names(model: onnx.ModelProto) -> set[str]:
    return {o for n in model.graph.node for o in n.output}
