"""Timing and memory of repeated calls: first call, median, p95, images per second, peak memory.

Every timed call is bracketed by device synchronisation, so GPU work is counted when it runs, not
when it is queued. Peak memory is the GPU's max allocated bytes, or on the CPU the process's peak
resident set (VmHWM), reset before each measurement through /proc/self/clear_refs (Linux).
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

PROC_STATUS = Path("/proc/self/status")
PROC_CLEAR_REFS = Path("/proc/self/clear_refs")
RESET_PEAK_RSS = "5"  # clear_refs value that resets VmHWM to the current RSS


@dataclass(frozen=True)
class Measurement:
    """One configuration called once cold (first_call_s) and then `repeats` times (times_s)."""

    first_call_s: float
    times_s: tuple[float, ...]
    peak_memory_bytes: int

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s)

    @property
    def p95_s(self) -> float:
        return float(np.percentile(self.times_s, 95))

    @property
    def images_per_s(self) -> float:
        return 1.0 / self.median_s


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(call: Callable[[], object], device: torch.device) -> float:
    """Seconds one call takes, from an idle device to an idle device."""
    synchronize(device)
    start = time.perf_counter()
    call()
    synchronize(device)
    return time.perf_counter() - start


def _status_kib(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", PROC_STATUS.read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"{PROC_STATUS} has no {field} line; CPU memory is measured on Linux only")
    return int(match.group(1))


def memory_kind(device: torch.device) -> str:
    return "GPU max allocated" if device.type == "cuda" else "CPU peak RSS"


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        PROC_CLEAR_REFS.write_text(RESET_PEAK_RSS)


def peak_memory(device: torch.device) -> int:
    """Bytes at the peak since the last reset_peak_memory."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return _status_kib("VmHWM") * 1024


def current_memory(device: torch.device) -> int:
    """Bytes held now: allocated GPU memory, or the process's resident set on the CPU."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device)
    return _status_kib("VmRSS") * 1024


def measure(call: Callable[[], object], *, repeats: int, device: torch.device) -> Measurement:
    """Call once cold, then `repeats` times; peak memory covers all of the calls."""
    if repeats < 1:
        raise ValueError(f"repeats={repeats} must be at least 1")
    reset_peak_memory(device)
    first = timed(call, device)
    times = tuple(timed(call, device) for _ in range(repeats))
    return Measurement(first, times, peak_memory(device))


def measure_pair(first: Callable[[], object], second: Callable[[], object], *, repeats: int,
                 device: torch.device) -> tuple[Measurement, Measurement]:
    """Two configurations called in turn (first, second, first, second, ...), each once cold and
    then `repeats` times, so that load from other processes on a shared machine falls on both
    alike. Peak memory is the process's over all of the calls, with both configurations resident."""
    if repeats < 1:
        raise ValueError(f"repeats={repeats} must be at least 1")
    reset_peak_memory(device)
    cold = (timed(first, device), timed(second, device))
    first_times: list[float] = []
    second_times: list[float] = []
    for _ in range(repeats):
        first_times.append(timed(first, device))
        second_times.append(timed(second, device))
    peak = peak_memory(device)
    return Measurement(cold[0], tuple(first_times), peak), Measurement(cold[1], tuple(second_times), peak)
