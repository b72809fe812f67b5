"""The img2img-turbo VAE: SD-Turbo's encoder and decoder joined by four skip connections.

The encoder keeps the input of each of its four down blocks; before each of the decoder's four up
blocks, skip_conv_i(activation * gamma) is added, taking the saved activations in reverse order.
The activations are returned and passed as arguments, never stored on a module, so no call can see
another call's activations. The 1x1 skip convs live in a SkipConnections module per task, on top
of the one shared VAE.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from diffusers import AutoencoderKL
from torch import nn

SKIP_COUNT = 4


def skip_channels(vae: AutoencoderKL) -> list[tuple[int, int]]:
    """(in, out) channels of skip_conv_1..4 for this VAE's block widths.

    Down block i takes width c[max(i-1, 0)]; up block i takes c[-1] for i = 0 and c[-i] after. For SD-Turbo's (128, 256, 512, 512): 512->512, 256->512, 128->512, 128->256.
    """
    widths = list(vae.config.block_out_channels)
    encoder_inputs = [widths[0], *widths[:-1]]
    decoder_inputs = [widths[-1], *reversed(widths[1:])]
    return list(zip(reversed(encoder_inputs), decoder_inputs, strict=True))


class SkipConnections(nn.Module):
    """skip_conv_1..4: 1x1 convs without bias from encoder activations to decoder inputs."""

    def __init__(self, channels: list[tuple[int, int]]) -> None:
        super().__init__()
        for index, (in_channels, out_channels) in enumerate(channels, start=1):
            setattr(self, f"skip_conv_{index}", nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False))

    def convs(self) -> list[nn.Module]:
        return [getattr(self, f"skip_conv_{index}") for index in range(1, SKIP_COUNT + 1)]


def encode_with_skips(vae: AutoencoderKL, pixels: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Posterior mean of the latent (unscaled) and the inputs of the four encoder down blocks."""
    encoder = vae.encoder
    sample = encoder.conv_in(pixels)
    skips: list[torch.Tensor] = []
    for down_block in encoder.down_blocks:
        skips.append(sample)
        sample = down_block(sample)
    sample = encoder.mid_block(sample)
    sample = encoder.conv_out(encoder.conv_act(encoder.conv_norm_out(sample)))
    if vae.quant_conv is not None:
        sample = vae.quant_conv(sample)
    mean, _log_variance = sample.chunk(2, dim=1)
    return mean, skips


def decode_with_skips(vae: AutoencoderKL, latents: torch.Tensor, skips: list[torch.Tensor],
                      connections: SkipConnections, gamma: float | torch.Tensor) -> torch.Tensor:
    """Decode unscaled latents, adding skip_conv_i(skip * gamma) before each up block (gamma a
    number, or a 0-d float32 tensor: the traced decoder's input, the same products)."""
    decoder = vae.decoder
    if vae.post_quant_conv is not None:
        latents = vae.post_quant_conv(latents)
    sample = decoder.conv_in(latents)
    sample = decoder.mid_block(sample, None)
    for up_block, skip_conv, skip in zip(decoder.up_blocks, connections.convs(), reversed(skips), strict=True):
        sample = up_block(sample + skip_conv(skip * gamma), None)
    sample = decoder.conv_out(decoder.conv_act(decoder.conv_norm_out(sample)))
    return sample


EncodeWithSkips = Callable[[AutoencoderKL, torch.Tensor], tuple[torch.Tensor, list[torch.Tensor]]]
DecodeWithSkips = Callable[[AutoencoderKL, torch.Tensor, list[torch.Tensor], SkipConnections, float | torch.Tensor],
                           torch.Tensor]


@dataclass(frozen=True)
class SkipVAE:
    """The two functions a task call runs the VAE with: the ones above, or compiled ones."""

    encode_with_skips: EncodeWithSkips = encode_with_skips
    decode_with_skips: DecodeWithSkips = decode_with_skips

    @classmethod
    def compiled(cls, compile_function: Callable[[Callable], Callable]) -> SkipVAE:
        """Each function compiled whole (one graph per call, not one per block), the encoder's
        activations cloned out of its graph: the decoder reads them after the UNet's graph has run,
        and CUDA-graph trees treat each compiled call in inference as a new step whose start may
        overwrite the previous graphs' outputs (torch/_inductor/cudagraph_trees.py; its error
        message says to clone outside torch.compile)."""
        encode = compile_function(encode_with_skips)

        def encode_owning_skips(vae: AutoencoderKL, pixels: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
            mean, skips = encode(vae, pixels)
            return mean, [skip.clone() for skip in skips]

        return cls(encode_owning_skips, compile_function(decode_with_skips))
