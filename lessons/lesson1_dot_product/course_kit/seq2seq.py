"""A GRU encoder-decoder for the dates task, with the decoder step plugged in (Lesson 2).

    encoder:  bidirectional GRU over the source characters -> annotations h_1..h_Ls, (B, Ls, 2H)
    s_0    =  tanh(W_s [h_fwd_last; h_bwd_first])                       (B, H)
    step t:   logits_t, s_t, alpha_t = step(embed(y_{t-1}), s_{t-1}, annotations, source_lengths, params)

The decoder step is a function on explicit tensors, passed in: with attention
(:func:`course_lib.attention_decoder_step`, and the one students write), or without
(:func:`fixed_context_step`, the encoder-decoder of Cho et al., 2014, whose decoder sees one fixed
vector). ``Seq2Seq`` owns the parameters, in ``params``, a dict of the names the step reads.

Also here: greedy decoding, exact-match accuracy and the attention matrix of one example; the model
trains with the course's one training loop, :func:`course_lib.training.train_token_classifier`, on
``DateSplits.training_batch`` (teacher forcing). Part of the student kit: it imports only the
standard library, torch and the kit's own data module, and holds nothing students are graded on.

References: K. Cho et al., "Learning Phrase Representations using RNN Encoder-Decoder for
Statistical Machine Translation", EMNLP 2014 (the GRU, eqs. 5-8, and the fixed-context decoder);
D. Bahdanau, K. Cho, Y. Bengio, ICLR 2015 (the decoder with attention, appendix A).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from course_kit.data.dates import BOS, SOURCE_VOCAB, TARGET_LENGTH, TARGET_VOCAB, make_batch

# step(embedded (B, E), hidden (B, H), annotations (B, Ls, 2H), source_lengths (B,), params)
#   -> (logits (B, V), new hidden (B, H), attention weights (B, Ls) or None)
DecoderStep = Callable[..., tuple]


def gru_cell(x: torch.Tensor, h: torch.Tensor, W_ih: torch.Tensor, W_hh: torch.Tensor,
             b_ih: torch.Tensor, b_hh: torch.Tensor) -> torch.Tensor:
    r"""One step of a GRU, the equations of ``torch.nn.GRUCell`` (Cho et al., 2014):

        r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)          reset gate
        z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)          update gate
        n = tanh(W_in x + b_in + r * (W_hn h + b_hn))       candidate
        h' = (1 - z) * n + z * h

    Shapes: x (B, D_in), h (B, H), W_ih (3H, D_in), W_hh (3H, H), b_ih and b_hh (3H,), the gates
    stacked in the order r, z, n as in ``nn.GRUCell``. Returns h' (B, H).
    """
    input_r, input_z, input_n = F.linear(x, W_ih, b_ih).chunk(3, dim=-1)  # 3 x (B, H)
    hidden_r, hidden_z, hidden_n = F.linear(h, W_hh, b_hh).chunk(3, dim=-1)  # 3 x (B, H)
    r = torch.sigmoid(input_r + hidden_r)
    z = torch.sigmoid(input_z + hidden_z)
    n = torch.tanh(input_n + r * hidden_n)
    return (1 - z) * n + z * h


def final_states(annotations: torch.Tensor, source_lengths: torch.Tensor) -> torch.Tensor:
    """[h_fwd at the last real character; h_bwd at the first]: what a fixed-vector encoder hands on.

    annotations (B, Ls, 2H) from a bidirectional encoder -> (B, 2H).
    """
    half = annotations.shape[-1] // 2
    last = annotations[torch.arange(len(annotations)), source_lengths - 1, :half]  # (B, H) forward, read it all
    first = annotations[:, 0, half:]  # (B, H) backward direction, read it all
    return torch.cat([last, first], dim=-1)


def fixed_context_step(embedded: torch.Tensor, hidden: torch.Tensor, annotations: torch.Tensor,
                       source_lengths: torch.Tensor, params: dict[str, torch.Tensor]):
    """A decoder step without attention: the context is the same fixed vector at every step.

    The encoder's final states (:func:`final_states`) are the whole summary of the source, as in
    Cho et al. (2014): the bottleneck Bahdanau et al. (2015) removed. Same interface as a step
    with attention; it returns no weights.
    """
    context = final_states(annotations, source_lengths)  # (B, 2H), the same at every step
    hidden = gru_cell(torch.cat([embedded, context], dim=-1), hidden,
                      params["W_ih"], params["W_hh"], params["b_ih"], params["b_hh"])
    logits = F.linear(torch.cat([hidden, context], dim=-1), params["W_out"], params["b_out"])
    return logits, hidden, None


def decoder_parameters(embed_size: int, hidden_size: int, key_size: int, attention_size: int,
                       n_outputs: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Fresh parameters of a decoder step, by name, initialised as torch's own layers are.

    W_q (a, H), W_k (a, K), v (a,): the additive score; W_ih (3H, E + K), W_hh (3H, H), b_ih and
    b_hh (3H,): the GRU on [embedded; context]; W_out (V, H + K), b_out (V,): the output layer on
    [hidden; context].
    """
    shapes = {"W_q": (attention_size, hidden_size), "W_k": (attention_size, key_size), "v": (attention_size,),
              "W_ih": (3 * hidden_size, embed_size + key_size), "W_hh": (3 * hidden_size, hidden_size),
              "b_ih": (3 * hidden_size,), "b_hh": (3 * hidden_size,),
              "W_out": (n_outputs, hidden_size + key_size), "b_out": (n_outputs,)}
    fan_in = {"W_q": hidden_size, "W_k": key_size, "v": attention_size, "W_ih": hidden_size, "W_hh": hidden_size,
              "b_ih": hidden_size, "b_hh": hidden_size, "W_out": hidden_size + key_size,
              "b_out": hidden_size + key_size}
    return {name: (torch.rand(shape, generator=generator) * 2 - 1) / math.sqrt(fan_in[name])
            for name, shape in shapes.items()}


class Seq2Seq(nn.Module):
    """Encoder-decoder for the dates task; ``step`` is the decoder step (with or without attention).

    >>> from course_kit.seq2seq import fixed_context_step
    >>> model = Seq2Seq(fixed_context_step, seed=0)
    >>> model(*make_batch([("Mar 3 21", "2021-03-03")])[:3]).shape  # (B, 10, target vocabulary)
    torch.Size([1, 10, 13])
    """

    def __init__(self, step: DecoderStep, embed_size: int = 32, hidden_size: int = 64,
                 attention_size: int = 64, seed: int = 0) -> None:
        super().__init__()
        self.step = step
        torch.manual_seed(seed)  # the same initial model, and so the same training run, from a seed
        self.source_embedding = nn.Embedding(len(SOURCE_VOCAB), embed_size, padding_idx=0)
        self.encoder = nn.GRU(embed_size, hidden_size, batch_first=True, bidirectional=True)
        self.bridge = nn.Linear(2 * hidden_size, hidden_size)  # s_0 from the encoder's final states
        self.target_embedding = nn.Embedding(len(TARGET_VOCAB), embed_size)
        self.params = nn.ParameterDict({name: nn.Parameter(value) for name, value in decoder_parameters(
            embed_size, hidden_size, 2 * hidden_size, attention_size, len(TARGET_VOCAB)).items()})

    def encode(self, source: torch.Tensor, source_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The annotations (B, Ls, 2H), one per source character (attention's keys and values), and s_0 (B, H)."""
        packed = nn.utils.rnn.pack_padded_sequence(  # so the backward GRU starts at the last real character
            self.source_embedding(source), source_lengths, batch_first=True, enforce_sorted=False)
        keys, _ = nn.utils.rnn.pad_packed_sequence(self.encoder(packed)[0], batch_first=True,
                                                   total_length=source.shape[1])  # (B, Ls, 2H)
        return keys, torch.tanh(self.bridge(final_states(keys, source_lengths)))

    def decode_step(self, previous: torch.Tensor, hidden: torch.Tensor, keys: torch.Tensor,
                    source_lengths: torch.Tensor):
        """One step from the previous target ids (B,): (logits (B, V), hidden (B, H), weights (B, Ls) or None)."""
        return self.step(self.target_embedding(previous), hidden, keys, source_lengths, dict(self.params))

    def forward(self, source: torch.Tensor, source_lengths: torch.Tensor, target_in: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: logits (B, T, V) for every target position, each step fed the true previous character."""
        keys, hidden = self.encode(source, source_lengths)
        all_logits = []
        for t in range(target_in.shape[1]):
            logits, hidden, _ = self.decode_step(target_in[:, t], hidden, keys, source_lengths)
            all_logits.append(logits)
        return torch.stack(all_logits, dim=1)

    def translate(self, sources: list[str]) -> list[str]:
        """Greedy decoding of each source string: the model's translations."""
        return self.translate_with_attention(sources)[0]

    @torch.no_grad()
    def translate_with_attention(self, sources: list[str]) -> tuple[list[str], torch.Tensor | None]:
        """Greedy decoding: each step feeds back its most likely character.

        Returns the translations and the attention weights (B, 10, Ls) (None without attention).
        """
        batch = make_batch([(s, "0" * TARGET_LENGTH) for s in sources])
        keys, hidden = self.encode(batch.source, batch.source_lengths)
        previous = torch.full((len(sources),), TARGET_VOCAB.index[BOS])
        outputs, all_weights = [], []
        for _ in range(TARGET_LENGTH):
            logits, hidden, weights = self.decode_step(previous, hidden, keys, batch.source_lengths)
            previous = logits.argmax(dim=-1)  # (B,)
            outputs.append(previous)
            all_weights.append(weights)
        ids = torch.stack(outputs, dim=1)  # (B, 10)
        weights = None if all_weights[0] is None else torch.stack(all_weights, dim=1)
        # keep a predicted padding character: a translation is always 10 characters, right or wrong
        return [TARGET_VOCAB.decode(row, strip_padding=False) for row in ids], weights


def exact_match(model: Seq2Seq, pairs: list[tuple[str, str]], batch_size: int = 500) -> float:
    """The fraction of ``pairs`` whose greedy translation is exactly the target."""
    if not pairs:
        raise ValueError("exact_match needs at least one (source, target) pair")
    correct = 0
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        translations = model.translate([s for s, _ in chunk])
        correct += sum(out == target for out, (_, target) in zip(translations, chunk))
    return correct / len(pairs)


def attention_matrix(model: Seq2Seq, source: str) -> tuple[torch.Tensor, str]:
    """The attention weights (10, Ls) of one greedy translation of ``source``, and the translation."""
    translations, weights = model.translate_with_attention([source])
    if weights is None:
        raise ValueError("this model's decoder step returns no attention weights (a model without attention)")
    return weights[0], translations[0]


def accuracy_by_length(model: Seq2Seq, pairs: list[tuple[str, str]],
                       edges: tuple[int, ...] = (8, 10, 12, 16, 20)) -> dict[str, tuple[float, int]]:
    """Exact-match accuracy of ``model`` by source length: {"13-16": (accuracy, count), ...}.

    ``edges`` split the lengths into bins [.., e0), [e0, e1), ..., [e_last, ..); empty bins are left out.
    """
    bins: dict[str, list[tuple[str, str]]] = {}
    bounds = [0, *edges, 10**9]
    for low, high in zip(bounds, bounds[1:]):
        label = f"{low}-{high - 1}" if high < 10**9 else f"{low}+"
        if low == 0:
            label = f"<{high}"
        chosen = [pair for pair in pairs if low <= len(pair[0]) < high]
        if chosen:
            bins[label] = chosen
    return {label: (exact_match(model, chosen), len(chosen)) for label, chosen in bins.items()}
