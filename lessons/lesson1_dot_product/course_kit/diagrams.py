"""Diagrams of the models the lessons build, drawn with matplotlib.

This file is copied verbatim into the students' release, so it imports only the standard
library, numpy and matplotlib (nothing from course_lib). Like ``plotting``, it builds figures
without pyplot and never calls ``plt.show()``: a figure returned as a cell's last value is shown
by Jupyter, and none is left open.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch

__all__ = ["draw_encoder_decoder_with_attention"]

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
        fig = Figure(figsize=(11, 5.2), layout="constrained")
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
