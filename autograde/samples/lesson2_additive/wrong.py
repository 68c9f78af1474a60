# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# A sample student of Lesson 2 with a plausible mistake everywhere. The additive score forgets the
# tanh. The general score multiplies by W on the key side, transposed, which only works when
# d_q = d_k. The attention masks the real keys instead of the padding (mask polarity). The decoder
# step uses the *new* state as the query, computed from a context of zeros. The model is trained for
# 20 steps. Each cell below replaces the answer cell with the same grade_id in the released notebook.

# %% nbgrader={"grade": false, "grade_id": "additive_scores", "locked": false, "schema_version": 3, "solution": true, "task": false}
def additive_scores(query, key, W_q, W_k, v):
    hidden = (query @ W_q.T).unsqueeze(-2) + (key @ W_k.T).unsqueeze(-3)  # no tanh
    return hidden @ v


# %% nbgrader={"grade": false, "grade_id": "general_scores", "locked": false, "schema_version": 3, "solution": true, "task": false}
def general_scores(query, key, W):
    return query @ (key @ W).transpose(-2, -1)


# %% nbgrader={"grade": false, "grade_id": "additive_attention", "locked": false, "schema_version": 3, "solution": true, "task": false}
def additive_attention(query, key, value, W_q, W_k, v, *, valid_lens=None):
    scores = additive_scores(query, key, W_q, W_k, v)
    if valid_lens is not None:
        real = torch.arange(key.shape[-2]) < valid_lens[:, None]
        scores = scores.masked_fill(real[:, None, :], float("-inf"))  # masks the real keys, not the padding
    weights = torch.softmax(scores, dim=-1)
    return weights @ value, weights


# %% nbgrader={"grade": false, "grade_id": "decoder_step", "locked": false, "schema_version": 3, "solution": true, "task": false}
def decoder_step(embedded, hidden, annotations, source_lengths, params):
    empty_context = torch.zeros(annotations.shape[0], annotations.shape[2])
    new_hidden = gru_cell(torch.cat([embedded, empty_context], dim=-1), hidden,
                          params["W_ih"], params["W_hh"], params["b_ih"], params["b_hh"])
    context, weights = additive_attention(new_hidden[:, None], annotations, annotations, params["W_q"], params["W_k"],
                                          params["v"], valid_lens=source_lengths)
    logits = F.linear(torch.cat([new_hidden, context[:, 0]], dim=-1), params["W_out"], params["b_out"])
    return logits, new_hidden, weights[:, 0]


# %% nbgrader={"grade": false, "grade_id": "train_model", "locked": false, "schema_version": 3, "solution": true, "task": false}
model = Seq2Seq(decoder_step, seed=0)
losses = train_token_classifier(model, data.training_batch, steps=20, lr=5e-3, clip_grad_norm=1.0, seed=0)
