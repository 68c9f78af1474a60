"""Lesson 4's graded exercises: GPU-efficient attention (solutions/lesson4_flash).

The references are course_lib's readable implementations (``course_lib.flash`` is FlashAttention-2's
Algorithms 1 and 2 as the lesson writes them), called with the options by keyword, as the students'
signatures take them (keyword-only after the tensors). The tiled exercises take small block sizes, so a few dozen queries already cross several tiles,
and sizes that are not multiples of the blocks, where a missing boundary check shows.

The Triton exercises grade a kernel, launched by the student kit's launcher
(``course_kit.triton_launch``), on tiny shapes: on a machine without CUDA it runs under Triton's
interpreter. Their known mistakes are computed here as the torch computation of the wrong result
(softmax without its max in float32, a matrix read in storage order, tl.dot's operands swapped tile
by tile); the launcher itself reports a store past the end and an element no program wrote.
"""

from __future__ import annotations

import torch

import course_lib
from autograde.exercises.base import DEFAULT_FORBIDDEN, Exercise, Mistake, noncontiguous, randn, size
from course_kit.triton_launch import FLASH_BLOCKS, MATMUL_BLOCKS, softmax_block
from course_lib.flash import causal_tile_mask, flash_attention_backward, flash_attention_forward

LESSON = "lesson4_flash"


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
    ]


def _chunked_hidden(g):
    b, lq, lk, d = size(g, 1, 3), size(g, 1, 20), size(g, 1, 20), size(g, 1, 16)
    chunk = size(g, 1, 7)
    q, k, v = randn(g, b, lq, d), randn(g, b, lk, d), randn(g, b, lk, d)
    return [
        (f"random (B={b}, Lq={lq}, Lk={lk}, D={d}), chunks of {chunk}", [q, k, v], {"chunk_size": chunk}),
        ("is_causal", [q, k, v], {"is_causal": True, "chunk_size": chunk}),
        ("chunk_size 1", [q, k, v], {"chunk_size": 1}),
        ("non-contiguous inputs", [noncontiguous(q), noncontiguous(k), noncontiguous(v)], {"chunk_size": chunk}),
        ("large logits, float64", [q.double() * 30, k.double(), v.double()], {"chunk_size": chunk}),
    ]


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
    ]


def _forward_hidden(g):
    b, h, lq, lk, d = size(g, 1, 2), size(g, 1, 3), size(g, 1, 40), size(g, 1, 40), size(g, 1, 16)
    b_q, b_k = size(g, 1, 9), size(g, 1, 9)
    q, k, v = randn(g, b, h, lq, d), randn(g, b, h, lk, d), randn(g, b, h, lk, d)
    blocks = {"block_q": b_q, "block_k": b_k}
    return [
        (f"random (B={b}, H={h}, Lq={lq}, Lk={lk}, D={d}), blocks {b_q}x{b_k}", [q, k, v], blocks),
        ("is_causal", [q, k, v], {"is_causal": True, **blocks}),
        ("is_causal, Lq=Lk=37, blocks 8x5", [randn(g, 2, 37, d), randn(g, 2, 37, d), randn(g, 2, 37, d)],
         {"is_causal": True, "block_q": 8, "block_k": 5}),
        ("non-contiguous inputs", [noncontiguous(q), noncontiguous(k), noncontiguous(v)], blocks),
        ("float64, large logits", [q.double() * 20, k.double(), v.double()], blocks),
        ("custom scale 1/D", [q, k, v], {"scale": 1.0 / d, **blocks}),
    ]


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
    ]


def _backward_hidden(g):
    b, lq, lk, d = size(g, 1, 3), size(g, 1, 30), size(g, 1, 30), size(g, 1, 12)
    b_q, b_k = size(g, 1, 9), size(g, 1, 9)
    q, k, v = randn(g, b, lq, d), randn(g, b, lk, d), randn(g, b, lk, d)
    blocks = {"block_q": b_q, "block_k": b_k}
    q37, k37, v37 = randn(g, 37, d), randn(g, 37, d), randn(g, 37, d)
    return [
        (f"random (B={b}, Lq={lq}, Lk={lk}, D={d}), blocks {b_q}x{b_k}", _backward_inputs(g, q, k, v), blocks),
        ("is_causal", _backward_inputs(g, q, k, v, is_causal=True), {"is_causal": True, **blocks}),
        ("is_causal, Lq=Lk=37, blocks 8x5", _backward_inputs(g, q37, k37, v37, is_causal=True),
         {"is_causal": True, "block_q": 8, "block_k": 5}),
        ("float64", _backward_inputs(g, q.double(), k.double(), v.double()), blocks),
    ]


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
    Exercise("merge_softmax_states", LESSON, course_lib.merge_softmax_states, _merge_visible, _merge_hidden),
    Exercise("chunked_attention", LESSON, course_lib.chunked_attention, _chunked_visible, _chunked_hidden),
    Exercise("causal_tile_mask", LESSON, causal_tile_mask, _tiles_visible, _tiles_hidden),
    Exercise("flash_attention_forward", LESSON, flash_attention_forward, _forward_visible, _forward_hidden),
    Exercise("flash_attention_backward", LESSON, flash_attention_backward, _backward_visible, _backward_hidden),
    *TRITON_EXERCISES,
)
