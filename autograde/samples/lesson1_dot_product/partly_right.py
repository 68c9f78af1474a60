# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# A sample student of Lesson 1 who got half way. The softmax and the causal mask are right.
# Nadaraya-Watson passes every visible case but skips the max shift, so the hidden case with
# queries far from every key (every kernel underflows to 0) gives NaN. The masked softmax returns
# NaN on a row whose every key is masked. padding_mask and scaled_dot_product_attention were never
# started. Each cell below replaces the answer cell with the same grade_id in the released notebook.

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
