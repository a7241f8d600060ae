"""Measuring inference latency: the one latency measurement used by the labs.

We report the **median** of many timed calls with its interquartile range (IQR), not the
mean: latency samples are skewed by rare slow calls (another process, a page fault, the
CPU changing clock speed), and one 10x outlier moves the mean a lot but the median hardly.
The IQR (25th to 75th percentile) says how noisy the machine was.

To compare models (e.g. dense vs pruned), use ``compare_latency``: it times the models in
turns, so that a noisy period of the machine slows them all alike and their ratio stays fair.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn

from helpers.profiles import module_device, set_eval


@dataclass(frozen=True)
class LatencyResult:
    """Summary of ``n`` timed forward passes, in milliseconds per call."""

    median_ms: float
    q1_ms: float  # 25th percentile
    q3_ms: float  # 75th percentile
    min_ms: float
    n: int
    device: str
    num_threads: int  # torch CPU threads during the measurement
    samples_ms: tuple[float, ...] = field(default=(), repr=False, compare=False)

    def __str__(self) -> str:
        return (
            f"{_fmt_ms(self.median_ms)} ms "
            f"(IQR {_fmt_ms(self.q1_ms)}-{_fmt_ms(self.q3_ms)} ms, n={self.n})"
        )


def _fmt_ms(value: float) -> str:
    """Milliseconds with about three significant digits."""
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _synchronize(device: torch.device) -> None:
    """Wait for queued GPU work so the clock measures it (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def summarize(samples_ms: list[float], device: torch.device, num_threads: int) -> LatencyResult:
    """Median, quartiles and minimum of timed calls (milliseconds), as a ``LatencyResult``."""
    q1, median, q3 = np.percentile(samples_ms, [25, 50, 75])
    return LatencyResult(
        median_ms=float(median),
        q1_ms=float(q1),
        q3_ms=float(q3),
        min_ms=float(min(samples_ms)),
        n=len(samples_ms),
        device=str(device),
        num_threads=num_threads,
        samples_ms=tuple(samples_ms),
    )


@contextmanager
def _inference(models: list[nn.Module], num_threads: int | None):
    """Eval mode, inference mode and ``num_threads`` CPU threads; all restored on exit."""
    modes = [{m: m.training for m in model.modules()} for model in models]
    old_threads = torch.get_num_threads()
    try:
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        for model in models:
            set_eval(model)
        with torch.inference_mode():
            yield
    finally:
        torch.set_num_threads(old_threads)
        for saved in modes:
            for module, mode in saved.items():
                module.training = mode


def time_in_turns(
    calls: Mapping[str, Callable[[], Any]], rounds: int, devices: Mapping[str, torch.device]
) -> dict[str, list[float]]:
    """Milliseconds of ``rounds`` calls of each callable, GPU work on its device included.

    Each round calls every one once, starting with the next one each round, so that a slow
    spell of the machine or an order effect is spread evenly over them. No warm-up: do it
    first. The timing loop of ``measure_latency`` and ``compare_latency``, and of benchmarks
    that time other work (a training step, a data loader).
    """
    names = list(calls)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names) if names else 0
        for name in names[shift:] + names[:shift]:
            _synchronize(devices[name])
            start = time.perf_counter()
            calls[name]()
            _synchronize(devices[name])
            samples[name].append((time.perf_counter() - start) * 1e3)
    return samples


def _check_counts(n_warmup: int, n_test: int) -> None:
    if n_test < 1 or n_warmup < 0:
        raise ValueError(f"need n_test >= 1 and n_warmup >= 0, got {n_test=} and {n_warmup=}")


def measure_latency(
    model: nn.Module,
    dummy_input: torch.Tensor,
    n_warmup: int = 20,
    n_test: int = 100,
    num_threads: int | None = None,
) -> LatencyResult:
    """Latency of ``model(dummy_input)``: median and IQR over ``n_test`` timed calls.

    The model runs in eval and inference mode on its own device (the input is moved there);
    ``n_warmup`` untimed calls come first (allocations, kernel selection, caches). On CUDA
    each timed call is bracketed by ``torch.cuda.synchronize`` so the time includes the GPU
    work. ``num_threads`` sets torch's CPU threads for the measurement only. The model's
    training flags and the thread count are restored afterwards.

    Args:
        model: the network to time.
        dummy_input: a batch, e.g. ``torch.randn(1, 3, 32, 32)``.
        n_warmup: untimed calls before measuring.
        n_test: timed calls.
        num_threads: CPU threads to use (``None``: leave torch's setting).

    Returns:
        A ``LatencyResult``; ``str(result)`` reads like ``12.3 ms (IQR 11.9-12.8 ms, n=100)``.
    """
    _check_counts(n_warmup, n_test)
    device = module_device(model)
    inputs = dummy_input.to(device)
    with _inference([model], num_threads):
        threads = torch.get_num_threads()
        for _ in range(n_warmup):
            model(inputs)
        _synchronize(device)
        samples = time_in_turns({"model": lambda: model(inputs)}, n_test, {"model": device})
    return summarize(samples["model"], device, threads)


def compare_latency(
    models: Mapping[str, nn.Module],
    dummy_input: torch.Tensor,
    n_warmup: int = 20,
    n_test: int = 100,
    num_threads: int | None = None,
) -> dict[str, LatencyResult]:
    """Latency of several models, timed in turns so machine noise hits them all alike.

    Each round times every model once, starting with a different model each round, so a
    slow spell or an order effect is spread evenly. Use it for ratios such as
    ``results["dense"].median_ms / results["pruned"].median_ms``. Arguments as for
    ``measure_latency``; each model runs on its own device.
    """
    _check_counts(n_warmup, n_test)
    names = list(models)
    devices = {name: module_device(models[name]) for name in names}
    inputs = {name: dummy_input.to(devices[name]) for name in names}
    with _inference(list(models.values()), num_threads):
        threads = torch.get_num_threads()
        for _ in range(n_warmup):
            for name in names:
                models[name](inputs[name])
        for device in set(devices.values()):
            _synchronize(device)
        calls = {name: partial(models[name], inputs[name]) for name in names}
        samples = time_in_turns(calls, n_test, devices)
    return {name: summarize(samples[name], devices[name], threads) for name in names}
