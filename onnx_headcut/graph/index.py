"""Read-only index of an ONNX graph: who produces and consumes each tensor, and the (cached) value
of each constant tensor (see :mod:`.constants`). The model is never modified."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx

from .constants import evaluate


class GraphIndex:
    """Producer/consumer maps and constant lookup over ``model.graph`` (the model is not modified)."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.graph = model.graph
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        self._order: dict[int, int] = {}
        for k, node in enumerate(self.graph.node):
            self._order[id(node)] = k
            for o in node.output:
                if o:
                    self.producer[o] = node
            for i in node.input:
                if i:
                    self.consumers[i].append(node)
        self.initializers = {t.name: t for t in self.graph.initializer}
        self.graph_inputs = {i.name for i in self.graph.input} - set(self.initializers)
        self._const_cache: dict[str, np.ndarray | None] = {}

    def position(self, node: onnx.NodeProto) -> int:
        """Where ``node`` (one of this graph's nodes) stands in graph order."""
        return self._order[id(node)]

    def const_value(self, name: str) -> np.ndarray | None:
        """The value of ``name`` if it depends on constants only (initializers, Constant nodes), else None.

        The constant subgraph behind it (the anchor-point Expand/Unsqueeze/Concat/Cast chains exporters
        write, for example) is evaluated once; intermediates are cached too. Raises
        :class:`~onnx_headcut.errors.TooLargeError` for a declared size above
        :data:`~onnx_headcut.graph.MAX_CONSTANT_ELEMENTS`.
        """
        if name not in self._const_cache:
            values = evaluate(self, name)
            for o, v in values.items():
                self._const_cache.setdefault(o, v)
            self._const_cache.setdefault(name, None)
        return self._const_cache[name]
