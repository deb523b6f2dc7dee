"""Exports with two decoded outputs of one head design: WongKinYiu's un-reparameterised YOLOv9 dual head.

``DualDDetect`` (WongKinYiu/yolov9 ``models/yolo.py``) decodes two heads on ``[A3, A4, A5, P3, P4, P5]``:
``d1`` (``cv2``/``cv3``) on the auxiliary branch's maps and ``d2`` (``cv4``/``cv5``) on the main branch's, and
with ``export=True`` returns ``[y1, y2]``. ``export.py`` passes ``output_names=['output0']``, so the graph's
outputs are, in order, ``output0`` = ``y1`` (auxiliary) and ``y2`` (main) under torch's numeric name::

    aux maps  ─► cv2/cv3 convs ─► decode ─► output 0 (1, 4+nc, N)    auxiliary: dropped
    main maps ─► cv4/cv5 convs ─► decode ─► output 1 (1, 4+nc, N)    inference branch: cut and kept

The inference branch is ``y2``: upstream's ``detect_dual.py`` and ``val_dual.py`` take ``pred[0][1]``. Both
decodes are the same formula, so the structure tells the branches apart only by that order (the
auxiliary convs and the main ones are alike); :func:`inference_branch` keeps output 1 and the pipeline
verifies the raw model against it. :func:`inference_branch` only recognises the shape of the export
(two static ``(1, C, N)`` outputs of the same shape, each decoded from its own prediction convs); the
pipeline then requires both to locate as the same head geometry before it cuts anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from .graph import GraphIndex, Shape, is_static
from .region import RAW_OPS, decode_region
from .wrappers import truncate

#: which graph output of a dual head is the inference branch (``pred[0][1]`` in upstream's predict)
INFERENCE_INDEX = 1


@dataclass(frozen=True)
class DualOutputs:
    """The two outputs of a dual-head export: ``kept`` (the inference branch) and ``dropped`` (auxiliary)."""

    kept: str
    dropped: str
    shape: tuple[int, ...]

    def models(self, model: onnx.ModelProto) -> tuple[onnx.ModelProto, onnx.ModelProto]:
        """``model`` truncated to the kept output, and to the dropped one."""
        return truncate(model, self.kept, self.shape), truncate(model, self.dropped, self.shape)

    def note(self) -> str:
        return (f"dual head (YOLOv9 DualDDetect): two decoded outputs; kept output {INFERENCE_INDEX} "
                f"'{self.kept}', the main branch upstream predicts with (detect_dual.py / val_dual.py take "
                f"pred[0][1]); dropped output 0 '{self.dropped}', the auxiliary branch used in training; "
                f"verified against '{self.kept}'")


def dual_outputs(model: onnx.ModelProto, shapes: dict[str, Shape]) -> DualOutputs | None:
    """The two outputs when ``model`` looks like a dual-head export, else None (see the module docstring)."""
    outs = [o.name for o in model.graph.output]
    if len(outs) != 2:
        return None
    s = [shapes.get(o) for o in outs]
    if not all(is_static(x) and len(x) == 3 and x[0] == 1 for x in s) or s[0] != s[1]:
        return None
    ix = GraphIndex(model)
    regions = [decode_region(ix, o) for o in outs]
    if any(not r.frontier or r.blockers or set(r.ops) <= RAW_OPS for r in regions):
        return None
    if set(regions[0].frontier) & set(regions[1].frontier):
        return None
    shape = s[INFERENCE_INDEX]
    assert is_static(shape)
    return DualOutputs(outs[INFERENCE_INDEX], outs[1 - INFERENCE_INDEX], tuple(shape))
