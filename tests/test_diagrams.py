"""The student kit's diagrams: what each drawing shows, and that it leaves pyplot alone."""

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch

from course_kit.diagrams import _WEIGHT_COLOR, draw_encoder_decoder_with_attention

matplotlib.use("Agg")


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
