"""Single assignment in headcut's rewritten graphs: the names a graph uses, fresh names that collide
with none of them, and the structural postcondition (:func:`check_graph`) checked before writing."""

from __future__ import annotations

from collections import defaultdict

import onnx

from ..errors import InternalError


def graph_names(g: onnx.GraphProto) -> set[str]:
    """Every name ``g`` uses: tensors (node inputs and outputs, initializers, graph inputs and outputs,
    value_info) and node names. A generated name must be none of them."""
    names = {t.name for t in g.initializer} | {t.values.name for t in g.sparse_initializer}
    names |= {v.name for v in list(g.input) + list(g.output) + list(g.value_info)}
    for n in g.node:
        names.update(n.input)
        names.update(n.output)
        names.add(n.name)
    names.discard("")
    return names


def fresh(taken: set[str], base: str) -> str:
    """``base``, or ``base_1``, ``base_2``, ... : the first not in ``taken`` (which it is then added to)."""
    name, k = base, 0
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    taken.add(name)
    return name


def check_graph(model: onnx.ModelProto, what: str = "the raw graph") -> None:
    """Postcondition before a graph is written: single assignment (no tensor written twice, or both
    written and an initializer or input), every node input defined, every output produced, no cycle.
    What ``onnx.checker`` would reject from headcut's own rewriting; raises
    :class:`~onnx_headcut.errors.InternalError` (a headcut bug, exit 1)."""
    g = model.graph
    defined = {t.name for t in g.initializer} | {t.values.name for t in g.sparse_initializer}
    defined |= {i.name for i in g.input}
    producer: dict[str, int] = {}
    for k, n in enumerate(g.node):
        for o in n.output:
            if not o:
                continue
            if o in producer or o in defined:
                raise InternalError(f"{what} is not valid ONNX: tensor '{o}' is written twice; nothing written "
                                    "(a headcut bug: please report it)")
            producer[o] = k
    known = defined | set(producer)
    indegree, users = [0] * len(g.node), defaultdict(list)
    for k, n in enumerate(g.node):
        for i in set(n.input):
            if not i:
                continue
            if i not in known:
                raise InternalError(f"{what} is not valid ONNX: node '{n.name}' reads '{i}', which nothing defines; "
                                    "nothing written (a headcut bug: please report it)")
            if i in producer:
                indegree[k] += 1
                users[producer[i]].append(k)
    for o in g.output:
        if o.name not in known:
            raise InternalError(f"{what} is not valid ONNX: output '{o.name}' is not produced; nothing written "
                                "(a headcut bug: please report it)")
    ready = [k for k, d in enumerate(indegree) if d == 0]
    seen = 0
    while ready:
        k = ready.pop()
        seen += 1
        for u in users[k]:
            indegree[u] -= 1
            if indegree[u] == 0:
                ready.append(u)
    if seen != len(g.node):
        stuck = next(g.node[k] for k, d in enumerate(indegree) if d > 0)
        raise InternalError(f"{what} is not valid ONNX: node '{stuck.name or stuck.output[0]}' is on a cycle; "
                            "nothing written (a headcut bug: please report it)")
