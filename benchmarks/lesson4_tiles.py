"""Which tiles (and base of the exponentials) make course_lib.flash_cpu's forward fastest on this CPU,
as a ratio to SDPA's time.

    python benchmarks/lesson4_tiles.py [--n 4096] [--rounds 11] [--tiles 128x128 256x256:exp ...] [--threads T]

A candidate is block_q x block_k, with :exp or :exp2 to force the base of the exponentials (without
it, the base course_lib.flash_cpu.cpu_tuning() chooses for this CPU).

Every candidate (block_q x block_k) and F.scaled_dot_product_attention run in one process on the
same inputs (float32, B=1, H=8, D=64), in turn, round after round (the order rotates each round),
so that a slow spell of a shared machine slows them all alike. Each candidate's figure is its time
divided by SDPA's in the same round: the median of those ratios, with their smallest and largest.
On a machine shared with other jobs, --threads 1 --clock cpu counts the CPU time each call used,
which the others' jobs disturb far less than elapsed time (with several threads, an operation's
threads wait for the slowest, and spin while they wait).

To see what an AVX2 machine (or one without vector extensions) would choose, lower what ATen and
MKL use before the run:

    ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 python benchmarks/lesson4_tiles.py
    ATEN_CPU_CAPABILITY=default MKL_ENABLE_INSTRUCTIONS=SSE4_2 python benchmarks/lesson4_tiles.py
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from course_lib import flash_cpu
from course_lib.flash_cpu import cpu_tuning, flash_attention_cpu_forward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--tiles", nargs="+", default=["128x128", "128x256", "256x128", "256x256", "256x512",
                                                       "512x256"])
    parser.add_argument("--causal", action="store_true")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall: elapsed time; cpu: the process's CPU time (all threads), which a busy "
                             "machine's other jobs inflate far less (they take cores away, not cycles)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"machine: {platform.processor() or platform.machine()}, capability "
          f"{torch.backends.cpu.get_cpu_capability()}, MKL_ENABLE_INSTRUCTIONS="
          f"{os.environ.get('MKL_ENABLE_INSTRUCTIONS', '(unset)')}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; cpu_tuning() = {cpu_tuning()}")
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 8, args.n, 64, generator=g) for _ in range(3))
    capability = torch.backends.cpu.get_cpu_capability()
    tuned = flash_cpu.TUNING_BY_CAPABILITY.get(capability, cpu_tuning())

    def candidate(tiles: str, base: str):
        bq, bk = map(int, tiles.split("x"))
        exp2 = tuned.exp2 if not base else base == "exp2"

        def call():
            flash_cpu.TUNING_BY_CAPABILITY[capability] = tuned._replace(exp2=exp2)  # the base, for this call
            try:
                return flash_attention_cpu_forward(q, k, v, is_causal=args.causal, block_q=bq, block_k=bk)
            finally:
                flash_cpu.TUNING_BY_CAPABILITY[capability] = tuned
        return call

    methods = {"sdpa": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=args.causal)}
    for name in args.tiles:
        methods[name] = candidate(*(name.split(":") + [""])[:2])
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    names = list(methods)
    times: dict[str, list[float]] = {name: [] for name in names}
    with torch.no_grad():
        for name in names:  # warm-up
            methods[name]()
        for round_ in range(args.rounds):
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                start = clock()
                methods[name]()
                times[name].append(clock() - start)
    sdpa = times["sdpa"]
    print(f"N={args.n}{' causal' if args.causal else ''}, {args.rounds} rounds, {args.clock} clock; sdpa median "
          f"{statistics.median(sdpa) * 1e3:.1f} ms (min {min(sdpa) * 1e3:.1f}, max {max(sdpa) * 1e3:.1f})")
    print(f"{'tiles':>13} {'median ms':>10} {'/ sdpa':>7} {'min':>6} {'max':>6}")
    for name in names[1:]:
        ratios = [t / s for t, s in zip(times[name], sdpa)]
        print(f"{name:>13} {statistics.median(times[name]) * 1e3:10.1f} {statistics.median(ratios):7.3f} "
              f"{min(ratios):6.3f} {max(ratios):6.3f}")


if __name__ == "__main__":
    main()
