"""The kit's Triton launchers (course_kit.triton_launch): given the solution's kernels they reproduce
torch's own operators; given anything but a @triton.jit kernel of a real source, they refuse it; and
they name a store past the end and an element no program wrote. Under Triton's interpreter on the CPU
(tests/conftest.py sets TRITON_INTERPRET=1), tiny shapes; skipped where Triton is not installed."""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

triton = pytest.importorskip("triton")
import triton.language as tl  # noqa: E402

from autograde.demo import solution_answers  # noqa: E402
from autograde.lessons import get_lesson  # noqa: E402
from autograde.verdict import spelled_forbidden  # noqa: E402
from course_kit import triton_launch  # noqa: E402
from course_kit.triton_launch import (  # noqa: E402
    NO_TRITON,
    NOT_INSTALLED,
    flash_forward_launcher,
    matmul_launcher,
    scaled_add_launcher,
    softmax_launcher,
)

PROJECT = Path(__file__).resolve().parents[1]
KERNELS = ("triton_scaled_add", "triton_softmax", "triton_matmul", "triton_flash_forward")
TOL = dict(atol=2e-5, rtol=1e-4)


@pytest.fixture(scope="module")
def solution(tmp_path_factory):
    """The solution notebook's four kernels, as a module (Triton reads a kernel's source from its file)."""
    answers = solution_answers(PROJECT, get_lesson("lesson4_flash"))
    path = tmp_path_factory.mktemp("kernels") / "solution_kernels.py"
    path.write_text("import triton\nimport triton.language as tl\n\n\n" + "\n\n\n".join(answers[k] for k in KERNELS))
    spec = importlib.util.spec_from_file_location("solution_kernels", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def transposed_in_memory(x):
    return x.transpose(-2, -1).contiguous().transpose(-2, -1)


@pytest.mark.parametrize("n", [1, 16, 37, 100])
def test_scaled_add_of_the_solution_matches_torch(solution, n):
    x, y = randn(n, seed=1), randn(n, seed=2)
    out = scaled_add_launcher(solution.scaled_add_kernel)(x, y, -1.5)
    torch.testing.assert_close(out, x * -1.5 + y, **TOL)


@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
@pytest.mark.parametrize("rows, cols", [(3, 10), (4, 16), (2, 33), (5, 1)])
def test_softmax_of_the_solution_matches_torch_in_any_layout_and_with_large_logits(solution, rows, cols, layout):
    x = randn(rows, cols) * 50  # logits beyond exp's float32 range: the max must be subtracted
    x = transposed_in_memory(x) if layout == "transposed" else x
    torch.testing.assert_close(softmax_launcher(solution.softmax_kernel)(x), torch.softmax(x, dim=-1), **TOL)


@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
@pytest.mark.parametrize("m, k, n", [(16, 16, 16), (40, 24, 20), (5, 8, 36), (1, 33, 2)])
def test_matmul_of_the_solution_matches_torch_in_any_layout(solution, m, k, n, layout):
    a, b = randn(m, k, seed=1), randn(k, n, seed=2)
    if layout == "transposed":
        a, b = transposed_in_memory(a), transposed_in_memory(b)
    torch.testing.assert_close(matmul_launcher(solution.matmul_kernel)(a, b), a @ b, **TOL)


@pytest.mark.parametrize("is_causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("lq, lk, d", [(16, 16, 16), (5, 21, 16), (21, 5, 8), (33, 33, 32)])
def test_flash_forward_of_the_solution_matches_sdpa_and_the_logsumexp(solution, lq, lk, d, is_causal):
    q, k, v = randn(2, 1, lq, d, seed=1), randn(2, 1, lk, d, seed=2), randn(2, 1, lk, d, seed=3)
    out, lse = flash_forward_launcher(solution.flash_forward_kernel)(q, k, v, is_causal=is_causal)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=is_causal), **TOL)
    s = q @ k.transpose(-2, -1) / math.sqrt(d)
    if is_causal:
        s = s.masked_fill(torch.ones(lq, lk, dtype=torch.bool).triu(1), float("-inf"))
    torch.testing.assert_close(lse, torch.logsumexp(s, dim=-1), **TOL)


def test_flash_forward_of_the_solution_reads_non_contiguous_inputs_through_their_strides(solution):
    q, k, v = (transposed_in_memory(randn(1, 2, 20, 16, seed=s)) for s in (1, 2, 3))
    out, _ = flash_forward_launcher(solution.flash_forward_kernel)(q, k, v, scale=0.3)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, scale=0.3), **TOL)


def test_the_launcher_leaves_its_inputs_as_they_were(solution):
    x = transposed_in_memory(randn(4, 10))
    before = x.clone()
    softmax_launcher(solution.softmax_kernel)(x)
    assert torch.equal(x, before) and x.stride() == before.stride()


# --- what the launcher refuses --------------------------------------------------------------------------

def plain_softmax(x):
    return torch.softmax(x, dim=-1)


def test_a_function_that_is_not_a_kernel_is_refused_with_a_type_error():
    with pytest.raises(TypeError, match=r"expected a Triton kernel, `softmax_kernel` written with @triton.jit.*"
                                        r"got the function `plain_softmax`"):
        softmax_launcher(plain_softmax)(randn(2, 3))
    with pytest.raises(TypeError, match="expected a Triton kernel"):
        softmax_launcher(None)(randn(2, 3))


def softmax_by_numpy(X, OUT, stride_xm, stride_xn, stride_om, stride_on, n_cols, BLOCK: tl.constexpr):
    pass  # a function the policy never reads as a kernel: it has no @triton.jit


def test_a_kernel_made_by_calling_triton_jit_on_an_undecorated_function_is_refused():
    # `triton.jit(f)` called as a function: f's body is no kernel's the grader's policy read
    with pytest.raises(TypeError, match="must be defined with @triton.jit on the line above its def"):
        softmax_launcher(triton.jit(softmax_by_numpy))(randn(2, 3))


@triton.jit
def softmax_stub(X, OUT, stride_xm, stride_xn, stride_om, stride_on, n_cols, BLOCK: tl.constexpr):
    """The release's stub."""
    raise NotImplementedError()


def test_the_release_stub_is_not_launched_and_reads_as_not_implemented():
    with pytest.raises(NotImplementedError, match="softmax_kernel: not implemented yet"):
        softmax_launcher(softmax_stub)(randn(2, 3))


def test_a_hook_attached_to_the_kernel_object_does_not_run(solution):
    # the launcher launches its own kernel from the function's source: nothing attached to the object runs
    kernel = triton.jit(solution.softmax_kernel.fn)
    ran = []
    kernel.add_pre_run_hook(lambda *args, **kwargs: ran.append(True))
    x = randn(3, 10)
    torch.testing.assert_close(softmax_launcher(kernel)(x), torch.softmax(x, dim=-1), **TOL)
    assert ran == []


def test_tritons_own_softmax_in_the_softmax_kernel_is_refused_by_the_grader():
    kernel = "x = tl.load(X + cols)\ntl.store(OUT + cols, tl.softmax(x))"
    assert spelled_forbidden("triton_softmax", kernel) == ["torch.softmax (or log_softmax)"]
    assert spelled_forbidden("triton_softmax", "e = tl.exp(x - tl.max(x, 0))") == []


def test_without_triton_a_kernel_can_be_defined_and_its_launch_says_why_it_cannot_run():
    @NO_TRITON.jit
    def kernel(X, OUT, n, BLOCK: NO_TRITON.constexpr):
        pass

    with pytest.raises(RuntimeError, match="Triton is not installed"):
        scaled_add_launcher(kernel)(randn(3), randn(3), 1.0)
    assert "Linux" in NOT_INSTALLED


def test_the_kit_imports_without_triton():
    code = ("import sys; sys.modules['triton'] = None\n"  # makes `import triton` fail, as if not installed
            "import course_kit.triton_launch as launch\n"
            "try:\n"
            "    launch.softmax_launcher(lambda x: x)(None)\n"
            "except RuntimeError as error:\n"
            "    print('refused:', error)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.stdout.startswith("refused: Triton is not installed"), result.stderr


# --- what the launcher reports ---------------------------------------------------------------------------

@triton.jit
def scaled_add_unmasked(X, Y, OUT, alpha, n, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(OUT + offsets, tl.load(X + offsets) * alpha + tl.load(Y + offsets))


@triton.jit
def scaled_add_first_block_only(X, Y, OUT, alpha, n, BLOCK: tl.constexpr):
    offsets = tl.arange(0, BLOCK)
    tl.store(OUT + offsets, tl.load(X + offsets, mask=offsets < n) * alpha, mask=offsets < n)


def test_a_store_past_the_end_is_reported_and_a_full_block_is_not():
    add = scaled_add_launcher(scaled_add_unmasked)
    torch.testing.assert_close(add(randn(32), randn(32, seed=1), 2.0), randn(32) * 2 + randn(32, seed=1), **TOL)
    with pytest.raises(RuntimeError, match=r"stored 11 value\(s\) outside `OUT`, past its end: a store needs a mask"):
        add(randn(37), randn(37), 2.0)


def test_elements_no_program_wrote_are_reported_with_the_first_one():
    with pytest.raises(RuntimeError, match=r"left 21 of 37 elements of `OUT` unwritten \(the first at index \(16,\)\)"):
        scaled_add_launcher(scaled_add_first_block_only)(randn(37), randn(37), 2.0)


def test_an_unmasked_load_past_the_end_reads_nan_from_the_guard_zone():
    @triton.jit
    def copy_block(X, Y, OUT, alpha, n, BLOCK: tl.constexpr):
        offsets = tl.arange(0, BLOCK)
        tl.store(OUT + offsets, tl.sum(tl.load(X + offsets), 0) + tl.zeros((BLOCK,), dtype=tl.float32),
                 mask=offsets < n)

    out = scaled_add_launcher(copy_block)(torch.ones(5), torch.ones(5), 1.0)
    assert out.isnan().all()  # 11 lanes of NaN guard joined the sum, not whatever memory lay beyond


def test_the_marker_of_an_unwritten_element_is_a_nan_no_arithmetic_makes():
    nan = torch.tensor([float("nan"), float("inf") - float("inf"), -float("nan")])
    for dtype, (int_dtype, bits) in triton_launch._MARKERS.items():
        marker = torch.tensor([bits], dtype=int_dtype).view(dtype)
        assert marker.isnan().all(), dtype
        assert not (nan.to(dtype).view(int_dtype) == bits).any(), dtype
