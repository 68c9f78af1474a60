"""Lesson 4's measured targets: flash_attention_cpu (PyTorch tiles, tuned) against F.scaled_dot_product_attention.

    python benchmarks/lesson4_targets.py [--time-n 4096] [--memory-n 16384] [--naive-memory-limit-gb 4] [--time-only]

Runs the table's measurements each in a fresh process (autograde.bench), on the CPU in float32 with B=1,
H=8, D=64, and prints every figure beside its target:

* time at N=4096: flash forward <= 1.2 x sdpa; forward + backward <= 1.5 x sdpa, judged on times
  taken in one process with the two methods called in turn (the table's times come from separate
  processes, which a busy host skews one way or the other);
* peak memory at N=16384: flash <= 1.25 x sdpa, and <= 1/8 of naive attention.

The forward's tiles are chosen for the vector instructions the CPU offers (course_lib.flash_cpu.
cpu_block_sizes); to measure what an AVX2 machine gets, run under
ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2.

Naive attention at N=16384 needs about 16 GiB (its scores and probabilities); it runs only if
--naive-memory-limit-gb allows it (e.g. 20 on a quiet 24 GiB machine). Otherwise its memory is
reported as "not measured" and that target is not judged.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from autograde.bench import format_table, run_bench
from course_lib.flash_cpu import cpu_tuning, flash_attention_cpu


def paired_seconds(n: int, backward: bool, repeat: int, clock=time.perf_counter) -> tuple[list[float], list[float]]:
    """Seconds of flash_attention_cpu and of F.scaled_dot_product_attention, ``repeat`` calls each,
    called in turn in one process on the same inputs: a slow spell of the machine (other virtual
    machines on the host, say) then slows both, and the ratio of a pair holds; across separate
    processes it did not. ``clock``: time.perf_counter (elapsed) or time.process_time (CPU time)."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 8, n, 64, generator=g).requires_grad_(backward) for _ in range(3))
    grad_out = torch.randn(1, 8, n, 64, generator=g)
    methods = [flash_attention_cpu, torch.nn.functional.scaled_dot_product_attention]

    def call(fn) -> float:
        start = clock()
        with torch.set_grad_enabled(backward):
            out = fn(q, k, v)
            if backward:
                out.backward(grad_out)
                q.grad = k.grad = v.grad = None
        return clock() - start

    for fn in methods:  # warm-up
        call(fn)
    times: list[list[float]] = [[], []]
    for round_ in range(repeat):
        order = [0, 1] if round_ % 2 == 0 else [1, 0]
        for i in order:
            times[i].append(call(methods[i]))
    return times[0], times[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--time-n", type=int, default=4096)
    parser.add_argument("--memory-n", type=int, default=16384)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--naive-memory-limit-gb", type=float, default=4.0)
    parser.add_argument("--time-only", action="store_true", help="only the paired time ratios (no table, no memory)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads for the paired times (default: torch's own)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="the paired times' clock: wall (elapsed; the targets' own) or cpu (the process's CPU "
                             "time, which other jobs on a shared machine disturb far less; use with --threads 1)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"machine: {platform.processor() or platform.machine()}, capability "
          f"{torch.backends.cpu.get_cpu_capability()}, MKL_ENABLE_INSTRUCTIONS="
          f"{os.environ.get('MKL_ENABLE_INSTRUCTIONS', '(unset)')}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}, {cpu_tuning()}")

    memory = []
    if not args.time_only:
        timing = run_bench([args.time_n], ["flash_cpu", "sdpa"], ["forward", "backward"], repeat=args.repeat)
        memory = run_bench([args.memory_n], ["naive", "flash_cpu", "sdpa"], ["forward"], repeat=1,
                           memory_limit_gb=args.naive_memory_limit_gb)
        print(format_table(timing + memory))

    def get(results, method, mode):
        return next(r for r in results if r.config.method == method and r.config.mode == mode)

    checks = []
    for mode, target in (("forward", 1.2), ("backward", 1.5)):
        flash_s, sdpa_s = paired_seconds(args.time_n, mode == "backward", args.repeat * 2 + 1,
                                         time.perf_counter if args.clock == "wall" else time.process_time)
        ratios = [f / s for f, s in zip(flash_s, sdpa_s)]  # pair by pair
        ratio = statistics.median(ratios)
        label = "forward" if mode == "forward" else "forward+backward"
        print(f"paired in one process ({args.clock} clock, {torch.get_num_threads()} threads), {label}: "
              f"flash {statistics.median(flash_s) * 1e3:.1f} ms, sdpa "
              f"{statistics.median(sdpa_s) * 1e3:.1f} ms (medians); flash / sdpa per pair: median {ratio:.3f}, "
              f"min {min(ratios):.3f}, max {max(ratios):.3f} over {len(ratios)} pairs")
        checks.append((f"time, {label}, N={args.time_n}: flash / sdpa (paired)", ratio, f"<= {target}",
                       ratio <= target))
    if memory:
        flash, sdpa, naive = (get(memory, m, "forward") for m in ("flash_cpu", "sdpa", "naive"))
        ratio = flash.peak_bytes / sdpa.peak_bytes
        checks.append((f"peak memory, N={args.memory_n}: flash / sdpa", ratio, "<= 1.25", ratio <= 1.25))
        if naive.peak_bytes is not None:
            ratio = flash.peak_bytes / naive.peak_bytes
            checks.append((f"peak memory, N={args.memory_n}: flash / naive", ratio, "<= 0.125", ratio <= 0.125))
        else:
            checks.append((f"peak memory, N={args.memory_n}: flash / naive", float("nan"), "<= 0.125", None))
    print()
    for name, value, target, ok in checks:
        verdict = "not measured (naive skipped)" if ok is None else ("met" if ok else "NOT met")
        print(f"{name:45} {value:7.3f}  target {target:8}  {verdict}")


if __name__ == "__main__":
    main()
