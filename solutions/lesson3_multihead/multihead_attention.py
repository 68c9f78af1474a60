# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Lesson 3 · Multi-head attention, positions, and a tiny transformer
#
# Lesson 1 built one attention: each query takes a weighted average of the values, weighted by a
# softmax of its dot products with the keys. A transformer layer runs several of them side by
# side, each looking at the sequence in its own way, and it feeds them with information about
# *where* each token sits, which attention on its own cannot see. In this lesson you build:
#
# 1. why several heads, and how to split a vector into heads and merge them back (**exercises 1, 2**);
# 2. multi-head attention from scratch, for self- and cross-attention (**exercise 3**);
# 3. the same computation as PyTorch's `nn.MultiheadAttention`, from its own weights (**exercise 4**);
# 4. what self-attention costs against a recurrent and a convolutional layer, measured;
# 5. why order must be injected, and two ways to do it: sinusoidal encodings (**exercise 5**) and
#    rotary embeddings, RoPE (**exercise 6**);
# 6. the causal mask and decoding with a key/value cache, with RoPE at the right positions
#    (**exercise 7**), and what that cache costs in memory for a real model;
# 7. a tiny transformer that learns to reverse sequences (**exercise 8**), and a look at what
#    every one of its heads attends to.
#
# **How the exercises work.** As in Lesson 1: replace `raise NotImplementedError()` with your
# code; the cell below each exercise tests it and tells you which case failed and how. Hidden tests
# compare your functions with a reference on fresh random inputs when your work is graded. Run the
# notebook from top to bottom: later cells use your functions. You may use
# `F.scaled_dot_product_attention` (Lesson 1 built it) and `torch.softmax`, but not
# `nn.MultiheadAttention` or `F.multi_head_attention_forward` in the attention exercises (3, 4, 7
# and 8, whose text says so again). Your functions have the names and signatures of the course's
# reference library, `course_lib`, which the grader compares them with.
#
# **The rules for the code you hand in.** Write plain Python on `torch`, `numpy` and `math` (small
# standard modules such as `random`, `time` or `itertools` are fine too): no other imports, no
# opening or writing files, no `eval`, `exec` or `getattr`, and no private parts of torch (names
# that start with `_`). The grader does not run a notebook that breaks these rules, and it scores 0;
# `attention-course validate multihead_attention.ipynb` checks them, and runs every visible test,
# before you hand in.

# %% nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false, "task": false}
import math

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn

from course_kit.checks import check_exercise
from course_kit.data.reversal import ReversalTask
from course_kit.diagrams import draw_head_split
from course_kit.measure import time_call
from course_kit.plotting import plot_attention
from course_kit.training import sequence_accuracy, train_token_classifier

torch.manual_seed(0)  # the same random numbers, and so the same pictures, on every run
torch.set_num_threads(1)  # the models here are tiny: one thread is faster than several fighting for a core
torch.set_printoptions(precision=4, sci_mode=False)

# %% [markdown]
# ## 1. Why several heads?
#
# One attention gives each query *one* weighted average. But a word usually needs several things
# from its context at once: in *"the cat that the dog chased sat"*, the verb *sat* wants its
# subject (*cat*, five positions back), a pronoun wants its antecedent, an adjective its noun. A
# single softmax must split one unit of weight between all of them, and the average blurs them
# together.
#
# Vaswani et al. (2017, section 3.2.2) run $H$ attentions in parallel instead, each on its own
# learned projection of the inputs into a smaller space of $D = E/H$ features:
#
# $$\operatorname{head}_h = \operatorname{Attention}(X_q W^{Q\top}_h,\; X_{kv} W^{K\top}_h,\; X_{kv} W^{V\top}_h),
# \qquad
# \operatorname{MultiHead}(X_q, X_{kv}) = \operatorname{Concat}(\operatorname{head}_1, \dots, \operatorname{head}_H)\, W^{O\top} .$$
#
# (Weights are written as torch stores them, $(\text{out}, \text{in})$, and applied transposed:
# $x W^\top$, exactly what `nn.Linear` computes. Lesson 2 did the same.)
#
# Each head can learn its own notion of relevance (one looks at the previous word, another at the
# subject), and the output projection $W^O$ mixes what they found. What do $H$ heads cost against
# one attention of width $E$? With $D = E/H$:
#
# * the **projections** cost the same: $W^Q$ is one $(E, E)$ matrix either way, cut into $H$ slices;
# * the **dot products** $Q K^\top$ and the weighted sums of the values cost the same multiply-adds:
#   each head's $L_q \times L_k$ scores take $D$ of them per entry, and $H \cdot D = E$;
# * but the **scores and the softmax** grow $H$-fold: every head has its own $L_q \times L_k$ score
#   matrix, so $H$ heads store, exponentiate and normalise $H \cdot L_q L_k$ numbers where one wide
#   attention has $L_q L_k$. For long sequences that matrix is what fills the memory (Lesson 4).
#
# ## 2. Splitting and merging heads
#
# Nobody runs $H$ separate projections. One matrix $W^Q$ of shape $(E, E)$ computes all the heads'
# queries at once, $Q = X W^{Q\top}$ of shape $(B, L, E)$, and head $h$ owns the features
# $hD, \dots, (h+1)D - 1$ of every position. To let one batched matrix product handle all heads,
# we move the heads next to the batch dimension:
#
# $$(B, L, E) \xrightarrow{\text{reshape}} (B, L, H, D) \xrightarrow{\text{transpose}} (B, H, L, D).$$
#
# Here it is, entry by entry, for $L = 3$ positions of $E = 8$ features and $H = 2$ heads: every
# cell shows its index in $x$ and the colour of the head that owns its feature. The last panel is
# the classic mistake: reshaping straight to $(B, H, L, D)$ has the right shape and the wrong
# content, since it cuts the *sequence* into chunks (colours mixed). The transpose is what keeps
# every position in every head.

# %%
draw_head_split(length=3, embed_dim=8, num_heads=2)

# %% [markdown]
# ### Exercise 1: split heads (1 point)

# %% nbgrader={"grade": false, "grade_id": "split_heads", "locked": false, "schema_version": 3, "solution": true, "task": false}
def split_heads(x, num_heads):
    """Cut the last dim of x into num_heads heads of D = E / num_heads features, heads before positions.

    Args:
        x: float tensor (..., L, E), E divisible by num_heads (any leading dims, e.g. (B, L, E)).
        num_heads: H.

    Returns:
        Tensor (..., H, L, D) with result[..., h, l, d] = x[..., l, h * D + d].
    """
    ### BEGIN SOLUTION
    *lead, length, width = x.shape
    head_dim = width // num_heads
    return x.reshape(*lead, length, num_heads, head_dim).transpose(-3, -2)  # (..., L, H, D) -> (..., H, L, D)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "split_heads_tests", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
### BEGIN HIDDEN TESTS
from course_kit.answers import record_answers
record_answers("split_heads", split_heads)
### END HIDDEN TESTS
check_exercise("split_heads", split_heads)

# %% [markdown]
# ### Exercise 2: merge heads (1 point)
#
# After attention, each head has an output of shape $(B, H, L, D)$. Concatenating the heads is the
# inverse of the split (the fourth panel above): back to $(B, L, H, D)$, then flatten the last two
# dimensions to $E$. (After a transpose the tensor is no longer contiguous in memory: `reshape`
# copies when it must, `view` refuses.)

# %% nbgrader={"grade": false, "grade_id": "merge_heads", "locked": false, "schema_version": 3, "solution": true, "task": false}
def merge_heads(x):
    """Inverse of split_heads: concatenate the heads' features.

    Args:
        x: float tensor (..., H, L, D).

    Returns:
        Tensor (..., L, H * D) with result[..., l, h * D + d] = x[..., h, l, d].
    """
    ### BEGIN SOLUTION
    *lead, heads, length, head_dim = x.shape
    return x.transpose(-3, -2).reshape(*lead, length, heads * head_dim)  # (..., L, H, D) -> (..., L, E)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "merge_heads_tests", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
### BEGIN HIDDEN TESTS
from course_kit.answers import record_answers
record_answers("merge_heads", merge_heads)
### END HIDDEN TESTS
check_exercise("merge_heads", merge_heads)

# %% [markdown]
# Your two functions on the diagram's numbers: head 0 gets the first half of *every position's*
# features and keeps all 3 positions, and merging gives the original back exactly.

# %%
x = torch.arange(24).reshape(1, 3, 8)  # (B=1, L=3, E=8), the diagram's x
print("head 0 (L=3, D=4):\n", split_heads(x, 2)[0, 0])
print("head 1 (L=3, D=4):\n", split_heads(x, 2)[0, 1])
print("merge_heads(split_heads(x)) == x:", torch.equal(merge_heads(split_heads(x, 2)), x))

# %% [markdown]
# ## 3. Multi-head attention from scratch
#
# Now the whole layer. Projections are stored as torch stores them, $(\text{out}, \text{in})$, and
# applied transposed, $Q = X_q W_q^\top$ (`query @ W_q.T`), so an `nn.Linear`'s `.weight` is a
# $W$ here as it is:
#
# 1. project: $Q = X_q W_q^\top$, $K = X_k W_k^\top$, $V = X_v W_v^\top$;
# 2. split each into $H$ heads, $(B, H, L, D)$;
# 3. attend in every head at once: $\operatorname{softmax}(Q K^\top / \sqrt{D})\,V$. Note the
#    $\sqrt{D}$: each head's dot products run over its own $D$ features, not over $E$;
# 4. merge the heads and project with $W_o$: $\operatorname{merge}(\dots)\, W_o^\top$.
#
# **Self- and cross-attention** are the same function. The arguments are named as in torch,
# `query`, `key`, `value`: the sequences the queries, keys and values are computed from. In
# self-attention all three are one sequence, `multihead_attention(x, x, x, ...)`; in
# cross-attention (a translation decoder reading the source sentence) the queries come from one
# sequence and the keys and values from another, `multihead_attention(target, source, source, ...)`,
# of a different length $L_k$ and even a different width $E_k$ (then $W_k$ and $W_v$ are
# $(E, E_k)$).
#
# **Masks.** `key_mask` of shape $(B, L_k)$ says which keys of each sequence are real: as
# everywhere in this course, **True = takes part**. It is not called `key_padding_mask`, because
# in torch that name means the opposite (True = ignore, section 4). It must reach every head and
# every query: index it as `key_mask[:, None, None, :]`, shape $(B, 1, 1, L_k)$. `is_causal=True`
# lets query $i$ see keys $j \le i$. Both are keyword-only (after the `*`), so a call says what
# it sets.
#
# ### Exercise 3: multi-head attention (3 points)
#
# Build it on your `split_heads` and `merge_heads` and on `F.scaled_dot_product_attention` (or
# your own softmax). `nn.MultiheadAttention` and `F.multi_head_attention_forward` are not allowed
# here: they are the answer.

# %% nbgrader={"grade": false, "grade_id": "multihead_attention", "locked": false, "schema_version": 3, "solution": true, "task": false}
def multihead_attention(query, key, value, W_q, W_k, W_v, W_o, num_heads, *, key_mask=None, is_causal=False):
    """Multi-head attention: project, split into heads, attend in each head, merge, project out.

    Args:
        query: float tensor (B, Lq, E), the sequence the queries come from.
        key, value: float tensors (B, Lk, E_k), the sequences the keys and values come from (for
            self-attention, query itself).
        W_q: (E, E); W_k, W_v: (E, E_k); W_o: (E, E), in torch's (out, in) layout: Q = query @ W_q.T.
        num_heads: H, dividing E; each head has D = E / H features.
        key_mask: None, or boolean (B, Lk): True = the key takes part, False = padding.
        is_causal: if True, query i attends only to keys j <= i.

    Returns:
        Float tensor (B, Lq, E): merge_heads(softmax(Q_h K_h^T / sqrt(D) + masks) V_h) @ W_o.T.
    """
    ### BEGIN SOLUTION
    q = split_heads(query @ W_q.T, num_heads)  # (B, H, Lq, D)
    k = split_heads(key @ W_k.T, num_heads)  # (B, H, Lk, D)
    v = split_heads(value @ W_v.T, num_heads)  # (B, H, Lk, D)
    mask = None
    if key_mask is not None:
        mask = key_mask[:, None, None, :]  # (B, 1, 1, Lk): the same keys for every head and query
    if is_causal:
        causal = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()  # (Lq, Lk)
        mask = causal if mask is None else mask & causal
    heads = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # scale 1/sqrt(D): D is q's last dim
    return merge_heads(heads) @ W_o.T  # (B, Lq, E)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "multihead_attention_tests", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
### BEGIN HIDDEN TESTS
from course_kit.answers import record_answers
record_answers("multihead_attention", multihead_attention)
### END HIDDEN TESTS
check_exercise("multihead_attention", multihead_attention)

# %% [markdown]
# The same function does both kinds of attention. A decoder's 3 words reading an encoder's 7:

# %%
E, H = 16, 4
W_q, W_k, W_v, W_o = (torch.randn(E, E) / math.sqrt(E) for _ in range(4))
source, target = torch.randn(1, 7, E), torch.randn(1, 3, E)
print("self-attention  (target on itself):", tuple(multihead_attention(target, target, target, W_q, W_k, W_v, W_o, H).shape))
print("cross-attention (target on source):", tuple(multihead_attention(target, source, source, W_q, W_k, W_v, W_o, H).shape))

# %% [markdown]
# ## 4. The same layer as PyTorch's `nn.MultiheadAttention`
#
# PyTorch ships this layer as `nn.MultiheadAttention`. Loading its weights into your code is the
# best test you can have, and it shows the conventions that trip everybody up:
#
# * **Layout.** Like every `nn.Linear`, torch stores a projection as `(out, in)` and computes
#   $x W^\top + b$: the layout of this course, so no transpose is needed to load its weights.
# * **Packing.** With equal widths, torch keeps $W^Q$, $W^K$, $W^V$ stacked in one
#   `in_proj_weight` of shape $(3E, E)$, rows in that order, and their biases in `in_proj_bias`
#   $(3E)$; the output projection is `out_proj.weight` $(E, E)$ and `out_proj.bias`.
# * **Mask polarity.** In torch's `key_padding_mask`, and in a boolean `attn_mask` of this module,
#   **True means *ignore***: the opposite of `F.scaled_dot_product_attention`'s `attn_mask` and of
#   our `key_mask`. (The same name with two meanings inside torch is why ours has another name.)
# * **Outputs.** `torch_mha(query, key, value)` returns a pair, `(attn_output, attn_weights)`:
#   by default (`need_weights=True`, `average_attn_weights=True`) the attention weights too,
#   averaged over the heads, shape $(B, L_q, L_k)$. Pass `need_weights=False` when you do not
#   need them: only then can torch use its fused kernel.
#
# ### Exercise 4: parity with `nn.MultiheadAttention` (2 points)
#
# Return what `nn.MultiheadAttention(E, num_heads, batch_first=True)` returns, from its
# parameters: `(attn_output, attn_weights)` for the call
# `torch_mha(query, key, value, key_padding_mask=key_padding_mask)`. Its biases may be `None` (a
# module built with `bias=False`). `F.scaled_dot_product_attention` does not return the weights,
# which you need this time: compute the softmax yourself. `nn.MultiheadAttention` (and
# `F.multi_head_attention_forward`) are not allowed inside the function; the cell after the test
# uses the module, outside it, to check yours.

# %% nbgrader={"grade": false, "grade_id": "packed_multihead_attention", "locked": false, "schema_version": 3, "solution": true, "task": false}
def packed_multihead_attention(query, key, value, in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias,
                               num_heads, *, key_padding_mask=None):
    """What nn.MultiheadAttention(E, num_heads, batch_first=True) returns with these parameters.

    Args:
        query: (B, Lq, E); key: (B, Lk, E); value: (B, Lk, E).
        in_proj_weight: (3E, E), torch's [W_q; W_k; W_v] stacked by rows, each (out, in).
        in_proj_bias: (3E,) or None.
        out_proj_weight: (E, E), (out, in); out_proj_bias: (E,) or None.
        num_heads: H.
        key_padding_mask: None or boolean (B, Lk) in TORCH's polarity: True = ignore the key.

    Returns:
        A tuple (attn_output, attn_weights): attn_output (B, Lq, E), and the attention weights
        averaged over the heads, (B, Lq, Lk), as torch returns them by default.
    """
    ### BEGIN SOLUTION
    W_q, W_k, W_v = in_proj_weight.chunk(3, dim=0)  # each (E, E), (out, in)
    b_q, b_k, b_v = in_proj_bias.chunk(3) if in_proj_bias is not None else (0.0, 0.0, 0.0)
    q = split_heads(query @ W_q.T + b_q, num_heads)  # (B, H, Lq, D)
    k = split_heads(key @ W_k.T + b_k, num_heads)  # (B, H, Lk, D)
    v = split_heads(value @ W_v.T + b_v, num_heads)  # (B, H, Lk, D)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, Lq, Lk)
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))  # torch: True = ignore
    weights = torch.softmax(scores, dim=-1)
    attn_output = merge_heads(weights @ v) @ out_proj_weight.T  # (B, Lq, E)
    if out_proj_bias is not None:
        attn_output = attn_output + out_proj_bias
    return attn_output, weights.mean(dim=1)  # torch averages the weights over the heads
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "packed_multihead_attention_tests", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
### BEGIN HIDDEN TESTS
from course_kit.answers import record_answers
record_answers("packed_multihead_attention", packed_multihead_attention)
### END HIDDEN TESTS
check_exercise("packed_multihead_attention", packed_multihead_attention)

# %% [markdown]
# Now with a real module, its random initialisation and a padding mask, in float64 so that any gap
# is a mistake and not rounding. The call is torch's own, positional arguments and all
# (`key_padding_mask` comes fourth):

# %%
torch_mha = nn.MultiheadAttention(embed_dim=16, num_heads=4, batch_first=True, dtype=torch.float64).eval()
x = torch.randn(2, 5, 16, dtype=torch.float64)
ignore = torch.tensor([[False] * 5, [False, False, False, True, True]])  # torch: True = ignore
theirs = torch_mha(x, x, x, ignore)
ours = packed_multihead_attention(x, x, x, torch_mha.in_proj_weight, torch_mha.in_proj_bias,
                                  torch_mha.out_proj.weight, torch_mha.out_proj.bias, 4, key_padding_mask=ignore)
print(f"largest gap to nn.MultiheadAttention: outputs {(ours[0] - theirs[0]).abs().max().item():.1e}, "
      f"weights {(ours[1] - theirs[1]).abs().max().item():.1e}")
print("weight of the 2 ignored keys of sequence 1:", theirs[1][1, :, 3:].abs().max().item())

# %% [markdown]
# ## 5. Self-attention against recurrence and convolution
#
# Why did the Transformer replace recurrent networks? Vaswani et al. (2017, Table 1) compare a
# layer of each kind that maps $n$ vectors of width $d$ to $n$ others (a convolution with kernels
# of size $k$); Dive into Deep Learning (Zhang et al., section 11.6) walks through the same table:
#
# | layer | cost per layer | sequential operations | longest path between two positions |
# | --- | --- | --- | --- |
# | self-attention | $O(n^2 d)$ | $O(1)$ | $O(1)$ |
# | recurrent (RNN, GRU) | $O(n d^2)$ | $O(n)$ | $O(n)$ |
# | convolution | $O(k n d^2)$ | $O(1)$ | $O(n / k)$ ($O(\log_k n)$ dilated) |
#
# * **Cost.** Self-attention compares every pair of positions, $n^2$ dot products of width $d$;
#   a recurrent or convolutional layer multiplies each position by $d \times d$ matrices. So
#   self-attention is cheaper while $n < d$, and its cost grows as $n^2$ beyond.
# * **Sequential operations.** A recurrent layer must finish position $t - 1$ before it starts
#   position $t$: $n$ steps one after the other, however many cores there are. Attention and
#   convolution compute every position at once.
# * **Path length.** Information from position 1 reaches position $n$ in one attention layer; it
#   needs $n$ recurrent steps, or a stack of $n/k$ convolutions. Short paths make long-range
#   dependencies easier to learn.
#
# Measured on this machine's CPU, one thread: the time of one layer of each kind (torch's own
# modules, width $d = 64$, one sequence), against the sequence length, the minimum of 3 runs.

# %%
width, lengths = 64, [32, 64, 128, 256, 512, 1024, 2048]
layers = {  # each maps (1, n, width) to n vectors of width `width`
    "self-attention (4 heads)": (nn.MultiheadAttention(width, 4, batch_first=True),
                                 lambda layer, x: layer(x, x, x, need_weights=False)),
    "GRU": (nn.GRU(width, width, batch_first=True), lambda layer, x: layer(x)),
    "1-D convolution, k = 3": (nn.Conv1d(width, width, kernel_size=3, padding=1),
                               lambda layer, x: layer(x.transpose(1, 2))),  # Conv1d wants (B, channels, n)
}
seconds = {name: [] for name in layers}
with torch.no_grad():
    for n in lengths:
        x = torch.randn(1, n, width)
        for name, (layer, run) in layers.items():
            seconds[name].append(time_call(run, layer, x, repeat=3, statistic="min"))

fig, ax = plt.subplots(figsize=(6.5, 4), layout="constrained")
for name, times in seconds.items():
    ax.loglog(lengths, [t * 1e3 for t in times], "o-", label=name)
ax.set(xlabel="sequence length $n$", ylabel="time per layer (ms)", title=f"one layer of width $d = {width}$, CPU")
ax.legend()
plt.show()
for name, times in seconds.items():
    print(f"{name:25s} n = {lengths[-2]} -> {lengths[-1]}: time x {times[-1] / times[-2]:.1f}")

# %% [markdown]
# On a log-log plot a cost $n^p$ is a line of slope $p$. The GRU's time grows linearly with $n$,
# one step after another; the convolution's too, far below it, since all its positions run at
# once. Self-attention starts well below the GRU, every position at once, then bends upwards:
# doubling a long sequence quadruples its time (the ratios printed), where the GRU's only doubles,
# so at a few thousand positions it catches up with the recurrent layer and then passes it. Times
# on a CPU shared with other jobs vary by tens of percent from run to run, which is why each point
# is the fastest of three; the slopes do not change.

# %% [markdown]
# ## 6. Attention does not know where anything is
#
# Lesson 1 showed that attention is *permutation equivariant*: shuffle the tokens of a sequence,
# and self-attention returns the same outputs, shuffled the same way. Multi-head attention is no
# different: every head is, and so is merging them. Check it on your function:

# %%
x = torch.randn(1, 6, E)
out = multihead_attention(x, x, x, W_q, W_k, W_v, W_o, H)
perm = torch.randperm(6)
shuffled = x[:, perm]
print("self-attention of the shuffled sequence == shuffled outputs:",
      torch.allclose(multihead_attention(shuffled, shuffled, shuffled, W_q, W_k, W_v, W_o, H), out[:, perm], atol=1e-6))

# %% [markdown]
# So a stack of attention layers (and position-wise feed-forward layers) sees a *bag* of tokens:
# "dog bites man" and "man bites dog" get the same outputs per word. To use word order, the model
# must be told each token's position. Two ways are in wide use.
#
# ## 7. Sinusoidal positional encoding
#
# Vaswani et al. (2017, section 3.5) add to the embedding of the token at position $p$ a fixed
# vector $\mathrm{PE}_p$ whose pairs of coordinates are clocks turning at different speeds:
#
# $$\mathrm{PE}_{p,\,2i} = \sin\!\big(p\,\theta_i\big), \qquad \mathrm{PE}_{p,\,2i+1} = \cos\!\big(p\,\theta_i\big),
# \qquad \theta_i = 10000^{-2i/d}, \quad i = 0, \dots, d/2 - 1.$$
#
# The first pair turns by one radian per position, the last one barely moves: like the hands of a
# clock, together they tell positions apart over long ranges. And because
# $(\sin, \cos)$ at $p + k$ is a *rotation* of $(\sin, \cos)$ at $p$ by the angle $k\theta_i$, the
# encoding of position $p + k$ is a linear function of that of $p$, the same for every $p$: the
# authors' reason to hope the model would pick up relative positions.
#
# ### Exercise 5: sinusoidal encoding (1 point)
#
# Return the $(L, d)$ matrix, sines in the even columns and cosines in the odd ones. Compute
# $p\,\theta_i$ as an outer product of positions and frequencies.

# %% nbgrader={"grade": false, "grade_id": "sinusoidal_encoding", "locked": false, "schema_version": 3, "solution": true, "task": false}
def sinusoidal_encoding(length, d_model):
    """The sinusoidal positional encoding of Vaswani et al. (2017).

    Args:
        length: number of positions L.
        d_model: the (even) width d.

    Returns:
        float32 tensor (L, d): PE[p, 2i] = sin(p * theta_i), PE[p, 2i + 1] = cos(p * theta_i),
        theta_i = 10000 ** (-2i / d).
    """
    ### BEGIN SOLUTION
    positions = torch.arange(length, dtype=torch.float64)  # (L,)
    theta = 10000.0 ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)  # (d/2,)
    angles = positions[:, None] * theta[None, :]  # (L, d/2)
    encoding = torch.zeros(length, d_model, dtype=torch.float64)
    encoding[:, 0::2] = torch.sin(angles)
    encoding[:, 1::2] = torch.cos(angles)
    return encoding.float()
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "sinusoidal_encoding_tests", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
### BEGIN HIDDEN TESTS
from course_kit.answers import record_answers
record_answers("sinusoidal_encoding", sinusoidal_encoding)
### END HIDDEN TESTS
check_exercise("sinusoidal_encoding", sinusoidal_encoding)

# %% [markdown]
# On the left, the encoding of 64 positions in 32 dimensions: fast clocks on the left columns, slow
# ones on the right (a diverging colour map centred on 0: red below, blue above). On the right, the
# dot products $\mathrm{PE}_p \cdot \mathrm{PE}_q = \sum_i \cos\big((p - q)\,\theta_i\big)$: they
# depend only on the distance $|p - q|$, largest at 0 and falling off, in waves, with the distance.

# %%
pe = sinusoidal_encoding(64, 32)
fig, (ax_pe, ax_dot) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
image = ax_pe.imshow(pe, cmap="RdBu", vmin=-1, vmax=1, aspect="auto")  # entries in [-1, 1]: centred on 0
ax_pe.set(xlabel="dimension", ylabel="position $p$", title="sinusoidal encoding $\\mathrm{PE}_p$")
fig.colorbar(image, ax=ax_pe)
image = ax_dot.imshow(pe @ pe.T, cmap="viridis")
ax_dot.set(xlabel="position $q$", ylabel="position $p$", title="$\\mathrm{PE}_p \\cdot \\mathrm{PE}_q$")
fig.colorbar(image, ax=ax_dot)
plt.show()

# %% [markdown]
# ## 8. Rotary position embedding (RoPE)
#
# Most recent language models (LLaMA, Mistral, Qwen, ...) do not add positions to the embeddings.
# They *rotate* the queries and keys instead (Su et al., "RoFormer", 2021). Split a query
# $\mathbf q$ at position $m$ into pairs of features $(q_{2i}, q_{2i+1})$ and turn each pair, seen
# as a point in the plane, by the angle $m\,\theta_i$ (the same frequencies as above):
#
# $$\begin{pmatrix} q'_{2i} \\ q'_{2i+1} \end{pmatrix}
# = \begin{pmatrix} \cos m\theta_i & -\sin m\theta_i \\ \sin m\theta_i & \cos m\theta_i \end{pmatrix}
#   \begin{pmatrix} q_{2i} \\ q_{2i+1} \end{pmatrix}.$$
#
# Do the same to the keys, with their own positions $n$. A dot product of two rotated vectors
# depends only on the *difference* of their angles, so the score
# $\mathbf q'_m \cdot \mathbf k'_n = \mathbf q^\top R_{n-m}\, \mathbf k$ depends on the positions
# only through the offset $n - m$: attention becomes relative by construction. Rotations also keep
# lengths, so RoPE changes no vector's norm. The values are not rotated.
#
# **Pairing convention.** Here the pairs are *interleaved*, features $(2i, 2i+1)$, as in the
# paper. Some code (GPT-NeoX, Hugging Face's LLaMA) pairs feature $i$ with $i + d/2$ instead: the
# same idea on permuted features, and a classic source of bugs when weights are moved between the
# two.
#
# **Which positions.** By default the rows of `x` sit at positions $0, 1, \dots, L-1$ along
# dimension $-2$. A decoder that has already seen $T$ tokens must rotate the next ones at
# $T, T+1, \dots$: `positions` gives them explicitly (section 9 needs it).
#
# ### Exercise 6: rotary embedding (2 points)
#
# Rotate every pair of the last dimension of `x` by its position's angles. `x[..., 0::2]` and
# `x[..., 1::2]` are the first and second members of the pairs;
# `torch.stack([a, b], dim=-1).flatten(-2)` interleaves them back.

# %% nbgrader={"grade": false, "grade_id": "apply_rope", "locked": false, "schema_version": 3, "solution": true, "task": false}
def apply_rope(x, positions=None):
    """Rotary position embedding with interleaved pairs (x[2i], x[2i+1]).

    Args:
        x: float tensor (..., L, d), d even; row l (along dim -2) is the token at positions[l].
        positions: None (positions 0, 1, ..., L-1) or an integer tensor (L,) of positions.

    Returns:
        Tensor of x's shape and dtype: pair i of the token at position p rotated by the angle
        p * theta_i, theta_i = 10000 ** (-2i / d):
            out[..., l, 2i]     = x[..., l, 2i] cos(p theta_i) - x[..., l, 2i+1] sin(p theta_i)
            out[..., l, 2i + 1] = x[..., l, 2i] sin(p theta_i) + x[..., l, 2i+1] cos(p theta_i)
    """
    ### BEGIN SOLUTION
    length, d = x.shape[-2:]
    positions = torch.arange(length) if positions is None else positions
    theta = 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)  # (d/2,)
    angles = positions.to(torch.float64)[:, None] * theta[None, :]  # (L, d/2)
    cos, sin = torch.cos(angles).to(x.dtype), torch.sin(angles).to(x.dtype)
    first, second = x[..., 0::2], x[..., 1::2]  # (..., L, d/2) each
    rotated = torch.stack([first * cos - second * sin, first * sin + second * cos], dim=-1)  # (..., L, d/2, 2)
    return rotated.flatten(-2)  # (..., L, d), pairs interleaved again
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "apply_rope_tests", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
### BEGIN HIDDEN TESTS
from course_kit.answers import record_answers
record_answers("apply_rope", apply_rope)
### END HIDDEN TESTS
check_exercise("apply_rope", apply_rope)

# %% [markdown]
# Both promises, checked. Put the *same* query vector at every position and the *same* key vector
# at every position: the score then depends only on the offset $n - m$, so every diagonal of the
# score matrix is constant (left; blue positive, red negative, white 0). Without RoPE, every score
# would be equal. And the norms are untouched. On the right, one row of scores: how a query's
# score for a fixed key varies with the distance, a pattern the model can learn to shape.

# %%
L, d = 32, 16
q_vec, k_vec = torch.randn(d, dtype=torch.float64), torch.randn(d, dtype=torch.float64)
q_rot, k_rot = apply_rope(q_vec.expand(L, d)), apply_rope(k_vec.expand(L, d))  # (L, d): the same vector at every position
scores = q_rot @ k_rot.T  # (L, L): query position m, key position n
print("every diagonal is constant (score depends only on n - m):",
      all(torch.allclose(scores.diagonal(k), scores.diagonal(k)[:1].expand(L - abs(k))) for k in range(-L + 1, L)))
print("norms preserved:", torch.allclose(q_rot.norm(dim=-1), q_vec.norm().expand(L)))

fig, (ax_map, ax_row) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
limit = scores.abs().max().item()  # symmetric limits: the diverging map's white is a score of 0
image = ax_map.imshow(scores, cmap="RdBu", vmin=-limit, vmax=limit)
ax_map.set(xlabel="key position $n$", ylabel="query position $m$", title="RoPE scores of one q and one k")
fig.colorbar(image, ax=ax_map)
for m in [0, 10, 20]:
    ax_row.plot(torch.arange(L) - m, scores[m], "o-", ms=3, label=f"query at $m = {m}$")
ax_row.set(xlabel="offset $n - m$", ylabel="score", title="the same curve, whatever $m$")
ax_row.legend()
plt.show()

# %% [markdown]
# ## 9. The causal mask, and decoding with a key/value cache
#
# A language model generates text one token at a time, and while training it must not peek at the
# token it is asked to predict: query $i$ may attend only keys $j \le i$, the causal mask of
# Lesson 1 (`is_causal=True` in your `multihead_attention`).
#
# Causality has a consequence worth money. When the model generates token $t$, the keys and values
# of tokens $0, \dots, t-1$ are exactly those of the previous step: they cannot see token $t$.
# Recomputing them at every step wastes work that grows with the length; instead, a decoder keeps
# them in a **key/value cache** and, for each new token, computes only its own query, key and
# value, appends the key and value to the cache, and lets the new query attend to the whole cache.
#
# Two things must be right for the cached steps to give what one causal pass over the whole
# sequence gives (Pope et al., 2022, describe production decoders built this way):
#
# * **Positions.** With RoPE, the new tokens are not at positions $0, 1, \dots$: after $T_\text{old}$
#   cached tokens, new token $i$ sits at $T_\text{old} + i$, and its query and key are rotated by
#   *that* position (`apply_rope(q, positions)`). Rotated at 0, every new token would score the
#   cached keys as if it stood at the start of the text. A key's rotation depends only on its own
#   position, so it never changes: the cache stores keys **already rotated**, and each is rotated
#   once. $T_\text{old}$ is the cache's length, `k_cache.shape[-2]`.
# * **The mask, when several tokens arrive at once.** A prompt is fed in one call (and some
#   decoders propose several tokens per step): new token $i$ must see all $T_\text{old}$ cached
#   keys and the new keys $0, \dots, i$. That mask is aligned **bottom-right**. `is_causal=True`
#   aligns it top-left (query $i$ sees keys $j \le i$), which is right only for an empty cache:
#   with one, it hides cached keys from the new tokens. Below, 3 new tokens after 4 cached ones
#   (yellow: may attend).

# %%
t_old, t_new = 4, 3
top_left = torch.ones(t_new, t_old + t_new, dtype=torch.bool).tril()  # what is_causal=True means
bottom_right = torch.ones(t_new, t_old + t_new, dtype=torch.bool).tril(diagonal=t_old)  # what decoding needs
plot_attention(torch.stack([top_left, bottom_right]).float(), colorbar=False, panel_size=3.2,
               query_labels=[f"new {i} (pos {t_old + i})" for i in range(t_new)],
               key_labels=[str(j) for j in range(t_old + t_new)], xlabel="key positions (0-3 cached)",
               titles=["top-left: is_causal=True", "bottom-right: decoding"])

# %% [markdown]
# ### Exercise 7: causal attention with a cache and RoPE (2 points)
#
# Compute the outputs of $T_\text{new}$ new tokens given the cache of the $T_\text{old}$ before
# them (multi-head, like `multihead_attention`, without biases or masks other than the causal
# one), and return the caches with the new tokens' rotated keys and values appended. Rotate the
# new queries and keys with your `apply_rope` at positions $T_\text{old}, \dots,
# T_\text{old} + T_\text{new} - 1$ (never the values), and build the bottom-right mask with
# `torch.ones(...).tril(diagonal=...)`. The tests include several new tokens against a full cache,
# and a sequence decoded token by token, each step with the cache the step before returned: its
# outputs must be the rows of one causal pass over the whole sequence. As in exercise 3,
# `nn.MultiheadAttention` is not allowed here.

# %% nbgrader={"grade": false, "grade_id": "cached_causal_attention", "locked": false, "schema_version": 3, "solution": true, "task": false}
def cached_causal_attention(x, W_q, W_k, W_v, W_o, num_heads, k_cache, v_cache):
    """Causal multi-head self-attention with RoPE of new tokens, given the cache of the tokens before them.

    Args:
        x: float tensor (B, T_new, E), the new tokens' inputs; new token i sits at position T_old + i.
        W_q, W_k, W_v, W_o: (E, E) projections in torch's (out, in) layout: q = x @ W_q.T.
        num_heads: H; D = E / H, even (RoPE rotates pairs of features).
        k_cache, v_cache: (B, H, T_old, D), the keys (already rotated) and values of the T_old
            earlier tokens; T_old may be 0.

    Returns:
        A tuple (output, k_cache, v_cache): output (B, T_new, E), where new token i attends to the
        T_old cached tokens and the new tokens 0 .. i; and the caches with the new tokens' rotated
        keys and their values appended, (B, H, T_old + T_new, D) each.
    """
    ### BEGIN SOLUTION
    t_old, t_new = k_cache.shape[-2], x.shape[-2]
    positions = torch.arange(t_old, t_old + t_new)  # the new tokens come after the cached ones
    q = apply_rope(split_heads(x @ W_q.T, num_heads), positions)  # (B, H, T_new, D)
    k_cache = torch.cat([k_cache, apply_rope(split_heads(x @ W_k.T, num_heads), positions)], dim=-2)  # (B, H, T, D)
    v_cache = torch.cat([v_cache, split_heads(x @ W_v.T, num_heads)], dim=-2)  # values are not rotated
    mask = torch.ones(t_new, t_old + t_new, dtype=torch.bool).tril(diagonal=t_old)  # bottom-right: i sees j <= T_old + i
    heads = F.scaled_dot_product_attention(q, k_cache, v_cache, attn_mask=mask)  # (B, H, T_new, D)
    return merge_heads(heads) @ W_o.T, k_cache, v_cache
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "cached_causal_attention_tests", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
### BEGIN HIDDEN TESTS
from course_kit.answers import record_answers
record_answers("cached_causal_attention", cached_causal_attention)
### END HIDDEN TESTS
check_exercise("cached_causal_attention", cached_causal_attention)

# %% [markdown]
# The promise of the cache, on your function: a prompt of 6 tokens in one call, then 4 more
# tokens one at a time, gives *exactly* the outputs of one causal pass over all 10 (empty cache),
# and the cache ends up holding every key, rotated at its own position.

# %%
x = torch.randn(1, 10, E, dtype=torch.float64)
W64 = [w.double() for w in (W_q, W_k, W_v, W_o)]
empty = torch.zeros(1, H, 0, E // H, dtype=torch.float64)
whole, k_all, _ = cached_causal_attention(x, *W64, H, empty, empty)  # one causal pass, positions 0..9
outputs, k_cache, v_cache = [], empty, empty
for chunk in [x[:, :6], *x[:, 6:].split(1, dim=1)]:  # the prompt, then token by token
    y, k_cache, v_cache = cached_causal_attention(chunk, *W64, H, k_cache, v_cache)
    outputs.append(y)
print(f"prompt + token by token vs one pass: largest gap {(torch.cat(outputs, dim=1) - whole).abs().max().item():.1e}; "
      f"cache now holds {k_cache.shape[-2]} keys, the same as one pass's: {torch.allclose(k_cache, k_all)}")

# %% [markdown]
# ### What the cache costs
#
# Per token, the cache stores a key and a value of $H_{kv} \cdot D$ numbers in every layer:
#
# $$\text{bytes} = 2 \times \text{layers} \times \text{batch} \times \text{tokens} \times H_{kv} \times D \times \text{bytes per number}.$$
#
# Try it before running the next cell, for a LLaMA-2-7B-sized model (Touvron et al., 2023): 32
# layers, 32 heads of $D = 128$, a context of 4096 tokens, one sequence, float16 (2 bytes). That
# is $2 \cdot 32 \cdot 4096 \cdot 32 \cdot 128 \cdot 2$ bytes $= 2$ GiB for *one* conversation,
# beside 13 GB of weights. A server batching 32 conversations needs 64 GiB of cache.
#
# **Grouped-query attention** (GQA; Ainslie et al., 2023) shrinks it: keep all $H$ query heads but
# only $H_{kv} < H$ key/value heads, each shared by a group of $H / H_{kv}$ query heads.
# Multi-query attention (Shazeer, 2019) is the extreme $H_{kv} = 1$. LLaMA-2-70B uses $H = 64$
# query heads and $H_{kv} = 8$: an 8-fold smaller cache.
#
# Now measured: real cache tensors for 128 tokens of a 4-layer model with 8 heads of $D = 64$, in
# float16, with $H_{kv} = 8$ (multi-head), 2 (GQA) and 1 (multi-query).

# %%
def cache_bytes_formula(layers, tokens, kv_heads, head_dim, batch=1, bytes_per_number=2):
    return 2 * layers * batch * tokens * kv_heads * head_dim * bytes_per_number

print(f"LLaMA-2-7B, 4096 tokens, float16: {cache_bytes_formula(32, 4096, 32, 128) / 2**30:.1f} GiB per sequence")
print(f"LLaMA-2-70B (80 layers, 8 KV heads): {cache_bytes_formula(80, 4096, 8, 128) / 2**30:.2f} GiB per sequence")
layers, tokens, heads, head_dim = 4, 128, 8, 64
for kv_heads in [8, 2, 1]:
    caches = [(torch.zeros(1, kv_heads, tokens, head_dim, dtype=torch.float16),) * 2 for _ in range(layers)]
    measured = sum(k.nbytes + v.nbytes for k, v in caches)
    print(f"H_kv = {kv_heads}: measured {measured / 2**10:6.0f} KiB, "
          f"formula {cache_bytes_formula(layers, tokens, kv_heads, head_dim) / 2**10:6.0f} KiB")

# %% [markdown]
# ## 10. A tiny transformer that learns to reverse
#
# Time to put the pieces together. `ReversalTask` generates sequences of 8 digits; the target is
# the same sequence reversed. The output at position $i$ is the input at position $7 - i$, so a
# model must look across the sequence, and must know positions: without them it could not tell
# position $i$ from position $7 - i$. A held-out split of 1000 sequences never appears in training.

# %%
task = ReversalTask()
inputs, targets = task.training_batch(3, torch.Generator().manual_seed(0))
for source_seq, target_seq in zip(inputs, targets):
    print(source_seq.tolist(), "->", target_seq.tolist())

# %% [markdown]
# The model is an encoder of *pre-LayerNorm* blocks. Each block adds two residual branches to its
# input, normalising inside the branch, not after the sum as the original Transformer did; this
# trains reliably with little or no learning-rate warm-up (Xiong et al., 2020):
#
# $$x \leftarrow x + \operatorname{MultiHead}(\operatorname{LN}(x)), \qquad
#   x \leftarrow x + \operatorname{FFN}(\operatorname{LN}(x)).$$
#
# It is built from your own `multihead_attention` and `sinusoidal_encoding`, so if they are right,
# it can learn.

# %%
class Block(nn.Module):
    """A pre-LN transformer block: x + MHA(LN(x)), then x + FFN(LN(x)). (B, L, E) -> (B, L, E)."""

    def __init__(self, d_model, num_heads, d_ff):
        super().__init__()
        self.num_heads = num_heads
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.W_q, self.W_k, self.W_v, self.W_o = (  # (out, in), as nn.Linear stores its weight
            nn.Parameter(torch.randn(d_model, d_model) / math.sqrt(d_model)) for _ in range(4))
        self.feed_forward = nn.Sequential(nn.Linear(d_model, d_ff), nn.ReLU(), nn.Linear(d_ff, d_model))

    def forward(self, x):
        h = self.norm1(x)
        x = x + multihead_attention(h, h, h, self.W_q, self.W_k, self.W_v, self.W_o, self.num_heads)
        return x + self.feed_forward(self.norm2(x))

    def attention_weights(self, x):
        """Every head's weights (B, H, L, L), for the pictures."""
        h = self.norm1(x)
        q, k = split_heads(h @ self.W_q.T, self.num_heads), split_heads(h @ self.W_k.T, self.num_heads)
        return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)


class TinyTransformer(nn.Module):
    """Embeddings (+ sinusoidal positions), pre-LN blocks, a final LN and a linear head: (B, L) -> (B, L, vocab)."""

    def __init__(self, vocab_size, max_len, d_model=32, num_heads=4, num_layers=2, d_ff=64, use_positions=True):
        super().__init__()
        self.use_positions = use_positions
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.register_buffer("positions", sinusoidal_encoding(max_len, d_model))
        self.blocks = nn.ModuleList(Block(d_model, num_heads, d_ff) for _ in range(num_layers))
        self.final_norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)

    def embed(self, tokens):
        x = self.embedding(tokens)  # (B, L, E)
        return x + self.positions[: tokens.shape[1]] if self.use_positions else x

    def forward(self, tokens):
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        return self.head(self.final_norm(x))  # (B, L, vocab)

    @torch.no_grad()
    def attention_maps(self, tokens):
        """The weights of every layer and head: (layers, B, H, L, L)."""
        x, maps = self.embed(tokens), []
        for block in self.blocks:
            maps.append(block.attention_weights(x))
            x = block(x)
        return torch.stack(maps)

# %% [markdown]
# ### Exercise 8: train it (2 points)
#
# Build a `TinyTransformer` for the task and train it with
# `train_token_classifier(model, task.training_batch, steps=..., lr=..., warmup_steps=..., decay=True)`
# (AdamW on the cross-entropy of every position; it shows a progress bar and returns the losses).
# The test evaluates your model on the held-out split: at least 90% of the sequences must come out
# entirely right. Seed torch's generator with `seed` before building the model, so the run is
# reproducible. A model of width 32 with 4 heads and 2 layers learns the task in 400 steps, in
# seconds, at a learning rate of 0.01 warmed up over the first 40 steps and decayed to 0 by the
# last (`warmup_steps=40, decay=True`). The decay matters: at a constant rate the last steps still
# jump around the minimum, and where they stop depends on how your CPU rounds, so one seed can
# reverse every sequence on one machine and half of them on another. Try `use_positions=False`
# too, and see the loss get stuck.
#
# The grader also recomputes your model's logits from its own weights with the course's multi-head
# attention: build it with this notebook's `TinyTransformer`, on your `multihead_attention`. A model
# that reverses well with attention computed another way (scores scaled by $1/\sqrt{E}$ instead of
# $1/\sqrt{D}$, say) does not pass. As in exercise 3, the grader refuses `nn.MultiheadAttention`
# inside it.

# %% nbgrader={"grade": false, "grade_id": "train_reversal_model", "locked": false, "schema_version": 3, "solution": true, "task": false}
def train_reversal_model(task, seed=0):
    """Build a TinyTransformer for task (vocabulary task.vocab_size, length task.length), train it, return it.

    Returns:
        The trained model: model(tokens (N, L)) gives logits (N, L, vocab), and the argmax reverses
        at least 90% of task.held_out_inputs exactly.
    """
    ### BEGIN SOLUTION
    torch.manual_seed(seed)
    model = TinyTransformer(task.vocab_size, task.length, d_model=32, num_heads=4, num_layers=2)
    losses = train_token_classifier(model, task.training_batch, steps=400, lr=1e-2, warmup_steps=40, decay=True,
                                    seed=seed)
    print(f"loss: {losses[0]:.3f} at the first step, {losses[-1]:.4f} at the last")
    return model
    ### END SOLUTION


# %%
reversal_model = train_reversal_model(task)
accuracy = sequence_accuracy(reversal_model, task.held_out_inputs, task.held_out_targets)
print(f"held-out sequence accuracy: {accuracy:.1%}")

# %% nbgrader={"grade": true, "grade_id": "reversal_model_tests", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
### BEGIN HIDDEN TESTS
from course_kit.answers import record_answers
record_answers("reversal_model", reversal_model)
### END HIDDEN TESTS
check_exercise("reversal_model", reversal_model)

# %% [markdown]
# ## 11. What the heads learned
#
# Every layer and every head, on one held-out sequence: row $i$ is the output position, column $j$
# the input position it looks at. Reversal needs position $i$ to fetch the token at $7 - i$, the
# anti-diagonal. Look for the heads that found it, and for those that do something else (often
# attending to the neighbours, or spreading out, in the first layer).

# %%
sequence = task.held_out_inputs[:1]  # (1, 8)
maps = reversal_model.attention_maps(sequence)[:, 0]  # (layers, H, L, L)
labels = [str(t) for t in sequence[0].tolist()]
plot_attention(maps, query_labels=labels, key_labels=labels, panel_size=2.2,
               titles=[[f"layer {layer}, head {head}" for head in range(maps.shape[1])] for layer in range(maps.shape[0])])

# %% [markdown]
# ## Recap
#
# * Multi-head attention runs $H$ attentions on $D = E/H$-dimensional projections and mixes their
#   outputs with $W^O$; splitting is a reshape *and a transpose*, $(B, L, E) \to (B, H, L, D)$,
#   and each head scales by $1/\sqrt{D}$. The projections cost what one wide attention costs; the
#   score matrices and their softmax are $H$ times as many.
# * Self- and cross-attention are one function with different inputs, `query`, `key`, `value`.
# * Weights are stored as torch stores them, $(\text{out}, \text{in})$, applied as $x W^\top$.
#   `nn.MultiheadAttention` packs $W^Q, W^K, W^V$ into `in_proj_weight`, returns head-averaged
#   weights unless `need_weights=False`, and its `key_padding_mask` means *ignore* when True: the
#   opposite of our `key_mask`.
# * Self-attention costs $O(n^2 d)$ per layer against a recurrent layer's $O(n d^2)$, but runs
#   every position at once and links any two positions in one step (Vaswani et al., 2017, Table 1).
# * Attention is permutation equivariant, so positions must be injected: added (sinusoidal) or by
#   rotating queries and keys (RoPE, whose scores depend only on the offset).
# * A KV cache makes decoding incremental: new tokens are rotated at their absolute positions
#   $T_\text{old} + i$, the cache keeps rotated keys, and the causal mask is aligned bottom-right.
#   It costs $2 \cdot \text{layers} \cdot \text{tokens} \cdot H_{kv} \cdot D$ numbers per sequence;
#   grouped-query attention divides that by $H / H_{kv}$.
#
# Next, Lesson 4: attention that is fast on a GPU.
