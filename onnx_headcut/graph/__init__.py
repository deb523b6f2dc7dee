"""Read-only views of an ONNX graph: who produces and consumes each tensor, constant values, shapes,
size limits and the single-assignment postcondition.

Modules, one job each:

- :mod:`.protos` -- stateless readers of protos (``attr``, Constant values, declared shapes, ``Shape``)
- :mod:`.index` -- :class:`GraphIndex`: producer/consumer maps and cached constant lookup
- :mod:`.constants` -- the constant evaluator behind :meth:`GraphIndex.const_value`
- :mod:`.numpy_ops` -- the numpy implementations of the ops it folds itself
- :mod:`.sizes` -- the size limits and the checks that refuse a declared size above them
- :mod:`.shapes` -- shape inference on a weightless skeleton
- :mod:`.structure` -- names in use, fresh names, the SSA/no-cycle postcondition

Everything importers use is re-exported here. The tunable limits live in the module that reads
them (:mod:`.sizes`: ``MAX_CONSTANT_ELEMENTS``, ``MAX_INPUT_ELEMENTS``; :mod:`.shapes`:
``PROTOBUF_LIMIT``, ``SKELETON_KEEP*``): change them there.
"""

from __future__ import annotations

from .index import GraphIndex
from .protos import Shape, attr, is_static, max_rank
from .shapes import PROTOBUF_LIMIT, SKELETON_KEEP, SKELETON_KEEP_FLOAT, infer_shapes, skeleton
from .sizes import MAX_CONSTANT_ELEMENTS, MAX_INPUT_ELEMENTS, check_constant_sizes, check_input_size, too_large
from .structure import check_graph, fresh, graph_names

__all__ = [
    "GraphIndex", "Shape", "attr", "is_static", "max_rank",
    "infer_shapes", "skeleton", "PROTOBUF_LIMIT", "SKELETON_KEEP", "SKELETON_KEEP_FLOAT",
    "MAX_CONSTANT_ELEMENTS", "MAX_INPUT_ELEMENTS", "check_constant_sizes", "check_input_size", "too_large",
    "check_graph", "fresh", "graph_names",
]
