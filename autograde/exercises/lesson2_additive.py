"""Lesson 2's graded exercises: additive attention and a decoder that learns to align.

The exercises take explicit tensors (query, key, the parameters W_q, W_k, v, ...), so a case is
a set of tensors and the check needs no module. Each exercise's function has the signature of its
reference in ``course_lib``, which is the reference itself; functions that return several tensors
are compared output by output, named by the library's NamedTuple (``AttentionOutput``'s
``context`` and ``weights``, ``DecoderStepOutput``'s ``logits``, ``hidden`` and ``weights``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import course_lib
from autograde.exercises.base import Exercise, Mistake, noncontiguous, randn, size
from course_kit.data.dates import make_date_splits
from course_kit.seq2seq import decoder_parameters, gru_cell

LESSON = "lesson2_additive"
MIN_TEST_ACCURACY = 0.9  # the trained-model check; the solution reaches 99% or more (benchmarks/trained_models.py)


def _score_parameters(g, d_q, d_k, h, dtype=torch.float32):
    return [randn(g, h, d_q, dtype=dtype), randn(g, h, d_k, dtype=dtype), randn(g, h, dtype=dtype)]


def _additive_scores_visible(g):
    q, k = randn(g, 2, 3), randn(g, 4, 5)
    W_q, W_k, v = _score_parameters(g, 3, 5, 6)
    batch = [randn(g, 2, 1, 3), randn(g, 2, 4, 5)]
    float64 = [randn(g, 3, 4, dtype=torch.float64), randn(g, 3, 4, dtype=torch.float64),
               *_score_parameters(g, 4, 4, 2, dtype=torch.float64)]
    square = [randn(g, 2, 4), randn(g, 3, 4), *_score_parameters(g, 4, 4, 4)]
    two_batch_dims = [randn(g, 2, 3, 2, 3), randn(g, 2, 3, 3, 5)]
    return [
        ("Lq=2 queries of size d_q=3, Lk=4 keys of size d_k=5, h=6", [q, k, W_q, W_k, v], {}),
        ("d_q = d_k = h = 4: W_q and W_k square, so swapped or untransposed weights run here", square, {}),
        ("W_q = 0: every query scores the keys alike", [q, k, torch.zeros_like(W_q), W_k, v], {}),
        ("inputs x 100: tanh saturates at +-1", [q * 100, k * 100, W_q, W_k, v], {}),
        ("batch of 2, Lq=1, Lk=4", [*batch, W_q, W_k, v], {}),
        ("two batch dims (2, 3), Lq=2, Lk=3", [*two_batch_dims, W_q, W_k, v], {}),
        ("float64, d_q = d_k = 4, h=2", float64, {}),
    ]


def _additive_scores_hidden(g):
    b, lq, lk, d_q, d_k, h = (size(g, 1, 4), size(g, 1, 7), size(g, 1, 9), size(g, 1, 12), size(g, 1, 12),
                              size(g, 1, 16))
    q, k = randn(g, b, lq, d_q), randn(g, b, lk, d_k)
    params = _score_parameters(g, d_q, d_k, h)
    return [
        (f"random (B={b}, Lq={lq}, Lk={lk}, d_q={d_q}, d_k={d_k}, h={h})", [q, k, *params], {}),
        ("two batch dims (2, B)", [randn(g, 2, b, lq, d_q), randn(g, 2, b, lk, d_k), *params], {}),
        ("no batch dim", [q[0], k[0], *params], {}),
        ("non-contiguous queries and keys", [noncontiguous(q), noncontiguous(k), *params], {}),
        ("float64", [q.double(), k.double(), *[p.double() for p in params]], {}),
    ]


def _general_scores_visible(g):
    q, k = randn(g, 2, 3), randn(g, 4, 5)
    first = [q, k, randn(g, 3, 5)]
    identity = [randn(g, 2, 4), randn(g, 3, 4), torch.eye(4)]
    batch = [randn(g, 2, 3, 4), randn(g, 2, 5, 6), randn(g, 4, 6)]
    float64 = [randn(g, 3, 2, dtype=torch.float64), randn(g, 4, 3, dtype=torch.float64),
               randn(g, 2, 3, dtype=torch.float64)]
    square = [randn(g, 2, 4), randn(g, 3, 4), randn(g, 4, 4)]  # W not symmetric: W and W^T give other scores
    return [
        ("Lq=2 queries of size d_q=3, Lk=4 keys of size d_k=5, W (3, 5)", first, {}),
        ("d_q = d_k = 4, W not symmetric: q^T W k differs from q^T W^T k and from q^T k", square, {}),
        ("W = identity: the dot product", identity, {}),
        ("batch of 2, Lq=3, Lk=5", batch, {}),
        ("float64", float64, {}),
    ]


def _general_scores_hidden(g):
    b, lq, lk, d_q, d_k = size(g, 1, 4), size(g, 1, 7), size(g, 1, 9), size(g, 1, 12), size(g, 1, 12)
    q, k, W = randn(g, b, lq, d_q), randn(g, b, lk, d_k), randn(g, d_q, d_k)
    return [
        (f"random (B={b}, Lq={lq}, Lk={lk}, d_q={d_q}, d_k={d_k})", [q, k, W], {}),
        ("no batch dim", [q[0], k[0], W], {}),
        ("non-contiguous inputs", [noncontiguous(q), noncontiguous(k), noncontiguous(W)], {}),
        ("float64", [q.double(), k.double(), W.double()], {}),
    ]


def _additive_attention_visible(g):
    q, k = randn(g, 2, 1, 3), randn(g, 2, 4, 5)
    params = _score_parameters(g, 3, 5, 6)
    huge = k.clone()
    huge[1, 2:] = 1e6  # the padded keys of sequence 1 hold huge values: any weight on them shows
    return [
        ("no padding (valid_lens=None): B=2, Lq=1, Lk=4, values = keys", [q, k, k, *params], {}),
        ("valid_lens [4, 2]: the last 2 keys of sequence 1 are padding", [q, k, k, *params],
         {"valid_lens": torch.tensor([4, 2])}),
        ("padded keys hold values 1e6: their weight must be exactly 0", [q, k, huge, *params],
         {"valid_lens": torch.tensor([4, 2])}),
        ("Lq=2 queries, values of size 2, valid_lens [1, 3]", [randn(g, 2, 2, 3), k, randn(g, 2, 4, 2), *params],
         {"valid_lens": torch.tensor([1, 3])}),
        ("float64, no valid_lens", [q.double(), k.double(), k.double(), *[p.double() for p in params]], {}),
    ]


def _additive_attention_hidden(g):
    b, lq, lk, d_q, d_k, d_v, h = (size(g, 1, 4), size(g, 1, 6), size(g, 1, 9), size(g, 1, 10), size(g, 1, 10),
                                   size(g, 1, 8), size(g, 1, 16))
    q, k, value = randn(g, b, lq, d_q), randn(g, b, lk, d_k), randn(g, b, lk, d_v)
    params = _score_parameters(g, d_q, d_k, h)
    lengths = torch.randint(1, lk + 1, (b,), generator=g)
    return [
        (f"random (B={b}, Lq={lq}, Lk={lk}, d_q={d_q}, d_k={d_k}, Dv={d_v}, h={h})", [q, k, value, *params], {}),
        (f"valid_lens {lengths.tolist()}", [q, k, value, *params], {"valid_lens": lengths}),
        ("every sequence of length 1", [q, k, value, *params], {"valid_lens": torch.ones(b, dtype=torch.long)}),
        ("non-contiguous inputs", [noncontiguous(q), noncontiguous(k), noncontiguous(value), *params],
         {"valid_lens": lengths}),
        ("float64", [q.double(), k.double(), value.double(), *[p.double() for p in params]],
         {"valid_lens": lengths}),
    ]


def _step_inputs(g, b, e, h, k, a, v, ls, lengths, dtype=torch.float32):
    params = {name: p.to(dtype) for name, p in decoder_parameters(e, h, k, a, v, generator=g).items()}
    return [randn(g, b, e, dtype=dtype), randn(g, b, h, dtype=dtype).tanh(), randn(g, b, ls, k, dtype=dtype),
            torch.tensor(lengths), params]


def _decoder_step_visible(g):
    return [
        ("B=2, E=3, H=4, annotations (2, 5, 6), a=5, V=7, source lengths [5, 3]: the GRU reads E + K = 9 "
         "features, the output layer H + K = 10", _step_inputs(g, 2, 3, 4, 6, 5, 7, 5, [5, 3]), {}),
        ("B=1, a single source character: its weight is 1 whatever the query",
         _step_inputs(g, 1, 3, 4, 6, 5, 7, 1, [1]), {}),
        ("float64, B=3, source lengths [2, 4, 1]", _step_inputs(g, 3, 2, 5, 4, 3, 6, 4, [2, 4, 1], torch.float64), {}),
    ]


def _decoder_step_hidden(g):
    b, e, h, k, a, v, ls = (size(g, 1, 5), size(g, 1, 8), size(g, 1, 8), size(g, 1, 8), size(g, 1, 8),
                            size(g, 2, 12), size(g, 1, 9))
    lengths = torch.randint(1, ls + 1, (b,), generator=g).tolist()
    return [
        (f"random (B={b}, E={e}, H={h}, K={k}, a={a}, V={v}, Ls={ls}), lengths {lengths}",
         _step_inputs(g, b, e, h, k, a, v, ls, lengths), {}),
        ("float64", _step_inputs(g, b, e, h, k, a, v, ls, lengths, torch.float64), {}),
    ]


# --- known mistakes: each the reference with one mistake in it, in the plain torch a student writes (a
# mistake that cannot run on a case is recognised by the error it raises there: base.Mistake) ----------

def _projections(query, key, W_q, W_k):
    return (query @ W_q.T).unsqueeze(-2), (key @ W_k.T).unsqueeze(-3)  # (..., Lq, 1, h), (..., 1, Lk, h)


def _scores_without_tanh(query, key, W_q, W_k, v):
    projected_query, projected_key = _projections(query, key, W_q, W_k)
    return (projected_query + projected_key) @ v


def _scores_with_W_q_and_W_k_swapped(query, key, W_q, W_k, v):
    return course_lib.additive_scores(query, key, W_k, W_q, v) if W_q.shape == W_k.shape else \
        torch.tanh((query @ W_k.T).unsqueeze(-2) + (key @ W_q.T).unsqueeze(-3)) @ v  # raises what a student's raises


def _scores_with_weights_untransposed(query, key, W_q, W_k, v):
    return torch.tanh((query @ W_q).unsqueeze(-2) + (key @ W_k).unsqueeze(-3)) @ v


def _hidden_units_summed(query, key, W_q, W_k, v):
    return torch.tanh(sum(_projections(query, key, W_q, W_k))).sum(-1)


def _hidden_layer_returned(query, key, W_q, W_k, v):
    return torch.tanh(sum(_projections(query, key, W_q, W_k)))  # (..., Lq, Lk, h)


def _scores_keys_by_queries(query, key, W_q, W_k, v):
    return course_lib.additive_scores(query, key, W_q, W_k, v).transpose(-2, -1)


READ_WITH_V = ("Is v applied? The score reads the h hidden units with v, a weighted sum: hidden @ v takes "
               "(..., Lq, Lk, h) to (..., Lq, Lk)")
ADDITIVE_SCORES_MISTAKES = (
    Mistake("Is the tanh missing? The score is v^T tanh(W_q q + W_k k): squash the sum with torch.tanh before "
            "reading it with v", _scores_without_tanh),
    Mistake("Are W_q and W_k swapped? W_q (h, d_q) projects the queries, W_k (h, d_k) the keys",
            _scores_with_W_q_and_W_k_swapped),
    Mistake("Are the weights applied untransposed? They are stored (out, in), W_q is (h, d_q): W_q q for every "
            "row of query is query @ W_q.T", _scores_with_weights_untransposed),
    Mistake(READ_WITH_V, _hidden_units_summed),
    Mistake(READ_WITH_V, _hidden_layer_returned),
    Mistake("Are rows and columns swapped? Entry [..., i, j] scores query i against key j: queries along dim -2, "
            "keys along dim -1", _scores_keys_by_queries),
)

GENERAL_THE_WRONG_WAY = ("Is W applied the wrong way round, q^T W^T k? W is (d_q, d_k): q^T W k is "
                         "(query @ W) @ key^T")
GENERAL_SCORES_MISTAKES = (
    Mistake(GENERAL_THE_WRONG_WAY, lambda query, key, W: query @ (key @ W).transpose(-2, -1)),
    Mistake(GENERAL_THE_WRONG_WAY, lambda query, key, W: (query @ W.T) @ key.transpose(-2, -1)),
    Mistake("Is W missing? query @ key^T is the dot score; the general score puts W between them, "
            "(query @ W) @ key^T", lambda query, key, W: query @ key.transpose(-2, -1)),
)


def _attention(scores, value, mask=None, fill=float("-inf"), dim=-1):
    """softmax(scores masked where ``mask`` is False) @ value, as a student writes it (a row with every
    key masked by -inf is NaN, as torch.softmax gives it; course_lib.softmax is the same bytes on every
    CPU, where torch.softmax's float64 kernel is not)."""
    if mask is not None:
        scores = scores.masked_fill(~mask, fill)
    weights = course_lib.softmax(scores, dim=dim)
    return weights @ value, weights


def _masked_attention(mask_of, fill=float("-inf"), dim=-1, query_dim=True):
    """Additive attention whose mask is ``mask_of(positions (Lk,), valid_lens (B,))``, True = takes part."""
    def attention(query, key, value, W_q, W_k, v, *, valid_lens=None):
        scores = course_lib.additive_scores(query, key, W_q, W_k, v)  # (B, Lq, Lk)
        if valid_lens is None:
            return _attention(scores, value, dim=dim)
        mask = mask_of(torch.arange(key.shape[-2]), valid_lens[:, None])  # (B, Lk)
        return _attention(scores, value, mask[:, None, :] if query_dim else mask, fill=fill, dim=dim)
    return attention


def _is_real(positions, lengths):
    return positions < lengths


def _every_key(positions, lengths):
    return torch.ones_like(positions < lengths)  # (B, Lk), all True: valid_lens ignored


OFF_BY_ONE = "Off by one? Key j is real when j < valid_lens[b]: positions count from 0"
FLIPPED = "Mask polarity flipped? The real keys are j < valid_lens[b]; mask the others, the padding"
ADDITIVE_ATTENTION_MISTAKES = (
    Mistake("Are the padded keys masked? Keys j >= valid_lens[b] must get weight exactly 0: set their scores to "
            "-inf before the softmax", _masked_attention(_every_key)),
    Mistake("Padded scores set to 0? A score of 0 still gets the weight exp(0): set them to float('-inf')",
            _masked_attention(_is_real, fill=0.0)),
    Mistake(FLIPPED, _masked_attention(lambda positions, lengths: positions >= lengths)),
    Mistake(FLIPPED, _masked_attention(lambda positions, lengths: positions >= lengths, fill=-1e9)),
    Mistake(OFF_BY_ONE, _masked_attention(lambda positions, lengths: positions <= lengths)),
    Mistake(OFF_BY_ONE, _masked_attention(lambda positions, lengths: positions < lengths - 1)),
    Mistake("Softmax over the wrong dim? Each query's weights over the keys sum to 1: softmax(scores, dim=-1)",
            _masked_attention(_is_real, dim=-2)),
    Mistake("Does the mask broadcast over the queries? A (B, Lk) mask against (B, Lq, Lk) scores lines B up with "
            "Lq: insert a query dim, mask[:, None, :]", _masked_attention(_is_real, query_dim=False)),
)


def _decoder_step(query_with_new_state=False, gru_reads_context=True, output_reads_context=True,
                  output_reads_new_state=True, masks_padding=True):
    """attention_decoder_step with one of its steps done wrong, as a student writes it."""
    def step(embedded, hidden, annotations, source_lengths, params):
        def look(query):
            context, weights = course_lib.additive_attention(
                query[:, None, :], annotations, annotations, params["W_q"], params["W_k"], params["v"],
                valid_lens=source_lengths if masks_padding else None)
            return context[:, 0], weights[:, 0]  # (B, K), (B, Ls)

        def update(gru_input):
            return gru_cell(gru_input, hidden, params["W_ih"], params["W_hh"], params["b_ih"], params["b_hh"])

        if query_with_new_state:  # update first (Luong's order), with no context yet
            new_hidden = update(torch.cat([embedded, torch.zeros_like(annotations[:, 0])], dim=-1))
            context, weights = look(new_hidden)
        else:
            context, weights = look(hidden)
            new_hidden = update(torch.cat([embedded, context], dim=-1) if gru_reads_context else embedded)
        state = new_hidden if output_reads_new_state else hidden
        features = torch.cat([state, context], dim=-1) if output_reads_context else state
        return F.linear(features, params["W_out"], params["b_out"]), new_hidden, weights
    return step


DECODER_STEP_MISTAKES = (
    Mistake("Is the query the new state s_t? Bahdanau's decoder looks first, with the previous state s_{t-1} "
            "(hidden), then updates the GRU with the context", _decoder_step(query_with_new_state=True)),
    Mistake("Does the GRU read the context? Its input is the embedding and the context side by side, "
            "torch.cat([embedded, context], dim=-1): W_ih is (3H, E + K)", _decoder_step(gru_reads_context=False)),
    Mistake("Does the output layer read the context? logits = W_out [s_t; c_t] + b_out: W_out is (V, H + K)",
            _decoder_step(output_reads_context=False)),
    Mistake("Does the output layer read the new state? The logits come from [s_t; c_t], after the GRU update",
            _decoder_step(output_reads_new_state=False)),
    Mistake("Are the padded source characters masked? Pass valid_lens=source_lengths to your additive_attention",
            _decoder_step(masks_padding=False)),
)


# The hidden test's dates: 500 the notebook's split does not hold as test dates, the same for every
# grading and every student (a trained model's grade must not depend on a draw). Seed 1 of the same
# generator as the notebook's data (seed 0).
HIDDEN_DATES_SEED = 1


def hidden_test_pairs(n: int = 500) -> list[tuple[str, str]]:
    """The trained model's hidden test: ``n`` dates drawn once, with :data:`HIDDEN_DATES_SEED`."""
    return make_date_splits(n_train=0, n_validation=0, n_test=n, seed=HIDDEN_DATES_SEED).test


# The trained model is called as model.translate(sources); at least 90% of its translations must be exact.
TRANSLATION_CHECK = {"method": "translate", "min_accuracy": MIN_TEST_ACCURACY}


def _translation_case(description: str, pairs: list[tuple[str, str]]) -> tuple:
    """Only the sources go to the student's model; the targets stay with the grader as the expected output."""
    return (description, [[source for source, _ in pairs]], {},
            {**TRANSLATION_CHECK, "expected": [target for _, target in pairs]})


def _trained_model_visible(g):
    test = make_date_splits(n_train=20_000, n_validation=1_000, n_test=1_000, seed=0).test  # the notebook's data.test
    return [_translation_case("the lesson's 1,000 test dates", test)]


def _trained_model_hidden(g):
    return [_translation_case("500 other dates, the same at every grading", hidden_test_pairs(500))]


def _targets_given(*args, **kwargs):
    raise AssertionError("the trained model's cases carry their expected translations")


# No fused operator computes a score matrix: the score exercises forbid none. Attention itself may use
# torch.softmax (Lesson 1 wrote it), not an operator that computes attention outright: given the scores
# as a float mask, F.scaled_dot_product_attention or nn.MultiheadAttention would compute the rest.
EXERCISES = (
    Exercise("additive_scores", LESSON, course_lib.additive_scores, _additive_scores_visible, _additive_scores_hidden,
             forbidden=(), mistakes=ADDITIVE_SCORES_MISTAKES),
    Exercise("general_scores", LESSON, course_lib.general_scores, _general_scores_visible, _general_scores_hidden,
             forbidden=(), mistakes=GENERAL_SCORES_MISTAKES),
    Exercise("additive_attention", LESSON, course_lib.additive_attention, _additive_attention_visible,
             _additive_attention_hidden, mistakes=ADDITIVE_ATTENTION_MISTAKES),
    Exercise("decoder_step", LESSON, course_lib.attention_decoder_step, _decoder_step_visible, _decoder_step_hidden,
             mistakes=DECODER_STEP_MISTAKES),
    Exercise("trained_model", LESSON, _targets_given, _trained_model_visible, _trained_model_hidden),
)
