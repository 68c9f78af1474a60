"""Which tiles make course_lib.flash_cpu's forward fastest on this CPU, as a ratio to SDPA's time.

    python benchmarks/lesson4_tiles.py [--n 4096] [--rounds 11] [--tiles 128x128 256x256 ...]

Every candidate (block_q x block_k) and F.scaled_dot_product_attention run in one process on the
same inputs (float32, B=1, H=8, D=64), in turn, round after round (the order rotates each round),
so that a slow spell of a shared machine slows them all alike. Each candidate's figure is its time
divided by SDPA's in the same round: the median of those ratios, with their smallest and largest.

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

from course_lib.flash_cpu import cpu_block_sizes, flash_attention_cpu_forward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--tiles", nargs="+", default=["128x128", "128x256", "256x128", "256x256", "256x512",
                                                       "512x256"])
    parser.add_argument("--causal", action="store_true")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, capability "
          f"{torch.backends.cpu.get_cpu_capability()}, MKL_ENABLE_INSTRUCTIONS="
          f"{os.environ.get('MKL_ENABLE_INSTRUCTIONS', '(unset)')}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; cpu_block_sizes() = {cpu_block_sizes()}")
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 8, args.n, 64, generator=g) for _ in range(3))
    tiles = [tuple(map(int, t.split("x"))) for t in args.tiles]
    methods = {"sdpa": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=args.causal)}
    for bq, bk in tiles:
        methods[f"{bq}x{bk}"] = (lambda bq=bq, bk=bk:
                                 flash_attention_cpu_forward(q, k, v, is_causal=args.causal, block_q=bq, block_k=bk))
    names = list(methods)
    times: dict[str, list[float]] = {name: [] for name in names}
    with torch.no_grad():
        for name in names:  # warm-up
            methods[name]()
        for round_ in range(args.rounds):
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                start = time.perf_counter()
                methods[name]()
                times[name].append(time.perf_counter() - start)
    sdpa = times["sdpa"]
    print(f"N={args.n}{' causal' if args.causal else ''}, {args.rounds} rounds; sdpa median "
          f"{statistics.median(sdpa) * 1e3:.1f} ms (min {min(sdpa) * 1e3:.1f}, max {max(sdpa) * 1e3:.1f})")
    print(f"{'tiles':>9} {'median ms':>10} {'/ sdpa':>7} {'min':>6} {'max':>6}")
    for name in names[1:]:
        ratios = [t / s for t, s in zip(times[name], sdpa)]
        print(f"{name:>9} {statistics.median(times[name]) * 1e3:10.1f} {statistics.median(ratios):7.3f} "
              f"{min(ratios):6.3f} {max(ratios):6.3f}")


if __name__ == "__main__":
    main()
