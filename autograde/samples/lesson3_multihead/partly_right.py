# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# A sample student of Lesson 3 who got half way. Splitting and merging heads, the sinusoidal
# encoding, the cached attention and the trained model are right. The multi-head attention reads
# key_mask in nn.MultiheadAttention's polarity (True = ignore), which a visible case catches and
# names. The parity exercise uses the keys as values: right wherever key and value are one tensor,
# it fails the visible case where they differ, which names the mistake. RoPE assumes a 4-D input
# (B, H, L, D): it fails the cases with fewer dims, but works inside the cached attention, which
# only gives it 4-D tensors. Each cell below replaces the answer cell with the same grade_id in the
# released notebook.

# %% nbgrader={"grade": false, "grade_id": "split_heads", "locked": false, "schema_version": 3, "solution": true, "task": false}
def split_heads(x, num_heads):
    *lead, length, width = x.shape
    x = x.reshape(*lead, length, num_heads, width // num_heads)
    return x.transpose(-3, -2)


# %% nbgrader={"grade": false, "grade_id": "merge_heads", "locked": false, "schema_version": 3, "solution": true, "task": false}
def merge_heads(x):
    x = x.transpose(-3, -2)
    return x.reshape(*x.shape[:-2], -1)


# %% nbgrader={"grade": false, "grade_id": "multihead_attention", "locked": false, "schema_version": 3, "solution": true, "task": false}
def multihead_attention(query, key, value, W_q, W_k, W_v, W_o, num_heads, *, key_mask=None, is_causal=False):
    q = split_heads(query @ W_q.T, num_heads)
    k = split_heads(key @ W_k.T, num_heads)
    v = split_heads(value @ W_v.T, num_heads)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if key_mask is not None:
        scores = scores.masked_fill(key_mask[:, None, None, :], float("-inf"))  # torch's polarity
    if is_causal:
        future = torch.ones(scores.shape[-2:], dtype=torch.bool).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
    return merge_heads(torch.softmax(scores, dim=-1) @ v) @ W_o.T


# %% nbgrader={"grade": false, "grade_id": "packed_multihead_attention", "locked": false, "schema_version": 3, "solution": true, "task": false}
def packed_multihead_attention(query, key, value, in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias,
                               num_heads, *, key_padding_mask=None):
    E = query.shape[-1]
    b = in_proj_bias if in_proj_bias is not None else torch.zeros(3 * E, dtype=query.dtype)
    q = query @ in_proj_weight[:E].T + b[:E]
    k = key @ in_proj_weight[E:2 * E].T + b[E:2 * E]
    v = key @ in_proj_weight[2 * E:].T + b[2 * E:]  # the keys again: value is never used
    q, k, v = split_heads(q, num_heads), split_heads(k, num_heads), split_heads(v, num_heads)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    out = merge_heads(weights @ v) @ out_proj_weight.T
    return (out + out_proj_bias if out_proj_bias is not None else out), weights.mean(dim=1)


# %% nbgrader={"grade": false, "grade_id": "sinusoidal_encoding", "locked": false, "schema_version": 3, "solution": true, "task": false}
def sinusoidal_encoding(length, d_model):
    pe = torch.zeros(length, d_model)
    position = torch.arange(length).float().unsqueeze(1)
    div = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
    pe[:, 0::2] = torch.sin(position * div)
    pe[:, 1::2] = torch.cos(position * div)
    return pe


# %% nbgrader={"grade": false, "grade_id": "apply_rope", "locked": false, "schema_version": 3, "solution": true, "task": false}
def apply_rope(x, positions=None):
    B, H, L, d = x.shape  # assumes (B, H, L, D): the 2-D and 3-D cases fail
    positions = torch.arange(L) if positions is None else positions
    theta = 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    angles = positions.double()[:, None] * theta
    cos, sin = torch.cos(angles).to(x.dtype), torch.sin(angles).to(x.dtype)
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).reshape(B, H, L, d)


# %% nbgrader={"grade": false, "grade_id": "cached_causal_attention", "locked": false, "schema_version": 3, "solution": true, "task": false}
def cached_causal_attention(x, W_q, W_k, W_v, W_o, num_heads, k_cache, v_cache):
    t_old, t_new = k_cache.shape[2], x.shape[1]
    positions = t_old + torch.arange(t_new)
    q = apply_rope(split_heads(x @ W_q.T, num_heads), positions)
    k_cache = torch.cat([k_cache, apply_rope(split_heads(x @ W_k.T, num_heads), positions)], dim=2)
    v_cache = torch.cat([v_cache, split_heads(x @ W_v.T, num_heads)], dim=2)
    scores = q @ k_cache.transpose(-2, -1) / math.sqrt(q.shape[-1])
    future = torch.ones(t_new, t_old + t_new, dtype=torch.bool).triu(t_old + 1)  # keys after each new token
    weights = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
    return merge_heads(weights @ v_cache) @ W_o.T, k_cache, v_cache


# %% nbgrader={"grade": false, "grade_id": "train_reversal_model", "locked": false, "schema_version": 3, "solution": true, "task": false}
def train_reversal_model(task, seed=0):
    torch.manual_seed(seed)
    model = TinyTransformer(task.vocab_size, task.length)
    train_token_classifier(model, task.training_batch, steps=400, lr=0.01, warmup_steps=40, decay=True,
                           seed=seed, progress=False)
    return model
