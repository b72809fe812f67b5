"""Text to image with SD-Turbo in one step: pure noise at t = 999, predict x0, decode.

This is the UFOGen sampling idea (the network's x0 prediction at the last timestep is the sample)
applied to SD-Turbo, with no classifier-free guidance. Sizes that are not multiples of 8 are
generated at the next multiple of 8 and centre-cropped to the exact size asked for. The noise is
drawn at the next multiple of the UNet's size multiple (64 px for SD-Turbo) and the UNet's x0
cropped to the centre before decoding (models.running.latent_padding), so the UNet always sees
independent noise at a size it runs without interpolating.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderTiny
from PIL import Image

from models.running.latent_padding import Padding, padded_side
from models.running.sd_turbo import FINAL_TIMESTEP
from models.running.store import ModelStore
from models.speed.taesd import preview_decode
from pipelines.checks import check_prompt, check_seed, check_side
from pipelines.images import LATENT_FACTOR, center_crop, round_up_to_multiple, seeded_noise, to_pil
from pipelines.limits import limits_of


def text_to_image(store: ModelStore, prompt: str, *, seed: int = 0, width: int | None = None,
                  height: int | None = None, preview_decoder: AutoencoderTiny | None = None) -> Image.Image:
    """width, height: default the source's native side. preview_decoder: decode with this TAESD (a
    cheap live preview) instead of the full VAE."""
    # 1. check inputs
    limits = limits_of(store)
    prompt = check_prompt(prompt)
    seed = check_seed(seed, limits)
    width = check_side(limits.native_side if width is None else width, "width", limits)
    height = check_side(limits.native_side if height is None else height, "height", limits)
    base = store.base
    multiple = base.unet_multiple
    latent_height, latent_width = (round_up_to_multiple(side) // LATENT_FACTOR for side in (height, width))
    padding = Padding.to_multiple(latent_height, latent_width, multiple)  # noise kept: the centre
    noise_shape = (1, base.unet.config.in_channels, padded_side(latent_height, multiple),
                   padded_side(latent_width, multiple))
    # 2. seeded noise: the latent at the final timestep, at the UNet's size
    noise = seeded_noise(seed, noise_shape, store.device, store.dtype)
    with store.model_call() as call:
        # 3. prompt embeddings (cached)
        embeddings = store.prompt_embeddings(prompt)
        # 4. one UNet step to x0
        start = base.add_noise(torch.zeros_like(noise), noise, FINAL_TIMESTEP)  # x_T = sqrt(1 - abar) * noise
        latents = padding.crop(call.predict_x0(start, FINAL_TIMESTEP, embeddings))
        # 5. decode: the full VAE, or TAESD for a live preview
        if preview_decoder is None:
            pixels = call.decode(latents)
        else:
            pixels = preview_decode(preview_decoder, latents)
    # 6. back to PIL at the exact size
    return center_crop(to_pil(pixels), width, height)
