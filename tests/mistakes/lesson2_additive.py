"""Lesson 2's known mistakes (solutions/lesson2_additive): additive and general scores, masked
additive attention, the decoder step. Each is the code a student writes, with one mistake in it."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from course_kit.seq2seq import gru_cell
from mistakes import KnownMistake

# --- additive_scores: v^T tanh(W_q q + W_k k), weights stored (out, in) -----------------------------

def scores_without_tanh(query, key, W_q, W_k, v):
    hidden = (query @ W_q.T)[..., :, None, :] + (key @ W_k.T)[..., None, :, :]
    return hidden @ v


def scores_with_W_q_and_W_k_swapped(query, key, W_q, W_k, v):
    hidden = torch.tanh((query @ W_k.T)[..., :, None, :] + (key @ W_q.T)[..., None, :, :])
    return hidden @ v


def scores_with_weights_untransposed(query, key, W_q, W_k, v):
    hidden = torch.tanh((query @ W_q)[..., :, None, :] + (key @ W_k)[..., None, :, :])  # as if (in, out)
    return hidden @ v


def scores_summed_instead_of_read_with_v(query, key, W_q, W_k, v):
    return torch.tanh((query @ W_q.T).unsqueeze(-2) + (key @ W_k.T).unsqueeze(-3)).sum(-1)


def scores_without_v(query, key, W_q, W_k, v):
    return torch.tanh((query @ W_q.T).unsqueeze(-2) + (key @ W_k.T).unsqueeze(-3))  # (..., Lq, Lk, h)


def scores_keys_by_queries(query, key, W_q, W_k, v):
    hidden = torch.tanh((query @ W_q.T).unsqueeze(-3) + (key @ W_k.T).unsqueeze(-2))  # (..., Lk, Lq, h)
    return hidden @ v


# --- general_scores: q^T W k, W (d_q, d_k) ---------------------------------------------------------

def general_with_W_transposed(query, key, W):
    return query @ (key @ W).transpose(-2, -1)  # q^T W^T k: runs only when d_q = d_k


def general_with_W_transposed_on_the_query(query, key, W):
    return (query @ W.T) @ key.transpose(-2, -1)


def general_without_W(query, key, W):
    return query @ key.transpose(-2, -1)


# --- additive_attention: mask the padding, softmax over the keys ----------------------------------

def _scores(query, key, W_q, W_k, v):
    return torch.tanh((query @ W_q.T).unsqueeze(-2) + (key @ W_k.T).unsqueeze(-3)) @ v


def attention_ignoring_valid_lens(query, key, value, W_q, W_k, v, *, valid_lens=None):
    weights = torch.softmax(_scores(query, key, W_q, W_k, v), dim=-1)
    return weights @ value, weights


def attention_masking_with_zero(query, key, value, W_q, W_k, v, *, valid_lens=None):
    scores = _scores(query, key, W_q, W_k, v)
    if valid_lens is not None:
        padding = torch.arange(key.shape[-2]) >= valid_lens[:, None]
        scores = scores.masked_fill(padding[:, None, :], 0.0)  # 0 is not "no weight": exp(0) = 1
    weights = torch.softmax(scores, dim=-1)
    return weights @ value, weights


def attention_masking_the_real_keys(query, key, value, W_q, W_k, v, *, valid_lens=None):
    scores = _scores(query, key, W_q, W_k, v)
    if valid_lens is not None:
        real = torch.arange(key.shape[-2]) < valid_lens[:, None]
        scores = scores.masked_fill(real[:, None, :], float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ value, weights


def attention_masking_with_large_negative_and_flipped(query, key, value, W_q, W_k, v, *, valid_lens=None):
    scores = _scores(query, key, W_q, W_k, v)
    if valid_lens is not None:
        real = torch.arange(key.shape[-2]) < valid_lens[:, None]
        scores = scores.masked_fill(real[:, None, :], -1e9)  # no NaN, but the real keys are the ones hidden
    weights = torch.softmax(scores, dim=-1)
    return weights @ value, weights


def attention_keeping_one_padded_key(query, key, value, W_q, W_k, v, *, valid_lens=None):
    scores = _scores(query, key, W_q, W_k, v)
    if valid_lens is not None:
        padding = torch.arange(key.shape[-2]) > valid_lens[:, None]  # > instead of >=: key valid_lens[b] kept
        scores = scores.masked_fill(padding[:, None, :], float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ value, weights


def attention_dropping_one_real_key(query, key, value, W_q, W_k, v, *, valid_lens=None):
    scores = _scores(query, key, W_q, W_k, v)
    if valid_lens is not None:
        real = torch.arange(key.shape[-2]) < valid_lens[:, None] - 1
        scores = scores.masked_fill(~real[:, None, :], float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ value, weights


def attention_softmax_over_queries(query, key, value, W_q, W_k, v, *, valid_lens=None):
    scores = _scores(query, key, W_q, W_k, v)
    if valid_lens is not None:
        real = torch.arange(key.shape[-2]) < valid_lens[:, None]
        scores = scores.masked_fill(~real[:, None, :], float("-inf"))
    weights = torch.softmax(scores, dim=1)  # dim 1 of (B, Lq, Lk) is the queries'
    return weights @ value, weights


def attention_mask_without_query_dim(query, key, value, W_q, W_k, v, *, valid_lens=None):
    scores = _scores(query, key, W_q, W_k, v)
    if valid_lens is not None:
        real = torch.arange(key.shape[-2]) < valid_lens[:, None]  # (B, Lk) against (B, Lq, Lk)
        scores = scores.masked_fill(~real, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ value, weights


# --- decoder_step: look with s_{t-1}, update the GRU on [e; c], predict from [s_t; c] ----------------

def _attend(query, annotations, source_lengths, params):
    context, weights = attention_with_padding(query[:, None, :], annotations, annotations, params["W_q"],
                                              params["W_k"], params["v"], valid_lens=source_lengths)
    return context[:, 0], weights[:, 0]


def attention_with_padding(query, key, value, W_q, W_k, v, *, valid_lens=None):
    scores = _scores(query, key, W_q, W_k, v)
    if valid_lens is not None:
        real = torch.arange(key.shape[-2]) < valid_lens[:, None]
        scores = scores.masked_fill(~real[:, None, :], float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ value, weights


def _gru(x, hidden, params):
    return gru_cell(x, hidden, params["W_ih"], params["W_hh"], params["b_ih"], params["b_hh"])


def step_querying_with_the_new_state(embedded, hidden, annotations, source_lengths, params):
    no_context = torch.zeros(annotations.shape[0], annotations.shape[2])  # update first, Luong's order
    new_hidden = _gru(torch.cat([embedded, no_context], dim=-1), hidden, params)
    context, weights = _attend(new_hidden, annotations, source_lengths, params)
    logits = F.linear(torch.cat([new_hidden, context], dim=-1), params["W_out"], params["b_out"])
    return logits, new_hidden, weights


def step_without_context_in_the_gru(embedded, hidden, annotations, source_lengths, params):
    context, weights = _attend(hidden, annotations, source_lengths, params)
    new_hidden = _gru(embedded, hidden, params)
    logits = F.linear(torch.cat([new_hidden, context], dim=-1), params["W_out"], params["b_out"])
    return logits, new_hidden, weights


def step_without_context_in_the_output(embedded, hidden, annotations, source_lengths, params):
    context, weights = _attend(hidden, annotations, source_lengths, params)
    new_hidden = _gru(torch.cat([embedded, context], dim=-1), hidden, params)
    logits = new_hidden @ params["W_out"].T + params["b_out"]
    return logits, new_hidden, weights


def step_predicting_from_the_previous_state(embedded, hidden, annotations, source_lengths, params):
    context, weights = _attend(hidden, annotations, source_lengths, params)
    new_hidden = _gru(torch.cat([embedded, context], dim=-1), hidden, params)
    logits = F.linear(torch.cat([hidden, context], dim=-1), params["W_out"], params["b_out"])
    return logits, new_hidden, weights


def step_ignoring_source_lengths(embedded, hidden, annotations, source_lengths, params):
    context, weights = _attend(hidden, annotations, None, params)
    new_hidden = _gru(torch.cat([embedded, context], dim=-1), hidden, params)
    logits = F.linear(torch.cat([new_hidden, context], dim=-1), params["W_out"], params["b_out"])
    return logits, new_hidden, weights


MISTAKES = [
    KnownMistake("additive_scores", "tanh forgotten", scores_without_tanh, "Is the tanh missing?"),
    KnownMistake("additive_scores", "W_q and W_k swapped", scores_with_W_q_and_W_k_swapped,
                 "Are W_q and W_k swapped?"),
    KnownMistake("additive_scores", "weights not transposed, (out, in) read as (in, out)",
                 scores_with_weights_untransposed, "Are the weights applied untransposed?"),
    KnownMistake("additive_scores", "v not applied: hidden units summed", scores_summed_instead_of_read_with_v,
                 "Is v applied?"),
    KnownMistake("additive_scores", "v not applied: the hidden layer returned", scores_without_v, "Is v applied?"),
    KnownMistake("additive_scores", "scores laid out keys by queries", scores_keys_by_queries,
                 "Are rows and columns swapped?"),
    KnownMistake("general_scores", "q^T W^T k: W applied to the keys untransposed", general_with_W_transposed,
                 "q^T W^T k"),
    KnownMistake("general_scores", "q^T W^T k: W transposed on the query side", general_with_W_transposed_on_the_query,
                 "q^T W^T k"),
    KnownMistake("general_scores", "W forgotten: the dot score", general_without_W, "Is W missing?"),
    KnownMistake("additive_attention", "padded keys not masked", attention_ignoring_valid_lens,
                 "Are the padded keys masked?"),
    KnownMistake("additive_attention", "padded keys masked with 0 instead of -inf", attention_masking_with_zero,
                 "set to 0?"),
    KnownMistake("additive_attention", "mask polarity flipped, -inf", attention_masking_the_real_keys,
                 "Mask polarity flipped?"),
    KnownMistake("additive_attention", "mask polarity flipped, -1e9", attention_masking_with_large_negative_and_flipped,
                 "Mask polarity flipped?"),
    KnownMistake("additive_attention", "valid_lens off by one: one padded key kept", attention_keeping_one_padded_key,
                 "Off by one?"),
    KnownMistake("additive_attention", "valid_lens off by one: one real key dropped", attention_dropping_one_real_key,
                 "Off by one?"),
    KnownMistake("additive_attention", "softmax over the queries' dim", attention_softmax_over_queries,
                 "Softmax over the wrong dim?"),
    KnownMistake("additive_attention", "(B, Lk) mask without a query dim", attention_mask_without_query_dim,
                 "Does the mask broadcast over the queries?"),
    KnownMistake("decoder_step", "queries with the new state s_t, not s_{t-1}", step_querying_with_the_new_state,
                 "Is the query the new state s_t?"),
    KnownMistake("decoder_step", "context not fed to the GRU", step_without_context_in_the_gru,
                 "Does the GRU read the context?"),
    KnownMistake("decoder_step", "context not fed to the output layer", step_without_context_in_the_output,
                 "Does the output layer read the context?"),
    KnownMistake("decoder_step", "output layer reads s_{t-1}, not s_t", step_predicting_from_the_previous_state,
                 "Does the output layer read the new state?"),
    KnownMistake("decoder_step", "source lengths not passed to the attention", step_ignoring_source_lengths,
                 "Are the padded source characters masked?"),
]
