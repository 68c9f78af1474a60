# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# A sample student of Lesson 4 who got the chunks, the merge and the backward right, forgot that
# the last query tile may be short in the causal tile mask, returned the forward pass's results in
# float32 whatever the input (right on the visible cases, all float32; wrong on the hidden
# float64 case), wrote the Triton vector kernel and matrix product right but a softmax kernel that
# reads x as if it were contiguous (its strides ignored), and did not attempt the FlashAttention
# kernel. Each cell below replaces the answer cell with the same grade_id in the released notebook.

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
    m = torch.maximum(m_a, m_b)
    m_finite = torch.where(torch.isneginf(m), torch.zeros_like(m), m)  # both empty: factors exp(-inf) = 0
    alpha, beta = torch.exp(m_a - m_finite), torch.exp(m_b - m_finite)  # each <= 1
    l = alpha * l_a + beta * l_b
    acc = alpha[..., None] * acc_a + beta[..., None] * acc_b  # (..., Lq, Dv)
    return m, l, acc


# %% nbgrader={"grade": false, "grade_id": "causal_tile_mask", "locked": false, "schema_version": 3, "solution": true, "task": false}
def causal_tile_mask(n_q, n_k, block_q, block_k):
    n_tiles_q = -(-n_q // block_q)
    last_query = torch.arange(1, n_tiles_q + 1) * block_q - 1  # forgets that the last tile may be short
    first_key = torch.arange(0, n_k, block_k)
    return first_key[None, :] <= last_query[:, None]


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
    scale = 1 / math.sqrt(query.shape[-1]) if scale is None else scale
    n_q, n_k = query.shape[-2], key.shape[-2]
    # float32 results, "as FlashAttention does" (but a float64 input must give float64 back)
    out = torch.empty(*query.shape[:-1], value.shape[-1], dtype=torch.float32)  # (..., Lq, Dv)
    lse = torch.empty(query.shape[:-1], dtype=torch.float32)  # (..., Lq)
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
    return dq, dk, dv


# %% nbgrader={"grade": false, "grade_id": "triton_scaled_add", "locked": false, "schema_version": 3, "solution": true, "task": false}
@triton.jit
def scaled_add_kernel(X, Y, OUT, alpha, n, BLOCK: tl.constexpr):
    """OUT[i] = X[i] * alpha + Y[i] for i < n, BLOCK elements per program (X, Y, OUT: n floats each)."""
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)  # this program's elements
    inside = offsets < n  # False for the lanes of the last block that lie past the end
    x = tl.load(X + offsets, mask=inside)
    y = tl.load(Y + offsets, mask=inside)
    tl.store(OUT + offsets, x * alpha + y, mask=inside)


# %% nbgrader={"grade": false, "grade_id": "triton_softmax", "locked": false, "schema_version": 3, "solution": true, "task": false}
@triton.jit
def softmax_kernel(X, OUT, stride_xm, stride_xn, stride_om, stride_on, n_cols, BLOCK: tl.constexpr):
    """OUT[i] = softmax(X[i]) for the row i = tl.program_id(0); X[i, j] is at X + i * stride_xm + j * stride_xn."""
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    inside = cols < n_cols
    x = tl.load(X + row * n_cols + cols, mask=inside, other=float("-inf"))  # strides ignored
    e = tl.exp(x - tl.max(x, 0))  # lanes past the end: exp(-inf) = 0
    tl.store(OUT + row * stride_om + cols * stride_on, e / tl.sum(e, 0), mask=inside)


# %% nbgrader={"grade": false, "grade_id": "triton_matmul", "locked": false, "schema_version": 3, "solution": true, "task": false}
@triton.jit
def matmul_kernel(
    A, B, C, M, N, K,  # A (M, K), B (K, N), C (M, N)
    stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """The tile of C = A @ B at row tile tl.program_id(0) and column tile tl.program_id(1)."""
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
