"""The decoder step of Bahdanau's model: attend to the source, then update the state and predict.

At step t, with s_{t-1} the decoder's state, y_{t-1} the previous output character and h_1..h_Ls the
encoder's annotations (attention's keys, and its values):

    c_t, alpha_t = additive_attention(query = s_{t-1}, key = value = h)     context (B, K)
    s_t          = GRU([embed(y_{t-1}); c_t], s_{t-1})                        (B, H)
    logits_t     = W_out [s_t; c_t] + b_out                                   (B, V)

The query is the *previous* state: the decoder decides where to look before it writes, as in
Bahdanau et al. (2015), eqs. (5)-(6) and appendix A.2.2. The output layer is a simplified one:
theirs (eq. 4 and appendix A.2.2) also reads y_{t-1} and passes through a maxout hidden layer, a
"deep output"; this one is linear in [s_t; c_t]. The step is a function on explicit parameters, so it
plugs into the lesson's ``Seq2Seq`` (the student kit's), and students' steps are checked against it.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from course_lib.additive import additive_attention

__all__ = ["DecoderStepOutput", "attention_decoder_step"]


class DecoderStepOutput(NamedTuple):
    """What a decoder step returns: ``logits`` (B, V), the new state ``hidden`` (B, H), ``weights`` (B, Ls)."""

    logits: torch.Tensor
    hidden: torch.Tensor
    weights: torch.Tensor


def attention_decoder_step(embedded: torch.Tensor, hidden: torch.Tensor, annotations: torch.Tensor,
                           source_lengths: torch.Tensor, params: dict[str, torch.Tensor]) -> DecoderStepOutput:
    r"""One decoder step with additive attention: ``DecoderStepOutput(logits, hidden, weights)``.

    Shapes:
        embedded: (B, E), the embedding of the previous output character y_{t-1}.
        hidden: (B, H), the previous decoder state s_{t-1}: the attention query.
        annotations: (B, Ls, K), the encoder's annotations h_j: attention's keys and its values.
        source_lengths: (B,), the number of real source characters; padded keys get weight 0.
        params: W_q (a, H), W_k (a, K), v (a,) for the score; W_ih (3H, E + K), W_hh (3H, H),
            b_ih, b_hh (3H,) for the GRU (gates r, z, n as in nn.GRUCell); W_out (V, H + K),
            b_out (V,) for the output layer. Every matrix is stored (out, in), as nn.Linear's.
        returns: logits (B, V), the new state s_t (B, H), the weights alpha_t (B, Ls).

    Reference: Bahdanau et al., ICLR 2015, eqs. (4)-(6) and appendix A.2.2, with a simplified
    output layer (linear in [s_t; c_t]; theirs also reads y_{t-1} and has a maxout hidden layer).

    >>> E, H, K, a, V = 3, 4, 6, 5, 7
    >>> shapes = {"W_q": (a, H), "W_k": (a, K), "v": (a,), "W_ih": (3 * H, E + K), "W_hh": (3 * H, H),
    ...           "b_ih": (3 * H,), "b_hh": (3 * H,), "W_out": (V, H + K), "b_out": (V,)}
    >>> params = {name: torch.randn(shape) for name, shape in shapes.items()}
    >>> step = attention_decoder_step(torch.randn(2, 3), torch.zeros(2, 4), torch.randn(2, 5, 6),
    ...                               torch.tensor([5, 2]), params)
    >>> step.logits.shape, step.hidden.shape, step.weights[1, 2:].tolist()
    (torch.Size([2, 7]), torch.Size([2, 4]), [0.0, 0.0, 0.0])
    """
    context, weights = additive_attention(hidden.unsqueeze(1), annotations, annotations, params["W_q"],
                                          params["W_k"], params["v"],
                                          valid_lens=source_lengths)  # (B, 1, K), (B, 1, Ls)
    context, weights = context.squeeze(1), weights.squeeze(1)  # (B, K), (B, Ls)
    # the GRU update of nn.GRUCell (Cho et al., 2014, eqs. 5-8; the lesson's gru_cell is the same equations)
    new_hidden = torch.gru_cell(torch.cat([embedded, context], dim=-1), hidden,
                                params["W_ih"], params["W_hh"], params["b_ih"], params["b_hh"])  # (B, H)
    logits = F.linear(torch.cat([new_hidden, context], dim=-1), params["W_out"], params["b_out"])  # (B, V)
    return DecoderStepOutput(logits, new_hidden, weights)
