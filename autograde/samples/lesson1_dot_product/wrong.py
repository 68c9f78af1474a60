# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# A sample student of Lesson 1 who answered everything, each answer with a classic mistake:
# an unnormalised kernel average, the naive softmax, the inverted mask polarity, the transposed
# causal mask, an off-by-one padding mask and no 1/sqrt(d_k). Each cell below replaces the answer
# cell with the same grade_id in the released notebook.

# %% nbgrader={"grade": false, "grade_id": "nadaraya_watson", "locked": false, "schema_version": 3, "solution": true, "task": false}
def nadaraya_watson(queries, keys, values, bandwidth=1.0):
    kernel = torch.exp(-((queries[:, None] - keys[None, :]) ** 2) / (2 * bandwidth**2))
    return kernel @ values  # never divides by the sum of the weights


# %% nbgrader={"grade": false, "grade_id": "softmax", "locked": false, "schema_version": 3, "solution": true, "task": false}
def softmax(x, dim=-1):
    return torch.exp(x) / torch.exp(x).sum(dim=dim, keepdim=True)  # overflows for large logits


# %% nbgrader={"grade": false, "grade_id": "masked_softmax", "locked": false, "schema_version": 3, "solution": true, "task": false}
def masked_softmax(scores, mask=None, dim=-1):
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))  # True read as "masked out"
    shifted = scores - scores.amax(dim=dim, keepdim=True)
    return torch.exp(shifted) / torch.exp(shifted).sum(dim=dim, keepdim=True)


# %% nbgrader={"grade": false, "grade_id": "causal_mask", "locked": false, "schema_version": 3, "solution": true, "task": false}
def causal_mask(n_q, n_k=None):
    n_k = n_q if n_k is None else n_k
    return torch.arange(n_k)[None, :] >= torch.arange(n_q)[:, None]  # looks at the future


# %% nbgrader={"grade": false, "grade_id": "padding_mask", "locked": false, "schema_version": 3, "solution": true, "task": false}
def padding_mask(lengths, max_len):
    return torch.arange(max_len)[None, :] <= lengths[:, None]  # one position too many


# %% nbgrader={"grade": false, "grade_id": "scaled_dot_product_attention", "locked": false, "schema_version": 3, "solution": true, "task": false}
def scaled_dot_product_attention(query, key, value, attn_mask=None, is_causal=False, scale=None):
    scores = query @ key.transpose(-2, -1)  # forgets the 1/sqrt(d_k)
    if is_causal:
        attn_mask = torch.ones(scores.shape[-2:], dtype=torch.bool).tril()
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    elif attn_mask is not None:
        scores = scores + attn_mask
    weights = torch.exp(scores - scores.amax(dim=-1, keepdim=True))
    return weights / weights.sum(dim=-1, keepdim=True) @ value
