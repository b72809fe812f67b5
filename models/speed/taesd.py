"""TAESD, a tiny decoder for live previews of SD-Turbo latents (AutoencoderTiny, 2.4M parameters).

Previews only: the final image always goes through SD-Turbo's full VAE. TAESD reads the UNet's
latents as they are (its scaling factor is 1, so no division by 0.18215) and returns pixels in
[-1, 1], the convention of every other decoder here. Its decoder costs about a twentieth of the
full VAE decoder's FLOPs (see the shared REFERENCE.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderTiny

TAESD_REPO = "madebyollin/taesd"
TAESD_SEED = 20240601

# The madebyollin/taesd config.json (also AutoencoderTiny's defaults), spelled out.
TAESD_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "encoder_block_out_channels": (64, 64, 64, 64),
    "decoder_block_out_channels": (64, 64, 64, 64),
    "num_encoder_blocks": (1, 3, 3, 3),
    "num_decoder_blocks": (3, 3, 3, 1),
    "act_fn": "relu",
    "upsampling_scaling_factor": 2,
    "latent_magnitude": 3,
    "latent_shift": 0.5,
    "scaling_factor": 1.0,
}

TINY_TAESD_CONFIG: dict[str, Any] = {
    **TAESD_CONFIG,
    "encoder_block_out_channels": (8, 8, 8, 8),
    "decoder_block_out_channels": (8, 8, 8, 8),
    "num_encoder_blocks": (1, 1, 1, 1),
    "num_decoder_blocks": (1, 1, 1, 1),
}


def build_taesd(config: dict[str, Any], device: torch.device, dtype: torch.dtype) -> AutoencoderTiny:
    """TAESD with seeded random weights (tiny source, tests, benchmarks); the caller's RNG is untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TAESD_SEED)
        taesd = AutoencoderTiny(**config)
    return _resident(taesd, device, dtype)


def load_taesd(source: str | Path, device: torch.device, dtype: torch.dtype) -> AutoencoderTiny:
    """TAESD from a Hub repo id (through the Hugging Face cache) or a folder with its files."""
    return _resident(AutoencoderTiny.from_pretrained(source), device, dtype)


def _resident(taesd: AutoencoderTiny, device: torch.device, dtype: torch.dtype) -> AutoencoderTiny:
    return taesd.eval().requires_grad_(False).to(device=device, dtype=dtype)


def preview_decode(taesd: AutoencoderTiny, latents: torch.Tensor) -> torch.Tensor:
    """UNet-space latents (already multiplied by the VAE's scaling factor) to pixels in [-1, 1]."""
    return taesd.decode(latents.to(taesd.dtype) / taesd.config.scaling_factor).sample.clamp(-1, 1)
