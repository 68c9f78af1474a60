# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# A sample student of Lesson 1 who got half way. The softmax and the causal mask are right.
# Nadaraya-Watson skips the max shift, so the queries far from every key (every kernel underflows
# to 0) give NaN, in the visible case and the hidden one alike, and the message names the shift.
# The masked softmax returns NaN on a row whose every key is masked. scaled_dot_product_attention
# is right but calls torch.softmax, which the exercise does not allow: 0 points, the call named.
# padding_mask was never started. Each cell below replaces the answer cell with the same grade_id
# in the released notebook.

# %% nbgrader={"grade": false, "grade_id": "nadaraya_watson", "locked": false, "schema_version": 3, "solution": true, "task": false}
def nadaraya_watson(queries, keys, values, bandwidth=1.0):
    diff = queries.unsqueeze(1) - keys.unsqueeze(0)
    weights = torch.exp(-diff**2 / (2 * bandwidth**2))  # every weight underflows far from the keys
    weights = weights / weights.sum(dim=1, keepdim=True)
    return (weights * values).sum(dim=1)


# %% nbgrader={"grade": false, "grade_id": "softmax", "locked": false, "schema_version": 3, "solution": true, "task": false}
def softmax(x, dim=-1):
    e = torch.exp(x - x.max(dim=dim, keepdim=True).values)
    return e / e.sum(dim=dim, keepdim=True)


# %% nbgrader={"grade": false, "grade_id": "masked_softmax", "locked": false, "schema_version": 3, "solution": true, "task": false}
def masked_softmax(scores, mask=None, dim=-1):
    # Forgets the fully masked row: its max is -inf, and exp(-inf - -inf) is NaN.
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return softmax(scores, dim=dim)


# %% nbgrader={"grade": false, "grade_id": "causal_mask", "locked": false, "schema_version": 3, "solution": true, "task": false}
def causal_mask(n_q, n_k=None):
    n_k = n_q if n_k is None else n_k
    return torch.ones(n_q, n_k, dtype=torch.bool).tril()


# %% nbgrader={"grade": false, "grade_id": "scaled_dot_product_attention", "locked": false, "schema_version": 3, "solution": true, "task": false}
def scaled_dot_product_attention(query, key, value, attn_mask=None, is_causal=False, scale=None):
    scale = 1 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = query @ key.transpose(-2, -1) * scale
    if is_causal:
        attn_mask = causal_mask(query.shape[-2], key.shape[-2])
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    elif attn_mask is not None:
        scores = scores + attn_mask
    return torch.softmax(scores, dim=-1) @ value  # torch's softmax: not allowed in this exercise
