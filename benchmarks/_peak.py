"""Shared by the benchmarks: the fp32 matmul peak of this machine, measured now."""
from __future__ import annotations

import time

import torch


def matmul_peak_gflops(n: int = 2048, repeats: int = 10) -> float:
    """Best-of-N GFLOP/s of an n x n fp32 matmul with the current thread count (2 FLOPs per MAC)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def best_time(fn, repeats: int = 5, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def count_flops(fn) -> int:
    """FLOPs (2 per multiply-add) that torch.utils.flop_counter sees during fn()."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def measure(fn, repeats: int) -> dict:
    """Counted FLOPs of one fn() call, its best-of-``repeats`` time and the GFLOP/s that gives."""
    flops = count_flops(fn)
    seconds = best_time(fn, repeats=repeats)
    return {"seconds": seconds, "gflops_counted": flops / 1e9, "gflop_per_s": flops / seconds / 1e9}
