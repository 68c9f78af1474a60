"""The encoder-decoder of Lesson 2: its GRU, its decoder steps, training, decoding and accuracy."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from course_kit.data.dates import make_batch, make_date_splits
from course_kit.seq2seq import (
    Seq2Seq,
    accuracy_by_length,
    attention_matrix,
    decoder_parameters,
    exact_match,
    final_states,
    fixed_context_step,
    gru_cell,
)
from course_kit.training import train_token_classifier
from course_lib import attention_decoder_step


def test_gru_cell_is_torch_nn_grucell():
    torch.manual_seed(0)
    cell = nn.GRUCell(5, 7).double()
    x, h = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 7, dtype=torch.float64)
    torch.testing.assert_close(gru_cell(x, h, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh), cell(x, h))


def test_final_states_are_the_bidirectional_grus_own_final_hidden_states():
    model = Seq2Seq(fixed_context_step, embed_size=4, hidden_size=6)
    batch = make_batch([("Mar 3 21", "2021-03-03"), ("3.3.21", "2021-03-03"), ("1/2/03", "2003-01-02")])
    keys, _ = model.encode(batch.source, batch.source_lengths)
    packed = nn.utils.rnn.pack_padded_sequence(model.source_embedding(batch.source), batch.source_lengths,
                                               batch_first=True, enforce_sorted=False)
    _, h_n = model.encoder(packed)  # (2 directions, B, H), in the original batch order
    torch.testing.assert_close(final_states(keys, batch.source_lengths), torch.cat([h_n[0], h_n[1]], dim=-1))


def test_decoder_step_with_attention_ignores_padded_keys_and_passes_gradcheck():
    g = torch.Generator().manual_seed(1)
    params = {k: v.double().requires_grad_() for k, v in decoder_parameters(3, 4, 6, 5, 7, generator=g).items()}
    embedded, hidden = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    annotations = torch.randn(2, 5, 6, dtype=torch.float64)
    lengths = torch.tensor([5, 2])
    step = attention_decoder_step(embedded, hidden, annotations, lengths, params)
    assert step._fields == ("logits", "hidden", "weights")  # the names a failing check quotes
    logits, new_hidden, weights = step
    assert logits.shape == (2, 7) and new_hidden.shape == (2, 4) and weights.shape == (2, 5)
    assert weights[1, 2:].tolist() == [0.0, 0.0, 0.0]
    changed = annotations.clone()
    changed[1, 2:] = 100.0  # whatever the padding holds, sequence 1's step is the same
    torch.testing.assert_close(attention_decoder_step(embedded, hidden, changed, lengths, params).logits[1], logits[1])
    names = sorted(params)
    assert torch.autograd.gradcheck(
        lambda *tensors: attention_decoder_step(embedded, hidden, annotations, lengths, dict(zip(names, tensors)))[:2],
        [params[n] for n in names])


@pytest.fixture(scope="module")
def small_split():
    return make_date_splits(n_train=2000, n_validation=0, n_test=200, seed=3)


def test_a_few_hundred_training_steps_reduce_the_loss_on_a_fixed_seed(small_split):
    torch.set_num_threads(1)
    runs = []
    for _ in range(2):
        model = Seq2Seq(attention_decoder_step, embed_size=8, hidden_size=16, attention_size=16, seed=0)
        runs.append(train_token_classifier(model, small_split.training_batch, steps=200, batch_size=32, lr=1e-2,
                                           clip_grad_norm=1.0, seed=0, progress=False))
    losses = runs[0]
    assert runs[0] == runs[1]  # same seed, same run
    assert sum(losses[-20:]) / 20 < 0.5 * sum(losses[:20]) / 20
    translations = model.translate([s for s, _ in small_split.test[:5]])
    assert all(len(t) == 10 for t in translations)
    assert exact_match(model, small_split.test) == pytest.approx(
        sum(t == target for t, (_, target) in zip(model.translate([s for s, _ in small_split.test]),
                                                  small_split.test)) / 200)


def test_attention_matrix_has_a_row_per_written_character_summing_to_one():
    model = Seq2Seq(attention_decoder_step, embed_size=4, hidden_size=8, attention_size=8)
    weights, translation = attention_matrix(model, "3rd of March, 2021")
    assert weights.shape == (10, len("3rd of March, 2021")) and len(translation) == 10
    torch.testing.assert_close(weights.sum(-1), torch.ones(10))


def test_a_model_without_attention_has_no_attention_matrix():
    with pytest.raises(ValueError, match="no attention weights"):
        attention_matrix(Seq2Seq(fixed_context_step, embed_size=4, hidden_size=8), "3.3.21")


def test_accuracy_by_length_covers_every_example_once(small_split):
    model = Seq2Seq(fixed_context_step, embed_size=4, hidden_size=8)
    by_length = accuracy_by_length(model, small_split.test)
    assert sum(count for _, count in by_length.values()) == len(small_split.test)
    assert all(0 <= accuracy <= 1 for accuracy, _ in by_length.values())
