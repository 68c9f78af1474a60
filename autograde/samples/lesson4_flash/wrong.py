# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# A sample student of Lesson 4 who answered everything, each answer with a classic mistake: a
# causal mask counted from the chunk's first row instead of from 0, a running sum that is not
# rescaled, an off-by-one causal tile skip (the tile's first query instead of its last), an
# accumulator that is not rescaled when the running max grows (in PyTorch and in Triton), the
# softmax's row sum taken over one tile instead of the whole row, and in Triton a vector kernel
# with no mask, a softmax kernel that does not subtract the row's max, and a matrix product whose
# tl.dot has its operands swapped. Each cell below replaces the
# answer cell with the same grade_id in the released notebook.

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
            rows = torch.arange(stop - start)[:, None]  # positions counted from the chunk's start
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
    l = l_a + l_b  # the sums are not rescaled
    acc = alpha[..., None] * acc_a + beta[..., None] * acc_b  # (..., Lq, Dv)
    return m, l, acc


# %% nbgrader={"grade": false, "grade_id": "causal_tile_mask", "locked": false, "schema_version": 3, "solution": true, "task": false}
def causal_tile_mask(n_q, n_k, block_q, block_k):
    first_query = torch.arange(0, n_q, block_q)
    first_key = torch.arange(0, n_k, block_k)
    return first_key[None, :] <= first_query[:, None]  # compares with the tile's first query


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
    out = query.new_empty(*query.shape[:-1], value.shape[-1])  # (..., Lq, Dv)
    lse = query.new_empty(query.shape[:-1])  # (..., Lq)
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
            acc = acc + p @ value[..., k_start:k_stop, :]  # not rescaled
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
            dp = do_i @ v_j.transpose(-2, -1)
            ds = p * (dp - (p * dp).sum(dim=-1, keepdim=True))  # the row sum of this tile only
            dq[..., q_start:q_stop, :] += ds @ k_j * scale
            dk[..., k_start:k_stop, :] += ds.transpose(-2, -1) @ q_i * scale
    return dq, dk, dv


# %% nbgrader={"grade": false, "grade_id": "triton_scaled_add", "locked": false, "schema_version": 3, "solution": true, "task": false}
@triton.jit
def scaled_add_kernel(X, Y, OUT, alpha, n, BLOCK: tl.constexpr):
    """OUT[i] = X[i] * alpha + Y[i] for i < n, BLOCK elements per program (X, Y, OUT: n floats each)."""
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)  # this program's elements
    x = tl.load(X + offsets)  # no mask: the last block runs past the end
    y = tl.load(Y + offsets)
    tl.store(OUT + offsets, x * alpha + y)


# %% nbgrader={"grade": false, "grade_id": "triton_softmax", "locked": false, "schema_version": 3, "solution": true, "task": false}
@triton.jit
def softmax_kernel(X, OUT, stride_xm, stride_xn, stride_om, stride_on, n_cols, BLOCK: tl.constexpr):
    """OUT[i] = softmax(X[i]) for the row i = tl.program_id(0); X[i, j] is at X + i * stride_xm + j * stride_xn."""
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    inside = cols < n_cols
    x = tl.load(X + row * stride_xm + cols * stride_xn, mask=inside, other=float("-inf"))
    e = tl.exp(x)  # the row's max not subtracted
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
        acc += tl.dot(b, a, input_precision="ieee")  # operands swapped
    tl.store(C + rows[:, None] * stride_cm + cols[None, :] * stride_cn, acc,
             mask=(rows[:, None] < M) & (cols[None, :] < N))


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
        acc = acc + tl.dot(p.to(v.dtype), v, input_precision="ieee")  # not rescaled
        m = m_new
    acc = acc / l[:, None]
    tl.store(O + bh * stride_ob + rows[:, None] * stride_om + cols_dv[None, :] * stride_od,
             acc.to(O.dtype.element_ty), mask=(rows[:, None] < n_q) & (cols_dv[None, :] < d_v))
    tl.store(LSE + bh * n_q + rows, m + tl.log(l), mask=rows < n_q)
