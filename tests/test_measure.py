"""The kit's measurements and the bench: peak memory verified against bytes we can count."""

from __future__ import annotations

import time

import pytest
import torch

from autograde.bench import Config, Measurement, format_table, measure, naive_memory_bytes, plot_results, run_bench
from course_kit.measure import peak_memory_bytes, sdpa_kernel_name, time_call

MiB = 2**20


def test_peak_memory_of_naive_attention_is_its_two_score_matrices():
    q = torch.randn(1, 8, 1024, 64)

    def naive(q):
        return torch.softmax(q @ q.transpose(-2, -1), dim=-1) @ q

    peak_memory_bytes(naive, q[..., :64, :])  # libraries set up
    predicted = 2 * 8 * 1024 * 1024 * 4  # S and P in float32
    # page-granular, and a few pages freed by the warm-up call may be reused unseen
    assert 0.97 * predicted <= peak_memory_bytes(naive, q) <= predicted + 8 * MiB


def test_peak_memory_sees_a_freed_temporary_and_not_what_was_held_before():
    held = torch.zeros(64 * MiB // 4)  # noqa: F841  (held before the call: not counted)

    def temporary():
        t = torch.ones(32 * MiB // 4)  # 32 MiB, freed before returning
        return float(t.sum())

    assert 31 * MiB <= peak_memory_bytes(temporary) <= 40 * MiB  # page-granular, give or take a few pages


def test_time_call_returns_the_median_of_positive_durations():
    assert 0 < time_call(lambda: torch.randn(100, 100) @ torch.randn(100, 100), repeat=3) < 5


def test_time_call_minimum_is_the_shortest_call():
    durations = iter([0.05, 0.03, 0.0, 0.02])  # the warm-up call, then three timed calls: sleep for each in turn
    assert 0.0 <= time_call(lambda: time.sleep(next(durations)), repeat=3, statistic="min") < 0.015
    with pytest.raises(ValueError, match='statistic must be "median" or "min"'):
        time_call(lambda: None, statistic="mean")


def test_sdpa_kernel_name_sees_the_math_fallback_when_restricted():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = torch.randn(1, 2, 8, 16)
    with sdpa_kernel(SDPBackend.MATH):
        assert sdpa_kernel_name(q, q, q) == "aten::_scaled_dot_product_attention_math"


@pytest.mark.parametrize("mode", ["forward", "backward"])
def test_bench_measures_naive_memory_as_predicted_in_a_fresh_process(mode):
    config = Config("naive", 512, mode, repeat=1)
    m = measure(config)
    scores = naive_memory_bytes(config)  # S and P
    assert m.seconds > 0 and m.peak_bytes >= scores
    assert m.peak_bytes <= (3 if mode == "backward" else 1) * scores + 16 * MiB


def test_bench_flash_and_sdpa_need_far_less_memory_than_naive():
    results = {r.config.method: r for r in run_bench([1024], ["naive", "flash", "sdpa"], ["forward"],
                                                     progress=False, repeat=1)}
    assert results["flash"].peak_bytes < results["naive"].peak_bytes / 4
    assert results["sdpa"].peak_bytes < results["naive"].peak_bytes / 4


def test_bench_skips_what_must_not_run_and_says_why():
    assert "needs a CUDA device" in measure(Config("triton", 64, "forward")).note
    assert "chunked: forward only" in measure(Config("chunked", 64, "backward")).note
    skipped = measure(Config("naive", 16384, "forward"), memory_limit_bytes=4 * 2**30)
    assert skipped.seconds is None and "skipped, needs ~16.0 GiB" in skipped.note


def test_bench_table_gives_ratios_to_sdpa_and_the_plot_has_time_and_memory_per_mode():
    results = [Measurement(Config(method, 1024, mode), seconds, peak)
               for mode in ("forward", "backward")
               for method, seconds, peak in (("flash", 0.3, 12 * MiB), ("sdpa", 0.2, 10 * MiB))]
    results.append(Measurement(Config("triton", 1024, "forward"), None, None, "triton: needs a CUDA device"))
    rows = format_table(results).splitlines()
    flash_fwd = next(r for r in rows if r.startswith("flash") and "fwd+bwd" not in r).split()
    # ms, x sdpa, TFLOP/s (4 N^2 D H / t), MiB, x sdpa
    assert flash_fwd[3:] == ["300.0", "1.50", "0.0072", "12.0", "1.20"]
    assert rows[-1] == "note: triton: needs a CUDA device"
    fig = plot_results(results)
    assert [ax.get_ylabel() for ax in fig.axes] == ["time (ms)", "time (ms)", "peak memory above inputs (MiB)",
                                                   "peak memory above inputs (MiB)"]
