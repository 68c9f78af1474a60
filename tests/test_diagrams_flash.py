"""The kit's diagrams draw what the algorithms do: checked against course_lib and torch, not by eye."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.patches import Rectangle

from course_kit.diagrams import TILE_STYLES, plot_flash_tiles, plot_online_softmax_state
from course_lib.flash import causal_tile_mask
from course_lib.online_softmax import merge_softmax_states

matplotlib.use("Agg")


def tile_colours(fig, n_q, n_k, block_q, block_k):
    """The face colour of each tile of the figure, as a (T_q, T_k) array of TILE_STYLES kinds."""
    by_colour = {matplotlib.colors.to_hex(colour): kind for kind, (colour, _, _) in TILE_STYLES.items()}
    kinds = np.full((-(-n_q // block_q), -(-n_k // block_k)), "", dtype=object)
    for patch in fig.axes[0].patches:
        if isinstance(patch, Rectangle):
            x, y = patch.get_xy()
            kinds[int(y) // block_q, int(x) // block_k] = by_colour[matplotlib.colors.to_hex(patch.get_facecolor())]
    return kinds


@pytest.mark.parametrize("n_q,n_k,block_q,block_k", [(16, 16, 4, 4), (10, 13, 4, 3), (13, 7, 3, 5), (5, 5, 8, 8)])
def test_the_tiles_drawn_computed_are_those_causal_tile_mask_needs_and_the_diagonal_ones_are_masked(
        n_q, n_k, block_q, block_k):
    kinds = tile_colours(plot_flash_tiles(n_q, n_k, block_q, block_k), n_q, n_k, block_q, block_k)
    needed = causal_tile_mask(n_q, n_k, block_q, block_k).numpy()
    assert ((kinds != "skipped") == needed).all()
    visible = torch.ones(n_q, n_k, dtype=torch.bool).tril()  # key c <= query r
    for i, j in zip(*np.nonzero(needed)):
        tile = visible[i * block_q:(i + 1) * block_q, j * block_k:(j + 1) * block_k]
        assert (kinds[i, j] == "full") == bool(tile.all()), (i, j)


def test_the_tile_figure_has_a_key_and_numbers_each_programs_steps():
    fig = plot_flash_tiles(16, 16, 4, 4)
    ax = fig.axes[0]
    assert ax.get_title() == "causal, 16 queries x 16 keys in 4 x 4 tiles: 10 of 16 computed"
    key = fig.legends[0]
    assert key.get_title().get_text() == "key"
    assert len(key.get_texts()) == 5  # three kinds of tile, the step numbers, the causal boundary
    steps = sorted(int(t.get_text()) for t in ax.texts)
    assert steps == [1, 1, 1, 1, 2, 2, 2, 3, 3, 4]  # program i computes i + 1 tiles
    assert [t.get_text() for t in ax.get_yticklabels()] == [f"program {i}: {i + 1} tile{'s' * (i > 0)}"
                                                            for i in range(4)]


def test_without_a_mask_every_tile_is_computed_and_the_key_shows_only_that():
    fig = plot_flash_tiles(8, 12, 4, 4, is_causal=False)
    assert (tile_colours(fig, 8, 12, 4, 4) == "full").all()
    assert len(fig.legends[0].get_texts()) == 2


def test_online_softmax_diagram_draws_the_states_merge_softmax_states_gives_and_ends_at_softmax():
    g = torch.Generator().manual_seed(0)
    s, v = torch.randn(11, generator=g, dtype=torch.float64) * 5, torch.randn(11, 2, generator=g, dtype=torch.float64)
    fig = plot_online_softmax_state(s, v, 4)
    ax_s, ax_state, ax_out = fig.axes
    m, l, acc = torch.tensor(float("-inf")), torch.tensor(0.0, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    expected = []
    for start in range(0, 11, 4):
        block_s, block_v = s[start:start + 4], v[start:start + 4]
        block_m = block_s.max()
        p = torch.exp(block_s - block_m)
        m, l, acc = merge_softmax_states(m, l, acc[None], block_m, p.sum(), (p @ block_v)[None])
        acc = acc[0]
        expected.append((start + len(block_s), float(m), float(l), float(acc[0])))
    lines = {line.get_label(): line for ax in fig.axes for line in ax.get_lines()}
    ends, ms, ls, accs = map(list, zip(*expected))
    assert list(lines["running sum $\\ell$"].get_xdata()) == ends
    np.testing.assert_allclose(lines["running sum $\\ell$"].get_ydata(), ls)
    np.testing.assert_allclose(lines["accumulator acc (first feature)"].get_ydata(), accs)
    np.testing.assert_allclose(lines["running max $m$"].get_ydata()[1:], ms)
    final = lines["acc / ℓ after each block"].get_ydata()[-1]
    np.testing.assert_allclose(final, float((torch.softmax(s, dim=0) @ v)[0]))
    np.testing.assert_allclose(lines["softmax(s) · v, all keys at once"].get_ydata()[0], final)


def test_diagrams_say_what_is_wrong_with_their_arguments():
    with pytest.raises(ValueError, match="block_q must be a whole number >= 1"):
        plot_flash_tiles(8, 8, 0, 4)
    with pytest.raises(ValueError, match=r"same N; got scores \(5,\) and values \(4,\)"):
        plot_online_softmax_state(np.zeros(5), np.zeros(4), 2)
