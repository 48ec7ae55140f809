"""Pareto plots of the zoo with matplotlib (Agg backend: no display needed).

With published weights: their top-1 against PI latency, labelled, with each data set's Pareto front.
Always: ReLUs against MACs for every entry (the two costs the PI methods trade against each other).
"""
from __future__ import annotations

import os
from typing import List, Sequence, Tuple

from ..errors import HybrezooError
from .zoo import ZooRow

__all__ = ["plot_zoo", "pareto_front", "check_plot_path"]

_FORMATS = (".png", ".svg", ".pdf")


def pareto_front(points: Sequence[Tuple[float, float]], maximize_y: bool) -> List[int]:
    """Indices of the points no other point beats (lower x, and higher y or lower y), by x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1] if maximize_y else points[i][1]))
    front, best = [], None
    for i in order:
        y = points[i][1]
        if best is None or (y > best if maximize_y else y < best):
            front.append(i)
            best = y
    return front


def check_plot_path(path: str) -> str:
    """The folder the plot goes to; one clear error for a format or folder we cannot write."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in _FORMATS:
        raise HybrezooError(f"cannot write a plot to {path!r}: use a file name ending in {', '.join(_FORMATS)}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise HybrezooError(f"folder {folder} does not exist: create it or choose another --plot path")
    return folder


def plot_zoo(rows: Sequence[ZooRow], path: str, title: str = "hybrezoo") -> str:
    """Write the plot to ``path`` (.png, .svg or .pdf, written to a temp file then moved); returns
    which plot was drawn.

    With published weights: top-1 against PI latency for every published entry, each labelled, with
    each data set's Pareto front, beside the cost panel. The cost panel (ReLUs against MACs) shows every
    entry; rows priced at their ReLU budget (SNL/SENet before their masks are published) are hollow
    markers with a downward arrow (an upper bound), and entries with equal figures (a Circa model and
    its base, SENet and SNL at one budget) are spread sideways so that none hides another."""
    folder = check_plot_path(path)
    ext = os.path.splitext(path)[1].lower()
    if not rows:
        raise HybrezooError("no models to plot")

    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    measured = [r for r in rows if r.top1 is not None]
    methods = sorted({r.method for r in rows})
    colors = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}
    if measured:
        fig, (acc, costs) = plt.subplots(1, 2, figsize=(13, 5.2))
        points = _dodged([(r.lan_s, r.top1) for r in measured])
        _scatter(acc, measured, points, colors)
        _front(acc, measured, points)
        for r, point in zip(measured, points):
            acc.annotate(r.name, point, fontsize=6, xytext=(3, 3), textcoords="offset points")
        acc.set_xlabel("PI latency on LAN, offline + online (s), estimated by pi_cost")
        acc.set_ylabel("top-1 (%), `hybrezoo eval` of the published weights")
        acc.set_title(f"{len(measured)} published checkpoint{'s' if len(measured) != 1 else ''}", fontsize=9)
        kind = "top-1 vs latency, and ReLUs vs MACs"
    else:
        fig, costs = plt.subplots(figsize=(7.5, 5.2))
        kind = "ReLUs vs MACs"
    _scatter(costs, rows, _dodged([(float(r.macs), float(r.relus)) for r in rows]), colors)
    costs.set_xlabel("MACs per inference")
    costs.set_ylabel("ReLUs per inference")
    costs.set_yscale("log")
    costs.set_title("every entry" + ("" if measured else " (no published weights yet)") + "; hollow with arrow: "
                    "ReLU budget, an upper bound; equal points spread sideways", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp{ext}")
    try:
        fig.savefig(tmp, dpi=150)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.remove(tmp)
    return kind


_MARKERS = {"cifar100": "o", "tinyimagenet": "^"}


def _dodged(points: Sequence[Tuple[float, float]], step: float = 1.07) -> List[Tuple[float, float]]:
    """The points with each repeat of an (x, y) pair moved right by a factor ``step`` per repeat (the x
    axes are logarithmic), so that equal entries stay visible side by side."""
    seen: dict = {}
    out = []
    for x, y in points:
        k = seen.get((x, y), 0)
        seen[(x, y)] = k + 1
        out.append((x * step ** k, y))
    return out


def _scatter(ax, rows: Sequence[ZooRow], points, colors) -> None:
    """One colour per method, one marker per data set; upper bounds hollow, with a downward arrow."""
    seen = set()
    for r, (x, y) in zip(rows, points):
        label = r.method if r.method not in seen else None
        marker = _MARKERS.get(r.dataset, "s")
        if r.relus_bound:
            ax.scatter([x], [y], facecolors="none", edgecolors=[colors[r.method]], marker=marker, s=26, label=label,
                       zorder=3)
            ax.annotate("", (x, y * 0.7), (x, y), arrowprops=dict(arrowstyle="->", color=colors[r.method], lw=0.7))
        else:
            ax.scatter([x], [y], color=colors[r.method], marker=marker, s=26, label=label, zorder=3)
        seen.add(r.method)
    for dataset, marker in _MARKERS.items():
        if any(r.dataset == dataset for r in rows):
            ax.scatter([], [], color="gray", marker=marker, label=dataset)
    ax.set_xscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)


def _front(ax, rows: Sequence[ZooRow], points) -> None:
    """Each data set's Pareto front: higher top-1 for lower cost (accuracies of different data sets
    are not comparable)."""
    for dataset in sorted({r.dataset for r in rows}):
        idx = [i for i, r in enumerate(rows) if r.dataset == dataset]
        chosen = [idx[j] for j in pareto_front([points[i] for i in idx], maximize_y=True)]
        if len(chosen) > 1:
            ax.step([points[i][0] for i in chosen], [points[i][1] for i in chosen], where="post", color="black",
                    linewidth=0.8, alpha=0.6, zorder=2, label=f"Pareto front ({dataset})")
