# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# A sample student of Lesson 3 with a classic mistake in every exercise. split_heads reshapes
# straight to (B, H, L, D), cutting the sequence instead of the features; merge_heads likewise
# skips the transpose. The multi-head attention scales by sqrt(E) instead of each head's sqrt(D).
# The parity exercise applies torch's (out, in) weights without the transpose. The sinusoidal
# encoding uses 10000^(i/d) instead of 10000^(2i/d). RoPE pairs feature i with i + d/2
# (GPT-NeoX's convention) instead of the interleaved pairs asked for. The cached attention rotates
# the new tokens as if they stood at positions 0, 1, ... instead of after the cached ones. The model
# is trained without positional encoding, so it cannot tell position i from position L-1-i. Each
# cell below replaces the answer cell with the same grade_id in the released notebook.

# %% nbgrader={"grade": false, "grade_id": "split_heads", "locked": false, "schema_version": 3, "solution": true, "task": false}
def split_heads(x, num_heads):
    *lead, length, width = x.shape
    return x.reshape(*lead, num_heads, length, width // num_heads)  # no transpose: wrong axis


# %% nbgrader={"grade": false, "grade_id": "merge_heads", "locked": false, "schema_version": 3, "solution": true, "task": false}
def merge_heads(x):
    *lead, heads, length, head_dim = x.shape
    return x.reshape(*lead, length, heads * head_dim)


# %% nbgrader={"grade": false, "grade_id": "multihead_attention", "locked": false, "schema_version": 3, "solution": true, "task": false}
def multihead_attention(query, key, value, W_q, W_k, W_v, W_o, num_heads, *, key_mask=None, is_causal=False):
    E = query.shape[-1]
    q = (query @ W_q.T).reshape(query.shape[0], query.shape[1], num_heads, -1).transpose(1, 2)
    k = (key @ W_k.T).reshape(key.shape[0], key.shape[1], num_heads, -1).transpose(1, 2)
    v = (value @ W_v.T).reshape(value.shape[0], value.shape[1], num_heads, -1).transpose(1, 2)
    mask = None if key_mask is None else key_mask[:, None, None, :]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, scale=1 / math.sqrt(E))
    return out.transpose(1, 2).reshape(query.shape) @ W_o.T


# %% nbgrader={"grade": false, "grade_id": "packed_multihead_attention", "locked": false, "schema_version": 3, "solution": true, "task": false}
def packed_multihead_attention(query, key, value, in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias,
                               num_heads, *, key_padding_mask=None):
    W_q, W_k, W_v = in_proj_weight.chunk(3)
    b_q, b_k, b_v = in_proj_bias.chunk(3) if in_proj_bias is not None else (0, 0, 0)
    q, k, v = query @ W_q + b_q, key @ W_k + b_k, value @ W_v + b_v  # torch's (out, in) used as (in, out)
    B, Lq, E = query.shape
    sh = lambda t: t.reshape(B, -1, num_heads, E // num_heads).transpose(1, 2)
    scores = sh(q) @ sh(k).transpose(-2, -1) / math.sqrt(E // num_heads)
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    out = (weights @ sh(v)).transpose(1, 2).reshape(B, Lq, E) @ out_proj_weight
    return (out + out_proj_bias if out_proj_bias is not None else out), weights.mean(dim=1)


# %% nbgrader={"grade": false, "grade_id": "sinusoidal_encoding", "locked": false, "schema_version": 3, "solution": true, "task": false}
def sinusoidal_encoding(length, d_model):
    pe = torch.zeros(length, d_model)
    for p in range(length):
        for i in range(d_model // 2):
            pe[p, 2 * i] = math.sin(p / 10000 ** (i / d_model))
            pe[p, 2 * i + 1] = math.cos(p / 10000 ** (i / d_model))
    return pe


# %% nbgrader={"grade": false, "grade_id": "apply_rope", "locked": false, "schema_version": 3, "solution": true, "task": false}
def apply_rope(x, positions=None):
    length, d = x.shape[-2:]
    positions = torch.arange(length) if positions is None else positions
    theta = 10000.0 ** (-torch.arange(0, d, 2, dtype=x.dtype) / d)
    angles = positions.to(x.dtype)[:, None] * theta
    cos, sin = torch.cos(angles), torch.sin(angles)
    first, second = x[..., : d // 2], x[..., d // 2:]  # pairs (i, i + d/2)
    return torch.cat([first * cos - second * sin, first * sin + second * cos], dim=-1)


# %% nbgrader={"grade": false, "grade_id": "cached_causal_attention", "locked": false, "schema_version": 3, "solution": true, "task": false}
def cached_causal_attention(x, W_q, W_k, W_v, W_o, num_heads, k_cache, v_cache):
    B, T, E = x.shape
    q = apply_rope((x @ W_q.T).reshape(B, T, num_heads, -1).transpose(1, 2))  # positions 0..T-1: the cache forgotten
    k_new = apply_rope((x @ W_k.T).reshape(B, T, num_heads, -1).transpose(1, 2))
    k_cache = torch.cat([k_cache, k_new], dim=2)
    v_cache = torch.cat([v_cache, (x @ W_v.T).reshape(B, T, num_heads, -1).transpose(1, 2)], dim=2)
    mask = torch.ones(T, k_cache.shape[2], dtype=torch.bool).tril(diagonal=k_cache.shape[2] - T)
    out = F.scaled_dot_product_attention(q, k_cache, v_cache, attn_mask=mask)
    return out.transpose(1, 2).reshape(B, T, E) @ W_o.T, k_cache, v_cache


# %% nbgrader={"grade": false, "grade_id": "train_reversal_model", "locked": false, "schema_version": 3, "solution": true, "task": false}
def train_reversal_model(task, seed=0):
    torch.manual_seed(seed)
    model = TinyTransformer(task.vocab_size, task.length, use_positions=False)
    train_token_classifier(model, task.training_batch, steps=400, lr=0.01, warmup_steps=40, decay=True,
                           seed=seed, progress=False)
    return model
