"""Diagrams of where the numbers go when a tensor is reshaped: drawn, not described.

``draw_head_split`` shows how multi-head attention cuts a sequence's features into heads,
(B, L, E) -> (B, L, H, D) -> (B, H, L, D), and merges them back, entry by entry: every cell carries
its index in the input and the colour of the head that owns its feature.

This file is copied verbatim into the students' release, so it imports only numpy and matplotlib.
Like ``plotting.py`` it builds figures without pyplot (no ``plt.show()``, no figures piling up),
so it works under the non-interactive "Agg" backend; a notebook shows the returned figure.
"""

from __future__ import annotations

import io

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch, Rectangle

__all__ = ["draw_head_split", "head_split_panels", "DiagramFigure"]

HEAD_COLOURS = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#76b7b2", "#edc948", "#9c755f")
GAP = 0.5  # between the heads' blocks, in cells
ARROW_SPACE = 2.2  # between panels, in cells, where the arrows go
LABEL_SPACE = 2.6  # left of a panel of stacked heads, for the labels "head h"
TITLE_SPACE = 3.4  # above the panels, in cells


class DiagramFigure(Figure):
    """A Figure that a notebook shows as a picture even before pyplot has drawn anything.

    Jupyter learns to show figures when pyplot first loads its backend; a figure built without
    pyplot and shown earlier would appear as a line of text. Under the non-interactive Agg backend
    (tests, the grader's sandbox) it encodes nothing, as pyplot's figures do not either.
    """

    def _repr_png_(self) -> bytes | None:
        if matplotlib.get_backend().lower() == "agg":
            return None
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", bbox_inches="tight")
        return buffer.getvalue()


def head_split_panels(length: int, embed_dim: int, num_heads: int) -> dict[str, np.ndarray]:
    """The input indices each panel of :func:`draw_head_split` shows, by panel title.

    The input is x[l, e] = l * E + e (one sequence: every sequence of a batch is cut alike). Returns
    (L, E) arrays for the input and the merged output, (L, H, D) for the reshape, (H, L, D) for the
    split (and for the wrong reshape without the transpose).

    >>> head_split_panels(2, 4, 2)["split_heads: transpose -> (B, H, L, D)"]
    array([[[0, 1],
            [4, 5]],
    <BLANKLINE>
           [[2, 3],
            [6, 7]]])
    """
    if length < 1 or num_heads < 1 or embed_dim % num_heads:
        raise ValueError(f"embed_dim = {embed_dim} must be a multiple of num_heads = {num_heads}, and length >= 1 "
                         f"(got length = {length}).")
    head_dim = embed_dim // num_heads
    x = np.arange(length * embed_dim).reshape(length, embed_dim)
    grouped = x.reshape(length, num_heads, head_dim)  # (L, H, D): the same memory, features cut into H groups
    split = grouped.transpose(1, 0, 2)  # (H, L, D)
    return {
        "x: (B, L, E)": x,
        "reshape -> (B, L, H, D)": grouped,
        "split_heads: transpose -> (B, H, L, D)": split,
        "merge_heads: transpose, reshape -> (B, L, E)": split.transpose(1, 0, 2).reshape(length, embed_dim),
        "wrong: x.reshape(B, H, L, D), no transpose": x.reshape(num_heads, length, head_dim),
    }


def draw_head_split(
    length: int = 3, embed_dim: int = 8, num_heads: int = 2, *, show_wrong: bool = True, cell_size: float = 0.32
) -> Figure:
    r"""Draw how ``split_heads`` and ``merge_heads`` move the features of one sequence, entry by entry.

    Cell (l, e) of the input shows its index l * E + e, coloured by the head that owns feature e
    (head e // D, D = E / H). Panels, left to right: the input x (L, E); the reshape to (L, H, D),
    which cuts each position's features into H groups and moves nothing in memory; the transpose
    to (H, L, D), ``split_heads(x)``, where head h holds D features of *every* position; and
    ``merge_heads``, which transposes back and flattens to (L, E): x again. With ``show_wrong``, a
    last panel shows ``x.reshape(H, L, D)`` without the transpose: the right shape, but it cuts the
    *sequence* into chunks, so a "head" gets whole positions with every head's features (colours
    mixed). The batch dim is left out: every sequence of a batch is cut the same way.

    Shapes:
        length: L; embed_dim: E, a multiple of num_heads H. cell_size: inches per cell.
        result: a matplotlib ``Figure`` (not registered with pyplot; a notebook shows it), one Axes per
        panel, titled.

    >>> fig = draw_head_split(length=3, embed_dim=8, num_heads=2)
    >>> [ax.get_title().split(":")[0] for ax in fig.axes]
    ['x', 'reshape -> (B, L, H, D)', 'split_heads', 'merge_heads', 'wrong']
    """
    panels = head_split_panels(length, embed_dim, num_heads)
    if not show_wrong:
        panels = {title: cells for title, cells in panels.items() if not title.startswith("wrong")}
    head_dim = embed_dim // num_heads
    # (width, height) of each panel, in cells: flat panels side by side, stacked ones head above head
    sizes = [_panel_size(cells.shape, title) for title, cells in panels.items()]
    margins = [LABEL_SPACE if cells.ndim == 3 and not title.startswith("reshape") else 0.0
               for title, cells in panels.items()]
    total_width = sum(w for w, _ in sizes) + sum(margins) + ARROW_SPACE * (len(sizes) - 1) + 1.0
    total_height = max(h for _, h in sizes) + TITLE_SPACE + 0.5
    fig = DiagramFigure(figsize=(total_width * cell_size, total_height * cell_size))
    left = 0.5
    boxes = []
    for (title, cells), (width, height), margin in zip(panels.items(), sizes, margins):
        arrow_end = left
        left += margin
        bottom = total_height - TITLE_SPACE - height  # panels hang from the same top line
        ax = fig.add_axes((left / total_width, bottom / total_height, width / total_width, height / total_height))
        _draw_panel(ax, cells, embed_dim, head_dim, title)
        boxes.append((arrow_end, left + width))
        left += width + ARROW_SPACE
    arrow_y = (total_height - TITLE_SPACE - length / 2) / total_height  # level with the first L rows
    for (_, end), (start, _), title in zip(boxes, boxes[1:], list(panels)[1:]):
        if title.startswith("wrong"):  # another road from x, not a step after merge_heads: a fence, no arrow
            middle = (end + start) / 2 / total_width
            fig.add_artist(Line2D([middle, middle], [0.05, 0.95], transform=fig.transFigure, color="0.6",
                                  linestyle="--", linewidth=1))
            continue
        fig.add_artist(FancyArrowPatch(((end + 0.4) / total_width, arrow_y), ((start - 0.4) / total_width, arrow_y),
                                       transform=fig.transFigure, arrowstyle="-|>", mutation_scale=12, color="0.3"))
    return fig


def _panel_size(shape: tuple[int, ...], title: str) -> tuple[float, float]:
    if len(shape) == 2:  # (L, E)
        return float(shape[1]), float(shape[0])
    if title.startswith("reshape"):  # (L, H, D): the heads' groups side by side
        return shape[1] * shape[2] + GAP * (shape[1] - 1), float(shape[0])
    return float(shape[2]), shape[0] * shape[1] + GAP * (shape[0] - 1)  # (H, L, D): head blocks stacked


def _draw_panel(ax: Axes, cells: np.ndarray, embed_dim: int, head_dim: int, title: str) -> None:
    """Cells as coloured squares with their input index; data coordinates are cells, y down."""
    if cells.ndim == 2:  # (L, E)
        positions = [(e, l, cells[l, e]) for l in range(cells.shape[0]) for e in range(cells.shape[1])]
    elif title.startswith("reshape"):  # (L, H, D): each position's groups side by side
        positions = [(h * (head_dim + GAP) + d, l, cells[l, h, d]) for l in range(cells.shape[0])
                     for h in range(cells.shape[1]) for d in range(cells.shape[2])]
    else:  # (H, L, D): one block per head, stacked
        positions = [(d, h * (cells.shape[1] + GAP) + l, cells[h, l, d]) for h in range(cells.shape[0])
                     for l in range(cells.shape[1]) for d in range(cells.shape[2])]
        for h in range(cells.shape[0]):
            ax.text(-0.3, h * (cells.shape[1] + GAP) + cells.shape[1] / 2, f"head {h}", ha="right", va="center",
                    fontsize=8)
    for column, row, index in positions:
        head = (int(index) % embed_dim) // head_dim  # the head that owns this feature: e // D
        ax.add_patch(Rectangle((column, row), 1, 1, facecolor=HEAD_COLOURS[head % len(HEAD_COLOURS)], alpha=0.45,
                               edgecolor="white", linewidth=1.5))
        ax.text(column + 0.5, row + 0.5, str(int(index)), ha="center", va="center", fontsize=7)
    width = max(c for c, _, _ in positions) + 1
    height = max(r for _, r, _ in positions) + 1
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_axis_off()
    lines = title.replace(": ", ":\n", 1).replace("D), no", "D),\nno") if title.startswith(("split", "merge", "wrong")) \
        else title
    ax.set_title(lines, fontsize=9, color="#c0392b" if title.startswith("wrong") else "black")
