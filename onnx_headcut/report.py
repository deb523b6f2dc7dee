"""Plain-text rendering of what ``strip`` and ``inspect`` found (the CLI prints these).

Every line goes through :func:`~onnx_headcut.text.printable_lines`: names and strings from the model
cannot break a line or reorder it (control characters and bidi overrides are shown escaped).
"""

from __future__ import annotations

from .heads.base import head_name
from .pipeline import Inspection, RawInspection, StripResult
from .text import printable, printable_lines


def _ops(d: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in d.items())


def _blocks(blocks) -> str:
    return " + ".join(f"{b.role} {b.size}" + (" (sigmoid)" if b.sigmoid else "") for b in blocks)


def _outputs(outputs) -> str:
    return ", ".join(f"'{n}' {tuple(s)}" for n, s in outputs)


def check_lines(c) -> list[str]:
    """The three verification layers on one input (:class:`onnx_headcut.check.Check`), one line each; for an
    int8 model its detection agreement and the decoded outputs' max errors (reported, not gating)."""
    a = getattr(c, "agreement", None)
    if a is not None:
        return [f"verify    {c.input} on {c.engine}, int8 ({a.quantizer}): {'OK' if c.ok else 'DIFFERENT'}",
                "  exact   not checked: an int8 model cannot pass the three exact layers; its detections are "
                "compared with the fp32 original's",
                f"  agree   {a}",
                f"  error   decoded output against the original's: max abs error boxes {a.max_abs_err_boxes:.3g} px, "
                f"scores {a.max_abs_err_scores:.3g} (reported, not required)"]
    layout = ("decoded candidate: no raw layout to check" if c.layout is None else str(c.layout))
    skipped = ("NOT CHECKED: the original has no decoded output (its outputs are the raw head), so there is "
               "nothing to compare with; the recorded anchors and decode are unproven")
    lines = [
        f"verify    {c.input} on {c.engine}: {'OK' if c.ok else 'DIFFERENT'}"
        + (f" (layer 1 only; {' and '.join(c.not_checked())} not checked)" if c.not_checked() else ""),
        f"  layout  {layout}",
    ]
    if c.outputs is not None:
        lines.append(f"  outputs {c.outputs}")
    return lines + [
        f"  decode  {skipped if c.decode is None else c.decode}",
        f"  detect  {skipped.split(';')[0] if c.detections is None else c.detections}",
    ]


def head_table(insp: Inspection) -> list[str]:
    h = insp.head
    shape = list(h.input_shape) if h.dynamic_hw is None else \
        f"{[*h.input_shape[:2], *h.dynamic_hw.axes]} (levels at {h.input_shape[-2]}x{h.input_shape[-1]})"
    lines = [
        f"head      {head_name(h.family, h.version)}  decode={h.decode}  classes={h.num_classes}  "
        + _task(h.task, h.keypoints) + f"input '{h.input_name}' {shape}",
        f"{'level':>5} {'stride':>6} {'grid':>9} {'rows':>11}  branches",
    ]
    for i, lv in enumerate(h.levels):
        rows = f"{lv.first_row}..{lv.first_row + lv.rows * h.na - 1}"
        br = " ".join(f"{b.role}:{b.channels}" for b in lv.branches)
        lines.append(f"{i:>5} {lv.stride:>6} {f'{lv.grid[0]}x{lv.grid[1]}':>9} {rows:>11}  {br}")
    return lines


def _task(task: str, keypoints) -> str:
    """``task=pose (17 keypoints x 3)  `` for a task head, nothing for a detection head."""
    if task == "detect":
        return ""
    return f"task={task}" + (f" ({keypoints[0]} keypoints x {keypoints[1]})" if task == "pose" else "") + "  "


def raw_inspect_text(ri: RawInspection) -> str:
    """``headcut inspect`` on a raw model: why it is raw and, for one headcut wrote, its head record."""
    lines = [f"model     {ri.path}", f"raw       {ri.reason}"]
    m = ri.record
    if m is not None:
        dims = list(m["input"]["shape"])
        shape = str(dims)
        if "dynamic_hw" in m:
            d = m["dynamic_hw"]
            shape = (f"{[*dims[:2], d['height'], d['width']]} (levels at {dims[2]}x{dims[3]}, multiples of "
                     f"{d['multiple_of']})")
        name = head_name(str(m.get("family", "?")), str(m.get("version", "")))
        kp = m.get("keypoints", {})
        task = _task(m.get("task", "detect"), (kp.get("count"), kp.get("dims")))
        lines.append(f"head      {name}  decode={m['decode']}  "
                     f"classes={m['num_classes']}  {task}input '{m['input']['name']}' {shape}")
        lines.append(f"{'level':>5} {'stride':>6} {'grid':>9} {'rows':>11}")
        for i, lv in enumerate(m["levels"]):
            first = lv.get("first_row", 0)
            rows = f"{first}..{first + lv.get('rows', lv['grid'][0] * lv['grid'][1]) - 1}"
            grid = f"{lv['grid'][0]}x{lv['grid'][1]}"
            lines.append(f"{i:>5} {lv['stride']:>6} {grid:>9} {rows:>11}")
        dfl = (f"; DFL {m['dfl_bins']} bins per side left to the decode" if m.get("dfl_bins") else
               "; DFL kept in the graph" if m.get("dfl_in_graph") else "")
        lines.append(f"layout    {m.get('layout', 'flat')}: " + " + ".join(
            f"{c['name']} {c['size']}" + (" (sigmoid)" if c.get("sigmoid") else "") for c in m["channels"]) + dfl)
        if "original_output" in m:
            o = m["original_output"]
            lines.append(f"cut from  '{o.get('name', '?')}' {o.get('shape', '?')}"
                         + (f", {m['removed']['nodes']} nodes removed" if isinstance(m.get("removed"), dict) else ""))
    sel = (m or {}).get("selection")
    if isinstance(sel, dict):
        lines.append(f"select    top {sel.get('k')} (anchor, class) scores, no NMS (the original's NMS-free output)")
    lines.append("outputs   " + ", ".join(f"'{n}' {tuple(s)}" for n, s in ri.outputs))
    lines += [f"note      {n}" for n in (m or {}).get("notes", []) if isinstance(n, str)]
    return printable_lines(lines)


def inspect_text(insp: Inspection | RawInspection) -> str:
    if isinstance(insp, RawInspection):
        return raw_inspect_text(insp)
    h = insp.head
    removed = insp.cut.removed
    folded = [f"folded    {insp.source_nodes} -> {insp.cut.nodes_before} nodes: onnxsim folded the shape plumbing "
              "(batch pinned to 1) before locating; the counts below are on the folded graph"] if insp.folded else []
    lines = [f"model     {insp.path}"] + folded + head_table(insp) + [
        f"decode    {_ops(insp.decode_ops)}",
        f"would cut {removed} nodes from output '{h.output_name}' {list(h.output_shape)}; "
        f"raw output (1, {h.rows}, {h.width()}) = " + _blocks(h.blocks()),
        f"max rank  {insp.max_rank}",
    ] + [f"note      {n}" for n in h.notes] + ["why:"] + [f"  - {r}" for r in h.reasons]
    return printable_lines(lines)


def _split(layout) -> str:
    """What a split layout's outputs hold, after the layout line ("" for the others)."""
    if len(layout.parts) == 1:
        return ""
    where = "per level " if layout.kind == "split" else ""
    return (f"; {where}outputs _box (box values), _cls (objectness, if any, then classes)"
            + (", _sum (clip(sum of the class scores, 0, 1))" if layout.score_sum else ""))


def strip_text(res: StripResult) -> str:
    insp, h = res.inspection, res.head
    removed = res.metadata["removed"]
    lines = head_table(insp) + [
        f"cut       {removed['nodes']} nodes ({_ops(removed['ops'])})",
        f"added     {_ops(insp.cut.added_ops)} -> {_outputs(insp.cut.outputs)}",
        f"layout    {res.layout.kind}: " + _blocks(h.blocks(res.layout))
        + ("; DFL kept in the graph" if h.dfl and res.layout.keep_dfl else
           f"; DFL {h.dfl_bins} bins per side (reg_max {h.upstream_reg_max} = {h.reg_max_meaning}) left to the decode"
           if h.dfl else "") + _split(res.layout),
    ]
    if h.selection is not None:
        lines.append(f"select    top {h.selection.k} (anchor, class) scores of the x1, y1, x2, y2 rows, no NMS -> "
                     f"'{h.selection.output}' {tuple(h.selection.shape)} (recorded; the decode reproduces it)")
    lines += [f"note      {n}" for n in h.notes]
    kept = [f"dynamic batch '{res.batch}'"] * (res.batch != 1) + ["symbolic height and width"] * bool(h.dynamic_hw)
    if insp.folded and not kept:  # first: it happened before the head was located
        lines.insert(0, f"folded    {insp.source_nodes} -> {insp.cut.nodes_before} nodes: onnxsim folded the shape "
                     "plumbing (batch pinned to 1) before locating; the counts below are on the folded graph")
    elif insp.folded:
        lines.insert(0, f"folded    onnxsim folded the shape plumbing of a copy to locate the head; the cut is made on "
                     f"the unfolded graph ({insp.source_nodes} nodes), {' and '.join(kept)} kept")
    rank = f"max rank  {insp.max_rank} -> {res.max_rank_after}"
    if res.rewrite is not None:
        rank += f"  (rewrite_5d lowered {len(res.rewrite.lowered)} chain(s) after the cut)"
        lines.append(rank)
        lines += [f"  ! not lowered: {u}" for u in res.rewrite.unlowered]
    else:
        lines.append(rank + "  (--no-lower)")
    if res.simplified:
        lines.append("simplify  onnxsim applied to the raw model")
    if res.verification is None:
        lines.append("verify    skipped (--no-verify)")
    else:
        for c in res.verification.checks:
            lines += check_lines(c)
    lines.append("wrote     " + ", ".join(str(f) for f in res.files))
    return printable_lines(lines)


def verify_text(checks) -> str:
    """``headcut verify``: the three layers of each check."""
    return printable_lines([line for c in checks for line in check_lines(c)])


def convert_text(res) -> str:
    """``headcut convert``: the engine, the blob names the C++ side binds to, the files written."""
    quantized = [f"precision {res.precision}"] if getattr(res, "precision", "fp32") != "fp32" else []
    return printable_lines([f"engine    {res.engine}", *quantized,
                            f"input     {', '.join(res.inputs)}", f"outputs   {', '.join(res.outputs)}",
                            "wrote     " + ", ".join(str(f) for f in res.files)])


def detect_table(res, conf: float, limit: int = 50):
    """``headcut detect``: a rich table of the first ``limit`` detections (names escaped, no markup)."""
    from rich.table import Table
    from rich.text import Text

    t = Table(title=f"{len(res.detections)} detections - {res.kind} model on {res.engine}, conf >= {conf}",
              title_justify="left")
    for col in ("#", "class", "score", "x1", "y1", "x2", "y2"):
        t.add_column(col, justify="left" if col == "class" else "right")
    for i, d in enumerate(res.detections[:limit]):
        t.add_row(str(i), Text(printable(d.name)), f"{d.score:.3f}", *(f"{v:.1f}" for v in d.box))
    return t


def _figure(v: float, digits: int = 3) -> str:
    return "-" if v != v else f"{v:.{digits}f}"  # nan: no detections (precision) or no match


def int8_text(rep) -> str:
    """``headcut verify --int8``: per model, int8 detections against the fp32 original's, and the layout to use."""
    lines = [f"int8      onnxruntime {rep.ort_version} QDQ, S8S8, per-channel weights, {rep.method} calibration "
             f"on {rep.calib_images} images; {rep.eval_images} held-out images, conf {rep.conf:g}",
             f"reference {rep.rows[0].reference} fp32 detections of {printable(rep.original)}",
             f"  {'model':<20} {'recall':>7} {'precis.':>7} {'int8 det':>8} {'score err':>9} {'mean IoU':>8}"]
    task = getattr(rep, "task", "detect")
    pose = task == "pose" or any(r.keypoint_error == r.keypoint_error for r in rep.rows)
    extra: list[tuple[str, str, int]] = (  # the task's figures: (header, Agreement field, digits)
        [("kpt err px", "keypoint_error", 2)] * pose + [("mask IoU", "mask_iou", 3), ("min mask", "min_mask_iou", 3)]
        * (task == "segment") + [("angle err", "angle_error", 4)] * (task == "obb"))
    for head, _, _ in extra:
        lines[-1] += f" {head:>10}"
    for r in rep.rows:
        lines.append(f"  {printable(r.name):<20} {_figure(r.recall):>7} {_figure(r.precision):>7} {r.detections:>8} "
                     f"{_figure(r.score_error, 4):>9} {_figure(r.mean_iou):>8}"
                     + "".join(f" {_figure(getattr(r, f), d):>10}" for _, f, d in extra))
    if task == "obb":
        lines.append("          angle err: mean over matched pairs, radians, the rotated box's equivalent names "
                     "taken into account")
    best = rep.best
    lines.append("use       " + (f"{printable(best.name)} (recall {best.recall:.3f}, precision {best.precision:.3f})"
                                 if best is not None else "none: no raw model detects anything after int8"))
    return printable_lines(lines)
