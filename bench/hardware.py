"""What the benchmark ran on: the device, library versions, and the measured matmul rate that sets
the physical floor (FLOPs of a task over the rate the device multiplies matrices at)."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from importlib.metadata import version

import torch

from bench.measure import synchronize, timed
from models.running.devices import native_bfloat16

LIBRARIES = ("torch", "diffusers", "transformers", "peft", "gradio", "numpy")
MIN_MATMUL_SIZE = 256
MATMUL_TRIES = 3


@dataclass(frozen=True)
class MatmulRate:
    """Dense square matmul throughput: 2 * n^3 FLOPs per product."""

    dtype: str
    size: int
    tflops: float


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        return f"{properties.name}, {properties.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}"
    bf16 = "with" if native_bfloat16(device) else "without"
    return (f"CPU {cpu_model()}, {os.cpu_count()} logical cores, {bf16} bf16 instructions, "
            f"torch threads {torch.get_num_threads()}")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def precision_flags(device: torch.device) -> dict[str, bool]:
    """torch's TF32 switches, which decide how fast the fp32 baseline runs on a GPU (defaults:
    cuDNN convolutions in TF32, matmuls in full fp32)."""
    if device.type != "cuda":
        return {}
    return {"cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32}


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    versions.update({name: version(name) for name in LIBRARIES})
    return versions


def matmul_rate(device: torch.device, dtype: torch.dtype, max_size: int, min_time_s: float = 0.05) -> MatmulRate:
    """Best of three timed products of two n x n matrices; n doubles from 256 until one product
    takes min_time_s or n reaches max_size, so a slow dtype (bf16 on a CPU without bf16
    instructions) is measured in a second instead of many minutes."""
    generator = torch.Generator(device="cpu").manual_seed(0)
    size = MIN_MATMUL_SIZE
    while True:
        left = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
        right = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
        torch.matmul(left, right)  # warm-up
        synchronize(device)
        best = min(timed(lambda: torch.matmul(left, right), device) for _ in range(MATMUL_TRIES))
        if best >= min_time_s or size * 2 > max_size:
            return MatmulRate(str(dtype).removeprefix("torch."), size, 2 * size**3 / best / 1e12)
        size *= 2
