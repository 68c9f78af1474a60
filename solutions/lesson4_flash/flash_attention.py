# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Lesson 4 · GPU-efficient attention: from the N × N matrix to FlashAttention
#
# Attention as you wrote it in Lesson 1 builds the whole matrix of scores $QK^\top$, one entry
# per (query, key) pair: $N^2$ numbers for a sequence of $N$ tokens, per head. At $N = 16\,384$
# and 8 heads that is 8.6 GB in float32, for one layer, before the softmax writes a second one.
# FlashAttention (Dao et al., 2022; FlashAttention-2, Dao, 2023) computes exactly the same
# output without ever storing that matrix, and runs faster for it. In this lesson you derive it
# and build it:
#
# 1. why attention is limited by memory traffic, not arithmetic (the roofline);
# 2. the memory blow-up of naive attention, measured;
# 3. chunking the queries (**exercise 1**);
# 4. the online softmax, derived step by step (**exercise 2**);
# 5. the tiled forward pass, with the causal tile skip (**exercises 3 and 4**);
# 6. the backward pass by recomputation (**exercise 5**);
# 7. Triton kernels, from a vector operation to FlashAttention's forward pass (**exercises 6 to 9**),
#    checked here on the CPU by Triton's interpreter;
# 8. which kernel `F.scaled_dot_product_attention` picks, and why;
# 9. a benchmark of everything.
#
# **How the exercises work.** As before: replace `raise NotImplementedError()` with your code;
# the cell below each exercise tests it and says precisely what is wrong. Hidden tests compare
# your functions with a reference on fresh random inputs. Build from tensor operations (`@`,
# `torch.exp`, `.amax`, `.sum`, `torch.softmax` where a whole row is at hand):
# calling `F.scaled_dot_product_attention` inside an exercise would skip the lesson, and no
# exercise allows it or `nn.MultiheadAttention`. This lesson is about memory, so the tests also
# check what your code *allocates* and *multiplies*, not only what it returns: each exercise
# says its limits, and long visible cases (512 queries and keys) measure them, the largest tensor
# any operation creates and the size of every matrix product. Nothing is timed.

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false, "task": false}
import math
import os

import torch

if not torch.cuda.is_available():
    # No GPU: Triton kernels run on CPU tensors in its interpreter. Must be set before importing triton.
    os.environ["TRITON_INTERPRET"] = "1"

import matplotlib.pyplot as plt
import torch.nn.functional as F

from course_kit.checks import check_exercise
from course_kit.diagrams import plot_flash_tiles, plot_online_softmax_state
from course_kit.measure import peak_memory_bytes, sdpa_kernel_name, time_call
from course_kit.triton_launch import NO_TRITON, flash_forward_launcher, scaled_add_launcher

try:
    import triton
    import triton.language as tl
except ImportError:  # Triton ships for Linux only: exercises 6 to 9 then say so when they run
    triton = tl = NO_TRITON  # the kernels can still be defined; launching one says why it cannot run

torch.manual_seed(0)  # the same random numbers, and so the same pictures, on every run
torch.set_printoptions(precision=4, sci_mode=False)
MiB = 2**20

# %% [markdown]
# ## 1. Counting bytes, not FLOPs: the roofline
#
# A processor does two things: arithmetic, and moving data between its memory and its compute
# units. The figures here are an NVIDIA H100 SXM5's (NVIDIA H100 datasheet): about
# $989 \times 10^{12}$ dense bfloat16 FLOP/s on its tensor cores, but only about
# $3.35 \times 10^{12}$ bytes/s from its HBM3 memory. The *roofline model* (Williams, Waterman and
# Patterson, 2009) turns this into one number per computation, its **arithmetic intensity**
# $I$ = FLOPs done per byte moved. The time is bounded below by both limits,
#
# $$ t \;\ge\; \max\!\Big(\frac{\text{FLOPs}}{\text{peak FLOP/s}},\; \frac{\text{bytes}}{\text{bandwidth}}\Big), $$
#
# so a computation with $I$ below the *ridge point*, peak FLOP/s over bandwidth,
# $989 / 3.35 \approx 295$ FLOP/byte on this GPU, waits on memory, however fast the arithmetic.
#
# Count naive attention for one head with $N$ queries and keys of size $d$, in 2-byte bfloat16:
#
# | step | FLOPs | bytes read + written | intensity |
# | --- | --- | --- | --- |
# | $S = QK^\top$ | $2N^2d$ | $2Nd \cdot 2 + N^2 \cdot 2$ | $\approx d$ |
# | $P = \operatorname{softmax}(S)$ | $\approx 5N^2$ | $N^2 \cdot 2 + N^2 \cdot 2$ | $\approx 1.25$ |
# | $O = PV$ | $2N^2d$ | $N^2 \cdot 2 + 2Nd \cdot 2$ | $\approx d$ |
#
# With $d = 64$, every step is below the ridge, the softmax far below: naive attention spends its
# time writing $S$ and $P$ to memory and reading them back. FlashAttention keeps $S$ and $P$ in
# the chip's fast on-chip memory (SRAM, up to 228 KB per streaming multiprocessor on an H100) one
# tile at a time, so neither ever reaches HBM. What is left is reading $Q, K, V$ and writing $O$,
# but not once each: a program holding a tile of $B_r$ queries streams *all* of $K$ and $V$ past
# it, so $K$ and $V$ are read once per query tile, $N / B_r$ times. Dao et al. (2022, Theorem 2)
# count $\Theta(N^2 d^2 / M)$ HBM accesses for an SRAM of $M$ elements, against
# $\Theta(Nd + N^2)$ for naive attention: far fewer, not $4Nd$. With $B_r = 128$ at $N = 4096$
# that is $2Nd\,(1 + N/B_r)$ elements, an intensity of about 127 FLOP/byte: *below* the ridge.
# FlashAttention is compute-bound on an H100 only because of a cache the roofline above leaves
# out: one head's $K$ and $V$ (1 MiB here) fit many times over in the H100's 50 MB L2 cache, so
# most re-reads never reach HBM. If the L2 absorbed them all, each byte would cross from HBM once
# (intensity about 2100). Where a real kernel sits between the two points depends on that
# cache, which this course has not measured.

# %%
peak_flops, bandwidth = 989e12, 3.35e12  # H100 SXM5: bf16 dense tensor cores; HBM3 bytes/s
ridge = peak_flops / bandwidth  # FLOP/byte where the two limits meet
n, d, item, block_rows = 4096, 64, 2, 128  # one head, bfloat16, FlashAttention-2's 128-row query tiles
flops = 4 * n * n * d + 5 * n * n  # two matrix products and the softmax: the same for every method
traffic = {  # bytes between HBM and the chip
    "naive attention": item * (4 * n * d + 4 * n * n),  # Q, K, V, O once; S and P written and read back
    "FlashAttention, K and V re-read from HBM": item * (2 * n * d + 2 * n * d * n // block_rows),
    "FlashAttention, every byte once (L2 absorbs re-reads)": item * 4 * n * d,
}
print(f"ridge point: {peak_flops:.3g} / {bandwidth:.3g} = {ridge:.0f} FLOP/byte")
for name, nbytes in traffic.items():
    memory_time, compute_time = nbytes / bandwidth, flops / peak_flops
    print(f"{name:54}: {nbytes / MiB:6.1f} MiB, intensity {flops / nbytes:5.0f} FLOP/byte, "
          f"time >= {max(memory_time, compute_time) * 1e6:5.1f} µs "
          f"({'memory' if memory_time > compute_time else 'compute'}-bound)")

intensities = torch.logspace(-1, 4, 200)
fig, ax = plt.subplots(figsize=(6.5, 3.8), layout="constrained")
ax.loglog(intensities, torch.minimum(torch.full_like(intensities, peak_flops), intensities * bandwidth) / 1e12,
          "k-", label="roofline: min(peak, I × bandwidth)")
for (name, nbytes), marker in zip(traffic.items(), "osD"):
    i = flops / nbytes
    ax.loglog(i, min(peak_flops, i * bandwidth) / 1e12, marker, ms=8, label=f"{name}, I = {i:.0f}")
ax.loglog(5 / 4, 5 / 4 * bandwidth / 1e12, "^", ms=8, label="softmax alone, I = 1.25")
ax.axvline(ridge, color="gray", linestyle=":", linewidth=1)
ax.set(xlabel="arithmetic intensity I (FLOP/byte)", ylabel="attainable TFLOP/s",
       title=f"H100 SXM5 roofline (ridge {ridge:.0f}), attention with N={n}, d={d}")
ax.legend(fontsize=7)
plt.show()

# %% [markdown]
# ## 2. Naive attention's memory, measured
#
# On this machine the problem shows up as memory first. Here is attention written the direct way,
# with 8 heads of size 64. `peak_memory_bytes(fn, ...)` (from the course kit) runs the call and
# reports the peak memory it took beyond what was already held. The prediction: the scores $S$
# and the probabilities $P$, $2 \times 8 \times N^2$ float32 numbers of 4 bytes, which grows
# fourfold each time $N$ doubles.

# %%
def naive_attention(q, k, v, is_causal=False):
    scores = (q / math.sqrt(q.shape[-1])) @ k.transpose(-2, -1)  # (B, H, N, N): the whole matrix
    future = torch.ones(scores.shape[-2:], dtype=torch.bool).triu(1)  # key j > query i
    scores = scores.masked_fill(future, float("-inf")) if is_causal else scores
    return torch.softmax(scores, dim=-1) @ v


heads, head_dim = 8, 64
sizes = [256, 512, 1024, 2048]
qkv = {n: [torch.randn(1, heads, n, head_dim) for _ in range(3)] for n in sizes}
peak_memory_bytes(naive_attention, *qkv[sizes[0]])  # a first call sets up the libraries
naive_peak = [peak_memory_bytes(naive_attention, *qkv[n]) for n in sizes]
for n, peak in zip(sizes, naive_peak):
    print(f"N = {n:5}: peak {peak / MiB:7.1f} MiB, predicted S and P: {2 * heads * n * n * 4 / MiB:7.1f} MiB")

# %% [markdown]
# The measurement sits on the prediction. Extrapolated, $N = 16\,384$ needs 16 GiB and
# $N = 65\,536$ (a long document) 256 GiB, for one layer of one sequence: more than any GPU holds.
#
# ## 3. Chunking the queries
#
# The first fix needs no new mathematics. Each query's softmax involves only its own row of
# scores, so nothing forces us to compute all rows at once: take the queries in chunks of $c$
# rows, and for each chunk compute $\operatorname{softmax}(Q_c K^\top / \sqrt d)\,V$ as usual.
# Only one chunk's scores, $c \times N$ per head, exist at a time. Rabe and Staats (2021,
# "Self-attention does not need $O(n^2)$ memory") made this point, and went further by chunking
# the keys too, which is where we are heading.
#
# ### Exercise 1: chunked attention (1 point)
#
# Write `chunked_attention`: the output of scaled dot-product attention, computed `chunk_size`
# queries at a time, each chunk written into its rows of the output. The options after the three
# tensors are keyword-only (the `*` in the signature), as in every exercise of this lesson: a
# call like `chunked_attention(q, k, v, mask)` then fails at once instead of reading the mask as
# `is_causal`. With `is_causal`, query
# $i$ sees keys $j \le i$ (top-left aligned, as in `F.scaled_dot_product_attention`); careful,
# row $r$ of a chunk starting at `start` is query `start + r`.
#
# **The rules.** Only one chunk's scores may exist at a time: no tensor of `Lq x Lk`, not even
# the causal mask (build the chunk's rows of it from `torch.arange`). The test runs `Lq = Lk = 512`
# with chunks of 32 and fails any tensor larger than one chunk of scores, 32 x 512 = 16,384
# elements. Work in torch: the test also measures what numpy arrays and Python lists hold during
# the call, and a score matrix built there fails as well. `torch.softmax` is fine, since a chunk
# holds whole rows; `F.scaled_dot_product_attention` and `nn.MultiheadAttention` are not allowed.

# %% nbgrader={"grade": false, "grade_id": "chunked_attention", "locked": false, "schema_version": 3, "solution": true, "task": false}
def chunked_attention(query, key, value, *, is_causal=False, scale=None, chunk_size=1024):
    """softmax(Q K^T * scale) V, computed chunk_size queries at a time.

    Args:
        query: float tensor (..., Lq, D).
        key: float tensor (..., Lk, D).
        value: float tensor (..., Lk, Dv).
        is_causal: if True, query i attends only keys j <= i.
        scale: factor applied to Q K^T; None means 1 / sqrt(D).
        chunk_size: how many queries to process at once (the last chunk may be shorter).

    Returns:
        Float tensor (..., Lq, Dv), equal to scaled dot-product attention of the inputs.
    """
    ### BEGIN SOLUTION
    scale = 1 / math.sqrt(query.shape[-1]) if scale is None else scale
    n_q, n_k = query.shape[-2], key.shape[-2]
    out = query.new_empty(*query.shape[:-1], value.shape[-1])  # (..., Lq, Dv)
    for start in range(0, n_q, chunk_size):
        stop = min(start + chunk_size, n_q)
        scores = query[..., start:stop, :] @ key.transpose(-2, -1) * scale  # (..., c, Lk)
        if is_causal:
            rows = torch.arange(start, stop)[:, None]  # the chunk's query positions
            scores = scores.masked_fill(torch.arange(n_k)[None, :] > rows, float("-inf"))
        out[..., start:stop, :] = torch.softmax(scores, dim=-1) @ value
    return out
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "chunked_attention_tests", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
### BEGIN HIDDEN TESTS
from course_kit.answers import record_answers
record_answers("chunked_attention", chunked_attention)
### END HIDDEN TESTS
check_exercise("chunked_attention", chunked_attention)

# %% [markdown]
# The memory now grows like $c \cdot N$ instead of $N^2$: linearly in $N$ for a fixed chunk.

# %%
chunked_peak = [peak_memory_bytes(chunked_attention, *qkv[n], chunk_size=128) for n in sizes]
fig, ax = plt.subplots(figsize=(6, 3.5), layout="constrained")
ax.loglog(sizes, [p / MiB for p in naive_peak], "o-", label="naive: S and P in full")
ax.loglog(sizes, [2 * heads * n * n * 4 / MiB for n in sizes], "k:", label=r"$2 \cdot 8 N^2 \cdot 4$ bytes")
ax.loglog(sizes, [p / MiB for p in chunked_peak], "s-", label="chunks of 128 queries")
ax.set(xlabel="sequence length N", ylabel="peak memory (MiB)", title="Memory of one attention call, 8 heads, d=64")
ax.set_xscale("log", base=2)
ax.legend()
plt.show()

# %% [markdown]
# ## 4. The online softmax
#
# Chunking queries is not enough on a GPU: a chunk's row of $N$ scores still has to live
# somewhere, and for long sequences it does not fit in on-chip memory. We must also split the
# **keys**. But the softmax of a row needs the row's maximum (for stability, Lesson 1) and the
# sum of its exponentials before any weight is known. Can we process the keys a block at a time
# and still get the exact result? Yes (Milakov and Gimelshein, 2018).
#
# Fix one query with scores $s_1, \dots, s_N$ against the keys, and values $v_j$. For a block $B$
# of keys define its **state**
#
# $$ m_B = \max_{j \in B} s_j, \qquad \ell_B = \sum_{j \in B} e^{s_j - m_B}, \qquad
# \mathbf a_B = \sum_{j \in B} e^{s_j - m_B}\, \mathbf v_j . $$
#
# The attention output over the block alone would be $\mathbf a_B / \ell_B$. Now take two
# disjoint blocks $A$ and $B$, and let $m = \max(m_A, m_B)$. Since
# $e^{s_j - m} = e^{s_j - m_A} e^{m_A - m}$,
#
# $$ \ell_{A \cup B} = \sum_{j \in A \cup B} e^{s_j - m} = e^{m_A - m}\,\ell_A + e^{m_B - m}\,\ell_B,
# \qquad
# \mathbf a_{A \cup B} = e^{m_A - m}\,\mathbf a_A + e^{m_B - m}\,\mathbf a_B . $$
#
# Each factor $e^{m_X - m} \le 1$, so nothing overflows, and the merged state is exactly the state
# of the union. Merging the blocks one after another, the output is $\mathbf a / \ell$ at the end,
# and the row's **log-sum-exp** $\log \sum_j e^{s_j} = m + \log \ell$ comes for free.
#
# An empty block has $m = -\infty$, $\ell = 0$, $\mathbf a = 0$: it must leave the other state
# unchanged. When both are empty, $m = -\infty$ and $e^{m_A - m} = e^{-\infty + \infty}$ is NaN;
# treat its factor as 0.
#
# ### Exercise 2: merge two softmax states (1 point)
#
# Implement the merge for a whole batch of rows at once: `m` and `l` have shape `(..., Lq)`,
# one entry per query; `acc` has shape `(..., Lq, Dv)`. (As in every exercise,
# `F.scaled_dot_product_attention` and `nn.MultiheadAttention` are not allowed.)

# %% nbgrader={"grade": false, "grade_id": "merge_softmax_states", "locked": false, "schema_version": 3, "solution": true, "task": false}
def merge_softmax_states(m_a, l_a, acc_a, m_b, l_b, acc_b):
    """Merge the states (m, l, acc) of two disjoint blocks of keys into the state of both.

    Args:
        m_a, m_b: float tensors (..., Lq), each row's max score in block a and b (-inf: empty block).
        l_a, l_b: float tensors (..., Lq), sum over the block of exp(s - m).
        acc_a, acc_b: float tensors (..., Lq, Dv), sum over the block of exp(s - m) * v.

    Returns:
        (m, l, acc): the state of the union, shapes as the inputs. Two empty blocks give an
        empty block (m = -inf, l = 0, acc = 0), with no NaN.
    """
    ### BEGIN SOLUTION
    m = torch.maximum(m_a, m_b)
    m_finite = torch.where(torch.isneginf(m), torch.zeros_like(m), m)  # both empty: factors exp(-inf) = 0
    alpha, beta = torch.exp(m_a - m_finite), torch.exp(m_b - m_finite)  # each <= 1
    l = alpha * l_a + beta * l_b
    acc = alpha[..., None] * acc_a + beta[..., None] * acc_b  # (..., Lq, Dv)
    return m, l, acc
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "merge_softmax_states_tests", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
### BEGIN HIDDEN TESTS
from course_kit.answers import record_answers
record_answers("merge_softmax_states", merge_softmax_states)
### END HIDDEN TESTS
check_exercise("merge_softmax_states", merge_softmax_states)

# %% [markdown]
# Streaming a row of 12 scores through your merge, three keys at a time, gives exactly the
# softmax-weighted average of the values, and $m + \log \ell$ is the row's log-sum-exp:

# %%
s, v = 5 * torch.randn(1, 12), torch.randn(12, 2)
m, l, acc = torch.tensor([float("-inf")]), torch.zeros(1), torch.zeros(1, 2)  # the empty state
for start in range(0, 12, 3):
    block_s, block_v = s[:, start:start + 3], v[start:start + 3]
    block_m = block_s.amax(dim=-1)
    p = torch.exp(block_s - block_m[:, None])
    m, l, acc = merge_softmax_states(m, l, acc, block_m, p.sum(dim=-1), p @ block_v)
    print(f"after keys {start:2}..{start + 2:2}: running max {m.item():6.3f}, running sum {l.item():.4f}")
print("streamed output ", acc / l[:, None], "\nsoftmax(s) @ v  ", torch.softmax(s, dim=-1) @ v)
print("m + log l =", (m + torch.log(l)).item(), " torch.logsumexp =", torch.logsumexp(s, dim=-1).item())

# %% [markdown]
# The same stream as a picture (`plot_online_softmax_state`, from the course kit): the running max
# $m$ over the scores, then $\ell$ and the accumulator after each block. Where a block raises the
# max, both are first shrunk by $\alpha = e^{m_{\text{old}} - m_{\text{new}}}$ (hollow markers),
# then the block is added; $\mathbf a / \ell$ is the output if the row stopped there, and after the
# last block it is exactly the softmax-weighted average.

# %%
plot_online_softmax_state(s[0], v, block_size=3)

# %% [markdown]
# ## 5. The tiled forward pass
#
# Now split both sides. The queries go in tiles of `block_q` rows $Q_i$, the keys and values in
# tiles of `block_k` rows $K_j, V_j$. For each query tile, walk through the key tiles and keep the
# running state of every row, exactly as above (Dao, 2023, algorithm 1):
#
# $$
# \begin{aligned}
# S &= Q_i K_j^\top \cdot \text{scale} && (\text{block\_q} \times \text{block\_k})\\
# m^{\text{new}} &= \max\big(m,\ \operatorname{rowmax}(S)\big)\\
# P &= e^{S - m^{\text{new}}}\\
# \ell &\leftarrow e^{m - m^{\text{new}}}\,\ell + \operatorname{rowsum}(P)\\
# A &\leftarrow e^{m - m^{\text{new}}}\,A + P V_j, \qquad m \leftarrow m^{\text{new}}
# \end{aligned}
# $$
#
# and at the end $O_i = A / \ell$ and $L_i = m + \log \ell$. Only one $S$ tile exists at a time;
# on a GPU it lives in on-chip memory. FlashAttention-2 puts the query tiles in the *outer* loop
# and divides by $\ell$ only once, at the end: both save work over the first version.
#
# ### The causal tile skip
#
# With a causal mask, query $r$ sees key $c$ only if $c \le r$. A whole tile of scores lies above
# the diagonal, and can be skipped, when its *first* key comes after its *last* query. Query tile
# $i$ holds rows $i \cdot b_q, \dots, \min((i+1) b_q, L_q) - 1$ and key tile $j$ starts at key
# $j \cdot b_k$, so the tile must be computed iff
#
# $$ j \cdot b_k \;\le\; \min\big((i+1)\, b_q,\ L_q\big) - 1 . $$
#
# For $L_q = L_k$ this skips almost half of the tiles: causal attention costs half as much. Tiles
# that cross the diagonal are computed, with the entries above it set to $-\infty$.
#
# ### Exercise 3: which tiles does causal attention need? (1 point)
#
# Return the boolean matrix `needed[i, j]` of shape `(ceil(n_q / block_q), ceil(n_k / block_k))`.
# (As in every exercise, `F.scaled_dot_product_attention` and `nn.MultiheadAttention` are not
# allowed.)

# %% nbgrader={"grade": false, "grade_id": "causal_tile_mask", "locked": false, "schema_version": 3, "solution": true, "task": false}
def causal_tile_mask(n_q, n_k, block_q, block_k):
    """Which (query tile, key tile) pairs causal attention must compute.

    Args:
        n_q, n_k: numbers of queries and keys (ints >= 1).
        block_q, block_k: tile sizes (ints >= 1); the last tile of each may be shorter.

    Returns:
        Boolean tensor (ceil(n_q / block_q), ceil(n_k / block_k)): True where the tile holds at
        least one pair (query r, key c) with c <= r, False where it is entirely above the diagonal.
    """
    ### BEGIN SOLUTION
    n_tiles_q = -(-n_q // block_q)  # ceil division
    last_query = torch.clamp(torch.arange(1, n_tiles_q + 1) * block_q, max=n_q) - 1  # (T_q,)
    first_key = torch.arange(0, n_k, block_k)  # (T_k,)
    return first_key[None, :] <= last_query[:, None]
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "causal_tile_mask_tests", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
### BEGIN HIDDEN TESTS
from course_kit.answers import record_answers
record_answers("causal_tile_mask", causal_tile_mask)
### END HIDDEN TESTS
check_exercise("causal_tile_mask", causal_tile_mask)

# %% [markdown]
# Seen from above, for 16 queries and keys in tiles of 4 (`plot_flash_tiles`, from the course
# kit): one program per row of tiles walks its key tiles left to right, and the numbers are the
# order of its steps. Below the red staircase every pair is visible. The tiles it crosses are
# computed and masked; the 6 tiles entirely above it are skipped, so program $i$ does $i + 1$
# steps instead of 4. Your `causal_tile_mask` must mark exactly the numbered tiles:

# %%
tile_mask = causal_tile_mask(16, 16, 4, 4)
print(f"{int(tile_mask.sum())} of {tile_mask.numel()} tiles computed:\n{tile_mask.int()}")
plot_flash_tiles(16, 16, 4, 4)

# %% [markdown]
# ### Exercise 4: the tiled forward pass with the log-sum-exp (3 points)
#
# Implement `flash_attention_forward`, returning the output **and** the log-sum-exp
# $L = m + \log \ell$ of each query row, which the backward pass will need. Requirements:
#
# * any `Lq`, `Lk`, not only multiples of the blocks; `Lq` and `Lk` may differ; `Dv` may differ
#   from `D`; any leading batch dimensions;
# * `is_causal` top-left aligned, with tiles above the diagonal skipped (use your
#   `causal_tile_mask`, or the inequality directly) and the others masked;
# * **memory**: no tensor larger than one `block_q x block_k` tile of scores: not the `Lq x Lk`
#   matrix, not a row of tiles (`block_q x Lk`), not a whole causal mask (build each tile's part
#   of it from `torch.arange`). The test runs `Lq = Lk = 512` with `D = 8` and 64 x 64 tiles and
#   fails any tensor of more than 64 x 64 = 4,096 elements (as many as the output has), and any
#   score matrix held in numpy arrays or Python lists (it measures those too: work in torch);
# * **work**: with `is_causal`, the products $S = Q_i K_j^\top$ and $P V_j$ only for the tiles
#   causal attention needs. At 512 x 512 that is 36 of the 64 tiles; the test allows 10% more
#   products than those take, so computing every tile (and masking) fails, and so does one extra
#   tile per row of tiles;
# * not allowed: `F.scaled_dot_product_attention` and `nn.MultiheadAttention`.
#
# Leading dimensions ride along with `@`, so slice rows with `q[..., start:stop, :]`.

# %% nbgrader={"grade": false, "grade_id": "flash_attention_forward", "locked": false, "schema_version": 3, "solution": true, "task": false}
def flash_attention_forward(query, key, value, *, is_causal=False, scale=None, block_q=16, block_k=16):
    """FlashAttention-2's forward pass over tiles: the output and each row's log-sum-exp.

    Args:
        query: float tensor (..., Lq, D).
        key: float tensor (..., Lk, D).
        value: float tensor (..., Lk, Dv).
        is_causal: if True, query i attends only keys j <= i (top-left aligned).
        scale: factor applied to Q K^T; None means 1 / sqrt(D).
        block_q, block_k: tile sizes for queries and keys.

    Returns:
        (out, lse): out (..., Lq, Dv), the attention output, in the inputs' dtype; lse (..., Lq),
        the log-sum-exp log(sum_j exp(scale * q_i . k_j)) over the keys query i sees, in float32
        (float64 for float64 inputs), as FlashAttention keeps it whatever the inputs' precision.
    """
    ### BEGIN SOLUTION
    scale = 1 / math.sqrt(query.shape[-1]) if scale is None else scale
    n_q, n_k = query.shape[-2], key.shape[-2]
    out = query.new_empty(*query.shape[:-1], value.shape[-1])  # (..., Lq, Dv)
    lse = torch.empty(query.shape[:-1], dtype=torch.promote_types(query.dtype, torch.float32))  # (..., Lq)
    needed = causal_tile_mask(n_q, n_k, block_q, block_k) if is_causal else None
    for i, q_start in enumerate(range(0, n_q, block_q)):
        q_stop = min(q_start + block_q, n_q)
        q_i = query[..., q_start:q_stop, :] * scale  # (..., bq, D)
        m = torch.full(q_i.shape[:-1], float("-inf"), dtype=query.dtype)  # (..., bq)
        l = torch.zeros_like(m)
        acc = torch.zeros(*q_i.shape[:-1], value.shape[-1], dtype=query.dtype)  # (..., bq, Dv)
        for j, k_start in enumerate(range(0, n_k, block_k)):
            if needed is not None and not needed[i, j]:
                break  # every later key tile is above the diagonal too
            k_stop = min(k_start + block_k, n_k)
            s = q_i @ key[..., k_start:k_stop, :].transpose(-2, -1)  # (..., bq, bk)
            if is_causal:
                rows = torch.arange(q_start, q_stop)[:, None]
                s = s.masked_fill(torch.arange(k_start, k_stop)[None, :] > rows, float("-inf"))
            m_new = torch.maximum(m, s.amax(dim=-1))  # finite: the first tile holds key 0
            alpha = torch.exp(m - m_new)
            p = torch.exp(s - m_new[..., None])  # (..., bq, bk)
            l = alpha * l + p.sum(dim=-1)
            acc = alpha[..., None] * acc + p @ value[..., k_start:k_stop, :]
            m = m_new
        out[..., q_start:q_stop, :] = acc / l[..., None]
        lse[..., q_start:q_stop] = m + torch.log(l)
    return out, lse
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "flash_attention_forward_tests", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
### BEGIN HIDDEN TESTS
from course_kit.answers import record_answers
record_answers("flash_attention_forward", flash_attention_forward)
### END HIDDEN TESTS
check_exercise("flash_attention_forward", flash_attention_forward)

# %% [markdown]
# Your tiles, against PyTorch's fused kernel and `torch.logsumexp` of the full score matrix:

# %%
q, k, v = torch.randn(2, 4, 100, 32), torch.randn(2, 4, 77, 32), torch.randn(2, 4, 77, 16)
for is_causal in [False, True]:
    out, lse = flash_attention_forward(q, k, v, is_causal=is_causal, block_q=32, block_k=16)
    scores = q @ k.transpose(-2, -1) / math.sqrt(32)  # the full matrix, only to check the log-sum-exp
    scores = scores.masked_fill(torch.ones(100, 77, dtype=torch.bool).triu(1) & is_causal, float("-inf"))
    print(f"is_causal={is_causal!s:5}: output gap {(out - F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)).abs().max():.1e}, "
          f"lse gap {(lse - torch.logsumexp(scores, dim=-1)).abs().max():.1e}")

# %% [markdown]
# ## 6. The backward pass, by recomputation
#
# Training needs gradients. Autograd through your loops would store every tile's $P$, which is
# the $N \times N$ matrix again, in pieces. FlashAttention stores only $O$ and $L$ and recomputes
# $P$ tile by tile in the backward pass: a few more FLOPs, far fewer bytes, which the roofline
# says is the right trade.
#
# With $S = QK^\top \cdot \text{scale}$, $P = \operatorname{softmax}(S)$ row-wise and $O = PV$,
# the chain rule for an upstream gradient $dO$ gives
#
# $$ dV = P^\top dO, \qquad dP = dO\,V^\top, \qquad dS_{rc} = P_{rc}\Big(dP_{rc} - \sum_{c'} P_{rc'}\, dP_{rc'}\Big),
# \qquad dQ = dS\,K \cdot \text{scale}, \qquad dK = dS^\top Q \cdot \text{scale} .$$
#
# The softmax's backward needs a sum over the *whole* row $r$, which seems to break the tiling.
# But $\sum_{c} P_{rc}\, dP_{rc} = \sum_c P_{rc} (dO_r \cdot v_c) = dO_r \cdot \sum_c P_{rc} v_c
# = dO_r \cdot O_r$, so
#
# $$ D_r = \operatorname{rowsum}(dO \circ O)_r $$
#
# is one number per row, computed once before the loops (Dao, 2023, algorithm 2). And each tile's
# $P$ comes back from the saved log-sum-exp in one step: $P = e^{S - L}$, since $L_r$ already
# holds the row's max and sum. So, for each pair of tiles:
#
# $$ P = e^{Q_i K_j^\top \cdot \text{scale} - L_i}, \quad dV_j \mathrel{+}= P^\top dO_i, \quad
# dS = P \circ (dO_i V_j^\top - D_i), \quad dQ_i \mathrel{+}= dS\, K_j \cdot \text{scale}, \quad
# dK_j \mathrel{+}= dS^\top Q_i \cdot \text{scale}. $$
#
# ### Exercise 5: the backward pass (3 points)
#
# Implement `flash_attention_backward`: given the inputs, the forward's `out` and `lse`, and the
# upstream gradient `grad_out`, return `(dq, dk, dv)`. Accumulate into zero tensors with index
# assignment, e.g. `dv[..., k_start:k_stop, :] += ...`. Same requirements as the forward:
#
# * any sizes; causal with the tile skip;
# * **memory**: no tensor larger than one tile of scores (the test: `Lq = Lk = 512`, 64 x 64
#   tiles, at most 4,096 elements; numpy arrays and Python lists are measured too);
# * **work**: with `is_causal`, the five products ($S$, $P^\top dO_i$, $dO_i V_j^\top$, $dS\,K_j$,
#   $dS^\top Q_i$) only for the 36 of 64 tiles causal attention needs there, with 10% to spare;
# * **recompute, don't ask autograd**: `torch.autograd.grad`, `.backward()` and
#   `torch.autograd.backward` are not allowed here. Recompute $P$ from `lse`, tile by tile: that
#   is the exercise, and autograd through your forward's loops would keep every tile's $P$, the
#   $N \times N$ matrix in pieces. Nor are `F.scaled_dot_product_attention` and
#   `nn.MultiheadAttention`.

# %% nbgrader={"grade": false, "grade_id": "flash_attention_backward", "locked": false, "schema_version": 3, "solution": true, "task": false}
def flash_attention_backward(query, key, value, out, lse, grad_out, *, is_causal=False, scale=None,
                             block_q=16, block_k=16):
    """FlashAttention-2's backward pass: the gradients, recomputing each tile's P from lse.

    Args:
        query (..., Lq, D), key (..., Lk, D), value (..., Lk, Dv): the forward's inputs.
        out (..., Lq, Dv), lse (..., Lq): what flash_attention_forward returned for them.
        grad_out: float tensor (..., Lq, Dv), the gradient of the loss with respect to out.
        is_causal, scale, block_q, block_k: as in flash_attention_forward.

    Returns:
        (dq, dk, dv): gradients of the loss with respect to query, key and value, same shapes.
    """
    ### BEGIN SOLUTION
    scale = 1 / math.sqrt(query.shape[-1]) if scale is None else scale
    n_q, n_k = query.shape[-2], key.shape[-2]
    delta = (grad_out * out).sum(dim=-1)  # D = rowsum(dO * O): (..., Lq)
    dq, dk, dv = torch.zeros_like(query), torch.zeros_like(key), torch.zeros_like(value)
    needed = causal_tile_mask(n_q, n_k, block_q, block_k) if is_causal else None
    for i, q_start in enumerate(range(0, n_q, block_q)):
        q_stop = min(q_start + block_q, n_q)
        q_i, do_i = query[..., q_start:q_stop, :], grad_out[..., q_start:q_stop, :]
        lse_i, delta_i = lse[..., q_start:q_stop, None], delta[..., q_start:q_stop, None]  # (..., bq, 1)
        for j, k_start in enumerate(range(0, n_k, block_k)):
            if needed is not None and not needed[i, j]:
                break
            k_stop = min(k_start + block_k, n_k)
            k_j, v_j = key[..., k_start:k_stop, :], value[..., k_start:k_stop, :]
            s = q_i @ k_j.transpose(-2, -1) * scale  # (..., bq, bk)
            if is_causal:
                rows = torch.arange(q_start, q_stop)[:, None]
                s = s.masked_fill(torch.arange(k_start, k_stop)[None, :] > rows, float("-inf"))
            p = torch.exp(s - lse_i)  # the forward's probabilities, recomputed
            dv[..., k_start:k_stop, :] += p.transpose(-2, -1) @ do_i
            ds = p * (do_i @ v_j.transpose(-2, -1) - delta_i)  # (..., bq, bk)
            dq[..., q_start:q_stop, :] += ds @ k_j * scale
            dk[..., k_start:k_stop, :] += ds.transpose(-2, -1) @ q_i * scale
    return dq, dk, dv  # shaped as query, key, value
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "flash_attention_backward_tests", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
### BEGIN HIDDEN TESTS
from course_kit.answers import record_answers
record_answers("flash_attention_backward", flash_attention_backward)
### END HIDDEN TESTS
check_exercise("flash_attention_backward", flash_attention_backward)

# %% [markdown]
# Your two passes make a differentiable operator: a `torch.autograd.Function` saves $Q, K, V, O$
# and $L$ in the forward and hands them to your backward. Its gradients match autograd through
# PyTorch's own attention:

# %%
class FlashAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, is_causal):
        out, lse = flash_attention_forward(q, k, v, is_causal=is_causal, block_q=32, block_k=32)
        ctx.save_for_backward(q, k, v, out, lse)  # O(N) memory: no P
        ctx.is_causal = is_causal
        return out

    @staticmethod
    def backward(ctx, grad_out):
        dq, dk, dv = flash_attention_backward(*ctx.saved_tensors, grad_out, is_causal=ctx.is_causal,
                                              block_q=32, block_k=32)
        return dq, dk, dv, None


q, k, v = (torch.randn(1, 4, 90, 32, requires_grad=True) for _ in range(3))
grad_out = torch.randn(1, 4, 90, 32)
for is_causal in [False, True]:
    ours = torch.autograd.grad(FlashAttention.apply(q, k, v, is_causal), (q, k, v), grad_out)
    theirs = torch.autograd.grad(F.scaled_dot_product_attention(q, k, v, is_causal=is_causal), (q, k, v), grad_out)
    gaps = ", ".join(f"d{name} {(a - b).abs().max():.1e}" for name, a, b in zip("qkv", ours, theirs))
    print(f"is_causal={is_causal!s:5}: largest gaps {gaps}")

# %% [markdown]
# ## 7. Triton: from a vector operation to FlashAttention
#
# PyTorch runs each of the operations above as a separate kernel, writing every tile to memory in
# between: on a GPU, that is the memory traffic we set out to avoid. A real FlashAttention is
# *one* kernel that keeps the tiles on chip. Triton (Tillet, Kung and Cox, 2019) lets us write
# one in Python. We get there in four kernels, one idea each: a vector operation (programs,
# blocks, masks), the softmax of every row (reductions, strides, the $-\infty$ padding), a tiled
# matrix product (`tl.dot`), and then FlashAttention's forward pass, which uses all of them.
# Triton's own tutorials (vector addition, fused softmax, matrix multiplication, in its
# documentation) take the same first steps, with timings on a GPU.
#
# **A kernel and its programs.** A Triton kernel is a function decorated with `@triton.jit`.
# Launching it starts a *grid* of **programs** (up to three axes of them), all running the same
# code; `tl.program_id(axis)` tells a program its position along each axis. A program does not
# handle one number, as a CUDA thread does, but a **block** of them: `tl.arange(0, BLOCK)` is the
# block of integers $0, \dots, \text{BLOCK}-1$, and arithmetic on blocks is elementwise, with
# broadcasting as in torch (`rows[:, None] * 10 + cols[None, :]` is a 2-D block). Block sizes are
# `tl.constexpr` arguments, fixed when the kernel is compiled, and powers of two.
#
# **Memory: pointers, masks, strides.** A tensor reaches the kernel as a pointer to its first
# element. A pointer plus a block of offsets is a block of pointers; `tl.load(pointers,
# mask=..., other=...)` reads them into a block of values and `tl.store(pointers, values,
# mask=...)` writes them. Where the mask is False nothing is read (the lane takes the value
# `other`) and nothing is written: that is how a block that runs past the end of a tensor stays
# inside it. Element $(i, j)$ of a 2-D tensor `x` is at `X + i * stride_xm + j * stride_xn`, where
# `x.stride() == (stride_xm, stride_xn)`. A transposed tensor is the same memory with its strides
# swapped: a kernel that follows the strides reads it right without a copy; one that assumes a
# row of `n_cols` contiguous elements reads the wrong ones.
#
# **Who launches.** Launching takes a few lines of Python: allocate the output, choose the grid,
# pass the tensors and their strides. Here the course kit does it (`course_kit.triton_launch`):
# you write the kernel, and `scaled_add_launcher(scaled_add_kernel)` is the function the test
# checks. The kit's launcher also puts a guard zone around every tensor it hands to your kernel: a
# load past the end reads NaN, and a store past the end, or an element of the output that no
# program wrote, is reported with what to check. On a GPU, the same mistakes read or overwrite
# some other memory without a word, or crash the process.
#
# **Where it runs.** Without a GPU the setup cell set `TRITON_INTERPRET=1`: Triton's interpreter
# then runs the programs one after another, in numpy, on CPU tensors. It is slow but exact, so the
# tests use tiny shapes. Triton ships for Linux only; elsewhere the four exercises say so when
# they run, and cannot pass.
#
# ### Exercise 6: a vector operation (1 point)
#
# Write `scaled_add_kernel`: `OUT[i] = X[i] * alpha + Y[i]` for the `n` elements. The launcher
# starts `cdiv(n, BLOCK)` programs with `BLOCK = 16`: program `p` handles the elements
# `p * BLOCK` to `p * BLOCK + BLOCK - 1`, so when `n` is not a multiple of 16 the last program's
# block runs past the end. Mask its loads and its store with `offsets < n`.

# %% nbgrader={"grade": false, "grade_id": "triton_scaled_add", "locked": false, "schema_version": 3, "solution": true, "task": false}
@triton.jit
def scaled_add_kernel(X, Y, OUT, alpha, n, BLOCK: tl.constexpr):
    """OUT[i] = X[i] * alpha + Y[i] for i < n, BLOCK elements per program (X, Y, OUT: n floats each)."""
    ### BEGIN SOLUTION
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)  # this program's elements
    inside = offsets < n  # False for the lanes of the last block that lie past the end
    x = tl.load(X + offsets, mask=inside)
    y = tl.load(Y + offsets, mask=inside)
    tl.store(OUT + offsets, x * alpha + y, mask=inside)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "triton_scaled_add_tests", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
from course_kit.triton_launch import scaled_add_launcher
### BEGIN HIDDEN TESTS
from course_kit.answers import record_answers
record_answers("triton_scaled_add", scaled_add_launcher(scaled_add_kernel))
### END HIDDEN TESTS
check_exercise("triton_scaled_add", scaled_add_launcher(scaled_add_kernel))

# %% [markdown]
# The launcher gives back an ordinary function of tensors:

# %%
scaled_add = scaled_add_launcher(scaled_add_kernel)
print(scaled_add(torch.arange(5.0), torch.ones(5), 2.0))  # 2 * [0, 1, 2, 3, 4] + 1

# %% [markdown]
# ### Exercise 7: the softmax of every row (2 points)
#
# A row of attention scores fits in one block, so one program per row can compute its softmax
# with the row held in registers: read from memory once, written once. (Lesson 1's softmax, in
# PyTorch operations, reads and writes the whole matrix at each of its steps.) Write
# `softmax_kernel`. Program `tl.program_id(0)` takes one row; the block `cols = tl.arange(0,
# BLOCK)` covers it, `BLOCK` being the power of two of at least 16 that holds `n_cols` (the
# launcher chooses it), so the lanes `cols >= n_cols` lie past the row's end. Load them as
# $-\infty$ (`other=float("-inf")`): they then change neither the row's max nor, since
# `tl.exp` gives them 0, its sum; the masks of Lesson 1 did the same. Then, as in Lesson 1,
# subtract the row's maximum `tl.max(x, 0)`, exponentiate with `tl.exp`, and divide by
# `tl.sum(e, 0)` (the 0 is the axis: a row is a 1-D block). `x` may be stored in any layout: read
# it through its strides, and write `OUT` through its own. (Triton has a `tl.softmax`; as
# `torch.softmax` in Lesson 1, the grader refuses it here.)

# %% nbgrader={"grade": false, "grade_id": "triton_softmax", "locked": false, "schema_version": 3, "solution": true, "task": false}
@triton.jit
def softmax_kernel(X, OUT, stride_xm, stride_xn, stride_om, stride_on, n_cols, BLOCK: tl.constexpr):
    """OUT[i] = softmax(X[i]) for the row i = tl.program_id(0); X[i, j] is at X + i * stride_xm + j * stride_xn."""
    ### BEGIN SOLUTION
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    inside = cols < n_cols
    x = tl.load(X + row * stride_xm + cols * stride_xn, mask=inside, other=float("-inf"))
    e = tl.exp(x - tl.max(x, 0))  # lanes past the end: exp(-inf) = 0
    tl.store(OUT + row * stride_om + cols * stride_on, e / tl.sum(e, 0), mask=inside)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "triton_softmax_tests", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
from course_kit.triton_launch import softmax_launcher
### BEGIN HIDDEN TESTS
from course_kit.answers import record_answers
record_answers("triton_softmax", softmax_launcher(softmax_kernel))
### END HIDDEN TESTS
check_exercise("triton_softmax", softmax_launcher(softmax_kernel))

# %% [markdown]
# ### Exercise 8: a tiled matrix product with `tl.dot` (2 points)
#
# $C = AB$ for $A$ of shape (M, K) and $B$ of shape (K, N), one program per tile of $C$: the grid
# is `(cdiv(M, BLOCK_M), cdiv(N, BLOCK_N))`, and program `(tl.program_id(0), tl.program_id(1))`
# computes the `BLOCK_M x BLOCK_N` tile at that row tile and column tile. It walks along K in
# steps of `BLOCK_K`, loading a `(BLOCK_M, BLOCK_K)` tile of $A$ and a `(BLOCK_K, BLOCK_N)` tile of
# $B$, and adds their product to a float32 accumulator (`tl.zeros((BLOCK_M, BLOCK_N),
# dtype=tl.float32)`): `acc += tl.dot(a, b)`. FlashAttention's two products, $QK^\top$ and $PV$,
# run this way, and it is what a GPU's tensor cores are built for. About `tl.dot`:
#
# * its shapes are those of `@`: `(M, K) @ (K, N) -> (M, N)`. The order of the operands matters,
#   and a tile of $B^\top$ is not a tile of $B$, unless it is loaded transposed, through the
#   strides;
# * its tiles here are 16 on every side (`BLOCK_M = BLOCK_N = BLOCK_K = 16`, the launcher's
#   choice). On an NVIDIA GPU the tensor cores multiply tiles of 16; Triton pads a smaller M or N
#   but refuses an inner size K below 16 for 16-bit inputs (8 for float32: `min_dot_size` in
#   Triton 3.9's NVIDIA backend), and its earlier versions refused any side below 16. Tiles of at
#   least 16 on every side are the safe choice;
# * on a GPU, `tl.dot` of float32 tiles rounds its inputs to TF32 (10 mantissa bits) unless you
#   pass `input_precision="ieee"`: pass it, or the tests' float32 tolerance will catch the
#   difference. The interpreter computes in full precision either way.
#
# Two-dimensional blocks of pointers come from broadcasting:
# `A + rows[:, None] * stride_am + ks[None, :] * stride_ak` is the `(BLOCK_M, BLOCK_K)` block of
# pointers to `A[rows, ks]`. Mask all three sizes: the rows past M, the columns past N, and along
# K, where the padding must load as 0 (`other=0.0`) so that it adds nothing to the sums. The last
# visible case multiplies by `k.T`, a view of a (20, 16) tensor `k`: with its strides, `(1, 16)`,
# your kernel computes a product with $K^\top$ without copying `k`, as attention's scores need.

# %% nbgrader={"grade": false, "grade_id": "triton_matmul", "locked": false, "schema_version": 3, "solution": true, "task": false}
@triton.jit
def matmul_kernel(
    A, B, C, M, N, K,  # A (M, K), B (K, N), C (M, N)
    stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """The tile of C = A @ B at row tile tl.program_id(0) and column tile tl.program_id(1)."""
    ### BEGIN SOLUTION
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for start in range(0, K, BLOCK_K):
        ks = start + tl.arange(0, BLOCK_K)
        a = tl.load(A + rows[:, None] * stride_am + ks[None, :] * stride_ak,
                    mask=(rows[:, None] < M) & (ks[None, :] < K), other=0.0)  # (BLOCK_M, BLOCK_K)
        b = tl.load(B + ks[:, None] * stride_bk + cols[None, :] * stride_bn,
                    mask=(ks[:, None] < K) & (cols[None, :] < N), other=0.0)  # (BLOCK_K, BLOCK_N)
        acc += tl.dot(a, b, input_precision="ieee")
    tl.store(C + rows[:, None] * stride_cm + cols[None, :] * stride_cn, acc,
             mask=(rows[:, None] < M) & (cols[None, :] < N))
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "triton_matmul_tests", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
from course_kit.triton_launch import matmul_launcher
### BEGIN HIDDEN TESTS
from course_kit.answers import record_answers
record_answers("triton_matmul", matmul_launcher(matmul_kernel))
### END HIDDEN TESTS
check_exercise("triton_matmul", matmul_launcher(matmul_kernel))

# %% [markdown]
# ### Exercise 9: the FlashAttention forward kernel (3 points)
#
# Now all of it in one kernel. Each program takes one tile of `BLOCK_M` queries of one
# (batch, head): its position is `tl.program_id(0)` (the tile) and `tl.program_id(1)` (the batch
# and head). It loads its queries once, loops over the keys in tiles of `BLOCK_N`, and keeps `m`,
# `l` and `acc` in registers, exactly your forward pass of exercise 4: the scores of a tile are
# `tl.dot(q, k_t)` with `k_t` a `(BLOCK_D, BLOCK_N)` tile of $K^\top$ loaded through the strides
# (exercise 8), the row statistics are `tl.max(s, 1)` and `tl.sum(p, 1)` (axis 1: a 2-D block's
# rows), and masking works as in exercise 7, with `tl.where(visible, s, float("-inf"))` for the
# keys past the end and, with `IS_CAUSAL`, those after the query. Element `(b, r, c)` of `Q` is at
# `Q + b * stride_qb + r * stride_qm + c * stride_qd`; rows past the end are switched off with
# `mask=` in loads and stores, and the head dimension is padded to a power of two `BLOCK_D`
# (masked too). Useful too: `tl.zeros`, `tl.full`, `tl.maximum`, `tl.log`, `x.to(dtype)`; pass
# `input_precision="ieee"` to both `tl.dot`s.
#
# The launcher, `flash_forward_launcher`, flattens the batch dimensions into one of size BH,
# allocates `O` (BH, Lq, Dv) and the float32 `LSE` (BH, Lq), contiguous, so that element `(b, i)`
# of `LSE` is at `LSE + b * n_q + i`, and starts the grid `(cdiv(Lq, BLOCK_M), BH)` with
# `BLOCK_M = BLOCK_N = 16`. Keep the causal tile skip: stop the key loop at the tile's last query.

# %% nbgrader={"grade": false, "grade_id": "triton_flash_forward", "locked": false, "schema_version": 3, "solution": true, "task": false}
@triton.jit
def flash_forward_kernel(
    Q, K, V, O, LSE,  # Q (BH, Lq, D), K (BH, Lk, D), V (BH, Lk, Dv), O (BH, Lq, Dv), LSE (BH, Lq)
    stride_qb, stride_qm, stride_qd, stride_kb, stride_kn, stride_kd,
    stride_vb, stride_vn, stride_vd, stride_ob, stride_om, stride_od,
    n_q, n_k, d, d_v, scale,
    IS_CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    """O and LSE for the query tile tl.program_id(0) of the (batch, head) tl.program_id(1)."""
    ### BEGIN SOLUTION
    start_m = tl.program_id(0) * BLOCK_M  # this program's first query
    bh = tl.program_id(1)  # this program's (batch, head)
    rows = start_m + tl.arange(0, BLOCK_M)
    cols_d, cols_dv = tl.arange(0, BLOCK_D), tl.arange(0, BLOCK_DV)
    q = tl.load(Q + bh * stride_qb + rows[:, None] * stride_qm + cols_d[None, :] * stride_qd,
                mask=(rows[:, None] < n_q) & (cols_d[None, :] < d), other=0.0)  # (BLOCK_M, BLOCK_D)
    q = q * scale
    m = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_DV), dtype=tl.float32)
    k_end = n_k
    if IS_CAUSAL:
        k_end = tl.minimum(n_k, start_m + BLOCK_M)  # the causal tile skip
    for start_n in range(0, k_end, BLOCK_N):
        keys = start_n + tl.arange(0, BLOCK_N)
        k_t = tl.load(K + bh * stride_kb + keys[None, :] * stride_kn + cols_d[:, None] * stride_kd,
                      mask=(keys[None, :] < n_k) & (cols_d[:, None] < d), other=0.0)  # K^T tile (BLOCK_D, BLOCK_N)
        s = tl.dot(q, k_t, input_precision="ieee")  # (BLOCK_M, BLOCK_N), float32 products in full
        visible = keys[None, :] < n_k
        if IS_CAUSAL:
            visible = visible & (keys[None, :] <= rows[:, None])
        s = tl.where(visible, s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, 1))
        alpha = tl.exp(m - m_new)
        p = tl.exp(s - m_new[:, None])
        l = l * alpha + tl.sum(p, 1)
        v = tl.load(V + bh * stride_vb + keys[:, None] * stride_vn + cols_dv[None, :] * stride_vd,
                    mask=(keys[:, None] < n_k) & (cols_dv[None, :] < d_v), other=0.0)  # (BLOCK_N, BLOCK_DV)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")
        m = m_new
    acc = acc / l[:, None]
    tl.store(O + bh * stride_ob + rows[:, None] * stride_om + cols_dv[None, :] * stride_od,
             acc.to(O.dtype.element_ty), mask=(rows[:, None] < n_q) & (cols_dv[None, :] < d_v))
    tl.store(LSE + bh * n_q + rows, m + tl.log(l), mask=rows < n_q)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "triton_flash_forward_tests", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
from course_kit.triton_launch import flash_forward_launcher
### BEGIN HIDDEN TESTS
from course_kit.answers import record_answers
record_answers("triton_flash_forward", flash_forward_launcher(flash_forward_kernel))
### END HIDDEN TESTS
check_exercise("triton_flash_forward", flash_forward_launcher(flash_forward_kernel))

# %% [markdown]
# On a GPU the same kernel runs compiled. How close it comes to PyTorch's own FlashAttention
# kernel there has **not been measured** for this course (no GPU was available while it was
# written); `attention-course bench --device cuda --dtype float16 --methods triton sdpa` measures
# `course_lib`'s version of it. Here, the interpreter shows that the kernel is *right*, not how
# fast it is.

# %%
device = "cuda" if torch.cuda.is_available() else "cpu"
n_check = 4096 if device == "cuda" else 40
q, k, v = (torch.randn(1, 2, n_check, 64, device=device) for _ in range(3))
out, lse = flash_forward_launcher(flash_forward_kernel)(q, k, v, is_causal=True)
print(f"{device}, N={n_check}: largest gap to F.scaled_dot_product_attention "
      f"{(out - F.scaled_dot_product_attention(q, k, v, is_causal=True)).abs().max():.1e}")

# %% [markdown]
# ## 8. Which kernel does `F.scaled_dot_product_attention` pick?
#
# `F.scaled_dot_product_attention` is one function in front of several kernels. On a CUDA GPU,
# PyTorch tries them in order of speed and takes the first whose constraints the call meets
# (PyTorch documentation, `torch.nn.attention.SDPBackend`):
#
# * **FlashAttention** (`SDPBackend.FLASH_ATTENTION`, FlashAttention-2): float16 or bfloat16,
#   head size up to 256, no arbitrary `attn_mask` (causal is fine);
# * **cuDNN attention** (`SDPBackend.CUDNN_ATTENTION`), on recent GPUs;
# * **memory-efficient attention** (`SDPBackend.EFFICIENT_ATTENTION`, from xFormers, Rabe &
#   Staats' idea as a kernel): also float32, and additive masks;
# * **math** (`SDPBackend.MATH`): the plain formula in PyTorch operators, for everything else
#   (and float64).
#
# On the CPU, PyTorch has a tiled FlashAttention-style kernel for floating-point inputs; the
# math path remains for what it does not cover, dropout for instance. `sdpa_kernel_name`
# (course kit) runs one call under the profiler and names the kernel that ran, and
# `torch.nn.attention.sdpa_kernel` restricts the choice:

# %%
from torch.nn.attention import SDPBackend, sdpa_kernel

q = torch.randn(1, 8, 256, 64, device=device)
mask = torch.ones(256, 256, dtype=torch.bool, device=device).tril()
print("float32                  ->", sdpa_kernel_name(q, q, q))
print("float32, causal          ->", sdpa_kernel_name(q, q, q, is_causal=True))
print("float32, boolean mask    ->", sdpa_kernel_name(q, q, q, attn_mask=mask))
print("float32, dropout 0.1     ->", sdpa_kernel_name(q, q, q, dropout_p=0.1))
with sdpa_kernel(SDPBackend.MATH):
    print("restricted to MATH       ->", sdpa_kernel_name(q, q, q))

# %% [markdown]
# The math path is our naive attention: the one that writes the $N \times N$ matrix. Use
# `sdpa_kernel` to check that a model really runs the kernel you think it does.
#
# ## 9. The benchmark
#
# Everything side by side on this machine, for 8 heads of size 64: naive attention, chunked, your
# tiled forward and PyTorch's fused kernel. Each runs on **one thread**: your forward issues about
# a dozen small PyTorch operations per tile, and with several threads each operation ends in a
# barrier where every thread waits for the slowest; on a busy machine, whose other jobs take a
# thread's core away for milliseconds, those waits made the tiled code ten to twenty times slower
# while the large operations of naive attention hardly noticed. One thread each compares the
# methods' work, not their luck with the scheduler.
#
# Memory is measured for the sizes of section 2 (naive and chunked attention's figures are the
# ones measured there), time at $N = 512$ and $1024$.

# %%
threads = torch.get_num_threads()
torch.set_num_threads(1)
methods = {
    "naive": naive_attention,
    "chunked, 128 queries": lambda q, k, v: chunked_attention(q, k, v, chunk_size=128),
    "your flash forward, 128 x 128 tiles": lambda q, k, v: flash_attention_forward(q, k, v, block_q=128,
                                                                                   block_k=128)[0],
    "F.scaled_dot_product_attention": F.scaled_dot_product_attention,
}
memory = {"naive": naive_peak, "chunked, 128 queries": chunked_peak}  # sections 2 and 3
time_sizes = sizes[1:3]  # N = 512 and 1024: a few seconds in all
times = {name: [] for name in methods}
with torch.no_grad():
    for name, fn in methods.items():
        if name not in memory:
            memory[name] = [peak_memory_bytes(fn, *qkv[n]) for n in sizes]
        times[name] = [time_call(fn, *qkv[n], repeat=1) for n in time_sizes]
torch.set_num_threads(threads)

sdpa_times = times["F.scaled_dot_product_attention"]
print("peak memory in MiB (and as a multiple of naive attention's)")
print(f"{'':36}" + "".join(f"{f'N={n}':>15}" for n in sizes))
for name in methods:
    print(f"{name:36}" + "".join(f"{m / MiB:8.1f} ({m / naive:4.2f})" for m, naive in zip(memory[name], naive_peak)))
print("\ntime in ms, one thread (and as a multiple of F.scaled_dot_product_attention's)")
print(f"{'':36}" + "".join(f"{f'N={n}':>15}" for n in time_sizes))
for name in methods:
    print(f"{name:36}" + "".join(f"{t * 1e3:8.1f} ({t / s:4.1f})" for t, s in zip(times[name], sdpa_times)))

fig, (ax_mem, ax_time) = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
for name in methods:
    ax_mem.loglog(sizes, [m / MiB for m in memory[name]], "o-", label=name)
    ax_time.loglog(time_sizes, [t * 1e3 for t in times[name]], "o-", label=name)
ax_mem.set(xlabel="sequence length N", ylabel="peak memory of the call (MiB)", title="memory, 8 heads, d=64")
ax_time.set(xlabel="sequence length N", ylabel="time (ms)", title="forward time, one thread")
for ax in (ax_mem, ax_time):
    ax.set_xscale("log", base=2)
    ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# What the figures show, and what they do not:
#
# * **Memory** is the story of this lesson. Naive attention's grows fourfold per doubling of $N$;
#   chunked attention's and your forward's at most twofold, like the output itself, and PyTorch's
#   kernel needs hardly more than its output. At the smallest size tiling saves little: a
#   128 x 128 tile and its temporaries, for 8 heads, are not much smaller than the whole
#   256 x 256 matrix. The saving grows with $N$: at $N = 2048$ your forward needs a few percent
#   of naive attention's memory.
# * **Time**, on a CPU, tells another story. Your forward does the same arithmetic as naive
#   attention, in about a dozen PyTorch operations per tile, each a separate pass over memory
#   with its own overhead, while PyTorch's kernel is one compiled loop: expect yours to take
#   several times its time. A CPU's caches hold naive attention's matrices better than a GPU's
#   on-chip memory would, so nothing here measures the GPU speed-up of section 1.
#
# The course repository's `course_lib.flash_cpu` is the same algorithm tuned for a CPU: `exp2`
# instead of `exp` where the CPU's vector instructions make it faster, one scores tile reused,
# tiles chosen for the CPU, and, for query tiles whose scores are provably small, no running max
# at all. By Cauchy–Schwarz, $|q \cdot k| \le \lVert q \rVert \, \max_j \lVert k_j \rVert$:
# when that bound is small for every row of a tile, $e^{s}$ cannot overflow, and the tile keeps
# $m = 0$, skipping the row maxima, the subtraction and the rescaling. This is the *unified
# maximum* of FlashDecoding++ (Hong et al., 2023), checked before the tile runs rather than
# assumed. Its forward takes about 1.2 times the CPU time of PyTorch's kernel at $N = 4096$; those
# figures and the full benchmark (forward and backward, up to $N = 16\,384$,
# `attention-course bench`) are in the repository's README.
#
# ## Recap
#
# * Attention is memory-bound: the softmax does about one FLOP per byte, far below a GPU's ridge
#   point of hundreds. Save bytes, not FLOPs.
# * Queries are independent, so chunking them bounds memory by chunk x N.
# * The online softmax merges the states $(m, \ell, \mathbf a)$ of blocks of keys exactly, with
#   factors $e^{m_X - m} \le 1$, so keys can be tiled too.
# * FlashAttention's forward walks over tiles, keeps $m, \ell, A$ per row and writes $O$ and the
#   log-sum-exp; causal attention skips the tiles above the diagonal.
# * The backward recomputes $P = e^{S - L}$ per tile and uses $D = \operatorname{rowsum}(dO \circ O)$
#   for the softmax's row sums: no $N \times N$ matrix is stored in either pass.
# * One Triton kernel does all of it on chip; `F.scaled_dot_product_attention` picks such a
#   kernel when the inputs allow it, and `sdpa_kernel` tells you which.
