"""The Triton forward kernel against F.scaled_dot_product_attention: under the interpreter on the CPU
(tiny shapes), compiled where CUDA exists. Skipped cleanly where triton is not installed."""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn.functional as F

triton = pytest.importorskip("triton")

from course_lib.triton_attention import triton_available, triton_flash_attention, triton_flash_forward  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.skipif(not triton_available(), reason="needs CUDA, or TRITON_INTERPRET=1 set before "
                                                                 "triton's import (tests/conftest.py does it)")


def inputs(b, h, lq, lk, d, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(b, h, n, d, generator=g).to(DEVICE, dtype) for n in (lq, lk, lk))


@pytest.mark.parametrize("is_causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("lq,lk,d", [(16, 16, 16), (5, 21, 16), (21, 5, 8), (33, 33, 32)])
def test_triton_forward_matches_sdpa_and_logsumexp_under_odd_sizes(lq, lk, d, is_causal):
    q, k, v = inputs(1, 2, lq, lk, d)
    out, lse = triton_flash_forward(q, k, v, is_causal=is_causal, block_m=16, block_n=16)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=is_causal), atol=2e-5, rtol=1e-4)
    s = q @ k.transpose(-2, -1) / math.sqrt(d)
    if is_causal:
        s = s.masked_fill(torch.ones(lq, lk, dtype=torch.bool, device=DEVICE).triu(1), float("-inf"))
    torch.testing.assert_close(lse, torch.logsumexp(s, dim=-1), atol=2e-5, rtol=1e-4)


def test_triton_attention_gradients_match_autograd_through_sdpa():
    q, k, v = (t.requires_grad_() for t in inputs(1, 1, 20, 20, 16, seed=1))
    grad_out = torch.randn_like(q)
    ours = torch.autograd.grad(triton_flash_attention(q, k, v, is_causal=True), (q, k, v), grad_out)
    theirs = torch.autograd.grad(F.scaled_dot_product_attention(q, k, v, is_causal=True), (q, k, v), grad_out)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


def test_float64_is_refused_with_a_clear_error():
    q, k, v = inputs(1, 1, 4, 4, 16, dtype=torch.float64)
    with pytest.raises(TypeError, match="float64"):
        triton_flash_forward(q, k, v)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="half precision on tensor cores needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("is_causal", [False, True], ids=["full", "causal"])
def test_triton_half_precision_within_twice_the_fused_kernels_error(dtype, is_causal):
    q, k, v = inputs(2, 4, 1000, 1000, 64, dtype=dtype)
    out, _ = triton_flash_forward(q, k, v, is_causal=is_causal)
    exact = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), is_causal=is_causal)
    theirs = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)
    assert (out.double() - exact).abs().max() <= 2 * (theirs.double() - exact).abs().max() + 1e-3


def test_library_imports_without_triton_until_a_kernel_runs():
    import subprocess
    import sys

    code = ("import sys; sys.modules['triton'] = None\n"  # makes `import triton` fail, as if not installed
            "import course_lib\n"
            "assert not course_lib.triton_available()\n"
            "print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.stdout.strip() == "ok", result.stderr
