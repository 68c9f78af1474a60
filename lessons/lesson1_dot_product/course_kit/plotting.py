"""Heatmaps of attention weights: one map, or a grid of maps (heads, layers).

This file is copied verbatim into the students' release, so it imports only
the standard library, numpy, torch and matplotlib (nothing from course_lib).
It never calls ``plt.show()`` and builds figures without pyplot, so it works
under the non-interactive "Agg" backend and does not pile up open figures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = ["plot_attention"]


def plot_attention(
    weights: torch.Tensor | np.ndarray,
    *,
    query_labels: Sequence[str] | None = None,
    key_labels: Sequence[str] | None = None,
    titles: str | Sequence[str] | Sequence[Sequence[str]] | None = None,
    ax: Axes | None = None,
    cmap: str = "viridis",
    colorbar: bool = True,
    vmin: float | None = None,
    vmax: float | None = None,
    ncols: int | None = None,
    xlabel: str = "keys",
    ylabel: str = "queries",
    panel_size: float = 2.5,
) -> Figure:
    r"""Draw attention weights as labelled heatmaps: row i = query i, column j = key j.

    Cell (i, j) shows weight[i, j], how much query i attends to key j, so
    each row of a softmax attention map sums to 1 (0 for a fully masked row).
    Every map in a grid shares one colour scale and one colorbar, so maps
    can be compared by eye.

    Shapes:
        weights: a torch tensor (detached and moved to the CPU for you) or a
        numpy array, of shape
          (Lq, Lk)        one map;
          (N, Lq, Lk)     N maps (e.g. heads) in a grid of ``ncols`` columns
                          (default min(N, 4)), filled row by row;
          (R, C, Lq, Lk)  an R x C grid (e.g. layers x heads).
        query_labels: Lq tick labels for the rows (e.g. tokens), or None.
        key_labels: Lk tick labels for the columns, or None.
        titles: one string per map, flat in row-major order (N strings), or
        nested as R lists of C; a single string for a single map.
        ax: an existing Axes to draw into; only for a single (Lq, Lk) map.
        vmin, vmax: colour scale; default min(0, smallest weight) and the
        largest weight over all maps.
        panel_size: size of each map in inches, when the figure is made here.

    Axis labels are ``ylabel`` ("queries") on the left column and ``xlabel``
    ("keys") on the bottom row; inner maps of a grid hide their tick labels.

    Returns the matplotlib Figure. It is not registered with pyplot: in
    Jupyter it is shown when it is the last value of a cell (or with
    ``display(fig)``); in a script, use ``fig.savefig("attention.png")``.

    >>> fig = plot_attention(torch.eye(3), query_labels=["a", "b", "c"], key_labels=["a", "b", "c"])
    >>> len(fig.axes)  # the map and its colorbar
    2
    """
    maps = _to_numpy(weights)
    shape = maps.shape
    if maps.ndim not in (2, 3, 4):
        raise ValueError(
            f"weights must be (Lq, Lk), (N, Lq, Lk) or (R, C, Lq, Lk), got shape "
            f"{shape}. For one head of a (B, H, Lq, Lk) batch, pass weights[b, h]."
        )
    if maps.size == 0:
        raise ValueError(f"there is nothing to plot: weights has shape {shape}.")
    n_q, n_k = shape[-2:]
    maps = maps.reshape(-1, n_q, n_k)  # (N, Lq, Lk), row-major over the grid
    n_maps = len(maps)
    if len(shape) == 4:
        n_rows, n_cols = shape[:2]
    else:
        n_cols = min(n_maps, 4) if ncols is None else ncols
        if n_cols < 1:
            raise ValueError(f"ncols must be >= 1, got {ncols}.")
        n_rows = math.ceil(n_maps / n_cols)
    _check_labels(query_labels, n_q, "query_labels", "Lq", shape)
    _check_labels(key_labels, n_k, "key_labels", "Lk", shape)
    titles = _flat_titles(titles, n_maps)

    if ax is not None:
        if n_maps != 1:
            raise ValueError(
                f"ax draws a single map, but weights holds {n_maps} maps (shape "
                f"{shape}). Leave ax=None to get a grid, or pass weights[i]."
            )
        fig, axes = ax.figure, [ax]
    else:
        extra_width = 0.8 if colorbar else 0.0
        fig = Figure(
            figsize=(panel_size * n_cols + extra_width, panel_size * n_rows), layout="constrained"
        )
        grid = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
        for unused in grid[n_maps:]:  # a partly filled last row of an (N, Lq, Lk) grid
            unused.remove()
        axes = list(grid[:n_maps])

    vmin = min(0.0, float(np.nanmin(maps))) if vmin is None else vmin
    vmax = float(np.nanmax(maps)) if vmax is None else vmax
    for index, (axis, single_map) in enumerate(zip(axes, maps, strict=True)):
        image = axis.imshow(single_map, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
        _label_ticks(axis, query_labels, key_labels)
        # Label only the outer maps: left column, and maps with nothing below them.
        on_left = index % n_cols == 0
        on_bottom = index + n_cols >= n_maps
        axis.tick_params(labelleft=on_left, labelbottom=on_bottom)
        axis.set_ylabel(ylabel if on_left else "")
        axis.set_xlabel(xlabel if on_bottom else "")
        if titles is not None:
            axis.set_title(titles[index])
    if colorbar:
        fig.colorbar(image, ax=axes, shrink=0.9)
    return fig


def _to_numpy(weights: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(weights, torch.Tensor):
        # .float(): numpy has no bfloat16; float32 is plenty for a picture.
        return weights.detach().cpu().float().numpy()
    return np.asarray(weights, dtype=float)


def _check_labels(
    labels: Sequence[str] | None, n: int, name: str, symbol: str, shape: tuple[int, ...]
) -> None:
    if labels is not None and len(labels) != n:
        raise ValueError(
            f"{name} has {len(labels)} labels, but the maps have {symbol} = {n} "
            f"(weights of shape {shape}). Give one label per "
            f"{'query (row)' if symbol == 'Lq' else 'key (column)'}."
        )


def _flat_titles(
    titles: str | Sequence[str] | Sequence[Sequence[str]] | None, n_maps: int
) -> list[str] | None:
    if titles is None:
        return None
    if isinstance(titles, str):
        titles = [titles]
    flat = [str(title) for title in np.asarray(titles, dtype=object).reshape(-1)]
    if len(flat) != n_maps:
        raise ValueError(f"got {len(flat)} titles for {n_maps} maps; give one title per map.")
    return flat


def _label_ticks(
    axis: Axes, query_labels: Sequence[str] | None, key_labels: Sequence[str] | None
) -> None:
    if key_labels is None:
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        axis.set_xticks(range(len(key_labels)), labels=[str(t) for t in key_labels], rotation=90)
    if query_labels is None:
        axis.yaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        axis.set_yticks(range(len(query_labels)), labels=[str(t) for t in query_labels])
