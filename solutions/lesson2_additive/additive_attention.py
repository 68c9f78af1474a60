# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Lesson 2 · Additive attention, and a translator that learns to align
#
# In 2014 neural machine translation worked like this: an *encoder* read the source sentence
# into one vector, and a *decoder* wrote the translation from that vector alone. Every sentence,
# long or short, had to squeeze through the same few hundred numbers. Bahdanau, Cho and Bengio
# (2015) removed the squeeze: at every word it writes, their decoder *looks back* at the whole
# source sentence and decides which part of it matters now. That look was the first attention
# in deep learning, and the weights it learned turned out to be word alignments, found by the
# model on its own.
#
# In this lesson you build that model and watch it learn to align:
#
# 1. the task: dates written many ways, to translate into `2021-03-03`;
# 2. from Lesson 1's dot product to a learned score, Bahdanau's additive score (**exercise 1**);
# 3. multiplicative scores, and when each is worth its cost (**exercise 2**);
# 4. masking the padding of a batch (**exercise 3**);
# 5. the decoder step with attention (**exercise 4**);
# 6. training it on the CPU, checked on held-out dates (**exercise 5**);
# 7. the alignments it learned, as heatmaps;
# 8. what goes wrong without attention.
#
# **How the exercises work.** As in Lesson 1: replace `raise NotImplementedError()` with your
# code; the cell below each exercise tests it and says what is wrong, and hidden tests compare it
# with a reference on fresh random inputs when your work is graded. Run the notebook from top to
# bottom: later cells use your functions, and the model you train in exercise 5 runs on *your*
# decoder step. You may use `torch.softmax` here; Lesson 1 was about writing it. What an exercise
# may not call, its own text says.
#
# **The rules for the code you hand in.** Write plain Python on `torch`, `numpy` and `math` (small
# standard modules such as `random`, `time` or `itertools` are fine too): no other imports, no
# opening or writing files, no `eval`, `exec` or `getattr`, and no private parts of torch (names
# that start with `_`). The grader does not run a notebook that breaks these rules, and it scores 0;
# `attention-course validate additive_attention.ipynb` checks them, and runs every visible test,
# before you hand in.

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false, "task": false}
import math
import random
import time
import timeit

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from course_kit.checks import check_exercise
from course_kit.data.dates import FORMATS, make_batch, make_date_splits, random_date
from course_kit.diagrams import draw_encoder_decoder_with_attention
from course_kit.plotting import plot_attention
from course_kit.seq2seq import Seq2Seq, accuracy_by_length, attention_matrix, exact_match, fixed_context_step, gru_cell
from course_kit.training import train_token_classifier

torch.manual_seed(0)  # the same random numbers, and so the same model and pictures, on every run
torch.set_num_threads(1)  # the model is small: one thread is as fast, and leaves the other cores alone
torch.set_printoptions(precision=4, sci_mode=False)

# %% [markdown]
# ## 1. The task: dates, written every which way
#
# People write the same day in many ways. We will teach a network to read them all and write the
# one unambiguous form, ISO 8601's `YYYY-MM-DD`. It is a tiny translation task, one character at
# a time, and like real translation it *reorders*: most sources put the year last, the target
# puts it first; the month is a word in some sources and two digits in the target. To write each
# character, the model has to find the right part of the source. (Two conventions make every
# source unambiguous: slashes are month/day/year, dots are day.month.year, and a two-digit year
# 50–99 is 19xx, 00–49 is 20xx.)
#
# `make_date_splits` draws random days of 1950–2049 in the 14 styles below, from a seed, and
# splits them into training, validation and test sets of distinct examples. Nothing is
# downloaded.

# %%
rng = random.Random(0)
for style in FORMATS:
    source, target = random_date(rng, style)
    print(f"{style:>26}   e.g. {source!r:>30} -> {target}")

data = make_date_splits(n_train=20_000, n_validation=1_000, n_test=1_000, seed=0)
print(f"\n{len(data.train)} training, {len(data.validation)} validation, {len(data.test)} test examples;"
      f" sources of {min(len(s) for s, _ in data.test)} to {max(len(s) for s, _ in data.test)} characters")

# %% [markdown]
# The model reads characters as integer ids. `make_batch` encodes a list of examples and pads
# the sources to the longest one with id 0 (shown as `·`). Remember the padding: attention will
# have to ignore it.

# %%
batch = make_batch(data.train[:3])
for (source, target), ids, length in zip(data.train[:3], batch.source, batch.source_lengths):
    print(f"{source!r:>28} -> {target}: {length} characters, ids {ids.tolist()}")

# %% [markdown]
# ## 2. From the dot product to a learned score
#
# Lesson 1 scored a query $\mathbf q$ against a key $\mathbf k$ with their dot product,
# $a(\mathbf q, \mathbf k) = \mathbf q^\top \mathbf k$ (scaled by $1/\sqrt d$). The score is
# fixed: nothing in it learns what "matching" should mean, and the query and the key must have
# the same size.
#
# Bahdanau et al. (2015, appendix A.1.2) let a small neural network decide instead. Project the
# query and the key into a common space of size $h$, add them, squash with $\tanh$, and read
# the result with a learned vector $\mathbf v$:
#
# $$a(\mathbf q, \mathbf k) = \mathbf v^\top \tanh\!\left(W_q\, \mathbf q + W_k\, \mathbf k\right),
# \qquad W_q \in \mathbb R^{h \times d_q},\; W_k \in \mathbb R^{h \times d_k},\; \mathbf v \in \mathbb R^{h}.$$
#
# Each matrix has its output size first and multiplies a column vector, $W_q \mathbf q$, as a
# PyTorch layer stores and applies its weight (`nn.Linear(d_q, h).weight` is `(h, d_q)`).
#
# The score is a one-hidden-layer perceptron on the pair, and it is called *additive* because
# the query and the key meet by addition. Two things follow. The query and the key can have
# different sizes $d_q \ne d_k$: in the translator, the query is the decoder's state and the
# keys are the encoder's outputs, two different networks. And because of the $\tanh$, the score
# is not bilinear: it can express "this query likes keys *near* that point", not only "in that
# direction".
#
# For $L_q$ queries and $L_k$ keys you need all $L_q \times L_k$ scores. Project each query and
# each key **once**, then let broadcasting form every sum:
#
# | tensor | shape | |
# | --- | --- | --- |
# | `query @ W_q.T` | `(..., Lq, h)` | then `unsqueeze(-2)`: `(..., Lq, 1, h)` |
# | `key @ W_k.T` | `(..., Lk, h)` | then `unsqueeze(-3)`: `(..., 1, Lk, h)` |
# | their sum, $\tanh$ | `(..., Lq, Lk, h)` | one $h$-vector per query-key pair |
# | `@ v` | `(..., Lq, Lk)` | the scores |
#
# ### Exercise 1: additive scores (2 points)
#
# Write `additive_scores`. Its arguments take PyTorch's names (those of
# `F.scaled_dot_product_attention`): `query` holds the $L_q$ queries, one per row, and `key` the
# $L_k$ keys. The weights are stored as `nn.Linear` stores its weight, (out, in), output size
# first: $W_q$ is `(h, d_q)`, and $W_q \mathbf q$ for every row of `query` at once is
# `query @ W_q.T`. That is the convention of the whole course.

# %% nbgrader={"grade": false, "grade_id": "additive_scores", "locked": false, "schema_version": 3, "solution": true, "task": false}
def additive_scores(query, key, W_q, W_k, v):
    """Bahdanau's additive scores v^T tanh(W_q q_i + W_k k_j) for every query i and key j.

    Args:
        query: float tensor (..., Lq, d_q), the Lq queries.
        key: float tensor (..., Lk, d_k), the Lk keys, the same leading dims as query; d_k may differ from d_q.
        W_q: float tensor (h, d_q), the query projection.
        W_k: float tensor (h, d_k), the key projection.
        v: float tensor (h,), reads the score off the hidden layer.

    Returns:
        Float tensor (..., Lq, Lk): entry [..., i, j] scores query i against key j.
    """
    ### BEGIN SOLUTION
    projected_query = query @ W_q.T  # (..., Lq, h)
    projected_key = key @ W_k.T  # (..., Lk, h)
    hidden = torch.tanh(projected_query[..., :, None, :] + projected_key[..., None, :, :])  # (..., Lq, Lk, h)
    return hidden @ v  # (..., Lq, Lk, h) @ (h,) -> (..., Lq, Lk)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "additive_scores_tests", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
### BEGIN HIDDEN TESTS
from course_kit.answers import record_answers
record_answers("additive_scores", additive_scores)
### END HIDDEN TESTS
check_exercise("additive_scores", additive_scores)

# %% [markdown]
# What does a learned score look like? Take 2-D keys on a grid and one query, with a random
# scorer of $h = 8$ hidden units. The dot product can only tilt a plane across the key space
# (left); the additive score, a sum of $h$ squashed planes, bends (right). Training chooses
# $W_q$, $W_k$ and $\mathbf v$ so that the keys worth looking at score high.

# %%
grid = torch.linspace(-3, 3, 61)
key_grid = torch.cartesian_prod(grid, grid)  # (3721, 2): every point of the plane, as keys
query = torch.tensor([[1.0, 0.5]])  # (1, 2)
W_q, W_k, v = torch.randn(8, 2), torch.randn(8, 2), torch.randn(8)
maps = torch.stack([(query @ key_grid.T).view(61, 61), additive_scores(query, key_grid, W_q, W_k, v).view(61, 61)])
fig, axes = plt.subplots(1, 2, figsize=(8, 3.6), layout="constrained")
for ax, score_map, title in zip(axes, maps, ["dot product $\\mathbf{q}^\\top\\mathbf{k}$",
                                             "additive $\\mathbf{v}^\\top\\tanh(W_q\\mathbf{q} + W_k\\mathbf{k})$"]):
    image = ax.imshow(score_map.T, origin="lower", extent=(-3, 3, -3, 3), cmap="RdBu_r")
    ax.set(title=title, xlabel="key component 1", ylabel="key component 2")
    fig.colorbar(image, ax=ax, shrink=0.8)
plt.show()

# %% [markdown]
# ## 3. Multiplicative scores, and what each costs
#
# Luong, Pham and Manning (2015, section 3.1) compared three scores of a query and a key in one
# decoder: *concat*, $\mathbf v_a^\top \tanh(W_a [\mathbf q; \mathbf k])$, which is Bahdanau's
# additive score with its two matrices side by side, $W_a = [W_q \; W_k]$, and two
# *multiplicative* ones:
#
# $$a_{\text{dot}}(\mathbf q, \mathbf k) = \mathbf q^\top \mathbf k,
# \qquad
# a_{\text{general}}(\mathbf q, \mathbf k) = \mathbf q^\top W \mathbf k, \quad W \in \mathbb R^{d_q \times d_k}.$$
#
# Their decoder is not Bahdanau's: its query is always the *current* state $\mathbf h_t$, which
# the recurrent network computes before the decoder looks at the source, where Bahdanau's looks
# first, with the previous state $\mathbf s_{t-1}$ (section 5).
#
# The *general* score keeps a learned matrix but drops the $\tanh$: it is bilinear, and for all
# pairs at once it is two matrix products, $(Q W) K^\top$. Read it as $\mathbf q^\top (W \mathbf k)$:
# $W$ takes a key to the query's size, output size first, as `nn.Linear(d_k, d_q).weight` is
# `(d_q, d_k)`. Like the additive score, it accepts $d_q \ne d_k$; the plain dot product does not.
#
# ### Exercise 2: the general (bilinear) score (1 point)
#
# Write `general_scores`, for queries and keys with any leading dims. With $W = I$ it must give
# the dot product.

# %% nbgrader={"grade": false, "grade_id": "general_scores", "locked": false, "schema_version": 3, "solution": true, "task": false}
def general_scores(query, key, W):
    """Luong's general scores q_i^T W k_j for every query i and key j.

    Args:
        query: float tensor (..., Lq, d_q), the Lq queries.
        key: float tensor (..., Lk, d_k), the Lk keys, the same leading dims as query.
        W: float tensor (d_q, d_k).

    Returns:
        Float tensor (..., Lq, Lk).
    """
    ### BEGIN SOLUTION
    return (query @ W) @ key.transpose(-2, -1)  # (..., Lq, d_k) @ (..., d_k, Lk) -> (..., Lq, Lk)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "general_scores_tests", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
### BEGIN HIDDEN TESTS
from course_kit.answers import record_answers
record_answers("general_scores", general_scores)
### END HIDDEN TESTS
check_exercise("general_scores", general_scores)

# %% [markdown]
# Now the price of each. Count multiply-adds for $L_q$ queries and $L_k$ keys, with the
# projections computed once (as you did):
#
# | score | parameters | work | memory beyond the scores |
# | --- | --- | --- | --- |
# | dot | none | $L_q L_k\, d$ | none |
# | general | $d_q d_k$ | $L_q d_q d_k + L_q L_k\, d_k$ | $L_q d_k$ |
# | additive | $h(d_q + d_k + 1)$ | $h(L_q d_q + L_k d_k) + L_q L_k\, h$, plus $L_q L_k h$ tanh | $L_q L_k\, h$ |
#
# Per *pair*, the dot and general scores cost one length-$d$ dot product, done by one big matrix
# multiplication. The additive score costs $h$ additions, $h$ tanh and $h$ multiply-adds, and it
# materialises an $(L_q, L_k, h)$ tensor: $h$ times the memory of the scores. For the short
# sentences of 2015 that was nothing; for the thousands of tokens of a transformer it is why
# Vaswani et al. (2017) chose the scaled dot product.
#
# Measured here, on one thread: each time is the fastest of many calls (at least 5, and as many
# as fit in a tenth of a second). Other programs on the machine can only slow a call down, never
# speed it up, so the minimum is the call they disturbed least (the advice of the documentation
# of Python's `timeit`); an average would measure the machine's load as much as the code.

# %%
def fastest_ms(fn, seconds=0.1):
    """Milliseconds per call of fn(): the fastest of at least 5 calls, and of as many as fit in `seconds`."""
    first = timeit.timeit(fn, number=1)  # also warms up
    calls = max(5, min(200, int(seconds / first)))
    return min(timeit.repeat(fn, number=1, repeat=calls)) * 1000


d = 64
W = torch.randn(d, d) / math.sqrt(d)
W_q, W_k, v = torch.randn(64, d) / math.sqrt(d), torch.randn(64, d) / math.sqrt(d), torch.randn(64)
print(f"{'L = Lq = Lk':>12} {'dot':>9} {'general':>9} {'additive':>10} {'additive / dot':>15}   "
      f"(milliseconds, d = h = {d})")
for L in [64, 256, 512]:
    Q, K = torch.randn(L, d), torch.randn(L, d)
    dot, general = fastest_ms(lambda: Q @ K.T), fastest_ms(lambda: general_scores(Q, K, W))
    additive = fastest_ms(lambda: additive_scores(Q, K, W_q, W_k, v))
    print(f"{L:>12} {dot:9.3f} {general:9.3f} {additive:10.2f} {additive / dot:14.0f}x")

Q, K = torch.randn(128, d), torch.randn(128, d)
print(f"\n{'h':>12} {'additive':>10}   (milliseconds, L = 128, d = {d})")
for h in [16, 64, 256]:
    W_q, W_k, v = torch.randn(h, d) / math.sqrt(d), torch.randn(h, d) / math.sqrt(d), torch.randn(h)
    print(f"{h:>12} {fastest_ms(lambda: additive_scores(Q, K, W_q, W_k, v)):10.2f}")

# %% [markdown]
# The dot and general scores cost alike: the general score adds one small matrix product,
# $(L_q, d_q) \times (d_q, d_k)$, to the scores' $L_q L_k d$ multiply-adds (at $L = 64$, where
# both take microseconds, its two operator calls take about twice the dot product's one). The
# additive score is about a hundred times slower than the dot product, or more (the last
# column), and its time grows with $h$, about in proportion or faster (the second table): it
# builds and squashes an $(L_q, L_k, h)$ tensor. What it buys is expressiveness and freedom of
# sizes, which is what a small recurrent translator needs.
#
# Which score translates best? Luong et al. (2015, section 5.3 and table 4) compared them on
# English to German, in their decoder. Their implementation of concat "does not yield good
# performances" (in a footnote they suspect a simplification of theirs); dot works well for their
# *global* attention, over every source word as here, and general is better for their *local*
# attention, over a window of source words around a predicted position. Those are findings for
# a decoder that queries with $\mathbf h_t$, not a verdict on Bahdanau's model. The transformer
# then made the dot product fast *and* good, with learned projections of the queries and keys
# and Lesson 1's $1/\sqrt{d}$ (Vaswani et al., 2017).
#
# ## 4. Attention over a padded batch
#
# Attention turns the scores into weights with a softmax over the keys and returns the weighted
# average of the values, the *context*:
#
# $$\alpha_{ij} = \frac{\exp a(\mathbf q_i, \mathbf k_j)}{\sum_{j'} \exp a(\mathbf q_i, \mathbf k_{j'})},
# \qquad \mathbf c_i = \sum_j \alpha_{ij}\, \mathbf v_j .$$
#
# In a batch, the sources are padded to one length. The padding characters are not part of the
# sentence, so they must get weight **exactly** 0: a small weight on a padding key would still
# mix garbage into the context, and make a sentence's translation depend on the length of the
# longest sentence it happens to be batched with. The batch tells us each source's real length,
# its *valid length*: key $j$ of batch element $b$ takes part if $j$ < `valid_lens[b]`. Set
# the other scores to $-\infty$ before the softmax, and $e^{-\infty} = 0$ does the rest.
#
# ### Exercise 3: additive attention with masked padding (3 points)
#
# Write `additive_attention`: your scores, the masked softmax over the keys, the context. It
# returns both the context and the weights (we will plot the weights). With
# `valid_lens=None`, every key takes part. The `*` in its signature makes `valid_lens` an option
# passed by name, `valid_lens=...`, as PyTorch passes its options.
#
# *Hint*: `torch.arange(Lk) < valid_lens[:, None]` is `(B, Lk)`, True where a key is real
# (Lesson 1's padding mask); insert a query dimension to broadcast it against `(B, Lq, Lk)`
# scores, and use `masked_fill`.
#
# Use `torch.softmax` for the softmax. `F.scaled_dot_product_attention` and `nn.MultiheadAttention`
# are not allowed in this function: given your scores as a float mask, either would compute the
# rest of the exercise for you.

# %% nbgrader={"grade": false, "grade_id": "additive_attention", "locked": false, "schema_version": 3, "solution": true, "task": false}
def additive_attention(query, key, value, W_q, W_k, v, *, valid_lens=None):
    """Additive attention: softmax over the keys of the additive scores, then the weighted values.

    Args:
        query: float tensor (B, Lq, d_q), the queries (or no batch dim when valid_lens is None).
        key: float tensor (B, Lk, d_k), the keys.
        value: float tensor (B, Lk, Dv), one value per key.
        W_q, W_k, v: the parameters of additive_scores.
        valid_lens: None, or an integer tensor (B,) with 1 <= valid_lens[b] <= Lk: the keys
            j >= valid_lens[b] of batch element b are padding and get weight exactly 0.

    Returns:
        A tuple (context, weights): context (B, Lq, Dv), the weighted average of the values for
        each query; weights (B, Lq, Lk), each row summing to 1 over the real keys.
    """
    ### BEGIN SOLUTION
    scores = additive_scores(query, key, W_q, W_k, v)  # (B, Lq, Lk)
    if valid_lens is not None:
        is_real = torch.arange(key.shape[-2], device=key.device) < valid_lens[:, None]  # (B, Lk)
        scores = scores.masked_fill(~is_real[:, None, :], float("-inf"))  # (B, 1, Lk) broadcasts over queries
    weights = torch.softmax(scores, dim=-1)  # (B, Lq, Lk); exp(-inf) = 0 for padding
    return weights @ value, weights  # (B, Lq, Lk) @ (B, Lk, Dv) -> (B, Lq, Dv)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "additive_attention_tests", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
### BEGIN HIDDEN TESTS
from course_kit.answers import record_answers
record_answers("additive_attention", additive_attention)
### END HIDDEN TESTS
check_exercise("additive_attention", additive_attention)

# %% [markdown]
# Here it is on a batch of three real sources, padded to the longest, with random parameters
# (nothing is trained yet) and a query per source. Past the end of each source, in the padding,
# the weights are exactly zero (black); the real characters share the weight, in no meaningful
# way yet.

# %%
examples = [data.test[0], data.test[1], data.test[2]]
batch = make_batch(examples)
key = torch.randn(3, batch.source.shape[1], 6)  # stand-ins for the encoder's outputs
context, weights = additive_attention(torch.randn(3, 1, 4), key, key, torch.randn(5, 4), torch.randn(5, 6),
                                      torch.randn(5), valid_lens=batch.source_lengths)
print("weight on padding:", weights[torch.arange(key.shape[1]) >= batch.source_lengths[:, None, None]].sum().item())
width = batch.source.shape[1]
plot_attention(weights[:, 0, :], query_labels=[s for s, _ in examples],
               key_labels=[str(j) for j in range(width)], xlabel="source position (key)",
               ylabel="source (one query each)", cmap="magma", panel_size=4)

# %% [markdown]
# ## 5. The decoder step
#
# The translator has two parts. The **encoder** is a bidirectional GRU, a recurrent network read
# left to right and right to left, that turns each source character $x_j$ into an
# *annotation* $\mathbf h_j$ (size $K = 128$) describing that character in its context: the
# keys and the values of attention. The **decoder** is a GRU cell that writes the ten target
# characters one by one. Its state $\mathbf s_{t-1}$ remembers what it has written so far.
# Each step is Bahdanau et al.'s (2015, eqs. 4–6), with a simplified output layer:
#
# 1. **Look.** Query the annotations with the previous state:
#    $\mathbf c_t, \boldsymbol\alpha_t = \operatorname{attention}(\mathbf s_{t-1}, \mathbf h, \mathbf h)$,
#    the padding masked by the source lengths.
# 2. **Update.** Feed the previous character's embedding $\mathbf e(y_{t-1})$ and the context
#    to the GRU: $\mathbf s_t = \operatorname{GRU}([\mathbf e(y_{t-1}); \mathbf c_t],\, \mathbf s_{t-1})$.
# 3. **Predict.** Score every target character from the new state and the context:
#    $\text{logits}_t = W_{\text{out}} [\mathbf s_t; \mathbf c_t] + \mathbf b_{\text{out}}$.
#    This layer is *simplified*: Bahdanau et al.'s also reads the previous character $y_{t-1}$
#    and has a hidden layer of maxout units, a "deep output" (their appendix A.2.2). A linear
#    layer is enough for dates.
#
# Here is one step, the one that writes the `6` of `1968-11-05` from the source `5.11.68`. The
# annotations are both the keys and the values; the previous state is the query; the weights
# (made up for the picture: section 7 shows the ones the model learns) say how much of each
# annotation goes into the context, which feeds both the GRU and the output layer.

# %%
draw_encoder_decoder_with_attention("5.11.68", previous="9", written="6")

# %% [markdown]
# The GRU cell is given, as `gru_cell(x, h, W_ih, W_hh, b_ih, b_hh)` (the equations of
# `torch.nn.GRUCell`, Cho et al. 2014). Here is the step of the 2014 encoder-decoder *without*
# attention, from the student kit: its context is one fixed vector, the encoder's final
# states, the same at every step. Yours replaces it with a context that moves.

# %%
import inspect

print(inspect.getsource(fixed_context_step))

# %% [markdown]
# ### Exercise 4: the decoder step with attention (3 points)
#
# Write `decoder_step`. The parameters come in the dict `params`: `W_q`, `W_k`, `v` for your
# `additive_attention`; `W_ih`, `W_hh`, `b_ih`, `b_hh` for `gru_cell`; `W_out`, `b_out` for the
# output layer (`F.linear(x, W, b)` is `x @ W.T + b`). The query is a single vector per batch
# element: give it a length-1 query dimension, `hidden[:, None, :]`, and remove it from the
# results. Use the *previous* state as the query, as Bahdanau et al. did. (Luong et al.'s decoder,
# section 3, updates its state first and queries with the new one; the tests here expect
# Bahdanau's order.) Attend with your `additive_attention`: as in exercise 3,
# `F.scaled_dot_product_attention` and `nn.MultiheadAttention` are not allowed in the step.

# %% nbgrader={"grade": false, "grade_id": "decoder_step", "locked": false, "schema_version": 3, "solution": true, "task": false}
def decoder_step(embedded, hidden, annotations, source_lengths, params):
    """One decoder step with additive attention: look, update, predict.

    Args:
        embedded: float tensor (B, E), the embedding of the previous target character.
        hidden: float tensor (B, H), the previous decoder state s_{t-1}, the attention query.
        annotations: float tensor (B, Ls, K), the encoder's annotations h_j: the keys and the values.
        source_lengths: integer tensor (B,), the number of real (unpadded) source characters.
        params: dict of float tensors: W_q (a, H), W_k (a, K), v (a,); W_ih (3H, E + K),
            W_hh (3H, H), b_ih (3H,), b_hh (3H,); W_out (V, H + K), b_out (V,).

    Returns:
        A tuple (logits, new_hidden, weights): logits (B, V) over the target characters,
        new_hidden (B, H) the state s_t, weights (B, Ls) the attention paid to each source character.
    """
    ### BEGIN SOLUTION
    context, weights = additive_attention(hidden[:, None, :], annotations, annotations, params["W_q"],
                                          params["W_k"], params["v"], valid_lens=source_lengths)  # (B, 1, K), (B, 1, Ls)
    context, weights = context[:, 0], weights[:, 0]  # (B, K), (B, Ls)
    gru_input = torch.cat([embedded, context], dim=-1)  # (B, E + K)
    new_hidden = gru_cell(gru_input, hidden, params["W_ih"], params["W_hh"], params["b_ih"], params["b_hh"])
    logits = F.linear(torch.cat([new_hidden, context], dim=-1), params["W_out"], params["b_out"])  # (B, V)
    return logits, new_hidden, weights
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "decoder_step_tests", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
### BEGIN HIDDEN TESTS
from course_kit.answers import record_answers
record_answers("decoder_step", decoder_step)
### END HIDDEN TESTS
check_exercise("decoder_step", decoder_step)

# %% [markdown]
# ## 6. Training the translator
#
# `Seq2Seq(step)` builds the whole model around a decoder step: embeddings, the encoder, the
# first state $\mathbf s_0$ from the encoder's final states, and the decoder's parameters in
# the dict your step receives. During training the decoder is fed the *true* previous
# character (teacher forcing), and the loss is the cross-entropy of each of the ten target
# characters. The course's training loop, `train_token_classifier(model, data.training_batch,
# steps=..., lr=...)` (Lesson 3 trains a transformer with it too), runs AdamW on random batches of
# the training pairs, drawn by `data.training_batch(batch_size, generator)`, with a progress bar,
# and returns the loss of every step. When translating, `model.translate(sources)` feeds back its
# own most likely character instead (greedy decoding).
#
# ### Exercise 5: train a model that translates dates (2 points)
#
# Build a `Seq2Seq` called `model` on **your** `decoder_step`, with `seed=0` and the default
# sizes (embeddings of 32, states of 64, $h = 64$), and train it on `data.train`, keeping the
# losses in a list called `losses`. The test translates the 1,000 test dates with your model and
# needs at least 90% exactly right; graded, it also translates 500 other dates, the same for
# everyone. The cell should finish in well under a minute: 250 steps of 64 examples are enough,
# at a learning rate of 0.01 warmed up over the first 25 steps and decayed to 0 by the last (`warmup_steps=25, decay=True`), with the
# gradients clipped to norm 1 (`clip_grad_norm=1.0`: a recurrent network's gradients occasionally
# explode). The decay lets the last steps settle into a minimum instead of jumping around it, so
# the model comes out as good on any CPU, whichever way it rounds.
#
# The model runs your decoder step, and the grader runs it under the step's rule: no
# `F.scaled_dot_product_attention`, no `nn.MultiheadAttention`.

# %% nbgrader={"grade": false, "grade_id": "train_model", "locked": false, "schema_version": 3, "solution": true, "task": false}
model = None  # replace None by your trained Seq2Seq
### BEGIN SOLUTION
model = Seq2Seq(decoder_step, embed_size=32, hidden_size=64, attention_size=64, seed=0)
training_started = time.perf_counter()
losses = train_token_classifier(model, data.training_batch, steps=250, lr=1e-2,
                                warmup_steps=25, decay=True, clip_grad_norm=1.0, seed=0)
print(f"trained in {time.perf_counter() - training_started:.1f} s")
### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "train_model_tests", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
### BEGIN HIDDEN TESTS
from course_kit.answers import record_answers
record_answers("trained_model", model)
### END HIDDEN TESTS
check_exercise("trained_model", model)

# %% [markdown]
# The loss falls fast once the model has found where to look. On examples it never saw:

# %%
fig, ax = plt.subplots(figsize=(6, 3), layout="constrained")
ax.semilogy(losses, lw=1)
ax.set(xlabel="training step", ylabel="cross-entropy per character", title="Training loss")
plt.show()
print(f"exact match: validation {exact_match(model, data.validation):.1%}, test {exact_match(model, data.test):.1%}")
for source, target in data.test[:6]:
    print(f"{source!r:>30} -> {model.translate([source])[0]}   (expected {target})")

# %% [markdown]
# ## 7. What the model looks at
#
# For every character it writes (rows), the decoder's attention weights over the source
# characters (columns): `attention_matrix(model, source)` returns them for one source. Nobody
# told the model which source characters hold the year; it found them, because looking there
# made its predictions right.

# %%
sources = ["3rd of March, 2021", "Wednesday, August 17, 1977", "12/31/1999", "5.11.68"]
fig, axes = plt.subplots(2, 2, figsize=(12, 7), layout="constrained", width_ratios=[1, 1.4])
for ax, source in zip(axes.T.flatten(), sources):
    weights, translation = attention_matrix(model, source)  # (10, Ls): written character x source character
    plot_attention(weights, ax=ax, query_labels=list(translation), key_labels=list(source),
                   titles=f"{source!r} -> {translation}", xlabel="source character", ylabel="written character")
plt.show()

# %% [markdown]
# Read each map row by row. The four year digits look at the year, wherever the source put it:
# at the end in `3rd of March, 2021` and `12/31/1999`, so the first rows look far to the right.
# Then the month digits jump back to the month, a word or a number, and the day digits to the
# day. The diagonal of a character-for-character copy is cut into blocks and put back in the
# target's order: an *alignment* with reordering, learned from nothing but (source, target)
# pairs. A look is often one character off, or spread over two: each annotation $\mathbf h_j$
# also describes its neighbours (the encoder read in both directions), so a neighbour can do.
# Look at `5.11.68` too: to write `19`, the model looks at the `6`, the digit that decides the
# century. The hyphens, always in the same place, hardly need the source at all.
#
# ## 8. Without attention: the fixed-vector bottleneck
#
# Bahdanau et al.'s motivation was that an encoder-decoder without attention must compress the
# whole source into one vector, and does worse the longer the source (their figure 2: the BLEU
# of the fixed-vector model falls steeply for sentences over 20 words). Let's train the same
# model with `fixed_context_step` instead of your step, on the **same** budget of 250 steps,
# and compare exact-match accuracy by the length of the source. (A small budget on purpose,
# to keep this notebook fast: given many more steps the fixed-vector model also learns these
# short dates; the point is how much harder it has to work.)

# %%
baseline = Seq2Seq(fixed_context_step, seed=0)
baseline_losses = train_token_classifier(baseline, data.training_batch, steps=250, lr=1e-2, warmup_steps=25,
                                         decay=True, clip_grad_norm=1.0, seed=0)
by_length = {"with attention": accuracy_by_length(model, data.test),
             "fixed vector": accuracy_by_length(baseline, data.test)}
labels = list(by_length["with attention"])
fig, (ax_loss, ax_len) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
ax_loss.semilogy(losses, lw=1, label="with attention")
ax_loss.semilogy(baseline_losses, lw=1, label="fixed vector")
ax_loss.set(xlabel="training step", ylabel="cross-entropy per character", title="Same budget, same data")
for offset, (name, accuracies) in zip([-0.2, 0.2], by_length.items()):
    ax_len.bar([i + offset for i in range(len(labels))], [accuracies[b][0] for b in labels], width=0.4, label=name)
ax_len.set_xticks(range(len(labels)), [f"{b}\n({by_length['fixed vector'][b][1]})" for b in labels])
ax_len.set(xlabel="source length in characters (number of test examples)", ylabel="exact match",
           ylim=(0, 1.05), title="Test accuracy by source length")
# one legend for both panels, above them: inside the axes it would cover the tallest bars
fig.legend(*ax_len.get_legend_handles_labels(), loc="outside upper center", ncols=2)
plt.show()
print(f"exact match on the test set: with attention {exact_match(model, data.test):.1%}, "
      f"fixed vector {exact_match(baseline, data.test):.1%}")

# %% [markdown]
# With the same data and the same number of steps, the fixed-vector model is far behind
# (left), and its loss falls much more slowly. Its accuracy (right) is low at *every* length,
# and lowest on the short, all-digit sources (`3.3.21`, `3/3/21`, `20210303`): there a single
# separator decides which number is the month, and the one vector must carry that and every
# digit to the decoder. Our sources are at most 29 characters, so the length effect Bahdanau
# et al. measured, on sentences of 20 to 60 *words*, does not show here: a date fits in 128
# numbers. What shows is the cost of the squeeze for learning: attention lets every step read
# the source afresh, so the decoder only has to learn *where* to look.
#
# ## Recap
#
# * Additive attention scores a query against a key with a small network,
#   $\mathbf v^\top \tanh(W_q \mathbf q + W_k \mathbf k)$, so queries and keys may differ in
#   size, at the cost of an $(L_q, L_k, h)$ tensor of work and memory.
# * Multiplicative scores, $\mathbf q^\top \mathbf k$ and $\mathbf q^\top W \mathbf k$, are one
#   matrix product for all pairs: the path the transformer took.
# * Padded keys get a score of $-\infty$ and so a weight of exactly 0.
# * A decoder with attention looks at the source with its previous state, then updates its
#   state and predicts. The weights it learns are alignments, with reordering.
# * Without attention, the whole source must fit in one vector: on the same budget the model
#   learns far more slowly (and, on long sentences, Bahdanau et al. found it falls apart).
#
# Next, Lesson 3: the transformer drops the recurrence and lets every position attend to every
# other, with several heads at once.
