"""Lesson 4's graded exercises: GPU-efficient attention (solutions/lesson4_flash).

The references are course_lib's readable implementations (``course_lib.flash`` is FlashAttention-2's
Algorithms 1 and 2 as the lesson writes them), called with the options by keyword, as the students'
signatures take them (keyword-only after the tensors). The tiled exercises take small block sizes,
so a few dozen queries already cross several tiles, and sizes that are not multiples of the blocks,
where a missing boundary check shows.

The Triton exercises grade a kernel, launched by the student kit's launcher
(``course_kit.triton_launch``), on tiny shapes: on a machine without CUDA it runs under Triton's
interpreter. Their known mistakes are computed here as the torch computation of the wrong result
(softmax without its max in float32, a matrix read in storage order, tl.dot's operands swapped tile
by tile); the launcher itself reports a store past the end and an element no program wrote.

The lesson's point, memory that grows with L rather than L^2, is graded too, never by timing: a
few long cases (visible and hidden) allow no tensor larger than one chunk or one tile of the score
matrix, and the causal ones no more matrix products than the tiles causal attention needs
(``course_kit.checks.Measure`` sees every tensor an operator returns and every product's size). The
backward may not ask autograd for the gradients: it recomputes them from the log-sum-exp.
"""

from __future__ import annotations

import math
from functools import partial

import torch

import course_lib
from autograde.exercises.base import DEFAULT_FORBIDDEN, Exercise, Mistake, noncontiguous, randn, size
from course_kit.triton_launch import FLASH_BLOCKS, MATMUL_BLOCKS, softmax_block
from course_lib.flash import causal_tile_mask, flash_attention_backward, flash_attention_forward

LESSON = "lesson4_flash"


# --- the constraints: memory that grows with L, not L^2, and the causal tile skip --------------------
# At Lq = Lk = 512 with D = Dv = 8 and 64 x 64 tiles, one tile of scores (4,096 numbers) is as large as
# an input or the output; a row of tiles (64 x 512) is 8 times that and the whole score matrix 64
# times. Chunks of 32 queries hold 32 x 512 scores, and the whole matrix is 16 times that. The hidden
# long cases draw Lq, Lk in [320, 512] and D, Dv in [4, 8], so the inputs and outputs still fit.
LONG, NARROW, TILE, CHUNK = 512, 8, 64, 32
# How much more than the needed tiles' products a causal case allows. Computing one more tile per row
# of tiles (the off-by-one skip) costs 13% to 33% more at these sizes; an honest answer needs nothing.
SPARE = 0.10
FORWARD_PRODUCTS = "S = Q_i K_j^T and P V_j"  # per tile: D + Dv multiply-adds per (query, key) pair
BACKWARD_PRODUCTS = "S, P^T dO_i, dO_i V_j^T, dS K_j and dS^T Q_i"  # 3 D + 2 Dv per pair


def _tile_lengths(n: int, block: int) -> torch.Tensor:
    return torch.tensor([min(block, n - start) for start in range(0, n, block)])


def tile_products(n_q: int, n_k: int, per_pair: int, is_causal: bool) -> int:
    """What Measure counts for the tile products (2 x multiply-adds): ``per_pair`` multiply-adds for each
    (query, key) pair of every TILE x TILE tile computed, only the needed ones when causal."""
    pairs = _tile_lengths(n_q, TILE)[:, None] * _tile_lengths(n_k, TILE)[None, :]  # (T_q, T_k)
    if is_causal:
        pairs = pairs * causal_tile_mask(n_q, n_k, TILE, TILE)
    return 2 * per_pair * int(pairs.sum())


def one_chunk(n_q: int, n_k: int) -> dict:
    """The options of a case that may hold one chunk of CHUNK rows of the n_q x n_k scores at a time."""
    return {"max_tensor_elements": CHUNK * n_k,
            "constraint": f"one chunk of {CHUNK} rows of the {n_q} x {n_k} score matrix at a time"}


def one_tile(n_q: int, n_k: int, is_causal: bool, per_pair: int, products: str) -> dict:
    """The options of a case that may hold one TILE x TILE tile of the n_q x n_k scores at a time and,
    when causal, compute the products of the tiles causal attention needs and no others."""
    options = {"max_tensor_elements": TILE * TILE,
               "constraint": f"one {TILE} x {TILE} tile of the {n_q} x {n_k} score matrix at a time"}
    if is_causal:
        needed, products_needed = causal_tile_mask(n_q, n_k, TILE, TILE), tile_products(n_q, n_k, per_pair, True)
        options["max_matmul_flops"] = math.ceil((1 + SPARE) * products_needed)
        options["constraint"] += (f"; products only for the {int(needed.sum())} of its {needed.numel()} tiles that "
                                  f"causal attention needs: {products_needed:,} for {products}, plus {SPARE:.0%}")
    return options


def _long_inputs(g: torch.Generator, n_q: int, n_k: int, d: int, d_v: int) -> list[torch.Tensor]:
    return [randn(g, 1, 1, n_q, d), randn(g, 1, 1, n_k, d), randn(g, 1, 1, n_k, d_v)]  # B = H = 1


def _long_sizes(g: torch.Generator) -> tuple[int, int, int, int]:
    return size(g, 320, LONG), size(g, 320, LONG), size(g, 4, NARROW), size(g, 4, NARROW)


# --- merge_softmax_states ---------------------------------------------------------------------------

def _state(scores: torch.Tensor, values: torch.Tensor):
    """The (m, l, acc) state of a block of keys: scores (..., Lq, n), values (..., n, Dv)."""
    if scores.shape[-1] == 0:  # an empty block
        m = torch.full(scores.shape[:-1], float("-inf"), dtype=scores.dtype)
        return m, torch.zeros_like(m), torch.zeros(*scores.shape[:-1], values.shape[-1], dtype=scores.dtype)
    m = scores.amax(dim=-1)
    p = torch.exp(scores - m[..., None])
    return m, p.sum(dim=-1), p @ values


def _two_states(g, scores, values, split):
    return [*_state(scores[..., :split], values[..., :split, :]), *_state(scores[..., split:], values[..., split:, :])]


def _merge_visible(g):
    s, v = randn(g, 3, 6, scale=2), randn(g, 6, 4)
    far = s.clone()
    far[:, 3:] += 20  # the second block's scores are far larger: the first's state must shrink
    empty = _state(s[:, :0], v[:0])
    return [
        ("two blocks of 3 keys, 3 queries, Dv=4", _two_states(g, s, v, 3), {}),
        ("second block's max is 20 higher (rescale both l and acc)", _two_states(g, far, v, 3), {}),
        ("first block's max is 20 higher", _two_states(g, far.flip(-1), v.flip(0), 3), {}),
        ("an empty first block (m=-inf, l=0, acc=0) leaves the second unchanged", [*empty, *_state(s, v)], {}),
        ("two empty blocks give an empty block, not NaN", [*empty, *empty], {}),
        ("batch (2, 2), float64", _two_states(g, randn(g, 2, 2, 3, 5, dtype=torch.float64, scale=3),
                                              randn(g, 2, 2, 5, 2, dtype=torch.float64), 2), {}),
    ]


def _merge_hidden(g):
    lq, n, dv = size(g, 1, 8), size(g, 2, 12), size(g, 1, 6)
    split = size(g, 1, n - 1)
    s, v = randn(g, 2, lq, n, scale=3), randn(g, 2, n, dv)
    s_far = s.clone()
    s_far[..., :split] -= 50
    return [
        (f"random, Lq={lq}, blocks of {split} and {n - split} keys", _two_states(g, s, v, split), {}),
        ("first block 50 lower", _two_states(g, s_far, v, split), {}),
        ("empty second block", [*_state(s, v), *_state(s[..., :0], v[:0])], {}),
        ("float64, scores of magnitude 100", _two_states(g, s.double() * 30, v.double(), split), {}),
    ]


def _merge_l_not_rescaled(m_a, l_a, acc_a, m_b, l_b, acc_b):
    m, _, acc = course_lib.merge_softmax_states(m_a, l_a, acc_a, m_b, l_b, acc_b)
    return m, l_a + l_b, acc


def _merge_acc_not_rescaled(m_a, l_a, acc_a, m_b, l_b, acc_b):
    m, l, _ = course_lib.merge_softmax_states(m_a, l_a, acc_a, m_b, l_b, acc_b)
    return m, l, acc_a + acc_b


def _merge_m_of_block_b(m_a, l_a, acc_a, m_b, l_b, acc_b):
    """Both states rescaled to m_b, the newer block's max, whichever max is larger (an empty b: to 0)."""
    alpha = torch.exp(m_a - torch.where(torch.isneginf(m_b), torch.zeros_like(m_b), m_b))
    return m_b, alpha * l_a + l_b, alpha[..., None] * acc_a + acc_b


def _merge_nan_when_both_empty(m_a, l_a, acc_a, m_b, l_b, acc_b):
    m = torch.maximum(m_a, m_b)
    alpha, beta = torch.exp(m_a - m), torch.exp(m_b - m)  # exp(-inf - (-inf)) = NaN
    return m, alpha * l_a + beta * l_b, alpha[..., None] * acc_a + beta[..., None] * acc_b


MERGE_MISTAKES = (
    Mistake("It looks like l was not rescaled: l = exp(m_a - m) * l_a + exp(m_b - m) * l_b, with m the merged max",
            _merge_l_not_rescaled),
    Mistake("It looks like acc was not rescaled: acc = exp(m_a - m) * acc_a + exp(m_b - m) * acc_b, like l",
            _merge_acc_not_rescaled),
    Mistake("It looks like m is block b's max: the merged max is the larger of the two, m = max(m_a, m_b)",
            _merge_m_of_block_b),
    Mistake("It looks like exp(m_a - m) was computed with m = -inf: exp(-inf - (-inf)) is NaN. When both blocks "
            "are empty, take the factors as 0 (e.g. subtract 0 instead of m where m is -inf)",
            _merge_nan_when_both_empty),
)


# --- chunked_attention ------------------------------------------------------------------------------

def _chunked_visible(g):
    q, k, v = randn(g, 8, 4), randn(g, 8, 4), randn(g, 8, 4)
    return [
        ("Lq=Lk=8, chunks of 4", [q, k, v], {"chunk_size": 4}),
        ("Lq=7 with chunks of 3 (the last chunk is short)", [randn(g, 7, 4), k, v], {"chunk_size": 3}),
        ("Lq=5, Lk=9, Dv=3, chunks of 2", [randn(g, 5, 4), randn(g, 9, 4), randn(g, 9, 3)], {"chunk_size": 2}),
        ("is_causal, chunks of 3", [q, k, v], {"is_causal": True, "chunk_size": 3}),
        ("is_causal, Lq=5, Lk=8 (top-left aligned)", [randn(g, 5, 4), k, v], {"is_causal": True, "chunk_size": 2}),
        ("scale=0.5, batch (2, 3), chunk larger than Lq",
         [randn(g, 2, 3, 6, 4), randn(g, 2, 3, 6, 4), randn(g, 2, 3, 6, 4)], {"scale": 0.5, "chunk_size": 16}),
        *_chunked_long(g, LONG, LONG, NARROW, NARROW, "B=H=1, Lq=Lk=512, D=8"),
    ]


def _chunked_long(g, n_q, n_k, d, d_v, description):
    """Two long cases, one causal, that may hold one chunk of scores at a time (the same inputs)."""
    inputs, options = _long_inputs(g, n_q, n_k, d, d_v), one_chunk(n_q, n_k)
    return [(f"one chunk at a time: {description}, chunks of {CHUNK}", inputs, {"chunk_size": CHUNK}, options),
            (f"is_causal, one chunk at a time: {description}, chunks of {CHUNK}", inputs,
             {"is_causal": True, "chunk_size": CHUNK}, options)]


def _chunked_hidden(g):
    b, lq, lk, d = size(g, 1, 3), size(g, 1, 20), size(g, 1, 20), size(g, 1, 16)
    chunk = size(g, 1, 7)
    q, k, v = randn(g, b, lq, d), randn(g, b, lk, d), randn(g, b, lk, d)
    cases = [
        (f"random (B={b}, Lq={lq}, Lk={lk}, D={d}), chunks of {chunk}", [q, k, v], {"chunk_size": chunk}),
        ("is_causal", [q, k, v], {"is_causal": True, "chunk_size": chunk}),
        ("chunk_size 1", [q, k, v], {"chunk_size": 1}),
        ("non-contiguous inputs", [noncontiguous(q), noncontiguous(k), noncontiguous(v)], {"chunk_size": chunk}),
        ("large logits, float64", [q.double() * 30, k.double(), v.double()], {"chunk_size": chunk}),
    ]
    n_q, n_k, d, d_v = _long_sizes(g)
    return cases + _chunked_long(g, n_q, n_k, d, d_v, f"B=H=1, Lq={n_q}, Lk={n_k}, D={d}, Dv={d_v}")


def _chunked_rows_from_chunk_start(query, key, value, *, is_causal=False, scale=None, chunk_size=1024):
    """Each chunk masked as if its first row were query 0."""
    return torch.cat([course_lib.chunked_attention(query[..., start:start + chunk_size, :], key, value,
                                                   is_causal=is_causal, scale=scale)
                      for start in range(0, query.shape[-2], chunk_size)], dim=-2)


def _chunked_last_chunk_dropped(query, key, value, *, is_causal=False, scale=None, chunk_size=1024):
    """Only the whole chunks computed; the rows of a last, shorter chunk left at 0."""
    out = course_lib.chunked_attention(query, key, value, is_causal=is_causal, scale=scale, chunk_size=chunk_size)
    return out.index_fill(-2, torch.arange(query.shape[-2] // chunk_size * chunk_size, query.shape[-2]), 0.0)


CHUNKED_MISTAKES = (
    Mistake("It looks like the causal mask counts rows from the chunk's start: row r of a chunk starting at "
            "`start` is query start + r, which sees keys 0 .. start + r", _chunked_rows_from_chunk_start),
    Mistake("It looks like the last, shorter chunk was never computed: take chunks starting at "
            "range(0, Lq, chunk_size), the last one ending at Lq", _chunked_last_chunk_dropped),
)


# --- causal_tile_mask -------------------------------------------------------------------------------

def _tiles_visible(g):
    return [
        ("n_q=n_k=4, blocks of 2", [4, 4, 2, 2], {}),
        ("n_q=n_k=8, block_q=4, block_k=2", [8, 8, 4, 2], {}),
        ("n_q=n_k=8, block_q=2, block_k=4", [8, 8, 2, 4], {}),
        ("n_q=5, n_k=8, block_q=4, block_k=2: the last query tile is short", [5, 8, 4, 2], {}),
        ("n_q=3, n_k=10, blocks of 2", [3, 10, 2, 2], {}),
        ("n_q=10, n_k=3, blocks of 4", [10, 3, 4, 4], {}),
    ]


def _tiles_hidden(g):
    n_q, n_k, b_q, b_k = size(g, 1, 40), size(g, 1, 40), size(g, 1, 9), size(g, 1, 9)
    return [
        (f"n_q={n_q}, n_k={n_k}, block_q={b_q}, block_k={b_k}", [n_q, n_k, b_q, b_k], {}),
        (f"n_q=n_k=37, block_q=8, block_k={b_k}", [37, 37, 8, b_k], {}),
        ("blocks of 1: the tile mask is the causal mask", [6, 6, 1, 1], {}),
        ("one tile holds everything", [5, 5, 8, 8], {}),
    ]


def _tile_bounds(n_q, n_k, block_q, block_k):
    """Each query tile's first and last query, each key tile's first and last key: (T,) tensors."""
    first_q, first_k = torch.arange(0, n_q, block_q), torch.arange(0, n_k, block_k)
    return first_q, torch.clamp(first_q + block_q, max=n_q) - 1, first_k, torch.clamp(first_k + block_k, max=n_k) - 1


def _tiles_by_first_query(n_q, n_k, block_q, block_k):
    first_q, _, first_k, _ = _tile_bounds(n_q, n_k, block_q, block_k)
    return first_k[None, :] <= first_q[:, None]


def _tiles_short_tile_ignored(n_q, n_k, block_q, block_k):
    first_q, _, first_k, _ = _tile_bounds(n_q, n_k, block_q, block_k)
    return first_k[None, :] <= first_q[:, None] + block_q - 1


def _tiles_strictly_before(n_q, n_k, block_q, block_k):
    _, last_q, first_k, _ = _tile_bounds(n_q, n_k, block_q, block_k)
    return first_k[None, :] < last_q[:, None]


def _tiles_one_past_the_last_query(n_q, n_k, block_q, block_k):
    _, last_q, first_k, _ = _tile_bounds(n_q, n_k, block_q, block_k)
    return first_k[None, :] <= last_q[:, None] + 1


def _tiles_entirely_below(n_q, n_k, block_q, block_k):
    first_q, _, _, last_k = _tile_bounds(n_q, n_k, block_q, block_k)
    return last_k[None, :] <= first_q[:, None]


def _tiles_floor_count(n_q, n_k, block_q, block_k):
    return causal_tile_mask(n_q, n_k, block_q, block_k)[:n_q // block_q, :n_k // block_k]


TILE_MISTAKES = (
    Mistake("It looks like each tile was compared with its first query: a tile is needed when its first key is "
            "at most its LAST query, min((i + 1) * block_q, n_q) - 1", _tiles_by_first_query),
    Mistake("It looks like the last query tile was taken as full: it ends at query n_q - 1, so its last query is "
            "min((i + 1) * block_q, n_q) - 1", _tiles_short_tile_ignored),
    Mistake("It looks like the comparison is strict: a tile whose first key equals its last query holds one "
            "visible pair, so the test is first key <= last query", _tiles_strictly_before),
    Mistake("It looks like the last query is off by one: tile i's last query is min((i + 1) * block_q, n_q) - 1, "
            "not (i + 1) * block_q", _tiles_one_past_the_last_query),
    Mistake("It looks like only the tiles entirely below the diagonal were kept: the tiles the diagonal crosses "
            "are needed too (computed, then masked)", _tiles_entirely_below),
    Mistake("It looks like the tiles were counted with n // block: the last tile may be short, so there are "
            "ceil(n / block) of them, -(-n // block)", _tiles_floor_count),
)


# --- flash_attention_forward ------------------------------------------------------------------------

def _forward_visible(g):
    q, k, v = randn(g, 8, 4), randn(g, 8, 4), randn(g, 8, 4)
    return [
        ("Lq=Lk=8, D=4, blocks of 4", [q, k, v], {"block_q": 4, "block_k": 4}),
        ("Lq=7, Lk=10, blocks of 4 and 3 (partial tiles)", [randn(g, 7, 4), randn(g, 10, 4), randn(g, 10, 4)],
         {"block_q": 4, "block_k": 3}),
        ("Dv=3 != D=4", [q, k, randn(g, 8, 3)], {"block_q": 4, "block_k": 4}),
        ("is_causal, Lq=Lk=8, blocks of 3", [q, k, v], {"is_causal": True, "block_q": 3, "block_k": 3}),
        ("is_causal, Lq=5, Lk=9 (top-left aligned)", [randn(g, 5, 4), randn(g, 9, 4), randn(g, 9, 4)],
         {"is_causal": True, "block_q": 2, "block_k": 4}),
        ("scores of magnitude 100: the running max must be subtracted", [q * 25, k, v], {"block_q": 4, "block_k": 2}),
        ("batch (2, 3), scale=0.3", [randn(g, 2, 3, 6, 4), randn(g, 2, 3, 6, 4), randn(g, 2, 3, 6, 4)],
         {"scale": 0.3, "block_q": 4, "block_k": 4}),
        ("is_causal, Lq=Lk=8, block_q=4, block_k=2 (a query tile spans two key tiles)", [q, k, v],
         {"is_causal": True, "block_q": 4, "block_k": 2}),
        *_tiled_long(g, LONG, LONG, NARROW, NARROW, "B=H=1, Lq=Lk=512, D=8", NARROW + NARROW,
                     FORWARD_PRODUCTS),
    ]


def _tiled_long(g, n_q, n_k, d, d_v, description, per_pair, products, inputs=lambda g, q, k, v, **_: [q, k, v]):
    """Two long cases, one causal, on the same inputs, that may hold one tile of scores at a time; the
    causal one may compute only the tiles causal attention needs. ``inputs`` makes a case's arguments."""
    q, k, v = _long_inputs(g, n_q, n_k, d, d_v)
    blocks = {"block_q": TILE, "block_k": TILE}
    return [(f"one tile at a time: {description}, {TILE} x {TILE} tiles", inputs(g, q, k, v), blocks,
             one_tile(n_q, n_k, False, per_pair, products)),
            (f"is_causal, one tile at a time, the tiles above the diagonal skipped: {description}, {TILE} x {TILE} "
             "tiles", inputs(g, q, k, v, is_causal=True), {"is_causal": True, **blocks},
             one_tile(n_q, n_k, True, per_pair, products))]


def _forward_hidden(g):
    b, h, lq, lk, d = size(g, 1, 2), size(g, 1, 3), size(g, 1, 40), size(g, 1, 40), size(g, 1, 16)
    b_q, b_k = size(g, 1, 9), size(g, 1, 9)
    q, k, v = randn(g, b, h, lq, d), randn(g, b, h, lk, d), randn(g, b, h, lk, d)
    blocks = {"block_q": b_q, "block_k": b_k}
    cases = [
        (f"random (B={b}, H={h}, Lq={lq}, Lk={lk}, D={d}), blocks {b_q}x{b_k}", [q, k, v], blocks),
        ("is_causal", [q, k, v], {"is_causal": True, **blocks}),
        ("is_causal, Lq=Lk=37, blocks 8x5", [randn(g, 2, 37, d), randn(g, 2, 37, d), randn(g, 2, 37, d)],
         {"is_causal": True, "block_q": 8, "block_k": 5}),
        ("non-contiguous inputs", [noncontiguous(q), noncontiguous(k), noncontiguous(v)], blocks),
        ("float64, large logits", [q.double() * 20, k.double(), v.double()], blocks),
        ("custom scale 1/D", [q, k, v], {"scale": 1.0 / d, **blocks}),
    ]
    n_q, n_k, d, d_v = _long_sizes(g)
    return cases + _tiled_long(g, n_q, n_k, d, d_v, f"B=H=1, Lq={n_q}, Lk={n_k}, D={d}, Dv={d_v}",
                               d + d_v, FORWARD_PRODUCTS)


def _forward_mistaken(query, key, value, *, mistake, is_causal=False, scale=None, block_q=16, block_k=16):
    """flash_attention_forward (course_lib.flash) with one of the mistakes of FORWARD_MISTAKES in it."""
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    n_q, n_k = query.shape[-2], key.shape[-2]
    needed = (_tiles_by_first_query if mistake == "tile skip by the first query" else causal_tile_mask)(
        n_q, n_k, block_q, block_k)
    out = query.new_zeros(*query.shape[:-1], value.shape[-1])  # (..., Lq, Dv)
    lse = query.new_zeros(query.shape[:-1])  # (..., Lq)
    for i, q_start in enumerate(range(0, n_q, block_q)):
        q_stop = min(q_start + block_q, n_q)
        q_i = query[..., q_start:q_stop, :] * scale
        m = torch.full(q_i.shape[:-1], float("-inf"), dtype=query.dtype)
        l, acc = torch.zeros_like(m), query.new_zeros(*q_i.shape[:-1], value.shape[-1])
        for j, k_start in enumerate(range(0, n_k, block_k)):
            if is_causal and not needed[i, j]:
                continue
            k_stop = min(k_start + block_k, n_k)
            s = q_i @ key[..., k_start:k_stop, :].transpose(-2, -1)  # (..., bq, bk)
            if is_causal:
                rows, cols = torch.arange(q_start, q_stop)[:, None], torch.arange(k_start, k_stop)[None, :]
                if mistake == "causal mask by tile positions":
                    rows, cols = rows - q_start, cols - k_start
                s = s.masked_fill(cols > rows, float("-inf"))
            m_new = s.amax(dim=-1) if mistake == "max without the old max" else torch.maximum(m, s.amax(dim=-1))
            alpha, p = torch.exp(m - m_new), torch.exp(s - m_new[..., None])
            l = (1 if mistake == "l not rescaled" else alpha) * l + p.sum(dim=-1)
            acc = (1 if mistake == "acc not rescaled" else alpha[..., None]) * acc + p @ value[..., k_start:k_stop, :]
            m = m_new
        out[..., q_start:q_stop, :] = acc / l[..., None]
        lse[..., q_start:q_stop] = torch.log(l) if mistake == "lse without the max" else m + torch.log(l)
    return out, lse


FORWARD_MISTAKES = (
    Mistake("It looks like l was not rescaled: when the running max grows, l = exp(m - m_new) * l + rowsum(P)",
            partial(_forward_mistaken, mistake="l not rescaled")),
    Mistake("It looks like the accumulator was not rescaled: when the running max grows, "
            "acc = exp(m - m_new) * acc + P V_j", partial(_forward_mistaken, mistake="acc not rescaled")),
    Mistake("It looks like the running max forgot the old max: m_new = max(m, rowmax(S)). The tile's max alone is "
            "-inf in a row the causal mask hides from the whole tile, and exp(m - m_new) overflows when it drops",
            partial(_forward_mistaken, mistake="max without the old max")),
    Mistake("It looks like lse = log(l): l is the sum of exp(s - m), so the row's log-sum-exp is m + log(l)",
            partial(_forward_mistaken, mistake="lse without the max")),
    Mistake("It looks like the causal mask compares positions inside the tile: in tile (i, j), row r is query "
            "q_start + r and column c is key k_start + c", partial(_forward_mistaken,
                                                                  mistake="causal mask by tile positions")),
    Mistake("It looks like a query tile skipped key tiles it sees: a key tile is needed while its first key is at "
            "most the query tile's LAST query (exercise 3's causal_tile_mask)",
            partial(_forward_mistaken, mistake="tile skip by the first query")),
)


# --- flash_attention_backward -----------------------------------------------------------------------

def _backward_inputs(g, q, k, v, **options):
    """(q, k, v, out, lse, grad_out) for a backward case: the forward's own out and lse, computed in
    float64 and rounded to the inputs' dtype (lse stays float32 or wider), so the release stores the
    same bytes on every CPU."""
    out, lse = flash_attention_forward(q.double(), k.double(), v.double(), **options)
    return [q, k, v, out.to(q.dtype), lse.to(torch.promote_types(q.dtype, torch.float32)),
            randn(g, *out.shape, dtype=q.dtype)]


def _backward_visible(g):
    q, k, v = randn(g, 8, 4), randn(g, 8, 4), randn(g, 8, 4)
    q7, k10, v10 = randn(g, 7, 4), randn(g, 10, 4), randn(g, 10, 3)
    q5, k9, v9 = randn(g, 5, 4), randn(g, 9, 4), randn(g, 9, 4)
    qb, kb, vb = randn(g, 2, 3, 6, 4), randn(g, 2, 3, 6, 4), randn(g, 2, 3, 6, 4)
    return [
        ("Lq=Lk=8, D=4, blocks of 4", _backward_inputs(g, q, k, v), {"block_q": 4, "block_k": 4}),
        ("Lq=7, Lk=10, Dv=3, blocks of 4 and 3", _backward_inputs(g, q7, k10, v10), {"block_q": 4, "block_k": 3}),
        ("is_causal, Lq=Lk=8, blocks of 3", _backward_inputs(g, q, k, v, is_causal=True),
         {"is_causal": True, "block_q": 3, "block_k": 3}),
        ("is_causal, Lq=5, Lk=9 (top-left aligned)", _backward_inputs(g, q5, k9, v9, is_causal=True),
         {"is_causal": True, "block_q": 2, "block_k": 4}),
        ("batch (2, 3), scale=0.3", _backward_inputs(g, qb, kb, vb, scale=0.3),
         {"scale": 0.3, "block_q": 4, "block_k": 4}),
        ("is_causal, Lq=Lk=8, block_q=4, block_k=2 (a query tile spans two key tiles)",
         _backward_inputs(g, q, k, v, is_causal=True), {"is_causal": True, "block_q": 4, "block_k": 2}),
        *_tiled_long(g, LONG, LONG, NARROW, NARROW, "B=H=1, Lq=Lk=512, D=8", 3 * NARROW + 2 * NARROW,
                     BACKWARD_PRODUCTS, inputs=_backward_inputs),
    ]


def _backward_hidden(g):
    b, lq, lk, d = size(g, 1, 3), size(g, 1, 30), size(g, 1, 30), size(g, 1, 12)
    b_q, b_k = size(g, 1, 9), size(g, 1, 9)
    q, k, v = randn(g, b, lq, d), randn(g, b, lk, d), randn(g, b, lk, d)
    blocks = {"block_q": b_q, "block_k": b_k}
    q37, k37, v37 = randn(g, 37, d), randn(g, 37, d), randn(g, 37, d)
    cases = [
        (f"random (B={b}, Lq={lq}, Lk={lk}, D={d}), blocks {b_q}x{b_k}", _backward_inputs(g, q, k, v), blocks),
        ("is_causal", _backward_inputs(g, q, k, v, is_causal=True), {"is_causal": True, **blocks}),
        ("is_causal, Lq=Lk=37, blocks 8x5", _backward_inputs(g, q37, k37, v37, is_causal=True),
         {"is_causal": True, "block_q": 8, "block_k": 5}),
        ("float64", _backward_inputs(g, q.double(), k.double(), v.double()), blocks),
    ]
    n_q, n_k, d, d_v = _long_sizes(g)
    return cases + _tiled_long(g, n_q, n_k, d, d_v, f"B=H=1, Lq={n_q}, Lk={n_k}, D={d}, Dv={d_v}",
                               3 * d + 2 * d_v, BACKWARD_PRODUCTS, inputs=_backward_inputs)


def _backward_mistaken(query, key, value, out, lse, grad_out, *, mistake, is_causal=False, scale=None,
                       block_q=16, block_k=16):
    """flash_attention_backward (course_lib.flash) with one of the mistakes of BACKWARD_MISTAKES in it."""
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    n_q, n_k = query.shape[-2], key.shape[-2]
    needed = causal_tile_mask(n_q, n_k, block_q, block_k)
    delta = (grad_out * out).sum(dim=-1)  # D: (..., Lq)
    dq, dk, dv = torch.zeros_like(query), torch.zeros_like(key), torch.zeros_like(value)
    grad_scale = 1.0 if mistake == "dS not scaled" else scale
    for i, q_start in enumerate(range(0, n_q, block_q)):
        q_stop = min(q_start + block_q, n_q)
        q_i, do_i = query[..., q_start:q_stop, :], grad_out[..., q_start:q_stop, :]
        for j, k_start in enumerate(range(0, n_k, block_k)):
            if is_causal and not needed[i, j]:
                continue
            k_stop = min(k_start + block_k, n_k)
            k_j, v_j = key[..., k_start:k_stop, :], value[..., k_start:k_stop, :]
            s = q_i @ k_j.transpose(-2, -1) * (1.0 if mistake == "P without the scale" else scale)
            if is_causal and mistake != "diagonal tiles not masked":
                rows, cols = torch.arange(q_start, q_stop)[:, None], torch.arange(k_start, k_stop)[None, :]
                s = s.masked_fill(cols > rows, float("-inf"))
            p = torch.exp(s - lse[..., q_start:q_stop, None])  # (..., bq, bk)
            dv[..., k_start:k_stop, :] += p.transpose(-2, -1) @ do_i
            dp = do_i @ v_j.transpose(-2, -1)
            row_term = {"D missing": 0.0, "D of one tile": (p * dp).sum(dim=-1, keepdim=True)}.get(
                mistake, delta[..., q_start:q_stop, None])
            ds = p * (dp - row_term)
            dq[..., q_start:q_stop, :] += ds @ k_j * grad_scale
            dk[..., k_start:k_stop, :] += ds.transpose(-2, -1) @ q_i * grad_scale
    return dq, dk, dv


BACKWARD_MISTAKES = (
    Mistake("It looks like the D term is missing: dS = P * (dP - D), with D = rowsum(dO * O) one number per row",
            partial(_backward_mistaken, mistake="D missing")),
    Mistake("It looks like D was summed over one tile: D = rowsum(P * dP) runs over the WHOLE row, which is why "
            "it is computed once, before the loops, as rowsum(dO * O)", partial(_backward_mistaken,
                                                                              mistake="D of one tile")),
    Mistake("It looks like dS was not scaled: S = Q K^T * scale, so dQ += dS K_j * scale and dK += dS^T Q_i * scale",
            partial(_backward_mistaken, mistake="dS not scaled")),
    Mistake("It looks like P was recomputed without the scale: P = exp(Q_i K_j^T * scale - L_i), the forward's "
            "scores", partial(_backward_mistaken, mistake="P without the scale")),
    Mistake("It looks like the tiles that cross the diagonal were not masked: there, P must be 0 where key > query "
            "(mask S with -inf before P = exp(S - L))", partial(_backward_mistaken,
                                                                mistake="diagonal tiles not masked")),
)


# --- the Triton exercises ----------------------------------------------------------------------------
# Each case calls the kit's launcher (course_kit.triton_launch) running the student's kernel: the test
# cell builds the function under test as `<name>_launcher(<name>_kernel)`. Tiny shapes: under Triton's
# interpreter every program runs in numpy, one after another. The launchers fix the blocks
# (VECTOR_BLOCK, softmax_block, MATMUL_BLOCKS, FLASH_BLOCKS), so the cases choose sizes around them:
# a multiple of the block, a partial last block, fewer elements than one block.

def _scaled_add_reference(x, y, alpha):
    return x * alpha + y


def _scaled_add_visible(g):
    return [
        ("n=48: three full blocks of 16", [randn(g, 48), randn(g, 48), 2.0], {}),
        ("n=37: the last block holds 5 elements (mask the other 11)", [randn(g, 37), randn(g, 37), -0.5], {}),
        ("n=5: fewer elements than one block", [randn(g, 5), randn(g, 5), 3.0], {}),
        ("alpha=0: out is y", [randn(g, 20), randn(g, 20), 0.0], {}),
    ]


def _scaled_add_hidden(g):
    n = size(g, 1, 100)
    alpha = round(float(randn(g, 1, dtype=torch.float64)) * 2, 3)
    return [
        (f"random, n={n}, alpha={alpha}", [randn(g, n), randn(g, n), alpha], {}),
        ("n=1", [randn(g, 1), randn(g, 1), alpha], {}),
        ("n=64, a multiple of the block", [randn(g, 64), randn(g, 64), alpha], {}),
    ]


def _softmax_visible(g):
    return [
        ("4 rows of 16: each row fills its block", [randn(g, 4, 16)], {}),
        ("3 rows of 10: the 6 lanes past each row's end are masked (other=-inf)", [randn(g, 3, 10)], {}),
        ("x transposed in memory (5 x 12, stored column by column): use the strides",
         [noncontiguous(randn(g, 5, 12))], {}),
        ("logits of magnitude 100: subtract the row's max before tl.exp", [randn(g, 4, 16, scale=50)], {}),
        ("one column: every weight is 1", [randn(g, 6, 1)], {}),
    ]


def _softmax_hidden(g):
    rows, cols = size(g, 1, 8), size(g, 1, 40)
    x = randn(g, rows, cols)
    return [
        (f"random, {rows} x {cols}", [x], {}),
        ("transposed in memory, at least 2 x 2", [noncontiguous(randn(g, max(rows, 2), max(cols, 2)))], {}),
        ("logits of magnitude 100", [x * 50], {}),
        ("one row of 33 (a block of 64)", [randn(g, 1, 33)], {}),
    ]


def _softmax_without_max(x):
    """softmax_kernel with no max subtracted, in float32 as the kernel computes: exp overflows past 88.7."""
    e = torch.exp(x.to(torch.float32))
    return e / e.sum(dim=-1, keepdim=True)


def _in_memory_order(x):
    """What a kernel that ignores x's strides reads: x's memory, in storage order, as rows of x's shape."""
    order = sorted(range(x.dim()), key=lambda i: -x.stride(i))
    return x.permute(*order).contiguous().reshape(x.shape)


def _softmax_padded_with_zeros(x):
    """softmax_kernel loading the lanes past n_cols as 0 (no other=-inf): they join every row's sum."""
    n_cols = x.shape[-1]
    padded = torch.nn.functional.pad(x, (0, softmax_block(n_cols) - n_cols))
    return course_lib.softmax(padded)[..., :n_cols]


def _matmul_reference(a, b):
    return a @ b


def _matmul_visible(g):
    return [
        ("one tile: (16, 16) @ (16, 16)", [randn(g, 16, 16), randn(g, 16, 16)], {}),
        ("(40, 24) @ (24, 20): partial tiles along M, N and K", [randn(g, 40, 24), randn(g, 24, 20)], {}),
        ("(16, 48) @ (48, 16): three steps along K", [randn(g, 16, 48), randn(g, 48, 16)], {}),
        ("(5, 8) @ (8, 36): K and M smaller than a block", [randn(g, 5, 8), randn(g, 8, 36)], {}),
        ("b = k.T, a view of k (20, 16): Q K^T without a copy, by the strides",
         [randn(g, 24, 16), randn(g, 20, 16).T], {}),
    ]


def _matmul_hidden(g):
    m, n, k = size(g, 1, 40), size(g, 1, 40), size(g, 1, 40)
    a, b = randn(g, m, k), randn(g, k, n)
    return [
        (f"random, ({m}, {k}) @ ({k}, {n})", [a, b], {}),
        ("both transposed in memory", [noncontiguous(a), noncontiguous(b)], {}),
        ("one row", [randn(g, 1, k), b], {}),
    ]


def _tiles(x, block_rows, block_cols):
    """x zero-padded to whole tiles, as (row tiles, column tiles, block_rows, block_cols)."""
    rows, cols = -(-x.shape[0] // block_rows), -(-x.shape[1] // block_cols)
    padded = torch.nn.functional.pad(x, (0, cols * block_cols - x.shape[1], 0, rows * block_rows - x.shape[0]))
    return padded.reshape(rows, block_rows, cols, block_cols).transpose(1, 2)


def _matmul_operands_swapped(a, b):
    """matmul_kernel with tl.dot(b, a): each tile of C sums B's (k, j) tile times A's (i, k) tile (the
    blocks are all 16, so the shapes fit and nothing fails)."""
    block_m, block_n, block_k = MATMUL_BLOCKS
    a_tiles, b_tiles = _tiles(a, block_m, block_k), _tiles(b, block_k, block_n)  # (Mt, Kt, .., ..), (Kt, Nt, .., ..)
    c_tiles = torch.einsum("kjxy,ikyz->ijxz", b_tiles, a_tiles)  # (Mt, Nt, BLOCK_M, BLOCK_N)
    c = c_tiles.transpose(1, 2).reshape(c_tiles.shape[0] * block_m, c_tiles.shape[1] * block_n)
    return c[:a.shape[0], :b.shape[1]]


def _matmul_unmasked_k(a, b):
    """matmul_kernel with no mask along K, on a B laid out row by row: when K is not a multiple of
    BLOCK_K, the last step loads B's rows past its end (the kit's guard zone, NaN): every element is NaN."""
    if a.shape[1] % MATMUL_BLOCKS[2] == 0 or b.stride(0) < b.stride(1):
        return a @ b
    return torch.full((a.shape[0], b.shape[1]), float("nan"), dtype=a.dtype)


def _flash_visible(g):
    q, k, v = randn(g, 1, 2, 16, 16), randn(g, 1, 2, 16, 16), randn(g, 1, 2, 16, 16)
    return [
        ("B=1, H=2, Lq=Lk=16, D=16", [q, k, v], {}),
        ("Lq=5, Lk=21 (partial tiles), D=16", [randn(g, 1, 1, 5, 16), randn(g, 1, 1, 21, 16),
                                                 randn(g, 1, 1, 21, 16)], {}),
        ("is_causal, Lq=Lk=20", [randn(g, 1, 1, 20, 16), randn(g, 1, 1, 20, 16), randn(g, 1, 1, 20, 16)],
         {"is_causal": True}),
        ("scores of magnitude 100", [q * 25, k, v], {}),
    ]


def _flash_hidden(g):
    lq, lk = size(g, 1, 24), size(g, 1, 24)
    q, k, v = randn(g, 1, 1, lq, 16), randn(g, 1, 1, lk, 16), randn(g, 1, 1, lk, 16)
    return [
        (f"random, Lq={lq}, Lk={lk}, D=16", [q, k, v], {}),
        ("is_causal", [q, k, v], {"is_causal": True}),
        ("is_causal, Lq=Lk=33 (three query tiles)", [randn(g, 1, 1, 33, 16), randn(g, 1, 1, 33, 16),
                                                      randn(g, 1, 1, 33, 16)], {"is_causal": True}),
        ("non-contiguous inputs", [noncontiguous(q), noncontiguous(k), noncontiguous(v)], {}),
    ]


def _flash_reference(query, key, value, *, is_causal=False, scale=None):
    return flash_attention_forward(query, key, value, is_causal=is_causal, scale=scale)


def _flash_keys_padded_with_zeros(query, key, value, *, is_causal=False, scale=None):
    """flash_forward_kernel whose scores keep the padding lanes of the last key tile (loaded as 0, not
    set to -inf): attention over the keys and values padded with zeros to whole tiles."""
    n_k = key.shape[-2]
    padding = -n_k % FLASH_BLOCKS[1]
    key, value = (torch.nn.functional.pad(t, (0, 0, 0, padding)) for t in (key, value))
    return flash_attention_forward(query, key, value, is_causal=is_causal, scale=scale)


TRITON_EXERCISES = (
    Exercise("triton_scaled_add", LESSON, _scaled_add_reference, _scaled_add_visible, _scaled_add_hidden),
    Exercise("triton_softmax", LESSON, course_lib.softmax, _softmax_visible, _softmax_hidden,
             forbidden=(*DEFAULT_FORBIDDEN, "softmax"),
             mistakes=(
                 Mistake("tl.exp overflows past 88.7 in float32: subtract the row's maximum, tl.max(x, 0), "
                         "before tl.exp", _softmax_without_max),
                 Mistake("Is x read through its strides? Element (i, j) is at X + i * stride_xm + j * stride_xn, "
                         "and this x is stored column by column", lambda x: course_lib.softmax(_in_memory_order(x))),
                 Mistake("The masked lanes past the row's end count in its sum: load them with "
                         "other=float(\"-inf\"), so that tl.exp gives them 0", _softmax_padded_with_zeros),
             )),
    Exercise("triton_matmul", LESSON, _matmul_reference, _matmul_visible, _matmul_hidden,
             mistakes=(
                 Mistake("Are tl.dot's operands swapped or transposed? tl.dot(a, b) multiplies a (BLOCK_M, BLOCK_K) "
                         "tile of A by a (BLOCK_K, BLOCK_N) tile of B", _matmul_operands_swapped),
                 Mistake("Every element is NaN: the loads along K read past the end of B, into the kit's NaN guard "
                         "zone. Mask them with ks < K (and other=0.0, so the padding adds nothing)",
                         _matmul_unmasked_k),
                 Mistake("Are A and B read through their strides? Element (k, j) of B is at B + k * stride_bk + "
                         "j * stride_bn, and this b is stored column by column",
                         lambda a, b: _in_memory_order(a) @ _in_memory_order(b)),
             )),
    Exercise("triton_flash_forward", LESSON, _flash_reference, _flash_visible, _flash_hidden,
             mistakes=(
                 Mistake("The padding lanes of the last key tile count in the softmax: their scores must be "
                         "-inf, as in tl.where(keys[None, :] < n_k, s, float(\"-inf\"))",
                         _flash_keys_padded_with_zeros),
             )),
)


EXERCISES = (
    Exercise("merge_softmax_states", LESSON, course_lib.merge_softmax_states, _merge_visible, _merge_hidden,
             mistakes=MERGE_MISTAKES),
    Exercise("chunked_attention", LESSON, course_lib.chunked_attention, _chunked_visible, _chunked_hidden,
             mistakes=CHUNKED_MISTAKES),
    Exercise("causal_tile_mask", LESSON, causal_tile_mask, _tiles_visible, _tiles_hidden, mistakes=TILE_MISTAKES),
    Exercise("flash_attention_forward", LESSON, flash_attention_forward, _forward_visible, _forward_hidden,
             mistakes=FORWARD_MISTAKES),
    # the gradients recomputed from the log-sum-exp, not asked of autograd
    Exercise("flash_attention_backward", LESSON, flash_attention_backward, _backward_visible, _backward_hidden,
             forbidden=(*DEFAULT_FORBIDDEN, "autograd"), mistakes=BACKWARD_MISTAKES),
    *TRITON_EXERCISES,
)
