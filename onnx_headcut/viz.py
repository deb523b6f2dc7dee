"""Pictures for notebooks: the decode region before the cut and the raw tail after it (matplotlib).

A layered drawing (column = longest path from the prediction convs) of the decode's data nodes,
so the picture can be read without a running netron server.
"""

from __future__ import annotations

import onnx

from .graph import GraphIndex
from .region import decode_region


def _layers(nodes, sources: set[str]) -> dict[int, int]:
    depth_of_tensor = {t: 0 for t in sources}
    depth = {}
    for n in nodes:  # graph order is topological
        d = 1 + max((depth_of_tensor.get(i, 0) for i in n.input if i), default=0)
        depth[id(n)] = d
        for o in n.output:
            depth_of_tensor[o] = d
    return depth


def draw_nodes(ax, nodes, sources: list[str], title: str) -> None:
    """Draw ``nodes`` (a topologically ordered list) fed by the tensors ``sources`` onto ``ax``."""
    depth = _layers(nodes, set(sources))
    cols: dict[int, list] = {}
    for n in nodes:
        cols.setdefault(depth[id(n)], []).append(n)
    pos, where = {}, {}
    for k, t in enumerate(sources):
        where[t] = (0, -k)
    for d, col in cols.items():
        for k, n in enumerate(col):
            pos[id(n)] = (d, -k)
            for o in n.output:
                where[o] = (d, -k)
    for n in nodes:
        x1, y1 = pos[id(n)]
        for i in n.input:
            if i in where:
                x0, y0 = where[i]
                ax.annotate("", (x1 - 0.28, y1), (x0 + 0.28, y0),
                            arrowprops=dict(arrowstyle="->", lw=0.5, color="0.5"))
    for _t, (x, y) in ((t, where[t]) for t in sources):
        ax.text(x, y, "conv", ha="center", va="center", fontsize=6,
                bbox=dict(boxstyle="round", fc="#cde", ec="0.4", lw=0.5))
    for n in nodes:
        x, y = pos[id(n)]
        ax.text(x, y, n.op_type, ha="center", va="center", fontsize=6,
                bbox=dict(boxstyle="round", fc="#fed" if not n.name.startswith("headcut/") else "#dfd",
                          ec="0.4", lw=0.5))
    ax.set_title(title, fontsize=9)
    ax.set_xlim(-0.6, max(cols, default=0) + 0.6)
    ax.set_ylim(min(min((p[1] for p in where.values()), default=0), -1) - 0.6, 0.6)
    ax.axis("off")


def cut_figure(original: onnx.ModelProto, raw: onnx.ModelProto, output: str):
    """A matplotlib Figure: the original's decode region (left) and the raw model's tail (right)."""
    import matplotlib.pyplot as plt

    region = decode_region(GraphIndex(original), output)
    before = list(region.data_nodes)
    frontier = list(region.frontier)
    raw_index = GraphIndex(raw)
    after = [n for n in raw.graph.node if n.name.startswith("headcut/")]
    after_src = sorted({i for n in after for i in n.input if i in raw_index.producer
                        and raw_index.producer[i].op_type == "Conv"}, key=frontier.index)
    width = max(len({d for d in _layers(before, set(frontier)).values()}), 4)
    fig, axes = plt.subplots(1, 2, figsize=(min(2 + width * 0.9, 18), 6),
                             gridspec_kw={"width_ratios": [width, 5]})
    draw_nodes(axes[0], before, frontier, f"before: decode region ({len(before)} data ops)")
    draw_nodes(axes[1], after, after_src, f"after: raw tail ({len(after)} ops)")
    fig.tight_layout()
    return fig
