"""TAESD, a tiny decoder for live previews of SD-Turbo latents (AutoencoderTiny, 2.4M parameters).

Previews only: the final image always goes through SD-Turbo's full VAE. TAESD reads the UNet's
latents as they are (its scaling factor is 1, so no division by 0.18215) and returns pixels in
[-1, 1], the convention of every other decoder here. Its decoder costs about a twentieth of the
full VAE decoder's FLOPs (see the shared REFERENCE.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderTiny

from models.weights.sources import SourceInfo, hub_offline

TAESD_REPO = "madebyollin/taesd"
TAESD_FILES = ["config.json", "diffusion_pytorch_model.safetensors"]
PREVIEW_FOLDER = "taesd"  # a preview decoder kept beside local weights: DIR/taesd/ in diffusers' layout
PREVIEW_RECORD = "preview.json"  # beside a trained preview decoder: the base whose latents it decodes
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
    return _resident(AutoencoderTiny.from_pretrained(source, torch_dtype=dtype), device, dtype)


def _resident(taesd: AutoencoderTiny, device: torch.device, dtype: torch.dtype) -> AutoencoderTiny:
    taesd = taesd.eval().requires_grad_(False).to(device)
    return taesd if taesd.dtype == dtype else taesd.to(dtype=dtype)


def preview_decode(taesd: AutoencoderTiny, latents: torch.Tensor) -> torch.Tensor:
    """UNet-space latents (already multiplied by the VAE's scaling factor) to pixels in [-1, 1]."""
    return taesd.decode(latents.to(taesd.dtype) / taesd.config.scaling_factor).sample.clamp(-1, 1)


@dataclass(frozen=True)
class PreviewDecoder:
    """The preview decoder a source has (None: previews use the full VAE), and where it came from."""

    decoder: AutoencoderTiny | None
    origin: str


def preview_decoder_for(source: SourceInfo, latent_channels: int, device: torch.device,
                        dtype: torch.dtype) -> PreviewDecoder:
    """TAESD for the source: a `taesd/` folder beside its weights or in --model-dir; for the hub
    source `madebyollin/taesd` through huggingface_hub (downloaded once into its cache; offline,
    from the cache or not at all); a tiny random one for the tiny source. A decoder for another
    number of latent channels than the UNet's is not used."""
    found = _preview_source(source)
    if isinstance(found, str):
        return PreviewDecoder(None, found)
    if found is None:
        decoder = build_taesd(TINY_TAESD_CONFIG, device, dtype)
        origin = "tiny random TAESD"
    else:
        decoder = load_taesd(found, device, dtype)
        origin = f"TAESD from {found}"
    if decoder.config.latent_channels != latent_channels:
        return PreviewDecoder(None, f"{origin} decodes {decoder.config.latent_channels} latent channels, the UNet "
                                    f"makes {latent_channels}")
    return PreviewDecoder(decoder, origin)


def _preview_source(source: SourceInfo) -> Path | str | None:
    """A folder to load from, None for the tiny stand-in, or a sentence saying why there is none."""
    for folder in (source.base_dir, source.model_dir):
        if folder is not None and (folder / PREVIEW_FOLDER / "config.json").is_file():
            return folder / PREVIEW_FOLDER
    if source.active == "tiny":
        return None
    if source.active != "hub":
        return f"no {PREVIEW_FOLDER}/ folder beside the {source.active} weights"
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(TAESD_REPO, allow_patterns=TAESD_FILES, local_files_only=hub_offline()))
    except Exception as error:  # offline and not cached, or the Hub failed: previews use the full VAE
        return f"{TAESD_REPO} could not be had ({type(error).__name__})"
