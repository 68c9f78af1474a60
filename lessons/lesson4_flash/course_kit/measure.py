"""Time and peak memory of one call, measured in the running process (a notebook's kernel).

This file is copied verbatim into the students' release, so it imports only the standard
library and torch (nothing from course_lib).

Peak memory on Linux: the process's peak resident memory (``VmHWM``) is reset just before the
call (``/proc/self/clear_refs``) and read after it; the result is the peak minus the memory held
before. So that freed tensors really leave the process (and a later measurement does not reuse
them unseen), glibc is told to serve every allocation of 128 KiB or more with its own ``mmap``,
returned to the system on free. On CUDA tensors, ``torch.cuda.max_memory_allocated`` is used.
"""

from __future__ import annotations

import ctypes
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["peak_memory_bytes", "time_call", "sdpa_kernel_name", "configure_malloc_for_measuring",
           "process_memory_bytes"]

_M_MMAP_THRESHOLD = -3  # mallopt's parameter number, from glibc's malloc.h
_malloc_configured = False


def configure_malloc_for_measuring() -> None:
    """Have glibc serve every block of 128 KiB or more with its own ``mmap``, returned to the system on
    free, so that the peak resident memory follows the live tensors (Linux with glibc; else nothing)."""
    global _malloc_configured
    if _malloc_configured or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 128 * 1024)  # fixed threshold: freed large blocks go back to the OS
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: measure anyway
        pass
    _malloc_configured = True


def process_memory_bytes(field: str) -> int:
    """A memory figure of this process from ``/proc/self/status`` (``VmRSS``, ``VmHWM``), in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"no {field} in /proc/self/status")


def peak_memory_bytes(fn: Callable[..., Any], *args: Any, device: str = "cpu", **kwargs: Any) -> int:
    """The peak memory that ``fn(*args, **kwargs)`` allocates beyond what is held before it, in bytes.

    Its result is dropped before returning. On the CPU this needs Linux (``/proc``); elsewhere
    it raises ``OSError``.

    >>> x = torch.randn(1000, 1000)
    >>> peak_memory_bytes(lambda: x @ x) >= 4_000_000  # the product: 10^6 float32 entries
    True
    """
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        result = fn(*args, **kwargs)
        torch.cuda.synchronize()
        del result
        return torch.cuda.max_memory_allocated() - before
    configure_malloc_for_measuring()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # Linux >= 4.0: reset the peak resident memory to the current one
    except OSError as error:
        raise OSError("peak_memory_bytes needs Linux's /proc/self/clear_refs to measure CPU memory") from error
    before = process_memory_bytes("VmRSS")
    result = fn(*args, **kwargs)
    peak = process_memory_bytes("VmHWM")
    del result
    return max(0, peak - before)


def time_call(fn: Callable[..., Any], *args: Any, repeat: int = 3, statistic: str = "median", **kwargs: Any) -> float:
    """The median (or, with ``statistic="min"``, the shortest) time in seconds of ``repeat`` calls
    ``fn(*args, **kwargs)``, after one warm-up call. The minimum is the best estimate of what the call
    itself costs on a machine other jobs share: they only ever add time.

    >>> time_call(lambda: sum(range(1000))) < 1.0
    True
    >>> time_call(lambda: sum(range(1000)), repeat=5, statistic="min") < 1.0
    True
    """
    if statistic not in ("median", "min"):
        raise ValueError(f'statistic must be "median" or "min", got {statistic!r}')
    def once() -> float:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn(*args, **kwargs)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter() - start

    once()
    times = [once() for _ in range(repeat)]
    return min(times) if statistic == "min" else statistics.median(times)


def sdpa_kernel_name(*args: Any, **kwargs: Any) -> str:
    """Which fused kernel ``F.scaled_dot_product_attention(*args, **kwargs)`` runs, by its ATen name.

    Found by running the call once under ``torch.profiler`` and keeping the operator that
    ``aten::scaled_dot_product_attention`` dispatched to (e.g.
    ``aten::_scaled_dot_product_flash_attention_for_cpu``).

    >>> q = torch.randn(1, 2, 8, 16)
    >>> sdpa_kernel_name(q, q, q)
    'aten::_scaled_dot_product_flash_attention_for_cpu'
    """
    import os

    from torch.profiler import profile

    # The profiler's C++ side logs its start and stop on file descriptor 2: silence it for the call.
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            with profile() as prof:
                torch.nn.functional.scaled_dot_product_attention(*args, **kwargs)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    names = [e.name for e in prof.events() if e.name.startswith("aten::_scaled_dot_product")
             or e.name.startswith("aten::_efficient_attention") or e.name.startswith("aten::_flash_attention")]
    return names[0] if names else "aten::scaled_dot_product_attention (no fused kernel)"
