"""Choose the device and dtype once, explicitly: CUDA with fp16 when available, else CPU with fp32.

On a CPU with bfloat16 instructions models.speed.acceleration also runs the convolution-heavy
networks in bfloat16 (native_bfloat16 tells whether this CPU has them)."""

from __future__ import annotations

import torch

DTYPES: dict[str, torch.dtype] = {
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float32": torch.float32,
    "fp32": torch.float32,
}


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """None or "auto" picks CUDA when available, else CPU; anything else is taken as given."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} was asked for, but CUDA is not available on this machine")
    return resolved


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """None or "auto" gives fp16 on CUDA and fp32 elsewhere; names like "bf16" are accepted."""
    if dtype is None or dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        resolved = dtype
    elif dtype in DTYPES:
        resolved = DTYPES[dtype]
    else:
        raise ValueError(f"dtype={dtype!r} is not supported; use one of {sorted(DTYPES)} or 'auto'")
    if device.type == "cpu" and resolved == torch.float16:
        raise ValueError("dtype=float16 is not supported on the CPU; use float32 or bfloat16")
    return resolved


def native_bfloat16(device: torch.device) -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX): there oneDNN runs
    bf16 convolutions about 3x faster than fp32; without them bf16 is emulated and far slower."""
    if device.type != "cpu":
        return False
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's own probes
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)
