"""Diagrams the lessons draw in one line: what an algorithm does, step by step, as a picture.

This file is copied verbatim into the students' release; it imports only numpy and matplotlib
(nothing from course_lib). Like ``plotting``, every function builds its figure without pyplot and
returns it: in Jupyter it is shown when it is the last value of a cell; in a script, use
``fig.savefig(...)``.

Lesson 4: :func:`plot_flash_tiles` (the tiles a FlashAttention program visits, the causal skip
included) and :func:`plot_online_softmax_state` (the online softmax's ``m``, ``l`` and
accumulator as the keys stream in, block by block).
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

__all__ = ["plot_flash_tiles", "plot_online_softmax_state"]


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
    fig = Figure(figsize=(panel_size + 4.2, panel_size * max(0.6, min(1.4, n_q / n_k)) + 0.8),
                 layout="constrained")
    ax = fig.subplots()
    computed = 0
    n_tiles = 0
    centres, programs = [], []
    for i, q_start in enumerate(range(0, n_q, block_q)):
        q_stop = min(q_start + block_q, n_q)
        step = 0
        for j, k_start in enumerate(range(0, n_k, block_k)):
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
        key.append(Line2D([], [], color="#c44e52", linewidth=1.5, label="causal boundary: the keys\nleft of it are visible"))
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

    fig = Figure(figsize=(panel_size * 3.2, panel_size * 2.8), layout="constrained")
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
    ax_state.plot([], [], "o", mfc="white", color="gray", markersize=5, label="shrunk by α = exp(m_old - m_new)\nbefore the block is added")
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
