"""plot_attention: axes, labels and inputs; and that plotting.py stays self-contained."""

import ast
import sys
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

import course_kit.plotting
from course_kit.plotting import plot_attention

matplotlib.use("Agg")  # no display needed, as in CI

TOKENS = ["the", "cat", "sat", "down"]


def uniform_maps(*shape):
    return torch.full(shape, 1.0 / shape[-1])


def tick_texts(labels):
    return [label.get_text() for label in labels]


def test_single_map_has_its_tokens_as_tick_labels_and_axes_named_keys_and_queries():
    fig = plot_attention(
        uniform_maps(3, 4), query_labels=TOKENS[:3], key_labels=TOKENS, titles="layer 0"
    )
    assert isinstance(fig, Figure)
    heatmap, colorbar = fig.axes
    assert tick_texts(heatmap.get_xticklabels()) == TOKENS
    assert tick_texts(heatmap.get_yticklabels()) == TOKENS[:3]
    assert heatmap.get_xlabel() == "keys" and heatmap.get_ylabel() == "queries"
    assert heatmap.get_title() == "layer 0"
    # Row i of the image is query i, column j is key j.
    assert heatmap.images[0].get_array().shape == (3, 4)


def test_colorbar_false_gives_a_single_axes():
    assert len(plot_attention(uniform_maps(3, 4), colorbar=False).axes) == 1


def test_n_maps_are_laid_out_four_per_row_with_one_shared_colorbar():
    fig = plot_attention(uniform_maps(6, 3, 4), titles=[f"head {h}" for h in range(6)])
    *heatmaps, colorbar = fig.axes
    assert len(heatmaps) == 6  # the two unused cells of the 2 x 4 grid are removed
    assert [ax.get_title() for ax in heatmaps] == [f"head {h}" for h in range(6)]
    assert [ax.get_subplotspec().rowspan.start for ax in heatmaps] == [0, 0, 0, 0, 1, 1]


def test_grid_labels_only_its_outer_maps():
    fig = plot_attention(uniform_maps(6, 3, 4), query_labels=TOKENS[:3], key_labels=TOKENS)
    heatmaps = fig.axes[:6]
    # Left column (maps 0 and 4) names the queries; maps with nothing below (2..5) name the keys.
    assert [ax.get_ylabel() for ax in heatmaps] == ["queries", "", "", "", "queries", ""]
    assert [ax.get_xlabel() for ax in heatmaps] == ["", "", "keys", "keys", "keys", "keys"]
    # Inner maps hide their tick labels.
    assert [tick_texts(ax.get_xticklabels()) for ax in heatmaps] == [[], []] + [TOKENS] * 4
    assert [tick_texts(ax.get_yticklabels()) for ax in heatmaps] == (
        [TOKENS[:3], [], [], [], TOKENS[:3], []]
    )


def test_ncols_sets_the_number_of_columns():
    fig = plot_attention(uniform_maps(6, 3, 4), ncols=3, colorbar=False)
    assert [ax.get_subplotspec().colspan.start for ax in fig.axes] == [0, 1, 2, 0, 1, 2]


def test_rows_by_columns_grid_takes_nested_titles():
    titles = [[f"layer {layer}, head {head}" for head in range(3)] for layer in range(2)]
    fig = plot_attention(uniform_maps(2, 3, 4, 4), titles=titles)
    *heatmaps, colorbar = fig.axes
    assert len(heatmaps) == 6
    assert heatmaps[4].get_title() == "layer 1, head 1"
    assert heatmaps[4].get_subplotspec().rowspan.start == 1


def test_maps_in_a_grid_share_one_colour_scale():
    maps = torch.stack([torch.eye(3), 0.5 * torch.eye(3)])
    fig = plot_attention(maps)
    assert {ax.images[0].get_clim() for ax in fig.axes[:2]} == {(0.0, 1.0)}


@pytest.mark.parametrize(
    "weights, shape",
    [
        (torch.rand(3, 4, requires_grad=True), (3, 4)),  # needs detaching
        (torch.rand(3, 4, dtype=torch.bfloat16), (3, 4)),  # numpy has no bfloat16
        (torch.rand(5, 4)[::2].T, (4, 3)),  # non-contiguous
        (np.full((3, 4), 0.25), (3, 4)),
        ([[0.5, 0.5], [1.0, 0.0]], (2, 2)),
    ],
    ids=["tensor requiring grad", "bfloat16", "strided view", "numpy", "nested list"],
)
def test_accepts_tensors_arrays_and_lists(weights, shape):
    fig = plot_attention(weights)
    assert fig.axes[0].images[0].get_array().shape == shape


def test_draws_into_a_given_axes_and_returns_its_figure():
    fig, ax = plt.subplots()
    try:
        assert plot_attention(uniform_maps(3, 4), ax=ax) is fig
        assert len(ax.images) == 1
    finally:
        plt.close(fig)


def test_does_not_leave_figures_open_in_pyplot():
    before = plt.get_fignums()
    plot_attention(uniform_maps(4, 3, 3))
    assert plt.get_fignums() == before


@pytest.mark.parametrize(
    "weights, kwargs, message",
    [
        (
            uniform_maps(2, 2, 2, 3, 4),
            {},
            r"\(Lq, Lk\), \(N, Lq, Lk\) or \(R, C, Lq, Lk\).*weights\[b, h\]",
        ),
        (uniform_maps(3, 4), {"key_labels": TOKENS[:3]}, r"key_labels has 3 labels.*Lk = 4"),
        (uniform_maps(3, 4), {"query_labels": TOKENS}, r"query_labels has 4 labels.*Lq = 3"),
        (uniform_maps(2, 3, 4), {"titles": ["only one"]}, r"1 titles for 2 maps"),
        (uniform_maps(2, 3, 4), {"ax": "an axes"}, r"ax draws a single map.*2 maps"),
        (uniform_maps(6, 3, 4), {"ncols": 0}, r"ncols must be >= 1, got 0"),
        (uniform_maps(0, 3, 4), {}, r"nothing to plot.*\(0, 3, 4\)"),
    ],
)
def test_bad_input_raises_a_clear_message(weights, kwargs, message):
    with pytest.raises(ValueError, match=message):
        plot_attention(weights, **kwargs)


def test_plotting_module_imports_only_stdlib_numpy_torch_and_matplotlib():
    # plotting.py is copied verbatim into the students' release, where course_lib is absent.
    tree = ast.parse(Path(course_kit.plotting.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports: the file must stand alone"
            imported.add(node.module.split(".")[0])
    allowed = set(sys.stdlib_module_names) | {"numpy", "torch", "matplotlib"}
    assert imported <= allowed, f"plotting.py must not import {sorted(imported - allowed)}"
