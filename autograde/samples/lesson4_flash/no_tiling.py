# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# A sample student of Lesson 4 whose every output is right and who never tiled anything: the
# "chunked" attention computes all the rows at once, the "tiled" forward builds the whole Lq x Lk
# score matrix and takes `torch.logsumexp` of it, the backward asks autograd for the gradients of
# naive attention, and the "Triton" flash forward is a plain Python function that writes O and LSE
# with torch: no `@triton.jit` kernel runs. The merge of two softmax states and the causal tile mask
# are honest; the three small Triton kernels are left as the release's stubs. Every small case of
# the PyTorch exercises passes; the long ones (Lq = Lk = 512) see the 512 x 512 matrix, the backward
# calls `torch.autograd.grad`, which the exercise does not allow, and the kit's launcher refuses a
# kernel that is not a Triton kernel: 2 of 17 points. Each cell below replaces the answer cell with
# the same grade_id in the released notebook.

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
    scores = query @ key.transpose(-2, -1) * scale  # every chunk at once: the same numbers
    if is_causal:
        future = torch.ones(scores.shape[-2:], dtype=torch.bool).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
    return torch.softmax(scores, dim=-1) @ value


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
    shift = torch.where(torch.isinf(m), torch.zeros_like(m), m)  # two empty blocks: factors exp(-inf) = 0
    alpha, beta = torch.exp(m_a - shift), torch.exp(m_b - shift)
    return m, alpha * l_a + beta * l_b, alpha.unsqueeze(-1) * acc_a + beta.unsqueeze(-1) * acc_b


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
    needed = torch.zeros(math.ceil(n_q / block_q), math.ceil(n_k / block_k), dtype=torch.bool)
    for i in range(needed.shape[0]):
        last_query = min((i + 1) * block_q, n_q) - 1
        for j in range(needed.shape[1]):
            needed[i, j] = j * block_k <= last_query
    return needed


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
    scores = query @ key.transpose(-2, -1) * scale  # (..., Lq, Lk): no tiles
    if is_causal:
        future = torch.ones(scores.shape[-2:], dtype=torch.bool).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    out = torch.exp(scores - lse[..., None]) @ value
    return out, lse.to(torch.promote_types(query.dtype, torch.float32))


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
    q, k, v = (t.detach().requires_grad_() for t in (query, key, value))
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = q @ k.transpose(-2, -1) * scale
    if is_causal:
        scores = scores.masked_fill(torch.ones(scores.shape[-2:], dtype=torch.bool).triu(1), float("-inf"))
    o = torch.softmax(scores, dim=-1) @ v  # naive attention, differentiated by autograd
    return torch.autograd.grad(o, (q, k, v), grad_out)


# %% nbgrader={"grade": false, "grade_id": "triton_flash_forward", "locked": false, "schema_version": 3, "solution": true, "task": false}
def flash_forward_kernel(Q, K, V, O, LSE, *strides_sizes_and_blocks, IS_CAUSAL=False, **blocks):
    """Not a kernel: the whole forward in torch, written into O and LSE (all the query tiles at once)."""
    scores = Q @ K.transpose(-2, -1) * strides_sizes_and_blocks[-1]
    if IS_CAUSAL:
        scores = scores.masked_fill(torch.ones(scores.shape[-2:], dtype=torch.bool).triu(1), float("-inf"))
    O.copy_(torch.softmax(scores, dim=-1) @ V)
    LSE.copy_(torch.logsumexp(scores, dim=-1))
