# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# A sample student of Lesson 2 who got the attention right and the decoder wrong. The additive and
# general scores and the masked additive attention are right. The decoder step forgets the source
# lengths, so its attention also looks at the padding, and the visible case with a padded source
# catches it. Short of time, they trained the model for 40 steps only: it translates almost
# nothing right yet, and the trained-model check fails. Each cell below replaces the answer cell
# with the same grade_id in the released notebook.

# %% nbgrader={"grade": false, "grade_id": "additive_scores", "locked": false, "schema_version": 3, "solution": true, "task": false}
def additive_scores(query, key, W_q, W_k, v):
    q = torch.einsum("...qd,hd->...qh", query, W_q)
    k = torch.einsum("...kd,hd->...kh", key, W_k)
    return torch.einsum("...qkh,h->...qk", torch.tanh(q.unsqueeze(-2) + k.unsqueeze(-3)), v)


# %% nbgrader={"grade": false, "grade_id": "general_scores", "locked": false, "schema_version": 3, "solution": true, "task": false}
def general_scores(query, key, W):
    return query @ (W @ key.transpose(-2, -1))


# %% nbgrader={"grade": false, "grade_id": "additive_attention", "locked": false, "schema_version": 3, "solution": true, "task": false}
def additive_attention(query, key, value, W_q, W_k, v, *, valid_lens=None):
    scores = additive_scores(query, key, W_q, W_k, v)
    if valid_lens is not None:
        positions = torch.arange(key.shape[1]).unsqueeze(0)
        padding = positions >= valid_lens.unsqueeze(1)
        scores = scores.masked_fill(padding.unsqueeze(1), -1e9)
    weights = torch.softmax(scores, dim=-1)
    return torch.bmm(weights, value) if weights.dim() == 3 else weights @ value, weights


# %% nbgrader={"grade": false, "grade_id": "decoder_step", "locked": false, "schema_version": 3, "solution": true, "task": false}
def decoder_step(embedded, hidden, annotations, source_lengths, params):
    # Forgets the source lengths: the padded keys take part in the attention.
    context, weights = additive_attention(hidden.unsqueeze(1), annotations, annotations,
                                          params["W_q"], params["W_k"], params["v"])
    context, weights = context.squeeze(1), weights.squeeze(1)
    new_hidden = gru_cell(torch.cat([embedded, context], dim=1), hidden,
                          params["W_ih"], params["W_hh"], params["b_ih"], params["b_hh"])
    logits = torch.cat([new_hidden, context], dim=1) @ params["W_out"].T + params["b_out"]
    return logits, new_hidden, weights


# %% nbgrader={"grade": false, "grade_id": "train_model", "locked": false, "schema_version": 3, "solution": true, "task": false}
model = Seq2Seq(decoder_step, seed=0)
losses = train_token_classifier(model, data.training_batch, steps=40, lr=5e-3, clip_grad_norm=1.0, seed=0)
