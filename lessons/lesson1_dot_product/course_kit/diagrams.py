"""Diagrams of the course's ideas, drawn, not described: one function a picture, called in one line.

- ``draw_encoder_decoder_with_attention`` (Lesson 2): one decoder step of Bahdanau et al.'s
  encoder-decoder, from the source characters to the character it writes;
- ``draw_head_split`` (Lesson 3): how multi-head attention cuts a sequence's features into heads,
  (B, L, E) -> (B, L, H, D) -> (B, H, L, D), and merges them back, entry by entry: every cell carries
  its index in the input and the colour of the head that owns its feature;
- ``plot_flash_tiles`` (Lesson 4): the tiles a FlashAttention program visits, the causal skip
  included, and ``plot_online_softmax_state``: the online softmax's ``m``, ``l`` and accumulator as
  the keys stream in, block by block.

This file is copied verbatim into the students' release, so it imports only numpy and matplotlib.
Like ``plotting.py`` it builds figures without pyplot (no ``plt.show()``, no figures piling up),
so it works under the non-interactive "Agg" backend; a notebook shows the returned figure.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch, Patch, Rectangle

__all__ = ["draw_encoder_decoder_with_attention", "draw_head_split", "head_split_panels", "plot_flash_tiles",
           "plot_online_softmax_state", "DiagramFigure"]

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
    lines = (title.replace(": ", ":\n", 1).replace("D), no", "D),\nno")
             if title.startswith(("split", "merge", "wrong")) else title)
    ax.set_title(lines, fontsize=9, color="#c0392b" if title.startswith("wrong") else "black")


# --- Lesson 2: the encoder-decoder with attention ------------------------------------------------

_ENCODER_COLOR = "#dbe9f6"  # the encoder's annotations
_DECODER_COLOR = "#fde3c8"  # the decoder's states and layers
_WEIGHT_COLOR = "#d62728"  # the attention weights and the context


def draw_encoder_decoder_with_attention(source: str = "5.11.68", weights: Sequence[float] | None = None, *,
                                        previous: str = "9", written: str = "6",
                                        ax: Axes | None = None) -> Figure:
    r"""Draw one decoder step of Bahdanau et al.'s encoder-decoder with attention (Lesson 2).

    From the bottom up: the source characters x_j; the encoder's annotations h_j (a bidirectional
    GRU), which are attention's keys and its values; the weights alpha_tj = softmax_j a(s_{t-1}, h_j),
    one bar per source character, with the previous decoder state s_{t-1} as the query; the
    context c_t = sum_j alpha_tj h_j; the GRU that reads the previous character y_{t-1} and c_t and
    turns s_{t-1} into s_t; and the output layer on [s_t; c_t], which writes y_t. After figure 1 of
    D. Bahdanau, K. Cho, Y. Bengio, ICLR 2015, with the query and the lesson's output layer drawn.

    Args:
        source: the source string, one annotation per character.
        weights: the attention weights over the source characters (one per character, summing to 1);
            by default, most of the weight on the second-to-last character.
        previous: the character written at step t - 1, y_{t-1}.
        written: the character written at step t, y_t.
        ax: draw into these axes; by default a new figure.

    Returns:
        The figure (not registered with pyplot).

    >>> fig = draw_encoder_decoder_with_attention("3.3.21", [0.05, 0.05, 0.1, 0.05, 0.7, 0.05])
    >>> len(fig.axes)
    1
    """
    n = len(source)
    if n == 0:
        raise ValueError("draw_encoder_decoder_with_attention needs a source of at least one character")
    if weights is None:  # most of the weight on the second-to-last character, a little on its neighbours
        weights = np.full(n, 0.05 / n)
        weights[max(n - 2, 0)] += 0.75
        weights[max(n - 3, 0)] += 0.1
        weights[n - 1] += 0.1
    weights = np.asarray(weights, dtype=float)
    if weights.shape != (n,) or np.any(weights < 0) or not np.isclose(weights.sum(), 1.0):
        raise ValueError(f"weights must be {n} non-negative numbers summing to 1, one per character of "
                         f"{source!r}; got {weights.tolist()}")

    if ax is None:
        fig = DiagramFigure(figsize=(11, 5.2), layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    pitch = 0.95
    xs = 0.8 + pitch * np.arange(n)  # the columns of the source characters
    right = max(xs[-1] + 1.0, 7.0)  # where the decoder starts
    ax.set(xlim=(-2.9, right + 7.2), ylim=(-0.2, 7.9), aspect="equal")
    ax.axis("off")

    # the encoder: source characters, then annotations, linked both ways (a bidirectional GRU)
    ax.text(-2.8, 0.35, "source $x_j$", va="center", fontsize=10)
    ax.text(-2.8, 1.45, "annotations $\\mathbf{h}_j$\n(keys = values)", va="center", fontsize=10)
    for j, (x, char) in enumerate(zip(xs, source)):
        ax.text(x, 0.35, repr(char)[1:-1] if char != " " else "␣", ha="center", va="center", family="monospace",
                fontsize=13)
        _box(ax, (x, 1.45), f"$\\mathbf{{h}}_{{{j + 1}}}$", width=0.7, color=_ENCODER_COLOR)
        _arrow(ax, (x, 0.6), (x, 1.15))
    for x0, x1 in zip(xs, xs[1:]):
        _arrow(ax, (x0 + 0.35, 1.55), (x1 - 0.35, 1.55), lw=0.8, mutation_scale=8)
        _arrow(ax, (x1 - 0.35, 1.35), (x0 + 0.35, 1.35), lw=0.8, mutation_scale=8)
    ax.text(-2.8, 0.9, "encoder: bidirectional GRU", va="center", fontsize=8, color="0.35")

    # the weights: one bar per annotation, its height alpha_tj
    base, tallest = 2.05, 0.9
    heights = tallest * weights / weights.max()
    for x, height in zip(xs, heights):
        ax.add_patch(FancyBboxPatch((x - 0.22, base), 0.44, max(height, 0.02), boxstyle="square,pad=0",
                                    facecolor=_WEIGHT_COLOR, edgecolor="none", alpha=0.85))
    ax.plot([xs[0] - 0.4, xs[-1] + 0.4], [base, base], color="0.4", lw=0.8)
    ax.text(-2.8, base + 0.45, "weights $\\alpha_{tj}$", va="center", fontsize=10, color=_WEIGHT_COLOR)

    # the decoder: s_{t-1} -> GRU -> s_t, with y_{t-1} and the context in, and the output layer
    row = 4.3
    x_prev, x_gru, x_new = right + 1.0, right + 3.2, right + 5.4
    _box(ax, (x_prev, row), "$\\mathbf{s}_{t-1}$", width=1.0, color=_DECODER_COLOR)
    _box(ax, (x_gru, row), "GRU", width=1.1, color=_DECODER_COLOR)
    _box(ax, (x_new, row), "$\\mathbf{s}_t$", width=1.0, color=_DECODER_COLOR)
    _arrow(ax, (x_prev + 0.5, row), (x_gru - 0.55, row))
    _arrow(ax, (x_gru + 0.55, row), (x_new - 0.5, row))
    ax.text(x_gru, 2.75, f"$y_{{t-1}}$ = '{previous}'", ha="center", va="center", fontsize=11)
    _arrow(ax, (x_gru, 3.0), (x_gru, row - 0.3))
    ax.text(x_gru + 0.1, 3.45, "embedded", ha="left", va="center", fontsize=8, color="0.35")
    ax.text(x_new, row - 0.45, "decoder: GRU cell", ha="center", va="top", fontsize=8, color="0.35")

    # the query: s_{t-1} scores every annotation, a(s_{t-1}, h_j), and the softmax gives the weights
    _arrow(ax, (x_prev - 0.1, row - 0.3), (xs[-1] + 0.45, base + 0.55), color=_WEIGHT_COLOR, linestyle="--")
    ax.text(xs[-1] + 0.7, 1.75,
            "query $\\mathbf{s}_{t-1}$ scores every $\\mathbf{h}_j$:\n"
            "$\\alpha_{tj} = \\mathrm{softmax}_j\\, a(\\mathbf{s}_{t-1}, \\mathbf{h}_j)$",
            ha="left", va="center", fontsize=10, color=_WEIGHT_COLOR)

    # the context: the annotations averaged with the weights, into the GRU and the output layer
    context = np.array([xs.mean(), 6.1])
    ax.add_patch(Circle(context, 0.32, facecolor="white", edgecolor=_WEIGHT_COLOR, lw=1.5, zorder=3))
    ax.text(*context, "$\\Sigma$", ha="center", va="center", fontsize=13, color=_WEIGHT_COLOR, zorder=4)
    ax.text(context[0] - 0.45, context[1] + 0.25, "context $\\mathbf{c}_t = \\sum_j \\alpha_{tj}\\,\\mathbf{h}_j$",
            ha="right", va="bottom", fontsize=10, color=_WEIGHT_COLOR)
    for x, weight, height in zip(xs, weights, heights):
        ax.plot([x, context[0]], [base + height, context[1] - 0.32], color=_WEIGHT_COLOR, lw=0.4 + 5 * weight,
                alpha=0.25 + 0.75 * weight / weights.max(), zorder=1, solid_capstyle="butt")
    _arrow(ax, (context[0] + 0.32, context[1] - 0.08), (x_gru - 0.3, row + 0.3), color=_WEIGHT_COLOR)
    output = np.array([x_new, 6.1])
    _box(ax, output, "output layer\n$W_{\\mathrm{out}}[\\mathbf{s}_t; \\mathbf{c}_t] + \\mathbf{b}_{\\mathrm{out}}$",
         width=2.4, height=0.9, color=_DECODER_COLOR)
    _arrow(ax, (context[0] + 0.32, context[1] + 0.05), (output[0] - 1.2, output[1] + 0.05), color=_WEIGHT_COLOR)
    _arrow(ax, (x_new, row + 0.3), (x_new, output[1] - 0.45))
    ax.text(x_new, 7.35, f"writes $y_t$ = '{written}'", ha="center", va="center", fontsize=11)
    _arrow(ax, (x_new, output[1] + 0.45), (x_new, 7.15))
    return fig


def _box(ax: Axes, center: tuple[float, float], text: str, *, width: float, color: str,
         height: float = 0.6) -> None:
    x, y = center
    ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height,
                                boxstyle="round,pad=0,rounding_size=0.12", facecolor=color, edgecolor="0.3", lw=1,
                                zorder=2))
    ax.text(x, y, text, ha="center", va="center", fontsize=11, zorder=3)


def _arrow(ax: Axes, start: tuple[float, float], end: tuple[float, float], *, color: str = "0.25",
           lw: float = 1.2, mutation_scale: float = 12, linestyle: str = "-") -> None:
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", color=color, lw=lw, linestyle=linestyle,
                                 mutation_scale=mutation_scale, shrinkA=0, shrinkB=0, zorder=2))


# --- Lesson 4: the tiles of FlashAttention ----------------------------------------------------------

TILE_STYLES = {  # kind of tile -> (face colour, hatch, what the key says)
    "full": ("#4c72b0", "", "computed: every pair visible"),
    "diagonal": ("#a6c8ec", "//", "computed, masked above\nthe diagonal"),
    "skipped": ("#f2f2f2", "", "skipped: every pair\nabove the diagonal"),
}


def plot_flash_tiles(n_q: int, n_k: int, block_q: int, block_k: int, *, is_causal: bool = True,
                     panel_size: float = 4.5) -> Figure:
    """The tiles of the (queries x keys) score matrix that FlashAttention's programs visit.

    One program per tile of ``block_q`` queries (a row of tiles) walks over the tiles of
    ``block_k`` keys from left to right; the number in a tile is the step at which its program
    computes it. With ``is_causal`` (key c visible to query r iff c <= r) a tile is skipped when
    its first key comes after its last query, computed and masked when it crosses the diagonal,
    and computed in full below it. The key (legend) says which is which.

    >>> fig = plot_flash_tiles(16, 16, 4, 4)
    >>> fig.axes[0].get_title()
    'causal, 16 queries x 16 keys in 4 x 4 tiles: 10 of 16 computed'
    """
    for name, value in (("n_q", n_q), ("n_k", n_k), ("block_q", block_q), ("block_k", block_k)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    fig = DiagramFigure(figsize=(panel_size + 4.2, panel_size * max(0.6, min(1.4, n_q / n_k)) + 0.8),
                 layout="constrained")
    ax = fig.subplots()
    computed = 0
    n_tiles = 0
    centres, programs = [], []
    for i, q_start in enumerate(range(0, n_q, block_q)):
        q_stop = min(q_start + block_q, n_q)
        step = 0
        for _j, k_start in enumerate(range(0, n_k, block_k)):
            k_stop = min(k_start + block_k, n_k)
            n_tiles += 1
            if not is_causal or k_stop - 1 <= q_start:
                kind = "full"  # even the tile's last key is visible to its first query
            elif k_start <= q_stop - 1:
                kind = "diagonal"  # its first key is visible to its last query: some pairs are
            else:
                kind = "skipped"
            colour, hatch, _ = TILE_STYLES[kind]
            ax.add_patch(Rectangle((k_start, q_start), k_stop - k_start, q_stop - q_start, facecolor=colour,
                                   hatch=hatch, edgecolor="white" if kind != "skipped" else "#bbbbbb",
                                   linewidth=1.5))
            if kind != "skipped":
                step += 1
                computed += 1
                ax.text((k_start + k_stop) / 2, (q_start + q_stop) / 2, str(step), ha="center", va="center",
                        fontsize=9, fontweight="bold",
                        bbox=dict(boxstyle="circle,pad=0.2", facecolor="white", edgecolor="none"))
        centres.append((q_start + q_stop) / 2)
        programs.append(f"program {i}: {step} tile{'s' * (step != 1)}")
    if is_causal:  # the boundary between visible (c <= r) and masked pairs: a staircase along the diagonal
        rows = np.arange(min(n_q, n_k))  # row r sees keys 0..r: its boundary is at x = r + 1, from y = r to r + 1
        ax.plot(np.repeat(rows + 1, 2), np.stack([rows, rows + 1], axis=1).ravel(), color="#c44e52", linewidth=1.5)
    ax.set_xlim(0, n_k)
    ax.set_ylim(n_q, 0)  # query 0 at the top, as in a matrix
    ax.set_xticks(range(0, n_k + 1, block_k))
    ax.set_yticks(centres, labels=programs, fontsize=8)
    ax.tick_params(axis="y", length=0)
    ax.set_xlabel(f"keys, in tiles of block_k = {block_k}\n(a program walks its row left to right)", fontsize=9)
    ax.set_ylabel(f"queries, in tiles of block_q = {block_q}", fontsize=9)
    ax.set_title(f"{'causal' if is_causal else 'no mask'}, {n_q} queries x {n_k} keys in {block_q} x {block_k} "
                 f"tiles: {computed} of {n_tiles} computed", fontsize=10)
    key = [Patch(facecolor=colour, hatch=hatch, edgecolor="#999999", label=label)
           for kind, (colour, hatch, label) in TILE_STYLES.items() if is_causal or kind == "full"]
    key.append(Line2D([], [], linestyle="none", marker="$n$", markersize=8, color="black",
                      label="n: the step at which its\nprogram computes it"))
    if is_causal:
        key.append(Line2D([], [], color="#c44e52", linewidth=1.5,
                          label="causal boundary: the keys\nleft of it are visible"))
    fig.legend(handles=key, loc="outside right upper", fontsize=8, title="key", title_fontsize=9, frameon=False)
    return fig


# --- Lesson 4: the online softmax's state, block by block ------------------------------------------

def plot_online_softmax_state(scores, values, block_size: int, *, panel_size: float = 2.2) -> Figure:
    r"""The online softmax of one query's row as its keys stream in, ``block_size`` at a time.

    Three panels share the axis of keys seen so far. Top: the scores ``s_j`` and the running max
    ``m`` after each block. Middle: the running sum ``l = sum exp(s_j - m)`` and the accumulator
    ``acc = sum exp(s_j - m) v_j`` after each block, with the factor ``alpha = exp(m_old - m_new)``
    that shrinks both wherever a block raises the max. Bottom: ``acc / l``, the output if the row
    stopped there, which reaches ``softmax(s) . v`` after the last block. Values may have several
    features; the accumulator and output are drawn for the first.

    Shapes:
        scores: (N,), one query's scores against N keys; values: (N,) or (N, Dv).

    >>> fig = plot_online_softmax_state(np.array([1.0, 3.0, 2.0, 5.0]), np.array([1.0, 2.0, 3.0, 4.0]), 2)
    >>> [ax.get_ylabel() for ax in fig.axes]
    ['score', 'state', 'acc / ℓ']
    """
    s = np.asarray(scores, dtype=float)
    v = np.asarray(values, dtype=float)
    v = v[:, 0] if v.ndim == 2 else v
    if s.ndim != 1 or v.shape != s.shape:
        raise ValueError(f"scores must be (N,) and values (N,) or (N, Dv) with the same N; got scores "
                         f"{np.shape(scores)} and values {np.shape(values)}")
    if int(block_size) != block_size or block_size < 1:
        raise ValueError(f"block_size must be a whole number >= 1, got {block_size!r}")
    ends, ms, ls, accs, alphas = [], [], [], [], []
    m, l, acc = -np.inf, 0.0, 0.0  # the empty state
    for start in range(0, len(s), block_size):
        block_s, block_v = s[start:start + block_size], v[start:start + block_size]
        m_new = max(m, block_s.max())
        alpha = np.exp(m - m_new)  # exp(-inf) = 0 for the first block: nothing to shrink
        p = np.exp(block_s - m_new)
        l, acc, m = alpha * l + p.sum(), alpha * acc + p @ block_v, m_new
        ends.append(start + len(block_s))
        ms.append(m)
        ls.append(l)
        accs.append(acc)
        alphas.append(alpha)
    weights = np.exp(s - s.max())
    exact = weights @ v / weights.sum()

    fig = DiagramFigure(figsize=(panel_size * 3.2, panel_size * 2.8), layout="constrained")
    ax_s, ax_state, ax_out = fig.subplots(3, 1, sharex=True)
    keys = np.arange(1, len(s) + 1)  # key j drawn at j (keys seen so far), as the states
    for start in range(0, len(s), 2 * block_size):  # every other block shaded
        for ax in (ax_s, ax_state, ax_out):
            ax.axvspan(start + 0.5, min(start + block_size, len(s)) + 0.5, color="#f0f0f0", zorder=0)
    ax_s.bar(keys, s, width=0.7, color="#8c8c8c", label="scores $s_j$")
    ax_s.step(np.r_[0.5, np.array(ends) + 0.5], np.r_[ms[0], ms], where="pre", color="#c44e52", linewidth=2,
              label="running max $m$")
    ax_s.set_ylabel("score")
    ax_s.legend(fontsize=8, loc="lower right")
    ax_s.set_title(f"{len(s)} keys of one query, streamed in blocks of {block_size}", fontsize=10)

    for end, alpha, l_now, acc_now, l_old, acc_old in zip(ends[1:], alphas[1:], ls[1:], accs[1:], ls, accs):
        if alpha < 1:  # this block raised the max: l and acc were shrunk by alpha before it was added
            for old, new, colour in ((l_old, l_now, "#4c72b0"), (acc_old, acc_now, "#dd8452")):
                ax_state.plot([end, end], [alpha * old, new], ":", color=colour, linewidth=1)
                ax_state.plot(end, alpha * old, "o", mfc="white", color=colour, markersize=5)
            ax_state.annotate(f"α = {alpha:.2g}", (end, alpha * l_old), textcoords="offset points",
                              xytext=(5, 3), ha="left", va="bottom", fontsize=7, color="#c44e52")
    ax_state.plot(ends, ls, "o-", color="#4c72b0", label="running sum $\\ell$")
    ax_state.plot(ends, accs, "s-", color="#dd8452", label="accumulator acc (first feature)")
    ax_state.plot([], [], "o", mfc="white", color="gray", markersize=5,
                  label="shrunk by α = exp(m_old - m_new)\nbefore the block is added")
    ax_state.axhline(0, color="black", linewidth=0.5)
    ax_state.set_ylabel("state")
    ax_state.legend(fontsize=7, loc="best")

    ax_out.plot(ends, np.array(accs) / np.array(ls), "o-", color="#55a868", label="acc / ℓ after each block")
    ax_out.axhline(exact, color="black", linestyle="--", linewidth=1, label="softmax(s) · v, all keys at once")
    ax_out.set_ylabel("acc / ℓ")
    ax_out.set_xlabel("keys seen so far")
    ax_out.legend(fontsize=8, loc="best")
    ax_out.set_xlim(0.5, len(s) + 0.5)
    return fig
