# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Lesson 1 · Dot-product attention
#
# Every layer of a transformer lets each word of a sentence look at the other words and decide
# which of them matter for it. That look is *attention*, and it fits in one line:
#
# $$\operatorname{Attention}(Q, K, V) = \operatorname{softmax}\!\left(\frac{QK^\top}{\sqrt{d_k}}\right) V .$$
#
# In this lesson you build that line from the ground up, one idea at a time:
#
# 1. attention as a *soft* dictionary lookup;
# 2. a softmax that does not overflow (**exercise 1**);
# 3. attention's ancestor from 1964, Nadaraya–Watson kernel regression (**exercise 2**);
# 4. masks, for padding and for causality (**exercises 3, 4, 5**);
# 5. scaled dot-product attention itself (**exercise 6**);
# 6. why we divide by $\sqrt{d_k}$, measured rather than taken on faith: what it does to the
#    weights and to their gradient;
# 7. how to read attention heatmaps;
# 8. why attention, on its own, does not know the order of the words.
#
# **How the exercises work.** Each exercise is a function with its signature and docstring already
# written: replace `raise NotImplementedError()` with your code. The cell below it tests your
# function on a few cases and prints a ✓, or tells you which case failed and what came out instead.
# When your work is graded, hidden tests also compare it with a reference implementation on fresh
# random inputs, so make it right in general, not just on the visible cases. Later cells use your
# functions, so run the notebook from top to bottom. From a terminal,
# `attention-course validate dot_product_attention.ipynb` runs all visible tests at once.
#
# **What an exercise may call.** Build everything from basic tensor operations (`@`, `torch.exp`,
# `.sum`, `.amax`, `masked_fill`, broadcasting) and from your own functions of the earlier
# exercises. PyTorch's own softmax (`torch.softmax`, `F.softmax`, `x.softmax`, `log_softmax`) would
# skip exactly what an exercise that computes a softmax is about, so exercises 1, 2, 3 and 6 may
# not call it; `F.scaled_dot_product_attention` and `nn.MultiheadAttention` no exercise may call.
# The grader checks: an answer that calls one of them scores 0 for its exercise, with a message
# naming the call. Each exercise repeats what it may not call.
#
# **What the grader accepts.** Hand in plain Python on torch, numpy and math: imports from those,
# matplotlib and a few plain standard-library modules (`functools`, `itertools`, `collections`, ...)
# only; no file access (`open`, `torch.load`, `torch.save`); no private or special attributes
# (`torch._...`, `x._...`, `__dict__`); no `eval`, `exec` or `getattr`; no parts of torch that run
# code elsewhere (`torch.jit`, `torch.utils`, `torch.ops`, ...). A notebook that breaks one of these
# rules is not run and scores 0; `attention-course validate` checks them too, cell by cell.

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false, "task": false}
import math

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from course_kit.checks import check_exercise
from course_kit.data.regression import make_regression_data
from course_kit.plotting import plot_attention

torch.manual_seed(0)  # the same random numbers, and so the same pictures, on every run
torch.set_printoptions(precision=4, sci_mode=False)

# %% [markdown]
# ## 1. A soft dictionary lookup
#
# A Python dictionary is a lookup table: `capitals["France"]` compares the query `"France"` with
# every key and returns the value of the one that matches exactly. It is all or nothing. A query
# that is *almost* a key, `"Frnace"`, gets a `KeyError`, not "probably Paris".
#
# Attention makes the lookup soft. It scores the query $\mathbf q$ against every key
# $\mathbf k_i$ with a similarity $a(\mathbf q, \mathbf k_i)$, turns the scores into weights that
# are positive and sum to 1, and returns the weighted average of the values:
#
# $$\operatorname{attention}(\mathbf q) = \sum_{i=1}^{n} \alpha_i\, \mathbf v_i ,
# \qquad
# \alpha_i = \frac{\exp a(\mathbf q, \mathbf k_i)}{\sum_{j=1}^{n} \exp a(\mathbf q, \mathbf k_j)} .$$
#
# When one score towers over the others, its weight is almost 1 and we are back to the hard
# lookup; when all scores are equal, we get the plain mean of the values. In between, everything
# is a smooth function of the query and the keys, so gradient descent can *learn* what to look up.
# Bahdanau, Cho and Bengio (2015) used this to let a translation model look back at the source
# sentence while writing each target word, with a similarity computed by a small neural network
# (Lesson 2). Luong, Pham and Manning (2015) made it a plain dot product,
# $a(\mathbf q, \mathbf k) = \mathbf q \cdot \mathbf k$; Vaswani et al. (2017) divided it by
# $\sqrt{d_k}$, the width of the vectors (section 6 measures why), and built the Transformer on
# $a(\mathbf q, \mathbf k) = \mathbf q \cdot \mathbf k / \sqrt{d_k}$.
#
# Here is a lookup in a table of three entries, with a query that matches no key exactly. Scaling
# the query up makes the scores more different, and the soft answer slides from the mean of the
# values towards the hard one.

# %%
keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])  # three keys in the plane
values = torch.tensor([10.0, 20.0, 30.0])  # one value per key
query = torch.tensor([0.8, 0.6])  # nearest to the first key, equal to none

scores = keys @ query  # dot-product similarity of the query with each key, shape (3,)
print(f"scores {scores.tolist()}: a hard lookup returns {values[scores.argmax()].item():g}")
for sharpness in [0.0, 1.0, 5.0, 20.0]:
    sharp_scores = keys @ (sharpness * query)
    alpha = torch.exp(sharp_scores) / torch.exp(sharp_scores).sum()  # positive, sums to 1
    print(f"query x {sharpness:4g}: weights {alpha.numpy().round(3)} -> soft lookup {(alpha @ values).item():6.3f}")

# %% [markdown]
# ## 2. A softmax that does not overflow
#
# The lookup above turned scores into weights with $\exp$ and a division: the softmax,
#
# $$\operatorname{softmax}(\mathbf x)_i = \frac{e^{x_i}}{\sum_j e^{x_j}} .$$
#
# Written that way it breaks on inputs that are not rare at all. A float32 holds numbers up to
# about $3.4 \times 10^{38}$, and $e^{89}$ is already more; it holds nothing positive below about
# $10^{-45}$, and $e^{-104}$ is already less. Scores of that size come up in this very lesson: the
# kernel regression of section 3 scores a training point 3 away from the query at
# $-3^2 / (2 \cdot 0.05^2) = -1800$ with its narrowest kernel, and section 6 measures dot products
# that spread further the wider the vectors. In float16, which GPUs often train in, $e^x$
# overflows already past $x \approx 11$ (the largest float16 is 65504). Here are three logits near
# 1000, and their negatives:

# %%
logits = torch.tensor([1000.0, 999.0, 998.0])
print("float16 exp(12)             ", torch.exp(torch.tensor(12.0, dtype=torch.float16)))
print("exp(logits)                 ", torch.exp(logits))
print("naive softmax(logits)       ", torch.exp(logits) / torch.exp(logits).sum())
print("naive softmax(-logits)      ", torch.exp(-logits) / torch.exp(-logits).sum())
print("naive softmax(logits - 1000)", torch.exp(logits - 1000) / torch.exp(logits - 1000).sum())

# %% [markdown]
# $e^{1000}$ is `inf` and $\infty / \infty$ is NaN; at the other end $e^{-1000}$ underflows to 0
# and $0 / 0$ is NaN too. Yet the last line, after subtracting 1000, is perfectly fine, and it is
# the right answer. Subtracting a constant $c$ from every logit never changes a softmax, because
# $e^{-c}$ factors out of the numerator and the denominator alike:
#
# $$\frac{e^{x_i - c}}{\sum_j e^{x_j - c}} = \frac{e^{-c}\, e^{x_i}}{e^{-c} \sum_j e^{x_j}}
# = \frac{e^{x_i}}{\sum_j e^{x_j}} .$$
#
# Choose $c = \max_j x_j$. Then every exponent is $\le 0$, so no term exceeds 1 and nothing
# overflows; and the largest term is exactly $e^0 = 1$, so the denominator is at least 1 and
# never 0. Terms that still underflow to 0 were smaller than $10^{-38}$ of the largest one:
# they would not have counted anyway. This is how every serious softmax is written, `torch.softmax`
# included (Goodfellow, Bengio and Courville, *Deep Learning*, 2016, section 4.1).
#
# ### Exercise 1: a numerically stable softmax (2 points)
#
# Implement `softmax(x, dim)` along any dimension of a tensor of any shape. `keepdim=True` in
# `.amax` and `.sum` keeps the reduced dimension, so the results broadcast back against `x`.
# Subtract each row's own maximum (along `dim`), not one maximum for the whole tensor: a row far
# below the others would underflow to $0/0$. Return a new tensor (do not modify `x` in place) of
# the same shape and dtype.
#
# *Not allowed here:* `torch.softmax` (nor `F.softmax`, `x.softmax`, `log_softmax`), since the
# exercise is to write it; `F.scaled_dot_product_attention` and `nn.MultiheadAttention`.

# %% nbgrader={"grade": false, "grade_id": "softmax", "locked": false, "schema_version": 3, "solution": true, "task": false}
def softmax(x, dim=-1):
    """Softmax of x along dim, computed without overflow: exp(x - max) / sum(exp(x - max)).

    Args:
        x: float tensor of any shape.
        dim: the dimension along which the result sums to 1.

    Returns:
        Tensor of the same shape and dtype as x, entries in [0, 1], summing to 1 along dim.
        It must stay finite for logits of any size (1e4, 1e30), positive or negative.
    """
    ### BEGIN SOLUTION
    # Subtracting the max does not change the result (e^-c cancels) and keeps every exp <= 1.
    shifted = x - x.amax(dim=dim, keepdim=True)
    exp_x = torch.exp(shifted)
    return exp_x / exp_x.sum(dim=dim, keepdim=True)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "softmax_tests", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
### BEGIN HIDDEN TESTS
from course_kit.answers import record_answers
record_answers("softmax", softmax)
### END HIDDEN TESTS
check_exercise("softmax", softmax)

# %% [markdown]
# The logits that broke the naive formula are no trouble now, and your softmax agrees with
# PyTorch's:

# %%
print("softmax(logits) ", softmax(logits))
print("softmax(-logits)", softmax(-logits))
print("same as torch.softmax:", torch.allclose(softmax(logits), torch.softmax(logits, dim=-1)))

# %% [markdown]
# ## 3. Attention before deep learning: Nadaraya–Watson regression
#
# Attention is older than neural networks. In 1964, Nadaraya and Watson independently proposed a
# way to predict $y$ at a new point $q$ from training pairs $(x_i, y_i)$ with no model at all:
# average the training targets, giving more weight to the training points whose inputs are close
# to $q$. With a kernel $K$ that is large near 0 and small far from it,
#
# $$\hat f(q) = \sum_{i=1}^{n} \frac{K(q - x_i)}{\sum_{j=1}^{n} K(q - x_j)}\; y_i .$$
#
# Read it as attention: the **query** is the point $q$ where we predict, the **keys** are the
# training inputs $x_i$, the **values** are the training targets $y_i$. With the Gaussian kernel
# $K(u) = \exp\!\big(-u^2 / (2h^2)\big)$, the weights are exactly a softmax of the scores
#
# $$a(q, x_i) = -\frac{(q - x_i)^2}{2h^2} ,$$
#
# so the nearer a key, the higher its score. (The Gaussian's normalising constant
# $1/(\sqrt{2\pi}\,h)$ cancels in the ratio, so we leave it out.) The *bandwidth* $h$ says how near
# is near. Nothing here is learned: the similarity is fixed by hand. Deep learning's contribution
# will be to make it learnable (E. A. Nadaraya, *Theory Probab. Appl.* 9, 1964; G. S. Watson,
# *Sankhyā A* 26, 1964; the same view opens d2l.ai, section 11.2).
#
# ### Exercise 2: Nadaraya–Watson regression (1 point)
#
# Write `nadaraya_watson` for scalar inputs: `queries` of shape `(Lq,)`, `keys` and `values` of
# shape `(Lk,)`, one prediction per query. Broadcasting builds every query-key difference at once:
# `queries[:, None] - keys[None, :]` has shape `(Lq, Lk)`, one row of scores per query, and the
# weights of a query sum to 1 over its row (the keys).
#
# The trap of section 2 is waiting here too. Far from every training point, or with a narrow
# kernel, *every* $K(q - x_i)$ of a row underflows to 0 and the ratio is $0/0$ = NaN: the visible
# test asks for predictions at $q = 100$ and $q = -50$, with the training inputs in $[0, 5)$.
# Subtract each row's largest score (the nearest key's) before `torch.exp`, as your `softmax` does;
# calling your `softmax` from exercise 1 is fine.
#
# *Not allowed here:* `torch.softmax` (nor `F.softmax`, `x.softmax`, `log_softmax`);
# `F.scaled_dot_product_attention` and `nn.MultiheadAttention`.

# %% nbgrader={"grade": false, "grade_id": "nadaraya_watson", "locked": false, "schema_version": 3, "solution": true, "task": false}
def nadaraya_watson(queries, keys, values, bandwidth=1.0):
    """Nadaraya–Watson kernel regression with a Gaussian kernel: attention with a fixed similarity.

    Prediction i is sum_j alpha[i, j] * values[j], where the weights of query i are a softmax over
    the keys of the scores -(queries[i] - keys[j])**2 / (2 * bandwidth**2).

    Args:
        queries: float tensor (Lq,), the inputs where we predict.
        keys: float tensor (Lk,), the training inputs.
        values: float tensor (Lk,), the training targets, one per key.
        bandwidth: the kernel's width h > 0, a float.

    Returns:
        Float tensor (Lq,), same dtype as the inputs: one prediction per query. Every row of
        weights sums to 1, so each prediction is a weighted average of the values, never NaN
        (not even for a query far from every key).
    """
    ### BEGIN SOLUTION
    scores = -((queries[:, None] - keys[None, :]) ** 2) / (2 * bandwidth**2)  # (Lq, Lk)
    # Shift each row by its largest score: the ratio is unchanged, and the nearest key's kernel
    # becomes exp(0) = 1, so the sum below is >= 1 even when every kernel would underflow.
    kernel = torch.exp(scores - scores.amax(dim=1, keepdim=True))
    alpha = kernel / kernel.sum(dim=1, keepdim=True)  # (Lq, Lk), each row sums to 1
    return alpha @ values  # (Lq, Lk) @ (Lk,) -> (Lq,)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "nadaraya_watson_tests", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
### BEGIN HIDDEN TESTS
from course_kit.answers import record_answers
record_answers("nadaraya_watson", nadaraya_watson)
### END HIDDEN TESTS
check_exercise("nadaraya_watson", nadaraya_watson)

# %% [markdown]
# Let's put it to work. `make_regression_data` draws 50 noisy training points of
# $y = 2\sin x + x^{0.8}$ on $[0, 5)$, and test points with the noise-free truth. A model that has
# never seen the formula recovers its shape from the data alone:

# %%
data = make_regression_data(n_train=50, seed=0)
bandwidth = 0.3
prediction = nadaraya_watson(data.x_test, data.x_train, data.y_train, bandwidth=bandwidth)

fig, ax = plt.subplots(figsize=(7, 3.5), layout="constrained")
ax.plot(data.x_test, data.y_test, "k--", label=r"truth $2\sin x + x^{0.8}$")
ax.plot(data.x_train, data.y_train, "o", color="tab:orange", alpha=0.6, label="training data (noisy)")
ax.plot(data.x_test, prediction, color="tab:blue", lw=2, label=f"Nadaraya–Watson, $h = {bandwidth}$")
ax.set(xlabel="$x$", ylabel="$y$", title="Kernel regression: each prediction averages nearby targets")
ax.legend()
plt.show()

# %% [markdown]
# Which training points did each prediction listen to? A prediction is linear in the values, so
# passing the one-hot values $\mathbf e_j$ (1 at training point $j$, 0 elsewhere) returns the
# weight every query gives to key $j$: one column of the attention matrix per call.
#
# Row $i$ of the heatmap is test point $i$, column $j$ is training point $j$. Both are sorted
# along the $x$ axis, so the weight sits on a band near the diagonal: each query attends to the
# training points around it.

# %%
one_hot = torch.eye(len(data.x_train))  # row j: value 1 at training point j, 0 elsewhere
alpha = torch.stack(
    [nadaraya_watson(data.x_test, data.x_train, e_j, bandwidth=bandwidth) for e_j in one_hot], dim=1
)  # (n_test, n_train)
print(f"weights {tuple(alpha.shape)}; every row sums to 1: {torch.allclose(alpha.sum(dim=1), torch.ones(len(alpha)))}")
plot_attention(alpha, xlabel="training point $j$ (keys, sorted by $x$)", ylabel="test point $i$ (queries)",
               titles=f"Nadaraya–Watson weights, $h = {bandwidth}$", panel_size=4)

# %% [markdown]
# The bandwidth is the one knob: too small and each prediction copies its nearest neighbour and
# chases the noise; too large and every prediction averages nearly all the data into a flat line.

# %%
bandwidths = [(0.05, "too narrow: chases the noise"), (0.3, "about right"), (2.0, "too wide: nearly flat")]
fig, axes = plt.subplots(1, len(bandwidths), figsize=(11, 3.4), sharey=True, layout="constrained")
for ax, (h, verdict) in zip(axes, bandwidths):
    ax.plot(data.x_test, data.y_test, "k--", lw=1, label="truth")
    ax.plot(data.x_train, data.y_train, "o", color="tab:orange", alpha=0.5, ms=3, label="training data")
    ax.plot(data.x_test, nadaraya_watson(data.x_test, data.x_train, data.y_train, bandwidth=h), color="tab:blue",
            label="prediction")
    ax.set(title=f"$h = {h}$: {verdict}", xlabel="$x$", ylabel="$y$")
axes[-1].legend(loc="upper right")  # the empty corner of the wide kernel's panel
fig.suptitle("Nadaraya–Watson predictions for three bandwidths $h$")
plt.show()

# %% [markdown]
# ## 4. Masks: who may look at whom
#
# Often some keys must not be looked at at all. Two reasons come up everywhere:
#
# * **Padding.** To batch sentences of lengths 6, 4 and 5, we pad them all to length 6 with a
#   filler token. The filler is not part of the sentence: its keys must get weight exactly 0,
#   or it leaks into every average.
# * **Causality.** A language model that predicts word $t+1$ from the words up to $t$ must not
#   peek at the words after $t$ during training. Query $i$ may look at key $j$ only if
#   $j \le i$: the decoder's masking in Vaswani et al. (2017), section 3.2.3.
#
# A **boolean mask** with one entry per (query, key) pair says which pairs take part. Masking is
# done on the scores, before the softmax: a masked score becomes $-\infty$, and
# $e^{-\infty} = 0$ gives its key weight exactly 0 while the other weights still sum to 1.
#
# > **Polarity.** In this course, as in `torch.nn.functional.scaled_dot_product_attention`,
# > **`True` means "takes part"** and `False` means "masked out". Beware:
# > `torch.nn.MultiheadAttention`'s `key_padding_mask` uses the *opposite* polarity
# > (`True` = ignore this key). A mask of the wrong polarity raises no error; the model
# > silently attends to nothing but padding. Check the documentation every time you pass a mask.
#
# One edge case needs a decision: a row in which *every* key is masked. All its scores are
# $-\infty$, its max is $-\infty$, and $-\infty - (-\infty)$ is NaN. There is nothing to average
# over, so we return a row of zeros, as PyTorch's `scaled_dot_product_attention` does. A NaN would
# spread through every later layer and through the gradients.
#
# ### Exercise 3: masked softmax (2 points)
#
# Implement `masked_softmax(scores, mask, dim)`. The mask may be smaller than the scores and
# broadcast against them, e.g. one `(Lq, Lk)` mask for scores of shape `(B, Lq, Lk)`.
# `scores.masked_fill(where, value)` returns a copy with `value` at the positions where
# `where` is True (mind the polarity: `~mask` is True at the masked positions). A score that is
# already `-inf` counts as masked too, so a row of `-inf` also gives zeros. With `mask=None`
# nothing is masked, and it is a plain (stable) softmax.
#
# *Not allowed here:* `torch.softmax` (nor `F.softmax`, `x.softmax`, `log_softmax`); your
# `softmax` from exercise 1 is fine. Nor `F.scaled_dot_product_attention` or
# `nn.MultiheadAttention`.

# %% nbgrader={"grade": false, "grade_id": "masked_softmax", "locked": false, "schema_version": 3, "solution": true, "task": false}
def masked_softmax(scores, mask=None, dim=-1):
    """Softmax of scores along dim over the positions where mask is True; masked ones get 0.

    Args:
        scores: float tensor of any shape.
        mask: boolean tensor broadcastable to scores.shape; True = takes part, False = masked
            out. None means nothing is masked.
        dim: the dimension along which the weights sum to 1.

    Returns:
        Tensor of the same shape and dtype as scores: exactly 0 at masked positions, the
        softmax over the remaining ones elsewhere. A row in which every position is masked
        (mask False, or score -inf) is all zeros, not NaN.
    """
    ### BEGIN SOLUTION
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))  # exp(-inf) = 0: masked keys get no weight
    row_max = scores.amax(dim=dim, keepdim=True)
    # A fully masked row has max -inf, and -inf - (-inf) is NaN: shift such a row by 0 instead.
    row_max = torch.where(row_max == float("-inf"), torch.zeros_like(row_max), row_max)
    exp_scores = torch.exp(scores - row_max)
    total = exp_scores.sum(dim=dim, keepdim=True)
    # A fully masked row sums to 0: divide its zeros by 1 so they stay zeros.
    return exp_scores / torch.where(total == 0, torch.ones_like(total), total)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "masked_softmax_tests", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
### BEGIN HIDDEN TESTS
from course_kit.answers import record_answers
record_answers("masked_softmax", masked_softmax)
### END HIDDEN TESTS
check_exercise("masked_softmax", masked_softmax)

# %% [markdown]
# Now the masks themselves.
#
# ### Exercise 4: causal mask (1 point)
#
# `causal_mask(n_q, n_k)` is True where key $j$ may be seen by query $i$, that is where
# $j \le i$; `n_k` defaults to `n_q`. When $n_q \ne n_k$ the mask is aligned at the top left, as
# `is_causal=True` in PyTorch: query 0 sees key 0 only, whatever the sizes. Comparing
# `torch.arange(n_k)[None, :]` with `torch.arange(n_q)[:, None]` builds it in one line.
#
# *Not allowed here:* `F.scaled_dot_product_attention` and `nn.MultiheadAttention` (no exercise of
# this lesson may call them).

# %% nbgrader={"grade": false, "grade_id": "causal_mask", "locked": false, "schema_version": 3, "solution": true, "task": false}
def causal_mask(n_q, n_k=None):
    """Boolean causal mask: query i may attend key j only if j <= i.

    Args:
        n_q: number of queries (an int).
        n_k: number of keys (an int); None means n_k = n_q.

    Returns:
        Boolean tensor (n_q, n_k), True where j <= i (key j takes part for query i),
        False above the diagonal.
    """
    ### BEGIN SOLUTION
    if n_k is None:
        n_k = n_q
    i = torch.arange(n_q)[:, None]  # (n_q, 1) query positions
    j = torch.arange(n_k)[None, :]  # (1, n_k) key positions
    return j <= i  # (n_q, n_k)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "causal_mask_tests", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
### BEGIN HIDDEN TESTS
from course_kit.answers import record_answers
record_answers("causal_mask", causal_mask)
### END HIDDEN TESTS
check_exercise("causal_mask", causal_mask)

# %% [markdown]
# ### Exercise 5: padding mask (1 point)
#
# `padding_mask(lengths, max_len)` takes the true length of each sequence of a batch,
# `lengths` of shape `(B,)`, and returns a `(B, max_len)` mask, True at the real positions
# $j < \text{lengths}[b]$ and False at the padding. To use it on scores of shape
# `(B, Lq, Lk)`, index it as `mask[:, None, :]` so that it broadcasts over the queries.
#
# *Not allowed here:* `F.scaled_dot_product_attention` and `nn.MultiheadAttention`.

# %% nbgrader={"grade": false, "grade_id": "padding_mask", "locked": false, "schema_version": 3, "solution": true, "task": false}
def padding_mask(lengths, max_len):
    """Boolean padding mask: in sequence b, only the first lengths[b] positions are real.

    Args:
        lengths: integer tensor (B,), each length in [0, max_len].
        max_len: the padded length (an int).

    Returns:
        Boolean tensor (B, max_len), True where position j < lengths[b] (a real token that
        takes part), False at the padding.
    """
    ### BEGIN SOLUTION
    positions = torch.arange(max_len, device=lengths.device)  # (max_len,)
    return positions[None, :] < lengths[:, None]  # (1, max_len) < (B, 1) -> (B, max_len)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "padding_mask_tests", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
### BEGIN HIDDEN TESTS
from course_kit.answers import record_answers
record_answers("padding_mask", padding_mask)
### END HIDDEN TESTS
check_exercise("padding_mask", padding_mask)

# %% [markdown]
# Here are the masks of a sentence of 4 real tokens padded to 6, as maps over (query, key)
# pairs: yellow is `True` (takes part), purple is `False`. The causal mask is a lower triangle;
# the padding mask hides the last two columns, the padded keys. (The padded *queries*, the last
# two rows, still get outputs; we simply ignore them later.) Combined with `&`, and applied to
# random scores by your `masked_softmax`, they leave each real query a distribution over the
# real keys up to itself.

# %%
lengths = torch.tensor([6, 4])  # a batch of two sentences, the second padded from 4 to 6
causal = causal_mask(6)  # (6, 6)
padding = padding_mask(lengths, 6)[1].expand(6, 6)  # sentence 1's mask (6,), repeated for every query
both = causal & padding
weights = masked_softmax(torch.randn(6, 6), both)
print("row sums of the weights:", weights.sum(dim=-1))  # 1 for every query that sees a key
plot_attention(torch.stack([causal.float(), padding.float(), both.float(), weights]),
               titles=["causal mask", "padding mask (length 4)", "causal & padding", "masked_softmax weights"])

# %% [markdown]
# ## 5. Scaled dot-product attention
#
# Now let every query ask at once. Stack the $L_q$ queries as the rows of a matrix $Q$, the $L_k$
# keys as the rows of $K$ and their values as the rows of $V$. All query-key scores are then one
# matrix product, and Vaswani et al. (2017, eq. 1) write attention as
#
# $$\operatorname{Attention}(Q, K, V) = \operatorname{softmax}\!\left(\frac{QK^\top}{\sqrt{d_k}}\right) V ,$$
#
# the softmax taken along each row (over the keys). Shapes, with any leading batch dimensions
# `...` (batch, heads):
#
# | tensor | shape | |
# | --- | --- | --- |
# | $Q$ | `(..., Lq, d_k)` | one row per query |
# | $K$ | `(..., Lk, d_k)` | one row per key, the same size $d_k$ as the queries |
# | $V$ | `(..., Lk, d_v)` | one value per key, of any size $d_v$ |
# | $QK^\top$, weights | `(..., Lq, Lk)` | row $i$: how much query $i$ looks at each key |
# | output | `(..., Lq, d_v)` | one weighted average of values per query |
#
# Two pairs of sizes are easy to mix up:
#
# * $L_q$ and $L_k$ need not be equal. In *self-attention* a sequence attends to itself
#   ($L_q = L_k$); in *cross-attention* a translation decoder's words (queries) look at the
#   source sentence's words (keys), and the two sentences have different lengths.
# * $d_k$ and $d_v$ need not be equal either. Queries and keys are dotted, so they share a size;
#   values are only averaged, so they can be anything, and the output has their size.
#
# `@` broadcasts over the leading dimensions, so one formula serves a whole batch of heads;
# transpose only the last two dimensions of the keys, `key.transpose(-2, -1)`. As for the
# $1/\sqrt{d_k}$: section 6 measures why it is there.
#
# ### Exercise 6: scaled dot-product attention (3 points)
#
# Implement `scaled_dot_product_attention` with the semantics of PyTorch's
# `F.scaled_dot_product_attention` (without its `dropout_p`):
#
# * `attn_mask` is either **boolean** (True = takes part) or **float**, in which case it is
#   *added* to the scores (0 keeps a key, $-\infty$ removes it, anything else biases it);
# * `is_causal=True` applies `causal_mask(Lq, Lk)`;
# * `scale` defaults to $1/\sqrt{d_k}$, with $d_k$ the last dimension of `query`;
# * a query whose every key is masked (by `False` or by $-\infty$) gets an output row of zeros.
#
# Your `masked_softmax` and `causal_mask` do most of the work.
#
# *Not allowed here:* `F.scaled_dot_product_attention`, which is what you are writing,
# `nn.MultiheadAttention`, and `torch.softmax` (nor `F.softmax`, `x.softmax`, `log_softmax`): the
# weights come from your `masked_softmax`.

# %% nbgrader={"grade": false, "grade_id": "scaled_dot_product_attention", "locked": false, "schema_version": 3, "solution": true, "task": false}
def scaled_dot_product_attention(query, key, value, attn_mask=None, is_causal=False, scale=None):
    """softmax(Q K^T * scale + mask) V, as torch.nn.functional.scaled_dot_product_attention.

    Args:
        query: float tensor (..., Lq, d_k).
        key: float tensor (..., Lk, d_k).
        value: float tensor (..., Lk, d_v).
        attn_mask: None, or a tensor broadcastable to (..., Lq, Lk): boolean (True = the key
            takes part, False = masked out) or float (added to the scores).
        is_causal: if True, query i attends only keys j <= i (use causal_mask(Lq, Lk)).
            Not combined with attn_mask.
        scale: the factor applied to Q K^T; None means 1 / sqrt(d_k).

    Returns:
        Float tensor (..., Lq, d_v): row i is the weighted average of the values for query i,
        or zeros if every key is masked for that query.
    """
    ### BEGIN SOLUTION
    d_k = query.shape[-1]
    if scale is None:
        scale = 1 / math.sqrt(d_k)
    attention_scores = query @ key.transpose(-2, -1) * scale  # (..., Lq, d_k) @ (..., d_k, Lk) -> (..., Lq, Lk)

    mask = None
    if is_causal:
        mask = causal_mask(query.shape[-2], key.shape[-2]).to(query.device)
    elif attn_mask is not None and attn_mask.dtype == torch.bool:
        mask = attn_mask
    elif attn_mask is not None:
        attention_scores = attention_scores + attn_mask.to(attention_scores.dtype)  # additive mask

    attention = masked_softmax(attention_scores, mask, dim=-1)  # (..., Lq, Lk), rows sum to 1 (or 0)
    return attention @ value  # (..., Lq, Lk) @ (..., Lk, d_v) -> (..., Lq, d_v)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "scaled_dot_product_attention_tests", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
### BEGIN HIDDEN TESTS
from course_kit.answers import record_answers
record_answers("scaled_dot_product_attention", scaled_dot_product_attention)
### END HIDDEN TESTS
check_exercise("scaled_dot_product_attention", scaled_dot_product_attention)

# %% [markdown]
# Your function now does what PyTorch's fused kernel does: here on a batch of 2 sequences with 4
# heads each, 5 queries looking at 7 keys, $d_k = 16$ and $d_v = 8$.

# %%
q, k, v = torch.randn(2, 4, 5, 16), torch.randn(2, 4, 7, 16), torch.randn(2, 4, 7, 8)
for is_causal in [False, True]:
    ours = scaled_dot_product_attention(q, k, v, is_causal=is_causal)
    theirs = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)
    gap = (ours - theirs).abs().max().item()
    print(f"is_causal={is_causal!s:5}: output {tuple(ours.shape)}, largest gap to PyTorch {gap:.1e}")

# %% [markdown]
# ## 6. Why divide by $\sqrt{d_k}$?
#
# Vaswani et al. (2017, section 3.2.1 and its footnote 4) explain it: if the components of
# $\mathbf q$ and $\mathbf k$ are independent with mean 0 and variance 1, then
# $\mathbf q \cdot \mathbf k = \sum_{i=1}^{d} q_i k_i$ is a sum of $d$ terms of mean 0 and
# variance 1, so it has variance $d$. The scores spread further the wider the vectors, and the
# softmax of widely spread scores is nearly one-hot: one key takes all the weight. That, they
# wrote, pushes the softmax "into regions where it has extremely small gradients": its Jacobian,
# $\partial p_i / \partial s_j = p_i(\delta_{ij} - p_j)$, is 0 in every entry when $\mathbf p$ is
# exactly one-hot, so the scores, and the queries and keys that made them, would stop learning
# where to look. Dividing by $\sqrt{d}$ brings the variance back to 1, whatever $d$ is.
#
# Claims like this are worth checking, all three of them: the variance, the saturation and the
# gradient. First the variance. Sample many random unit-variance pairs for each width $d$:

# %%
dims = [4, 16, 64, 256, 1024]
n_pairs = 2000
var_raw, var_scaled = [], []
for d in dims:
    q, k = torch.randn(n_pairs, d), torch.randn(n_pairs, d)  # components: mean 0, variance 1
    dots = (q * k).sum(dim=-1)  # n_pairs dot products q . k
    var_raw.append(dots.var().item())
    var_scaled.append((dots / math.sqrt(d)).var().item())
    print(f"d = {d:5}:  var(q.k) = {var_raw[-1]:7.1f}    var(q.k / sqrt(d)) = {var_scaled[-1]:.2f}")

# %% [markdown]
# The variance of the raw dot product grows like $d$; the scaled one stays at 1. Now the
# consequences. Give a query 16 random keys, take the softmax of its scores, and measure, over
# 500 queries, the largest weight (averaged) and the gradient that reaches the scores. For the
# gradient, a loss whose gradient for the weights is a fixed random vector $\mathbf g$ stands in
# for a real one: backpropagation hands the scores $J^\top \mathbf g$, with $J$ the softmax's
# Jacobian, and the norm of that vector says how much the scores can learn. Autograd computes it
# through your `softmax`; we report the median over the queries, the typical query.

# %%
n_queries, n_keys = 500, 16
upstream = torch.randn(n_queries, n_keys)  # g = dLoss/dweights, one row per query
top_raw, top_scaled, grad_raw, grad_scaled = [], [], [], []
print("    d | largest weight, raw / scaled | median gradient norm, raw / scaled")
for d in dims:
    q, k = torch.randn(n_queries, 1, d), torch.randn(n_queries, n_keys, d)
    dots = (q * k).sum(dim=-1)  # (n_queries, n_keys) scores
    for scale, top, grad in [(1.0, top_raw, grad_raw), (1 / math.sqrt(d), top_scaled, grad_scaled)]:
        scores = (dots * scale).requires_grad_()  # autograd keeps the gradient of these scores
        weights = softmax(scores)
        (weights * upstream).sum().backward()  # the loss sum(weights * g), whose gradient is g
        top.append(weights.amax(dim=-1).mean().item())
        grad.append(scores.grad.norm(dim=-1).median().item())  # one norm per query: the typical one
    print(f"{d:5} | {top_raw[-1]:20.3f} / {top_scaled[-1]:.3f} | {grad_raw[-1]:26.1e} / {grad_scaled[-1]:.2f}")

fig, (ax_var, ax_top, ax_grad) = plt.subplots(1, 3, figsize=(13, 3.6), layout="constrained")
ax_var.loglog(dims, var_raw, "o-", label=r"$\mathrm{var}(\mathbf{q}\cdot\mathbf{k})$")
ax_var.loglog(dims, var_scaled, "s-", label=r"$\mathrm{var}(\mathbf{q}\cdot\mathbf{k}/\sqrt{d})$")
ax_var.loglog(dims, dims, "k:", lw=1, label="$d$")
ax_var.set(xlabel="width $d$", ylabel="variance of the score", title="Dot products spread like $d$")
ax_var.legend()
ax_top.semilogx(dims, top_raw, "o-", label="without scaling")
ax_top.semilogx(dims, top_scaled, "s-", label=r"divided by $\sqrt{d}$")
ax_top.axhline(1 / n_keys, color="k", ls=":", lw=1, label=f"uniform, 1/{n_keys}")
ax_top.set(xlabel="width $d$", ylabel="largest weight (mean)", ylim=(0, 1.05),
           title=f"Softmax over {n_keys} keys saturates")
ax_top.legend()
ax_grad.loglog(dims, grad_raw, "o-", label="without scaling")
ax_grad.loglog(dims, grad_scaled, "s-", label=r"divided by $\sqrt{d}$")
ax_grad.set(xlabel="width $d$", ylabel=r"median $\|\partial L / \partial \mathbf{s}\|$",
            title="...and its gradient vanishes")
ax_grad.legend()
plt.show()

# %% [markdown]
# Without scaling, at $d = 1024$ a single key takes nearly all the weight: the softmax has
# saturated into a hard lookup. And the gradient does vanish with it: the typical query's scores
# get a gradient tens of thousands of times smaller at $d = 1024$ than at $d = 4$, so gradient
# descent barely moves them. With $1/\sqrt{d}$, the largest weight and the gradient stay where
# they were at $d = 4$, at every width: the softmax remains soft, and trainable. The Transformer
# of Vaswani et al. uses $d_k = 64$ per head, where, unscaled, the typical gradient is already
# several times smaller than at $d = 4$.
#
# ## 7. Reading attention heatmaps
#
# An attention matrix is easiest to read as a heatmap: row $i$ is query $i$, column $j$ is key
# $j$, and the brightness of cell $(i, j)$ is how much query $i$ looks at key $j$. Each row sums
# to 1.
#
# Let's draw one for a toy sentence, with a made-up word embedding (one random 16-d vector per
# word) and the simplest self-attention there is, $Q = K = X$. A word's vector is most similar
# to itself, so most of the weight sits on the diagonal. And since the two *the*'s share one
# vector, each looks at both equally.
#
# To get the weights out of a function that returns outputs, we use the trick from section 3
# once more: with the identity matrix as values, the output *is* the weight matrix. On the right,
# the same attention with a causal mask: each word sees only itself and what came before it.

# %%
tokens = "the cat sat on the mat".split()
vocabulary = sorted(set(tokens))
embedding = torch.randn(len(vocabulary), 16)  # one random vector per distinct word
X = embedding[[vocabulary.index(t) for t in tokens]]  # (6, 16), the sentence
identity = torch.eye(len(tokens))  # values = identity: the output is the weight matrix
bidirectional = scaled_dot_product_attention(X, X, identity)
causal_weights = scaled_dot_product_attention(X, X, identity, is_causal=True)
plot_attention(torch.stack([bidirectional, causal_weights]), query_labels=tokens, key_labels=tokens,
               titles=["self-attention", "causal self-attention"], panel_size=3.2)

# %% [markdown]
# Two things to notice. In the causal map the first word can only look at itself, so its row is
# a single bright cell, and everything above the diagonal is 0. And the two *the*'s give
# identical rows on the left: attention compares contents, and nothing in their contents says
# which *the* comes first. That is the subject of the last section.
#
# ## 8. Attention does not know the order of the words
#
# Shuffle the queries, and the outputs come out shuffled the same way: each output row depends
# only on its own query. Shuffle the keys and the values *together*, and nothing changes at all:
# a weighted sum does not care in which order its terms are listed. With $P$ a permutation
# matrix,
#
# $$\operatorname{Attention}(PQ, K, V) = P\,\operatorname{Attention}(Q, K, V),
# \qquad
# \operatorname{Attention}(Q, PK, PV) = \operatorname{Attention}(Q, K, V).$$
#
# (The softmax acts on each row separately, and it commutes with reordering the columns; then
# $P^\top P = I$.) Checked numerically:

# %%
n, d = 6, 8
Q, K, V = torch.randn(n, d), torch.randn(n, d), torch.randn(n, d)
out = scaled_dot_product_attention(Q, K, V)
perm = torch.randperm(n)
print("permutation:", perm.tolist())
print("queries permuted -> outputs permuted the same way:",
      torch.allclose(scaled_dot_product_attention(Q[perm], K, V), out[perm], atol=1e-6))
print("keys and values permuted together -> same outputs: ",
      torch.allclose(scaled_dot_product_attention(Q, K[perm], V[perm]), out, atol=1e-6))
print("keys permuted alone -> different outputs:          ",
      not torch.allclose(scaled_dot_product_attention(Q, K[perm], V), out, atol=1e-6))

# %% [markdown]
# In self-attention the queries, keys and values all come from the same sequence, so the two
# facts combine: reorder the words of a sentence, and every word gets exactly the same output as
# before, merely listed in the new order. To attention on its own, "the cat sat on the mat" and
# "the mat sat on the cat" are the same bag of words:

# %%
shuffled = [tokens.index(t) for t in "the mat sat on the cat".split()]  # positions in the original
out_sentence = scaled_dot_product_attention(X, X, X)
out_shuffled = scaled_dot_product_attention(X[shuffled], X[shuffled], X[shuffled])
print("'cat' gets the same output in both sentences:",
      torch.allclose(out_sentence[tokens.index("cat")], out_shuffled[5], atol=1e-6))

# %% [markdown]
# Word order matters, so a transformer must put it into the inputs: it adds to each token's
# vector a *positional encoding* that depends on the position. That is Lesson 3. (A causal mask
# does depend on positions, and a model trained with one can pick up some order from it, but it
# is no substitute.)
#
# ## Recap
#
# * Attention is a soft dictionary lookup: a weighted average of values, weighted by a softmax of
#   query-key similarities.
# * A softmax must subtract each row's max before exponentiating; the result is unchanged and
#   never overflows, nor turns into 0/0.
# * Nadaraya–Watson regression (1964) is attention with a fixed Gaussian similarity; its bandwidth
#   says how near is near.
# * Masks say which keys take part. Here and in `F.scaled_dot_product_attention`, `True` means
#   *takes part*; `nn.MultiheadAttention`'s `key_padding_mask` means the opposite. Fully masked
#   rows give zeros, not NaN.
# * $\operatorname{Attention}(Q, K, V) = \operatorname{softmax}(QK^\top / \sqrt{d_k})\,V$ maps
#   `(..., Lq, d_k)`, `(..., Lk, d_k)`, `(..., Lk, d_v)` to `(..., Lq, d_v)`.
# * Without the $1/\sqrt{d_k}$, scores have variance $d_k$, the softmax saturates, and the
#   gradient that reaches the scores vanishes.
# * Attention is permutation equivariant: the order of the tokens has to be added to them.
#
# Next, Lesson 2: additive attention, and a sequence-to-sequence model that learns to align.
