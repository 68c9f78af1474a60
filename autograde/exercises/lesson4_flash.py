"""Lesson 4's graded exercises: GPU-efficient attention (solutions/lesson4_flash).

The references are course_lib's readable implementations (``course_lib.flash`` is FlashAttention-2's
Algorithms 1 and 2 as the lesson writes them), called with the options by keyword, as the students'
signatures take them (keyword-only after the tensors). The tiled exercises take small block sizes, so a few dozen queries already cross several tiles,
and sizes that are not multiples of the blocks, where a missing boundary check shows. The Triton
kernel is graded on tiny shapes: on a machine without CUDA it runs under Triton's interpreter.
"""

from __future__ import annotations

import torch

import course_lib
from course_lib.flash import causal_tile_mask, flash_attention_backward, flash_attention_forward
from autograde.exercises.base import Exercise, noncontiguous, randn, size

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


# --- triton_flash_forward ---------------------------------------------------------------------------
# Tiny shapes: under Triton's interpreter every program runs in numpy, one at a time.

def _triton_visible(g):
    q, k, v = randn(g, 1, 2, 16, 16), randn(g, 1, 2, 16, 16), randn(g, 1, 2, 16, 16)
    return [
        ("B=1, H=2, Lq=Lk=16, D=16", [q, k, v], {}),
        ("Lq=5, Lk=21 (partial tiles), D=16", [randn(g, 1, 1, 5, 16), randn(g, 1, 1, 21, 16),
                                                 randn(g, 1, 1, 21, 16)], {}),
        ("is_causal, Lq=Lk=20", [randn(g, 1, 1, 20, 16), randn(g, 1, 1, 20, 16), randn(g, 1, 1, 20, 16)],
         {"is_causal": True}),
        ("scores of magnitude 100", [q * 25, k, v], {}),
    ]


def _triton_hidden(g):
    lq, lk = size(g, 1, 24), size(g, 1, 24)
    q, k, v = randn(g, 1, 1, lq, 16), randn(g, 1, 1, lk, 16), randn(g, 1, 1, lk, 16)
    return [
        (f"random, Lq={lq}, Lk={lk}, D=16", [q, k, v], {}),
        ("is_causal", [q, k, v], {"is_causal": True}),
        ("is_causal, Lq=Lk=33 (three query tiles)", [randn(g, 1, 1, 33, 16), randn(g, 1, 1, 33, 16),
                                                      randn(g, 1, 1, 33, 16)], {"is_causal": True}),
    ]


def _triton_reference(query, key, value, *, is_causal=False, scale=None):
    return flash_attention_forward(query, key, value, is_causal=is_causal, scale=scale)


EXERCISES = (
    Exercise("merge_softmax_states", LESSON, course_lib.merge_softmax_states, _merge_visible, _merge_hidden),
    Exercise("chunked_attention", LESSON, course_lib.chunked_attention, _chunked_visible, _chunked_hidden),
    Exercise("causal_tile_mask", LESSON, causal_tile_mask, _tiles_visible, _tiles_hidden),
    Exercise("flash_attention_forward", LESSON, flash_attention_forward, _forward_visible, _forward_hidden),
    Exercise("flash_attention_backward", LESSON, flash_attention_backward, _backward_visible, _backward_hidden),
    Exercise("triton_flash_forward", LESSON, _triton_reference, _triton_visible, _triton_hidden),
)
