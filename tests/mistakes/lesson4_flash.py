"""Lesson 4's known mistakes, written as students write them (independently of the exercise definitions).

Each function below is one exercise's answer with one mistake in it, the way it shows up in real
submissions; ``MISTAKES`` pairs it with the words its visible test's failure must show. Some are
right on every small case and wrong only in what they cost: the whole score matrix built at once,
the causal tiles above the diagonal computed anyway, the gradients asked of autograd. The long
visible cases (Lq = Lk = 512, chunks of 32, 64 x 64 tiles) measure those.
"""

from __future__ import annotations

import math

import torch

from course_kit.triton_launch import (
    NO_TRITON,
    flash_forward_launcher,
    matmul_launcher,
    scaled_add_launcher,
    softmax_launcher,
)
from mistakes import KnownMistake

try:
    import triton
    import triton.language as tl
except ImportError:  # Triton ships for Linux only: the kernels are still defined, their entries left out
    triton = tl = NO_TRITON


# --- exercise 2: merge two softmax states ------------------------------------------------------------

def merge_l_not_rescaled(m_a, l_a, acc_a, m_b, l_b, acc_b):
    m = torch.maximum(m_a, m_b)
    m_safe = torch.where(torch.isinf(m), torch.zeros_like(m), m)
    alpha, beta = torch.exp(m_a - m_safe), torch.exp(m_b - m_safe)
    return m, l_a + l_b, alpha[..., None] * acc_a + beta[..., None] * acc_b


def merge_acc_not_rescaled(m_a, l_a, acc_a, m_b, l_b, acc_b):
    m = torch.maximum(m_a, m_b)
    m_safe = torch.where(torch.isinf(m), torch.zeros_like(m), m)
    alpha, beta = torch.exp(m_a - m_safe), torch.exp(m_b - m_safe)
    return m, alpha * l_a + beta * l_b, acc_a + acc_b


def merge_to_the_newer_max(m_a, l_a, acc_a, m_b, l_b, acc_b):
    scale_a = torch.exp(m_a - m_b)  # everything expressed relative to block b's max
    return m_b, l_a * scale_a + l_b, acc_a * scale_a[..., None] + acc_b


def merge_nan_for_two_empty_blocks(m_a, l_a, acc_a, m_b, l_b, acc_b):
    m = torch.maximum(m_a, m_b)
    alpha, beta = torch.exp(m_a - m), torch.exp(m_b - m)
    return m, alpha * l_a + beta * l_b, alpha.unsqueeze(-1) * acc_a + beta.unsqueeze(-1) * acc_b


# --- exercise 1: chunked attention -------------------------------------------------------------------

def _scale(query, scale):
    return 1 / math.sqrt(query.shape[-1]) if scale is None else scale


def chunked_rows_from_the_chunk_start(query, key, value, *, is_causal=False, scale=None, chunk_size=1024):
    outs = []
    for start in range(0, query.shape[-2], chunk_size):
        scores = query[..., start:start + chunk_size, :] @ key.transpose(-2, -1) * _scale(query, scale)
        if is_causal:
            rows = torch.arange(scores.shape[-2])[:, None]  # 0 at every chunk's first row
            scores = scores.masked_fill(torch.arange(key.shape[-2]) > rows, float("-inf"))
        outs.append(torch.softmax(scores, dim=-1) @ value)
    return torch.cat(outs, dim=-2)


def chunked_last_chunk_dropped(query, key, value, *, is_causal=False, scale=None, chunk_size=1024):
    n_q, n_k = query.shape[-2], key.shape[-2]
    out = torch.zeros(*query.shape[:-1], value.shape[-1], dtype=query.dtype)
    for start in range(0, n_q - chunk_size + 1, chunk_size):  # whole chunks only
        scores = query[..., start:start + chunk_size, :] @ key.transpose(-2, -1) * _scale(query, scale)
        if is_causal:
            rows = torch.arange(start, start + chunk_size)[:, None]
            scores = scores.masked_fill(torch.arange(n_k) > rows, float("-inf"))
        out[..., start:start + chunk_size, :] = torch.softmax(scores, dim=-1) @ value
    return out


def chunked_aligned_bottom_right(query, key, value, *, is_causal=False, scale=None, chunk_size=1024):
    n_q, n_k = query.shape[-2], key.shape[-2]
    outs = []
    for start in range(0, n_q, chunk_size):
        stop = min(start + chunk_size, n_q)
        scores = query[..., start:stop, :] @ key.transpose(-2, -1) * _scale(query, scale)
        if is_causal:  # the last query sees the last key, as in a KV cache
            rows = torch.arange(start, stop)[:, None] + (n_k - n_q)
            scores = scores.masked_fill(torch.arange(n_k) > rows, float("-inf"))
        outs.append(torch.softmax(scores, dim=-1) @ value)
    return torch.cat(outs, dim=-2)


def chunked_without_chunks(query, key, value, *, is_causal=False, scale=None, chunk_size=1024):
    scores = query @ key.transpose(-2, -1) * _scale(query, scale)  # every row at once
    if is_causal:
        scores = scores.masked_fill(torch.ones(scores.shape[-2:], dtype=torch.bool).triu(1), float("-inf"))
    return torch.softmax(scores, dim=-1) @ value


def chunked_in_numpy(query, key, value, *, is_causal=False, scale=None, chunk_size=1024):
    import numpy as np

    scores = query.numpy() @ key.transpose(-2, -1).numpy() * _scale(query, scale)  # every row at once, in numpy
    if is_causal:
        scores = np.where(np.triu(np.ones(scores.shape[-2:], dtype=bool), 1), -np.inf, scores)
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return torch.from_numpy(weights / weights.sum(axis=-1, keepdims=True)) @ value


def chunked_with_the_whole_causal_mask(query, key, value, *, is_causal=False, scale=None, chunk_size=1024):
    n_q, n_k = query.shape[-2], key.shape[-2]
    future = torch.ones(n_q, n_k, dtype=torch.bool).triu(1)  # built once for every chunk: Lq x Lk
    out = torch.empty(*query.shape[:-1], value.shape[-1], dtype=query.dtype)
    for start in range(0, n_q, chunk_size):
        stop = min(start + chunk_size, n_q)
        scores = query[..., start:stop, :] @ key.transpose(-2, -1) * _scale(query, scale)
        if is_causal:
            scores = scores.masked_fill(future[start:stop], float("-inf"))
        out[..., start:stop, :] = torch.softmax(scores, dim=-1) @ value
    return out


# --- exercise 3: which tiles causal attention needs --------------------------------------------------

def _ceil_div(n, block):
    return (n + block - 1) // block


def tiles_by_first_query(n_q, n_k, block_q, block_k):
    first_query = torch.arange(_ceil_div(n_q, block_q)) * block_q
    first_key = torch.arange(_ceil_div(n_k, block_k)) * block_k
    return first_key[None, :] <= first_query[:, None]


def tiles_last_tile_taken_as_full(n_q, n_k, block_q, block_k):
    last_query = (torch.arange(_ceil_div(n_q, block_q)) + 1) * block_q - 1
    first_key = torch.arange(_ceil_div(n_k, block_k)) * block_k
    return first_key[None, :] <= last_query[:, None]


def tiles_compared_strictly(n_q, n_k, block_q, block_k):
    last_query = torch.clamp((torch.arange(_ceil_div(n_q, block_q)) + 1) * block_q, max=n_q) - 1
    first_key = torch.arange(_ceil_div(n_k, block_k)) * block_k
    return first_key[None, :] < last_query[:, None]


def tiles_last_query_without_the_minus_one(n_q, n_k, block_q, block_k):
    last_query = torch.clamp((torch.arange(_ceil_div(n_q, block_q)) + 1) * block_q, max=n_q)
    first_key = torch.arange(_ceil_div(n_k, block_k)) * block_k
    return first_key[None, :] <= last_query[:, None]


def tiles_only_below_the_diagonal(n_q, n_k, block_q, block_k):
    first_query = torch.arange(_ceil_div(n_q, block_q)) * block_q
    last_key = torch.clamp((torch.arange(_ceil_div(n_k, block_k)) + 1) * block_k, max=n_k) - 1
    return last_key[None, :] <= first_query[:, None]


def tiles_counted_by_floor_division(n_q, n_k, block_q, block_k):
    needed = torch.zeros(n_q // block_q, n_k // block_k, dtype=torch.bool)
    for i in range(needed.shape[0]):
        for j in range(needed.shape[1]):
            needed[i, j] = j * block_k <= min((i + 1) * block_q, n_q) - 1
    return needed


# --- exercise 4: the tiled forward pass --------------------------------------------------------------

def forward_with(*, rescale_l=True, rescale_acc=True, keep_old_max=True, lse_with_max=True):
    """A student's tiled forward; each keyword False is one step of the online softmax gotten wrong."""
    def flash_attention_forward(query, key, value, *, is_causal=False, scale=None, block_q=16, block_k=16):
        n_q, n_k = query.shape[-2], key.shape[-2]
        outs, lses = [], []
        for q_start in range(0, n_q, block_q):
            q = query[..., q_start:q_start + block_q, :] * _scale(query, scale)
            q_rows = torch.arange(q_start, q_start + q.shape[-2])[:, None]
            m = torch.full(q.shape[:-1], float("-inf"), dtype=q.dtype)
            l = torch.zeros_like(m)
            acc = torch.zeros(*q.shape[:-1], value.shape[-1], dtype=q.dtype)
            for k_start in range(0, n_k, block_k):
                if is_causal and k_start > q_rows[-1, 0]:
                    break
                s = q @ key[..., k_start:k_start + block_k, :].transpose(-2, -1)
                if is_causal:
                    s = s.masked_fill(torch.arange(k_start, k_start + s.shape[-1]) > q_rows, float("-inf"))
                m_new = torch.maximum(m, s.amax(-1)) if keep_old_max else s.amax(-1)
                alpha = torch.exp(m - m_new)
                p = torch.exp(s - m_new[..., None])
                l = (alpha * l if rescale_l else l) + p.sum(-1)
                acc = (alpha[..., None] * acc if rescale_acc else acc) + p @ value[..., k_start:k_start + block_k, :]
                m = m_new
            outs.append(acc / l[..., None])
            lses.append(m + torch.log(l) if lse_with_max else torch.log(l))
        return torch.cat(outs, dim=-2), torch.cat(lses, dim=-1)
    return flash_attention_forward


def forward_masked_by(causal_scores, *, tile_mask=None, whole_tiles_only=False, skip_tiles=True):
    """A student's tiled forward with the causal part written by ``causal_scores(s, q_start, k_start,
    n_q, n_k)``; tiles skipped by ``tile_mask`` (a causal_tile_mask) or by the tile's last query."""
    def flash_attention_forward(query, key, value, *, is_causal=False, scale=None, block_q=16, block_k=16):
        n_q, n_k = query.shape[-2], key.shape[-2]
        last = (lambda n, block: n - block + 1) if whole_tiles_only else (lambda n, block: n)
        out = torch.zeros(*query.shape[:-1], value.shape[-1], dtype=query.dtype)
        lse = torch.zeros(query.shape[:-1], dtype=query.dtype)
        for i, q_start in enumerate(range(0, last(n_q, block_q), block_q)):
            q_stop = min(q_start + block_q, n_q)
            q = query[..., q_start:q_stop, :] * _scale(query, scale)
            m = torch.full(q.shape[:-1], float("-inf"), dtype=q.dtype)
            l = torch.zeros_like(m)
            acc = torch.zeros(*q.shape[:-1], value.shape[-1], dtype=q.dtype)
            for j, k_start in enumerate(range(0, last(n_k, block_k), block_k)):
                if is_causal and skip_tiles:
                    if tile_mask is not None and not tile_mask(n_q, n_k, block_q, block_k)[i, j]:
                        continue
                    if tile_mask is None and k_start > q_stop - 1:
                        continue
                s = q @ key[..., k_start:k_start + block_k, :].transpose(-2, -1)
                if is_causal:
                    s = causal_scores(s, q_start, k_start, n_q, n_k)
                m_new = torch.maximum(m, s.amax(-1))
                alpha, p = torch.exp(m - m_new), torch.exp(s - m_new[..., None])
                l = alpha * l + p.sum(-1)
                acc = alpha[..., None] * acc + p @ value[..., k_start:k_start + block_k, :]
                m = m_new
            out[..., q_start:q_stop, :] = acc / l[..., None]
            lse[..., q_start:q_stop] = m + torch.log(l)
        return out, lse
    return flash_attention_forward


def top_left(s, q_start, k_start, n_q, n_k):
    rows = torch.arange(q_start, q_start + s.shape[-2])[:, None]
    return s.masked_fill(torch.arange(k_start, k_start + s.shape[-1]) > rows, float("-inf"))


def bottom_right(s, q_start, k_start, n_q, n_k):
    return top_left(s, q_start + n_k - n_q, k_start, n_q, n_k)


def by_tile_positions(s, q_start, k_start, n_q, n_k):
    return top_left(s, 0, 0, n_q, n_k)  # row 0 and column 0 of every tile taken as query 0 and key 0


def forward_through_the_whole_matrix(query, key, value, *, is_causal=False, scale=None, block_q=16, block_k=16):
    scores = query @ key.transpose(-2, -1) * _scale(query, scale)  # (..., Lq, Lk)
    if is_causal:
        scores = scores.masked_fill(torch.ones(scores.shape[-2:], dtype=torch.bool).triu(1), float("-inf"))
    return torch.softmax(scores, dim=-1) @ value, torch.logsumexp(scores, dim=-1)


def forward_keys_in_tiles_queries_all_at_once(query, key, value, *, is_causal=False, scale=None, block_q=16,
                                              block_k=16):
    q = query * _scale(query, scale)
    rows = torch.arange(query.shape[-2])[:, None]
    m = torch.full(q.shape[:-1], float("-inf"), dtype=q.dtype)
    l = torch.zeros_like(m)
    acc = torch.zeros(*q.shape[:-1], value.shape[-1], dtype=q.dtype)
    for k_start in range(0, key.shape[-2], block_k):
        s = q @ key[..., k_start:k_start + block_k, :].transpose(-2, -1)  # (..., Lq, bk): a whole column of tiles
        if is_causal:
            s = s.masked_fill(torch.arange(k_start, k_start + s.shape[-1]) > rows, float("-inf"))
        m_new = torch.maximum(m, s.amax(-1))
        alpha, p = torch.exp(m - m_new), torch.exp(s - m_new[..., None])
        l = alpha * l + p.sum(-1)
        acc = alpha[..., None] * acc + p @ value[..., k_start:k_start + block_k, :]
        m = m_new
    return acc / l[..., None], m + torch.log(l)


def forward_with_the_whole_causal_mask(query, key, value, *, is_causal=False, scale=None, block_q=16, block_k=16):
    future = torch.ones(query.shape[-2], key.shape[-2], dtype=torch.bool).triu(1)  # Lq x Lk, sliced per tile

    def sliced(s, q_start, k_start, n_q, n_k):
        return s.masked_fill(future[q_start:q_start + s.shape[-2], k_start:k_start + s.shape[-1]], float("-inf"))
    return forward_masked_by(sliced)(query, key, value, is_causal=is_causal, scale=scale, block_q=block_q,
                                     block_k=block_k)


def one_tile_past_the_diagonal(n_q, n_k, block_q, block_k):
    """Every tile the diagonal reaches, and the next one: the skip test made with k_start > q_stop."""
    last_query = torch.clamp((torch.arange(_ceil_div(n_q, block_q)) + 1) * block_q, max=n_q)
    return torch.arange(_ceil_div(n_k, block_k))[None, :] * block_k <= last_query[:, None]


# --- exercise 5: the backward pass -------------------------------------------------------------------

def backward_with(*, row_term="D", grad_scale=True, p_scale=True, mask_diagonal=True, skip_tiles=True):
    """A student's backward; row_term is what dS subtracts ("D", "none", "tile": rowsum(P * dP) of the tile)."""
    def flash_attention_backward(query, key, value, out, lse, grad_out, *, is_causal=False, scale=None,
                                 block_q=16, block_k=16):
        scale = _scale(query, scale)
        n_q, n_k = query.shape[-2], key.shape[-2]
        delta = (grad_out * out).sum(-1, keepdim=True)  # (..., Lq, 1)
        dq, dk, dv = torch.zeros_like(query), torch.zeros_like(key), torch.zeros_like(value)
        for k_start in range(0, n_k, block_k):
            k_stop = min(k_start + block_k, n_k)
            k, v = key[..., k_start:k_stop, :], value[..., k_start:k_stop, :]
            for q_start in range(0, n_q, block_q):
                q_stop = min(q_start + block_q, n_q)
                if is_causal and skip_tiles and k_start > q_stop - 1:
                    continue
                q, do = query[..., q_start:q_stop, :], grad_out[..., q_start:q_stop, :]
                s = q @ k.transpose(-2, -1) * (scale if p_scale else 1.0)
                if is_causal and mask_diagonal:
                    s = top_left(s, q_start, k_start, n_q, n_k)
                p = torch.exp(s - lse[..., q_start:q_stop, None])
                dv[..., k_start:k_stop, :] += p.transpose(-2, -1) @ do
                dp = do @ v.transpose(-2, -1)
                subtract = {"D": delta[..., q_start:q_stop, :], "none": 0.0,
                            "tile": (p * dp).sum(-1, keepdim=True)}[row_term]
                ds = p * (dp - subtract) * (scale if grad_scale else 1.0)
                dq[..., q_start:q_stop, :] += ds @ k
                dk[..., k_start:k_stop, :] += ds.transpose(-2, -1) @ q
        return dq, dk, dv
    return flash_attention_backward


def _naive_attention(q, k, v, is_causal, scale):
    scores = q @ k.transpose(-2, -1) * _scale(q, scale)
    if is_causal:
        scores = scores.masked_fill(torch.ones(scores.shape[-2:], dtype=torch.bool).triu(1), float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def backward_by_autograd(query, key, value, out, lse, grad_out, *, is_causal=False, scale=None, block_q=16,
                         block_k=16):
    q, k, v = (t.detach().requires_grad_() for t in (query, key, value))
    return torch.autograd.grad(_naive_attention(q, k, v, is_causal, scale), (q, k, v), grad_out)


def backward_by_dot_backward(query, key, value, out, lse, grad_out, *, is_causal=False, scale=None, block_q=16,
                             block_k=16):
    q, k, v = (t.detach().requires_grad_() for t in (query, key, value))
    _naive_attention(q, k, v, is_causal, scale).backward(grad_out)
    return q.grad, k.grad, v.grad


def backward_by_autograd_through_the_tiles(query, key, value, out, lse, grad_out, *, is_causal=False, scale=None,
                                           block_q=16, block_k=16):
    """Autograd through the student's own tiled forward: no tensor is larger than a tile, but every tile's
    P is kept for the backward, the Lq x Lk matrix again, in pieces."""
    q, k, v = (t.detach().requires_grad_() for t in (query, key, value))
    o, _ = forward_with()(q, k, v, is_causal=is_causal, scale=scale, block_q=block_q, block_k=block_k)
    return torch.autograd.grad(o, (q, k, v), grad_out)


def backward_through_the_whole_matrix(query, key, value, out, lse, grad_out, *, is_causal=False, scale=None,
                                      block_q=16, block_k=16):
    scale = _scale(query, scale)
    s = query @ key.transpose(-2, -1) * scale  # (..., Lq, Lk), recomputed whole
    if is_causal:
        s = s.masked_fill(torch.ones(s.shape[-2:], dtype=torch.bool).triu(1), float("-inf"))
    p = torch.exp(s - lse[..., None])
    dp = grad_out @ value.transpose(-2, -1)
    ds = p * (dp - (grad_out * out).sum(-1, keepdim=True))
    return ds @ key * scale, ds.transpose(-2, -1) @ query * scale, p.transpose(-2, -1) @ grad_out


# --- the catalogue -----------------------------------------------------------------------------------

WHOLE_MATRIX_IN_TILES = "512 x 512 tensor; at most 4,096 elements are allowed here (one 64 x 64 tile"
MORE_PRODUCTS = "its matrix products took"
AUTOGRAD = "calls torch.autograd.grad (or .backward()), which this exercise does not allow"

MISTAKES = [
    # merge_softmax_states
    KnownMistake("merge_softmax_states", "l not rescaled", merge_l_not_rescaled, "l was not rescaled"),
    KnownMistake("merge_softmax_states", "acc not rescaled", merge_acc_not_rescaled, "acc was not rescaled"),
    KnownMistake("merge_softmax_states", "m is the newer block's max", merge_to_the_newer_max,
                 "the merged max is the larger of the two"),
    KnownMistake("merge_softmax_states", "NaN for two empty blocks", merge_nan_for_two_empty_blocks,
                 "exp(-inf - (-inf)) is NaN"),
    # chunked_attention
    KnownMistake("chunked_attention", "causal rows counted from the chunk's start", chunked_rows_from_the_chunk_start,
                 "counts rows from the chunk's start"),
    KnownMistake("chunked_attention", "the last, short chunk dropped", chunked_last_chunk_dropped,
                 "the last, shorter chunk was never computed"),
    KnownMistake("chunked_attention", "causal mask aligned bottom-right", chunked_aligned_bottom_right,
                 "✗ is_causal, Lq=5, Lk=8 (top-left aligned)"),
    KnownMistake("chunked_attention", "no chunks: the whole score matrix", chunked_without_chunks,
                 "512 x 512 tensor; at most 16,384 elements are allowed here (one chunk of 32 rows"),
    KnownMistake("chunked_attention", "the causal mask built for the whole matrix", chunked_with_the_whole_causal_mask,
                 "allocated a 512 x 512 tensor"),
    KnownMistake("chunked_attention", "no chunks, the whole score matrix in numpy", chunked_in_numpy,
                 "bytes in numpy arrays or Python objects at once"),
    # causal_tile_mask
    KnownMistake("causal_tile_mask", "compared with the tile's first query", tiles_by_first_query,
                 "compared with its first query"),
    KnownMistake("causal_tile_mask", "the last query tile taken as full", tiles_last_tile_taken_as_full,
                 "the last query tile was taken as full"),
    KnownMistake("causal_tile_mask", "first key < last query", tiles_compared_strictly, "the comparison is strict"),
    KnownMistake("causal_tile_mask", "last query off by one", tiles_last_query_without_the_minus_one,
                 "the last query is off by one"),
    KnownMistake("causal_tile_mask", "only the tiles below the diagonal", tiles_only_below_the_diagonal,
                 "the tiles the diagonal crosses are needed too"),
    KnownMistake("causal_tile_mask", "n // block tiles", tiles_counted_by_floor_division, "ceil(n / block)"),
    # flash_attention_forward
    KnownMistake("flash_attention_forward", "l not rescaled", forward_with(rescale_l=False), "l was not rescaled"),
    KnownMistake("flash_attention_forward", "acc not rescaled", forward_with(rescale_acc=False),
                 "the accumulator was not rescaled"),
    KnownMistake("flash_attention_forward", "the max taken without the old max", forward_with(keep_old_max=False),
                 "the running max forgot the old max"),
    KnownMistake("flash_attention_forward", "lse without the max", forward_with(lse_with_max=False),
                 "the row's log-sum-exp is m + log(l)"),
    KnownMistake("flash_attention_forward", "the last partial tiles dropped", forward_masked_by(top_left,
                 whole_tiles_only=True), "✗ Lq=7, Lk=10, blocks of 4 and 3 (partial tiles)"),
    KnownMistake("flash_attention_forward", "causal mask aligned bottom-right", forward_masked_by(bottom_right),
                 "✗ is_causal, Lq=5, Lk=9 (top-left aligned)"),
    KnownMistake("flash_attention_forward", "causal mask by positions inside the tile",
                 forward_masked_by(by_tile_positions), "compares positions inside the tile"),
    KnownMistake("flash_attention_forward", "tiles skipped by their first query",
                 forward_masked_by(top_left, tile_mask=tiles_by_first_query), "skipped key tiles it sees"),
    KnownMistake("flash_attention_forward", "no tiling: the whole matrix and torch.logsumexp",
                 forward_through_the_whole_matrix, WHOLE_MATRIX_IN_TILES),
    KnownMistake("flash_attention_forward", "keys in tiles, all queries at once",
                 forward_keys_in_tiles_queries_all_at_once, "allocated a 1 x 512 x 64 tensor"),
    KnownMistake("flash_attention_forward", "the causal mask built for the whole matrix",
                 forward_with_the_whole_causal_mask, "allocated a 512 x 512 tensor"),
    KnownMistake("flash_attention_forward", "every tile computed, the causal ones masked",
                 forward_masked_by(top_left, skip_tiles=False), MORE_PRODUCTS),
    KnownMistake("flash_attention_forward", "one tile past the diagonal computed",
                 forward_masked_by(top_left, tile_mask=one_tile_past_the_diagonal), MORE_PRODUCTS),
    # flash_attention_backward
    KnownMistake("flash_attention_backward", "the D term missing", backward_with(row_term="none"),
                 "the D term is missing"),
    KnownMistake("flash_attention_backward", "D summed over one tile", backward_with(row_term="tile"),
                 "D was summed over one tile"),
    KnownMistake("flash_attention_backward", "dS not scaled", backward_with(grad_scale=False), "dS was not scaled"),
    KnownMistake("flash_attention_backward", "P recomputed without the scale", backward_with(p_scale=False),
                 "P was recomputed without the scale"),
    KnownMistake("flash_attention_backward", "the diagonal tiles not masked", backward_with(mask_diagonal=False),
                 "the tiles that cross the diagonal were not masked"),
    KnownMistake("flash_attention_backward", "torch.autograd.grad through naive attention", backward_by_autograd,
                 AUTOGRAD),
    KnownMistake("flash_attention_backward", ".backward() through naive attention", backward_by_dot_backward,
                 AUTOGRAD),
    KnownMistake("flash_attention_backward", "autograd through the tiled forward",
                 backward_by_autograd_through_the_tiles, AUTOGRAD),
    KnownMistake("flash_attention_backward", "no tiling: P recomputed whole", backward_through_the_whole_matrix,
                 WHOLE_MATRIX_IN_TILES),
    KnownMistake("flash_attention_backward", "every tile computed, the causal ones masked",
                 backward_with(skip_tiles=False), MORE_PRODUCTS),
]


# === Triton, exercises 6 to 9 ===========================================================================
# Kernels as students write them; each answer is the kit's launcher running one, as the lesson's test
# cell builds it (`softmax_launcher(softmax_kernel)`). The launcher itself names a store past the end
# and an element no program wrote; the exercises' Mistake hints name the rest.

# --- exercise 6: scaled_add_kernel ---------------------------------------------------------------------

@triton.jit
def scaled_add_without_a_mask(X, Y, OUT, alpha, n, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(OUT + offsets, tl.load(X + offsets) * alpha + tl.load(Y + offsets))


@triton.jit
def scaled_add_without_the_program_id(X, Y, OUT, alpha, n, BLOCK: tl.constexpr):
    offsets = tl.arange(0, BLOCK)  # every program takes the first block
    inside = offsets < n
    tl.store(OUT + offsets, tl.load(X + offsets, mask=inside) * alpha + tl.load(Y + offsets, mask=inside),
             mask=inside)


# --- exercise 7: softmax_kernel ------------------------------------------------------------------------

@triton.jit
def softmax_without_the_max(X, OUT, stride_xm, stride_xn, stride_om, stride_on, n_cols, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    x = tl.load(X + row * stride_xm + cols * stride_xn, mask=cols < n_cols, other=float("-inf"))
    e = tl.exp(x)
    tl.store(OUT + row * stride_om + cols * stride_on, e / tl.sum(e, 0), mask=cols < n_cols)


@triton.jit
def softmax_ignoring_the_strides(X, OUT, stride_xm, stride_xn, stride_om, stride_on, n_cols, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    x = tl.load(X + row * n_cols + cols, mask=cols < n_cols, other=float("-inf"))  # as if x were contiguous
    e = tl.exp(x - tl.max(x, 0))
    tl.store(OUT + row * n_cols + cols, e / tl.sum(e, 0), mask=cols < n_cols)


@triton.jit
def softmax_padding_loaded_as_zero(X, OUT, stride_xm, stride_xn, stride_om, stride_on, n_cols,
                                   BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    x = tl.load(X + row * stride_xm + cols * stride_xn, mask=cols < n_cols)  # no other=: the lanes past the end are 0
    e = tl.exp(x - tl.max(x, 0))
    tl.store(OUT + row * stride_om + cols * stride_on, e / tl.sum(e, 0), mask=cols < n_cols)


@triton.jit
def softmax_row_from_the_wrong_axis(X, OUT, stride_xm, stride_xn, stride_om, stride_on, n_cols,
                                    BLOCK: tl.constexpr):
    row = tl.program_id(1)  # the grid has one axis: this is 0 in every program
    cols = tl.arange(0, BLOCK)
    x = tl.load(X + row * stride_xm + cols * stride_xn, mask=cols < n_cols, other=float("-inf"))
    e = tl.exp(x - tl.max(x, 0))
    tl.store(OUT + row * stride_om + cols * stride_on, e / tl.sum(e, 0), mask=cols < n_cols)


# --- exercise 8: matmul_kernel -------------------------------------------------------------------------

@triton.jit
def matmul_operands_swapped(A, B, C, M, N, K, stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
                            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for start in range(0, K, BLOCK_K):
        ks = start + tl.arange(0, BLOCK_K)
        a = tl.load(A + rows[:, None] * stride_am + ks[None, :] * stride_ak,
                    mask=(rows[:, None] < M) & (ks[None, :] < K), other=0.0)
        b = tl.load(B + ks[:, None] * stride_bk + cols[None, :] * stride_bn,
                    mask=(ks[:, None] < K) & (cols[None, :] < N), other=0.0)
        acc += tl.dot(b, a, input_precision="ieee")
    tl.store(C + rows[:, None] * stride_cm + cols[None, :] * stride_cn, acc,
             mask=(rows[:, None] < M) & (cols[None, :] < N))


@triton.jit
def matmul_unmasked_along_k(A, B, C, M, N, K, stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
                            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for start in range(0, K, BLOCK_K):
        ks = start + tl.arange(0, BLOCK_K)
        a = tl.load(A + rows[:, None] * stride_am + ks[None, :] * stride_ak, mask=rows[:, None] < M, other=0.0)
        b = tl.load(B + ks[:, None] * stride_bk + cols[None, :] * stride_bn, mask=cols[None, :] < N, other=0.0)
        acc += tl.dot(a, b, input_precision="ieee")
    tl.store(C + rows[:, None] * stride_cm + cols[None, :] * stride_cn, acc,
             mask=(rows[:, None] < M) & (cols[None, :] < N))


@triton.jit
def matmul_program_ids_swapped(A, B, C, M, N, K, stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
                               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    rows = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)  # axis 1 numbers the column tiles
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for start in range(0, K, BLOCK_K):
        ks = start + tl.arange(0, BLOCK_K)
        a = tl.load(A + rows[:, None] * stride_am + ks[None, :] * stride_ak,
                    mask=(rows[:, None] < M) & (ks[None, :] < K), other=0.0)
        b = tl.load(B + ks[:, None] * stride_bk + cols[None, :] * stride_bn,
                    mask=(ks[:, None] < K) & (cols[None, :] < N), other=0.0)
        acc += tl.dot(a, b, input_precision="ieee")
    tl.store(C + rows[:, None] * stride_cm + cols[None, :] * stride_cn, acc,
             mask=(rows[:, None] < M) & (cols[None, :] < N))


@triton.jit
def matmul_ignoring_the_strides(A, B, C, M, N, K, stride_am, stride_ak, stride_bk, stride_bn, stride_cm,
                                stride_cn, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for start in range(0, K, BLOCK_K):
        ks = start + tl.arange(0, BLOCK_K)
        a = tl.load(A + rows[:, None] * K + ks[None, :], mask=(rows[:, None] < M) & (ks[None, :] < K), other=0.0)
        b = tl.load(B + ks[:, None] * N + cols[None, :], mask=(ks[:, None] < K) & (cols[None, :] < N), other=0.0)
        acc += tl.dot(a, b, input_precision="ieee")
    tl.store(C + rows[:, None] * N + cols[None, :], acc, mask=(rows[:, None] < M) & (cols[None, :] < N))


# --- exercise 9: flash_forward_kernel ------------------------------------------------------------------
# One body with a switch per mistake (the lines a student gets wrong), and one kernel per mistake with
# the launcher's signature; the rest of each is the right kernel, as a student's would be.

@triton.jit
def flash_forward_body(
    Q, K, V, O, LSE, stride_qb, stride_qm, stride_qd, stride_kb, stride_kn, stride_kd,
    stride_vb, stride_vn, stride_vd, stride_ob, stride_om, stride_od, n_q, n_k, d, d_v, scale,
    IS_CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_DV: tl.constexpr, SWAP_PROGRAM_IDS: tl.constexpr, NO_MAX: tl.constexpr, NO_KEY_MASK: tl.constexpr,
):
    if SWAP_PROGRAM_IDS:
        start_m, bh = tl.program_id(1) * BLOCK_M, tl.program_id(0)
    else:
        start_m, bh = tl.program_id(0) * BLOCK_M, tl.program_id(1)
    rows = start_m + tl.arange(0, BLOCK_M)
    cols_d, cols_dv = tl.arange(0, BLOCK_D), tl.arange(0, BLOCK_DV)
    q = tl.load(Q + bh * stride_qb + rows[:, None] * stride_qm + cols_d[None, :] * stride_qd,
                mask=(rows[:, None] < n_q) & (cols_d[None, :] < d), other=0.0) * scale
    m = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_DV), dtype=tl.float32)
    k_end = n_k
    if IS_CAUSAL:
        k_end = tl.minimum(n_k, start_m + BLOCK_M)
    for start_n in range(0, k_end, BLOCK_N):
        keys = start_n + tl.arange(0, BLOCK_N)
        k_t = tl.load(K + bh * stride_kb + keys[None, :] * stride_kn + cols_d[:, None] * stride_kd,
                      mask=(keys[None, :] < n_k) & (cols_d[:, None] < d), other=0.0)
        s = tl.dot(q, k_t, input_precision="ieee")
        visible = keys[None, :] < n_k
        if NO_KEY_MASK:
            visible = keys[None, :] >= 0  # every lane, the padding past n_k included
        if IS_CAUSAL:
            visible = visible & (keys[None, :] <= rows[:, None])
        s = tl.where(visible, s, float("-inf"))
        if NO_MAX:
            m_new = tl.zeros((BLOCK_M,), dtype=tl.float32)
        else:
            m_new = tl.maximum(m, tl.max(s, 1))
        alpha = tl.exp(m - m_new)
        p = tl.exp(s - m_new[:, None])
        l = l * alpha + tl.sum(p, 1)
        v = tl.load(V + bh * stride_vb + keys[:, None] * stride_vn + cols_dv[None, :] * stride_vd,
                    mask=(keys[:, None] < n_k) & (cols_dv[None, :] < d_v), other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")
        m = m_new
    acc = acc / l[:, None]
    tl.store(O + bh * stride_ob + rows[:, None] * stride_om + cols_dv[None, :] * stride_od,
             acc.to(O.dtype.element_ty), mask=(rows[:, None] < n_q) & (cols_dv[None, :] < d_v))
    tl.store(LSE + bh * n_q + rows, m + tl.log(l), mask=rows < n_q)


@triton.jit
def flash_program_ids_swapped(Q, K, V, O, LSE, stride_qb, stride_qm, stride_qd, stride_kb, stride_kn, stride_kd,
                              stride_vb, stride_vn, stride_vd, stride_ob, stride_om, stride_od, n_q, n_k, d, d_v,
                              scale, IS_CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                              BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr):
    flash_forward_body(Q, K, V, O, LSE, stride_qb, stride_qm, stride_qd, stride_kb, stride_kn, stride_kd, stride_vb,
                       stride_vn, stride_vd, stride_ob, stride_om, stride_od, n_q, n_k, d, d_v, scale, IS_CAUSAL,
                       BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_DV, True, False, False)


@triton.jit
def flash_without_the_running_max(Q, K, V, O, LSE, stride_qb, stride_qm, stride_qd, stride_kb, stride_kn,
                                  stride_kd, stride_vb, stride_vn, stride_vd, stride_ob, stride_om, stride_od, n_q,
                                  n_k, d, d_v, scale, IS_CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr,
                                  BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr):
    flash_forward_body(Q, K, V, O, LSE, stride_qb, stride_qm, stride_qd, stride_kb, stride_kn, stride_kd, stride_vb,
                       stride_vn, stride_vd, stride_ob, stride_om, stride_od, n_q, n_k, d, d_v, scale, IS_CAUSAL,
                       BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_DV, False, True, False)


@triton.jit
def flash_without_the_key_mask(Q, K, V, O, LSE, stride_qb, stride_qm, stride_qd, stride_kb, stride_kn, stride_kd,
                               stride_vb, stride_vn, stride_vd, stride_ob, stride_om, stride_od, n_q, n_k, d, d_v,
                               scale, IS_CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                               BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr):
    flash_forward_body(Q, K, V, O, LSE, stride_qb, stride_qm, stride_qd, stride_kb, stride_kn, stride_kd, stride_vb,
                       stride_vn, stride_vd, stride_ob, stride_om, stride_od, n_q, n_k, d, d_v, scale, IS_CAUSAL,
                       BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_DV, False, False, True)


TRITON_MISTAKES = [
    KnownMistake("triton_scaled_add", "no mask on the last block", scaled_add_launcher(scaled_add_without_a_mask),
                 "a store needs a mask"),
    KnownMistake("triton_scaled_add", "program id not used", scaled_add_launcher(scaled_add_without_the_program_id),
                 "unwritten"),
    KnownMistake("triton_softmax", "row max not subtracted", softmax_launcher(softmax_without_the_max),
                 "subtract the row's maximum"),
    KnownMistake("triton_softmax", "strides ignored", softmax_launcher(softmax_ignoring_the_strides),
                 "read through its strides"),
    KnownMistake("triton_softmax", "padding lanes loaded as 0", softmax_launcher(softmax_padding_loaded_as_zero),
                 'other=float("-inf")'),
    KnownMistake("triton_softmax", "program id of the wrong axis", softmax_launcher(softmax_row_from_the_wrong_axis),
                 "unwritten"),
    KnownMistake("triton_matmul", "tl.dot operands swapped", matmul_launcher(matmul_operands_swapped),
                 "operands swapped"),
    KnownMistake("triton_matmul", "no mask along K", matmul_launcher(matmul_unmasked_along_k),
                 "Mask them with ks < K"),
    KnownMistake("triton_matmul", "program ids swapped", matmul_launcher(matmul_program_ids_swapped), "unwritten"),
    KnownMistake("triton_matmul", "strides ignored", matmul_launcher(matmul_ignoring_the_strides),
                 "read through their strides"),
    KnownMistake("triton_flash_forward", "program ids swapped", flash_forward_launcher(flash_program_ids_swapped),
                 "unwritten"),
    KnownMistake("triton_flash_forward", "running max not subtracted",
                 flash_forward_launcher(flash_without_the_running_max), "subtract the maximum"),
    KnownMistake("triton_flash_forward", "no mask on the last key tile",
                 flash_forward_launcher(flash_without_the_key_mask), "padding lanes of the last key tile"),
]
if triton is not NO_TRITON:  # without Triton no kernel runs: nothing to catalogue
    MISTAKES += TRITON_MISTAKES
# === end of Triton ======================================================================================
