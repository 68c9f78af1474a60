"""``attention-course bench``: time and peak memory of attention implementations against sequence length.

Lesson 4: GPU-efficient attention. Each measurement runs in a fresh Python process, so one
method's freed-but-cached memory never hides another's, with glibc told to return every freed
block of 128 KiB or more to the system at once (as ``course_kit.measure`` does): the child
allocates the inputs, resets
the process's peak resident memory (Linux: ``/proc/self/clear_refs``), runs the method once and
reads the peak (``VmHWM``) minus the memory held before the call. The result is what the call
itself needed: its output, its temporaries and, forward+backward, the gradients. On CUDA the
peak is ``torch.cuda.max_memory_allocated`` above the same baseline. Times are measured in a
second fresh process, with the allocator left as it is: the median of ``repeat`` calls after
one warm-up call.

Methods:
    naive      softmax(Q K^T * scale) V with the whole (N, N) score matrix (the lesson's starting point)
    chunked    :func:`course_lib.chunked.chunked_attention`, 1024 queries at a time; forward only
               (autograd through it would keep every chunk's probabilities: the whole (N, N) matrix)
    flash      :func:`course_lib.flash.flash_attention`, FlashAttention-2 as the lesson writes it
    flash_cpu  :func:`course_lib.flash_cpu.flash_attention_cpu`, the same tuned for a CPU
    triton     :func:`course_lib.triton_attention.triton_flash_attention` (CUDA only)
    sdpa       ``torch.nn.functional.scaled_dot_product_attention`` (PyTorch's fused kernels)
"""

from __future__ import annotations

import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

import torch

from course_kit.measure import configure_malloc_for_measuring, peak_memory_bytes, process_memory_bytes

METHODS = ("naive", "chunked", "flash", "flash_cpu", "triton", "sdpa")
MODES = ("forward", "backward")  # "backward" means forward + backward


@dataclass(frozen=True)
class Config:
    method: str
    n: int
    mode: str
    device: str = "cpu"
    dtype: str = "float32"
    batch: int = 1
    heads: int = 8
    head_dim: int = 64
    is_causal: bool = False
    repeat: int = 3
    threads: int = 0  # 0: torch's default


@dataclass(frozen=True)
class Measurement:
    config: Config
    seconds: float | None  # median time of one call; None when skipped
    peak_bytes: int | None  # peak memory above what was held before the call
    note: str = ""

    @property
    def tflops(self) -> float | None:
        """Achieved TFLOP/s, counting 4 N^2 D flops per head forward (2 matmuls), 2.5x that backward.

        The convention of Dao (2023), section 4.1; halved for causal attention.
        """
        if self.seconds is None:
            return None
        c = self.config
        flops = 4 * c.batch * c.heads * c.n * c.n * c.head_dim * (0.5 if c.is_causal else 1.0)
        flops *= 3.5 if c.mode == "backward" else 1.0
        return flops / self.seconds / 1e12


def naive_memory_bytes(config: Config) -> int:
    """What naive attention's (N, N) scores and probabilities take: 2 matrices of B*H*N^2 entries."""
    item = torch.empty((), dtype=getattr(torch, config.dtype)).element_size()
    return 2 * config.batch * config.heads * config.n * config.n * item


# --- the child process: one measurement ----------------------------------------------------------

def _naive_attention(q, k, v, is_causal=False):
    scores = (q * (1.0 / math.sqrt(q.shape[-1]))) @ k.transpose(-2, -1)  # (B, H, N, N)
    if is_causal:
        n_q, n_k = scores.shape[-2:]
        scores = scores.masked_fill(torch.ones(n_q, n_k, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def _method(name: str):
    if name == "naive":
        return _naive_attention
    if name == "chunked":
        from course_lib.chunked import chunked_attention

        return chunked_attention
    if name == "flash":
        from course_lib.flash import flash_attention

        return flash_attention
    if name == "flash_cpu":
        from course_lib.flash_cpu import flash_attention_cpu

        return flash_attention_cpu
    if name == "triton":
        from course_lib.triton_attention import triton_flash_attention

        return triton_flash_attention
    if name == "sdpa":
        return torch.nn.functional.scaled_dot_product_attention
    raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")


def measure_here(config: Config, part: str = "memory") -> Measurement:
    """Measure ``config`` in this process: its peak memory (``part="memory"``), or its time
    (``part="time"``). The bench runs each part in a fresh child process."""
    if part == "memory":
        # Freed blocks of 128 KiB or more go back to the system at once, so the peak resident memory
        # follows the live tensors, not how much glibc's per-thread arenas happen to keep cached.
        # (Not when timing: a fresh mmap per tile would slow down the tiled methods unfairly.)
        configure_malloc_for_measuring()
    if config.threads:
        torch.set_num_threads(config.threads)
    device = torch.device(config.device)
    dtype = getattr(torch, config.dtype)
    fn = _method(config.method)
    g = torch.Generator(device=device).manual_seed(0)
    shape = (config.batch, config.heads, config.n, config.head_dim)
    backward = config.mode == "backward"
    q, k, v = (torch.randn(shape, generator=g, device=device, dtype=dtype).requires_grad_(backward)
               for _ in range(3))
    grad_out = torch.randn(shape, generator=g, device=device, dtype=dtype) if backward else None

    def call():
        with torch.set_grad_enabled(backward):
            out = fn(q, k, v, is_causal=config.is_causal)
            if backward:
                out.backward(grad_out)
                q.grad = k.grad = v.grad = None
            del out

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    # One call on a tiny input first: libraries set themselves up (BLAS buffers, thread pools)
    # without leaving large freed blocks behind that the measured call could reuse unseen.
    with torch.set_grad_enabled(backward):
        tiny = [x[..., :16, :].detach().requires_grad_(backward) for x in (q, k, v)]
        out = fn(*tiny, is_causal=config.is_causal)
        if backward:
            out.sum().backward()
        del tiny, out
    sync()
    if part == "time":
        call()  # warm-up at full size
        times = []
        for _ in range(config.repeat):
            sync()
            start = time.perf_counter()
            call()
            sync()
            times.append(time.perf_counter() - start)
        return Measurement(config, statistics.median(times), None)
    try:
        peak = peak_memory_bytes(call, device=config.device)
    except OSError:  # /proc/self/clear_refs not writable: the process's peak so far bounds the call's
        before = process_memory_bytes("VmRSS")
        call()
        peak = max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before)
    return Measurement(config, None, peak)


def _child_main() -> None:
    config, part = Config(**json.loads(sys.argv[1])), sys.argv[2]
    m = measure_here(config, part)
    print(json.dumps({"seconds": m.seconds, "peak_bytes": m.peak_bytes}))


def measure(config: Config, memory_limit_bytes: int | None = None) -> Measurement:
    """One measurement in a fresh process; skipped (with a note) when it cannot or must not run."""
    if config.method == "triton" and not config.device.startswith("cuda"):
        return Measurement(config, None, None, "triton: needs a CUDA device")
    if config.method == "chunked" and config.mode == "backward":
        return Measurement(config, None, None, "chunked: forward only (autograd through it would keep every "
                                               "chunk's probabilities, the whole N x N matrix)")
    if config.method == "naive" and memory_limit_bytes is not None and naive_memory_bytes(config) > memory_limit_bytes:
        need = naive_memory_bytes(config) / 2**30
        return Measurement(config, None, None, f"naive N={config.n}: skipped, needs ~{need:.1f} GiB "
                                               f"(> --memory-limit-gb); raise the limit to run it")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    data = {}
    for part in ("memory", "time"):  # one fresh process each: see measure_here
        result = subprocess.run([sys.executable, "-c", "from autograde.bench import _child_main; _child_main()",
                                 json.dumps(asdict(config)), part], capture_output=True, text=True, env=env)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["killed (out of memory?)"])[-1]
            return Measurement(config, None, None, f"{config.method} N={config.n} {config.mode}: failed: {last}")
        measured = json.loads(result.stdout.strip().splitlines()[-1])
        data.update({k: v for k, v in measured.items() if v is not None})
    return Measurement(config, data["seconds"], data["peak_bytes"])


# --- the table and the plot ----------------------------------------------------------------------

def format_table(results: list[Measurement]) -> str:
    """A table: one row per measurement, with its time and memory relative to sdpa's."""
    by_key = {(r.config.method, r.config.n, r.config.mode): r for r in results}
    lines = [f"{'method':9} {'mode':9} {'N':>6} {'time ms':>10} {'x sdpa':>7} {'TFLOP/s':>8} "
             f"{'peak MiB':>9} {'x sdpa':>7}"]
    for r in results:
        c = r.config
        if r.seconds is None:
            continue
        sdpa = by_key.get(("sdpa", c.n, c.mode))
        t_ratio = f"{r.seconds / sdpa.seconds:7.2f}" if sdpa and sdpa.seconds else f"{'':7}"
        m_ratio = (f"{r.peak_bytes / sdpa.peak_bytes:7.2f}" if sdpa and sdpa.peak_bytes else f"{'':7}")
        lines.append(f"{c.method:9} {'fwd' if c.mode == 'forward' else 'fwd+bwd':9} {c.n:6d} {r.seconds * 1e3:10.1f} "
                     f"{t_ratio} {r.tflops:8.4f} {r.peak_bytes / 2**20:9.1f} {m_ratio}")
    notes = [r.note for r in results if r.note]
    return "\n".join(lines + [f"note: {n}" for n in notes])


def plot_results(results: list[Measurement]):
    """Time and peak memory against N, per method; one column per mode. Returns the Figure."""
    from matplotlib.figure import Figure

    modes = [m for m in MODES if any(r.config.mode == m for r in results)]
    fig = Figure(figsize=(5 * len(modes), 7), layout="constrained")
    axes = fig.subplots(2, len(modes), squeeze=False)
    c0 = results[0].config
    for col, mode in enumerate(modes):
        for method in METHODS:
            rows = [r for r in results if r.config.method == method and r.config.mode == mode and r.seconds]
            if not rows:
                continue
            ns = [r.config.n for r in rows]
            axes[0, col].loglog(ns, [r.seconds * 1e3 for r in rows], "o-", label=method)
            axes[1, col].loglog(ns, [r.peak_bytes / 2**20 for r in rows], "o-", label=method)
        title = "forward" if mode == "forward" else "forward + backward"
        axes[0, col].set(title=title, ylabel="time (ms)")
        axes[1, col].set(xlabel="sequence length N", ylabel="peak memory above inputs (MiB)")
        for ax in axes[:, col]:
            ax.set_xscale("log", base=2)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle(f"{c0.device}, {c0.dtype}, B={c0.batch}, H={c0.heads}, D={c0.head_dim}"
                 f"{', causal' if c0.is_causal else ''}")
    return fig


def run_bench(ns: list[int], methods: list[str], modes: list[str], *, memory_limit_gb: float | None = 4.0,
              progress: bool = True, **options) -> list[Measurement]:
    """Every (mode, N, method) measurement, each in a fresh process, methods interleaved per N."""
    from tqdm import tqdm

    for method in methods:
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    limit = None if memory_limit_gb is None else int(memory_limit_gb * 2**30)
    configs = [Config(method=m, n=n, mode=mode, **options) for mode in modes for n in ns for m in methods]
    results = []
    for config in tqdm(configs, desc="bench", disable=not progress, unit="run"):
        results.append(measure(config, limit))
    return results
