"""What only the CPU-tuned FlashAttention has: the unified maximum and the tiles chosen for the CPU.

Its agreement with F.scaled_dot_product_attention, autograd and gradcheck is tested beside the
readable reference's, in test_flash.py."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import TOLERANCES

from course_lib import flash_cpu
from course_lib.flash import flash_attention_forward
from course_lib.flash_cpu import cpu_block_sizes, flash_attention_cpu_forward

TOL = TOLERANCES[torch.float32]  # the course's one table (course_kit.checks)


def inputs(batch, lq, lk, d, dv, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*batch, lq, d, generator=g), torch.randn(*batch, lk, d, generator=g),
            torch.randn(*batch, lk, dv, generator=g))


def exact_logsumexp(q, k, is_causal):
    s = q.double() @ k.double().transpose(-2, -1) / math.sqrt(q.shape[-1])
    if is_causal:
        s = s.masked_fill(torch.ones(s.shape[-2:], dtype=torch.bool).triu(1), float("-inf"))
    return torch.logsumexp(s, dim=-1).float()


@pytest.mark.parametrize("is_causal", [False, True], ids=["full", "causal"])
def test_a_query_tile_with_large_scores_keeps_the_running_max(is_causal):
    # Rows 16..31 (the second query tile) reach scores of about 2^200: 2^s overflows without the
    # running max, so that tile must take the online softmax while the others keep m = 0.
    q, k, v = inputs((2, 3), 70, 70, 16, 16)
    q[..., 16:32, :] *= 60
    out, lse = flash_attention_cpu_forward(q, k, v, is_causal=is_causal, block_q=16, block_k=16)
    assert out.isfinite().all()
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=is_causal), **TOL)
    torch.testing.assert_close(lse, exact_logsumexp(q, k, is_causal), **TOL)


def test_values_too_large_for_a_unified_max_keep_the_running_max():
    # Small scores but |V| up to about 3e36: sums of 2^s V over 40 keys would pass float32's 3.4e38,
    # sums of 2^(s - m) V (each factor at most 1) do not.
    q, k, v = inputs((1, 2), 40, 40, 8, 8)
    v = v * 1e36
    out, _ = flash_attention_cpu_forward(q, k, v, block_q=16, block_k=16)
    assert out.isfinite().all()
    torch.testing.assert_close(out / 1e36, F.scaled_dot_product_attention(q, k, v) / 1e36, **TOL)


@pytest.mark.parametrize("is_causal", [False, True], ids=["full", "causal"])
def test_unified_max_and_running_max_give_the_same_output_and_logsumexp(is_causal, monkeypatch):
    q, k, v = inputs((2, 2), 45, 45, 16, 16)
    unified = flash_attention_cpu_forward(q, k, v, is_causal=is_causal, block_q=8, block_k=8)
    monkeypatch.setattr(flash_cpu, "UNIFIED_MAX_BOUND", -1.0)  # no tile qualifies: the online softmax everywhere
    running = flash_attention_cpu_forward(q, k, v, is_causal=is_causal, block_q=8, block_k=8)
    for a, b in zip(unified, running):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("is_causal", [False, True], ids=["full", "causal"])
def test_tuned_forward_agrees_with_the_readable_reference_at_its_own_tiles(is_causal):
    q, k, v = inputs((1, 4), 600, 600, 64, 64)  # crosses several of the CPU's tiles, the last one short
    for tuned, readable in zip(flash_attention_cpu_forward(q, k, v, is_causal=is_causal),
                               flash_attention_forward(q, k, v, is_causal=is_causal)):
        torch.testing.assert_close(tuned, readable, **TOL)


@pytest.mark.parametrize("capability", ["avx2", "default"])
def test_tuning_follows_the_capability_aten_reports(capability):
    # ATEN_CPU_CAPABILITY lowers what ATen uses (and reports) below what this CPU offers.
    code = ("import torch; from course_lib.flash_cpu import cpu_tuning, TUNING_BY_CAPABILITY\n"
            "print(torch.backends.cpu.get_cpu_capability(), cpu_tuning() == "
            "TUNING_BY_CAPABILITY[torch.backends.cpu.get_cpu_capability()])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "ATEN_CPU_CAPABILITY": capability, "PYTHONWARNINGS": "ignore"})
    assert result.stdout.split() == [capability.upper(), "True"], result.stderr


def test_the_tuned_functions_default_to_the_tiles_chosen_for_this_cpu():
    assert cpu_block_sizes() == flash_cpu.TUNING_BY_CAPABILITY[torch.backends.cpu.get_cpu_capability()][:2]
    q, k, v = inputs((1, 2), 300, 300, 16, 16)
    for default, explicit in zip(flash_attention_cpu_forward(q, k, v),
                                 flash_attention_cpu_forward(q, k, v, block_q=cpu_block_sizes()[0],
                                                             block_k=cpu_block_sizes()[1])):
        assert torch.equal(default, explicit)


@pytest.mark.parametrize("exp2", [True, False], ids=["base 2", "base e"])
@pytest.mark.parametrize("is_causal", [False, True], ids=["full", "causal"])
def test_both_bases_of_the_exponentials_give_sdpas_output_logsumexp_and_gradients(exp2, is_causal, monkeypatch):
    capability = torch.backends.cpu.get_cpu_capability()
    monkeypatch.setitem(flash_cpu.TUNING_BY_CAPABILITY, capability,
                        flash_cpu.TUNING_BY_CAPABILITY[capability]._replace(exp2=exp2))
    assert flash_cpu.cpu_tuning().exp2 is exp2
    q, k, v = (t.requires_grad_() for t in inputs((2, 2), 45, 45, 16, 16, seed=3))
    q_big = (q.detach() * 30).requires_grad_()  # some tiles too large for the unified maximum
    for query in (q, q_big):
        out, lse = flash_attention_cpu_forward(query, k, v, is_causal=is_causal, block_q=8, block_k=16)
        torch.testing.assert_close(out, F.scaled_dot_product_attention(query, k, v, is_causal=is_causal), **TOL)
        torch.testing.assert_close(lse, exact_logsumexp(query, k, is_causal), **TOL)
    grad_out = torch.randn(2, 2, 45, 16, generator=torch.Generator().manual_seed(4))
    ours = torch.autograd.grad(flash_cpu.flash_attention_cpu(q, k, v, is_causal=is_causal, block_q=8, block_k=16),
                               (q, k, v), grad_out)
    theirs = torch.autograd.grad(F.scaled_dot_product_attention(q, k, v, is_causal=is_causal), (q, k, v), grad_out)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, **TOL)
