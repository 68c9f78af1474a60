"""The student kit's diagrams: each draws what it says (the head split what split_heads and merge_heads
compute, cell by cell; the encoder-decoder its step), leaves pyplot alone, and needs only numpy and matplotlib."""

import ast
import sys
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch

import course_kit.diagrams
from course_kit.diagrams import (
    _WEIGHT_COLOR,
    HEAD_COLOURS,
    draw_encoder_decoder_with_attention,
    draw_head_split,
    head_split_panels,
)
from course_lib import merge_heads, split_heads

matplotlib.use("Agg")



def cells_read_in_order(ax):
    """The numbers of a panel's cells, read top to bottom, then left to right (the labels "head h" aside)."""
    numbers = [(t.get_position()[1], t.get_position()[0], int(t.get_text()))
               for t in ax.texts if t.get_text().isdigit()]
    return [n for _, _, n in sorted(numbers)]


@pytest.mark.parametrize("length, embed_dim, num_heads", [(3, 8, 2), (2, 6, 3), (4, 4, 1), (1, 8, 4)])
def test_each_panel_holds_what_torch_and_course_lib_compute(length, embed_dim, num_heads):
    x = torch.arange(length * embed_dim).reshape(length, embed_dim)
    expected = {
        "x": x,
        "reshape": x.reshape(length, num_heads, -1),
        "split_heads": split_heads(x, num_heads),
        "merge_heads": merge_heads(split_heads(x, num_heads)),
        "wrong": x.reshape(num_heads, length, -1),
    }
    panels = head_split_panels(length, embed_dim, num_heads)
    fig = draw_head_split(length, embed_dim, num_heads)
    assert isinstance(fig, Figure) and len(fig.axes) == len(panels) == 5
    for (title, cells), ax in zip(panels.items(), fig.axes):
        name = title.split(":")[0].split(" ")[0]
        np.testing.assert_array_equal(cells, expected[name].numpy())
        # reading a drawn panel row by row gives the tensor's entries in memory order
        assert cells_read_in_order(ax) == expected[name].flatten().tolist(), title


def test_a_cell_has_the_colour_of_the_head_that_owns_its_feature():
    fig = draw_head_split(length=2, embed_dim=6, num_heads=3)  # D = 2: features 0-1, 2-3, 4-5
    x_panel = fig.axes[0]
    for patch, text in zip(x_panel.patches, [t for t in x_panel.texts if t.get_text().isdigit()]):
        feature = int(text.get_text()) % 6
        assert patch.get_facecolor()[:3] == pytest.approx(to_rgb(HEAD_COLOURS[feature // 2]))


def test_the_wrong_reshape_can_be_left_out():
    titles = [ax.get_title() for ax in draw_head_split(show_wrong=False).axes]
    assert len(titles) == 4 and not any(title.startswith("wrong") for title in titles)


def test_a_width_the_heads_do_not_divide_is_refused():
    with pytest.raises(ValueError, match="embed_dim = 10 must be a multiple of num_heads = 3"):
        draw_head_split(length=2, embed_dim=10, num_heads=3)


def test_diagrams_imports_only_numpy_matplotlib_and_the_standard_library():
    tree = ast.parse(Path(course_kit.diagrams.__file__).read_text())
    imported = {alias.name.split(".")[0]
                for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert {name for name in imported if name not in sys.stdlib_module_names} <= {"numpy", "matplotlib"}


def test_a_notebook_shows_the_diagram_as_a_png_and_nothing_is_encoded_under_agg():
    fig = draw_head_split()
    assert fig._repr_png_() is None  # Agg: tests and the grader's sandbox draw nothing
    backend = matplotlib.get_backend()
    matplotlib.use("svg")  # any other backend: Jupyter asks for a picture, before pyplot has drawn anything
    try:
        assert fig._repr_png_().startswith(b"\x89PNG")
    finally:
        matplotlib.use(backend)




def texts(fig):
    return [t.get_text() for t in fig.axes[0].texts]


def weight_bars(fig):
    """The bars of the attention weights, left to right: the patches filled with the weights' colour."""
    red = matplotlib.colors.to_rgb(_WEIGHT_COLOR)
    bars = [p for p in fig.axes[0].patches
            if isinstance(p, FancyBboxPatch) and np.allclose(p.get_facecolor()[:3], red)]
    return sorted(bars, key=lambda p: p.get_x())


def test_encoder_decoder_draws_one_annotation_and_one_weight_per_source_character():
    fig = draw_encoder_decoder_with_attention("3.3.21", [0.1, 0.1, 0.1, 0.1, 0.5, 0.1])
    shown = texts(fig)
    assert [c for c in shown if len(c) == 1] == list("3.3.21")  # the source, in order
    assert [t for t in shown if t.startswith("$\\mathbf{h}_{")] == [f"$\\mathbf{{h}}_{{{j}}}$" for j in range(1, 7)]
    heights = np.array([bar.get_height() for bar in weight_bars(fig)])
    assert len(heights) == 6 and heights.argmax() == 4
    np.testing.assert_allclose(heights / heights.max(), np.array([0.1, 0.1, 0.1, 0.1, 0.5, 0.1]) / 0.5)


def test_encoder_decoder_names_the_query_the_context_and_the_decoder_step():
    shown = "\n".join(texts(draw_encoder_decoder_with_attention(previous="9", written="6")))
    for label in ["(keys = values)", "query $\\mathbf{s}_{t-1}$", "\\mathrm{softmax}_j", "GRU", "$\\mathbf{s}_t$",
                  "context $\\mathbf{c}_t = \\sum_j \\alpha_{tj}\\,\\mathbf{h}_j$", "$y_{t-1}$ = '9'",
                  "writes $y_t$ = '6'", "[\\mathbf{s}_t; \\mathbf{c}_t]"]:
        assert label in shown, f"the diagram lost its label {label!r}"


def test_encoder_decoder_returns_a_figure_outside_pyplot_that_renders():
    open_before = plt.get_fignums()
    fig = draw_encoder_decoder_with_attention()
    assert isinstance(fig, Figure) and plt.get_fignums() == open_before
    FigureCanvasAgg(fig).draw()  # every mathtext label parses
    assert len(fig.axes) == 1 and not fig.axes[0].axison


def test_encoder_decoder_draws_into_given_axes():
    fig = Figure()
    ax = fig.add_subplot()
    assert draw_encoder_decoder_with_attention("12/31/99", ax=ax) is fig
    assert len(weight_bars(fig)) == len("12/31/99")


@pytest.mark.parametrize("weights", [[0.5, 0.5], [0.5, 0.6, -0.1], [0.2, 0.2, 0.2]])
def test_encoder_decoder_refuses_weights_that_are_not_a_distribution_over_the_source(weights):
    with pytest.raises(ValueError, match="3 non-negative numbers summing to 1, one per character of 'a.b'"):
        draw_encoder_decoder_with_attention("a.b", weights)
