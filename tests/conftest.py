"""Shared fixtures: the dtypes we test in, their tolerances, and a seeded generator."""

import contextlib
import os
import subprocess
import sys

import pytest
import torch

from course_kit.checks import TOLERANCES as CHECK_TOLERANCES

if not torch.cuda.is_available():
    # Triton's kernels run on CPU tensors in its interpreter; it must be chosen before triton is imported.
    os.environ.setdefault("TRITON_INTERPRET", "1")

# One tolerance table for the whole course (course_kit.checks.TOLERANCES): the grader's, also for our
# plain PyTorch code against torch's own operators (fused kernels sum in another order).
TOLERANCES = {dtype: dict(atol=atol, rtol=rtol) for dtype, (atol, rtol) in CHECK_TOLERANCES.items()}


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request) -> torch.dtype:
    return request.param


@pytest.fixture
def tol(dtype) -> dict:
    return TOLERANCES[dtype]


@pytest.fixture
def rng() -> torch.Generator:
    """A fresh generator seeded with 0 in every test: results do not depend on test order."""
    return torch.Generator().manual_seed(0)


# A bounded busy loop: it ends by itself after this many seconds, should the test that started it die.
BUSY_LOOP = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"


@contextlib.contextmanager
def every_core_busy(seconds: float = 3600):
    """Keep every core of the machine busy while the block runs: one bounded busy loop per core,
    stopped at the end. ``ATTENTION_COURSE_QUIET_TESTS=1`` turns the load off (CI's second pass, which
    runs the same checks on another CPU path)."""
    if os.environ.get("ATTENTION_COURSE_QUIET_TESTS") == "1":
        yield
        return
    loops = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP.format(seconds=seconds)])
             for _ in range(os.cpu_count() or 1)]
    try:
        yield
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()
