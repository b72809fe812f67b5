"""The resident SD-Turbo components and the one-step x0 prediction they all share."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from models.running.latent_padding import Padding, unet_multiple
from models.running.swapped import swapped_parameters
from models.running.traced_unet import TracedUNet
from models.running.traced_vae import TracedVAE

FINAL_TIMESTEP = 999
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def x0_from_prediction(noisy_latents: torch.Tensor, output: torch.Tensor, alpha_bar: torch.Tensor,
                       prediction_type: str) -> torch.Tensor:
    """x0 from the UNet's output read as the scheduler config's prediction_type says (diffusers'
    meanings): "epsilon" the noise (SD-Turbo), "v_prediction" v = sqrt(abar) * eps - sqrt(1 - abar) * x0,
    "sample" x0 itself. alpha_bar broadcasts against the latents. At t = 999 the epsilon reading
    divides by sqrt(abar) ~ 0.068 and so magnifies the UNet's errors 15x; the other two do not."""
    if prediction_type == "epsilon":
        return (noisy_latents - (1 - alpha_bar).sqrt() * output) / alpha_bar.sqrt()
    if prediction_type == "v_prediction":
        return alpha_bar.sqrt() * noisy_latents - (1 - alpha_bar).sqrt() * output
    if prediction_type == "sample":
        return output
    raise ValueError(f"prediction_type {prediction_type!r} is not one of {', '.join(PREDICTION_TYPES)}")


@dataclass
class SDTurbo:
    """Tokenizer, text encoder, UNet and VAE on one device and dtype, plus the noise schedule.

    `dtype` is the store's: the text encoder's, and what latents and images are handed around in.
    The UNet and the VAE may run in another (unet_dtype, vae_dtype: bfloat16 on a CPU with bf16
    instructions, see models.speed.acceleration); the methods here cast at their edges. The dtypes
    are kept as fields because reading a diffusers model's `.dtype` walks its parameters."""

    tokenizer: CLIPTokenizer
    text_encoder: CLIPTextModel
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    alphas_cumprod: torch.Tensor  # float32, on the device
    device: torch.device
    dtype: torch.dtype
    unet_dtype: torch.dtype | None = None  # None: dtype
    vae_dtype: torch.dtype | None = None  # None: dtype
    prediction_type: str = "epsilon"  # what the UNet outputs (the scheduler config's), see x0_from_prediction
    _timesteps: dict[int, torch.Tensor] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.unet_dtype = self.unet_dtype or self.dtype
        self.vae_dtype = self.vae_dtype or self.dtype
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"the scheduler's prediction_type {self.prediction_type!r} is not one of "
                             f"{', '.join(PREDICTION_TYPES)}")

    @property
    def latent_scale(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def unet_multiple(self) -> int:
        """The latent side multiple the UNet runs at (models.running.latent_padding)."""
        return unet_multiple(self.unet)

    @property
    def max_prompt_tokens(self) -> int:
        return int(self.tokenizer.model_max_length)

    def timestep(self, t: int) -> torch.Tensor:
        """The timestep as a tensor; made once per value and kept (fixed work is done once)."""
        cached = self._timesteps.get(t)
        if cached is None:
            cached = self._timesteps[t] = torch.tensor([t], device=self.device, dtype=torch.long)
        return cached

    def predict_x0(self, noisy_latents: torch.Tensor, t: int, prompt_embeds: torch.Tensor,
                   unet_parameters: Mapping[str, torch.Tensor] | None = None,
                   traced: TracedUNet | None = None) -> torch.Tensor:
        """One UNet call at timestep t, read as x0 (the UFOGen-style one step) through
        x0_from_prediction; for SD-Turbo (epsilon) x0 = (x_t - sqrt(1 - abar_t) * eps) / sqrt(abar_t).

        Latents whose sides are off the UNet's multiple run reflect-padded to it, and the output is cropped
        back (models.running.latent_padding). unet_parameters replace UNet parameters (plain names)
        for this call only. traced: run the UNet through these traced graphs (only where every
        layer runs plain: the store's folded calls hand them over)."""
        padding = Padding.to_multiple(*noisy_latents.shape[-2:], self.unet_multiple)
        sample, embeddings = padding.pad(noisy_latents.to(self.unet_dtype)), prompt_embeds.to(self.unet_dtype)
        if traced is not None:
            output = traced(sample, self.timestep(t), embeddings, unet_parameters or {})
        else:
            with swapped_parameters(self.unet, unet_parameters or {}):
                output = self.unet(sample, self.timestep(t), encoder_hidden_states=embeddings).sample
        output = padding.crop(output)
        x0 = x0_from_prediction(noisy_latents.float(), output.float(), self.alphas_cumprod[t], self.prediction_type)
        return x0.to(self.dtype)

    def encode(self, pixels: torch.Tensor, traced: TracedVAE | None = None) -> torch.Tensor:
        """Scaled latents (the VAE posterior mean) of pixels in [-1, 1], in the store's dtype.
        traced: through these traced graphs (as predict_x0's)."""
        pixels = pixels.to(self.vae_dtype)
        mean = traced.encode(pixels) if traced is not None else self.vae.encode(pixels).latent_dist.mean
        return (mean * self.latent_scale).to(self.dtype)

    def decode(self, latents: torch.Tensor, traced: TracedVAE | None = None) -> torch.Tensor:
        """Pixels in about [-1, 1] of scaled latents, in the store's dtype (traced: as encode's)."""
        latents = (latents / self.latent_scale).to(self.vae_dtype)
        pixels = traced.decode(latents) if traced is not None else self.vae.decode(latents).sample
        return pixels.to(self.dtype)

    def add_noise(self, latents: torch.Tensor, noise: torch.Tensor, t: int) -> torch.Tensor:
        """x_t = sqrt(abar_t) * x0 + sqrt(1 - abar_t) * noise (the forward diffusion to step t)."""
        alpha_bar = self.alphas_cumprod[t]
        noisy = alpha_bar.sqrt() * latents.float() + (1 - alpha_bar).sqrt() * noise.float()
        return noisy.to(self.dtype)
