"""The VAE as TorchScript graphs (models.running.traced_graphs), for folded calls: the plain
encoder and decoder (text to image, edit) and the img2img-turbo encoder and decoder with skips
(models.running.skip_vae) of tasks that swap no VAE tensors in (those run the eager VAE).

On the mini models at 128 px the encoder and decoder are most of a sketch or translation call
(about 40 of its 55-80 ms on this project's 2-core CPU, mostly bf16 convolution); traced, each
128 px call of the app is 1.10-1.11x faster (python -m bench.settings --setting trace_vae:
bench/RESULTS.md). As with the traced UNet, the graphs read the VAE's own tensors and the task's
skip convs, so folded weights reach them, and gamma is an input: one graph serves every gamma.
The encoder has a graph per input shape (its posterior mean is also the plain encoder's), the
plain decoder one per shape and the decoder with skips one per task and shape (each task has its
own skip convs), traced on the first call (about a second each for the mini VAE). The decoders
upsample with one transposed convolution per upsampler (models.running.upsampling), whose
kernels they take as inputs: 1.05x on a 128 px call of the mini models.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch
from diffusers import AutoencoderKL
from torch import nn

from models.running.skip_vae import SkipConnections, decode_with_skips, encode_with_skips
from models.running.traced_graphs import MAX_GRAPHS, TracedGraphs
from models.running.upsampling import UpsamplerKernels, strided_upsamplers


class _Encoder(nn.Module):
    def __init__(self, vae: AutoencoderKL) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        mean, skips = encode_with_skips(self.vae, pixels)
        return (mean, *skips)


class _Decoder(nn.Module):
    """decode_with_skips; its inputs after gamma are the skips, then the upsamplers' kernels (if any)."""

    def __init__(self, vae: AutoencoderKL, connections: SkipConnections, skip_count: int) -> None:
        super().__init__()
        self.vae = vae
        self.connections = connections
        self.skip_count = skip_count

    def forward(self, latents: torch.Tensor, gamma: torch.Tensor, *skips_and_kernels: torch.Tensor) -> torch.Tensor:
        skips, kernels = skips_and_kernels[:self.skip_count], skips_and_kernels[self.skip_count:]
        with upsampling_by(self.vae, kernels):
            return decode_with_skips(self.vae, latents, list(skips), self.connections, gamma)


class _PlainDecoder(nn.Module):
    """vae.decode; its inputs after the latents are the upsamplers' kernels (if any)."""

    def __init__(self, vae: AutoencoderKL) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, latents: torch.Tensor, *kernels: torch.Tensor) -> torch.Tensor:
        with upsampling_by(self.vae, kernels):
            return self.vae.decode(latents, return_dict=False)[0]


def upsampling_by(vae: AutoencoderKL, kernels: tuple[torch.Tensor, ...]) -> AbstractContextManager[None]:
    """The decoder's upsamplers as transposed convolutions with these kernels; none: as they are."""
    return strided_upsamplers(vae.decoder, kernels) if kernels else nullcontext()


class TracedVAE:
    """The VAE's encoder and decoders through traced graphs (see the module docstring)."""

    def __init__(self, vae: AutoencoderKL, *, transposed_upsamplers: bool = True, max_graphs: int = MAX_GRAPHS) -> None:
        """transposed_upsamplers: the decoders upsample with transposed convolutions (see
        models.running.upsampling), else with diffusers' own upsamplers."""
        self._vae = vae
        self._encoders = TracedGraphs("VAE encoder", max_graphs)
        self._decoders = TracedGraphs("VAE decoder", max_graphs)
        self._skip_decoders = TracedGraphs("VAE decoder with skips", 2 * max_graphs)  # a graph per task and shape
        self._kernels = UpsamplerKernels(vae.decoder) if transposed_upsamplers else None

    @property
    def traced_graphs(self) -> int:
        """How many graphs are kept traced (eager fall-backs not counted)."""
        return self._encoders.traced + self._decoders.traced + self._skip_decoders.traced

    def encode_with_skips(self, pixels: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Posterior mean (unscaled) and the skip activations, as skip_vae.encode_with_skips."""
        mean, *skips = self._encoders.run(None, lambda: _Encoder(self._vae), (pixels,))  # type: ignore[misc]
        return mean, skips

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Posterior mean (unscaled), as vae.encode(pixels).latent_dist.mean."""
        return self.encode_with_skips(pixels)[0]

    def decode_with_skips(self, latents: torch.Tensor, skips: list[torch.Tensor], task: str,
                          connections: SkipConnections, gamma: float) -> torch.Tensor:
        """skip_vae.decode_with_skips with `task`'s skip connections at gamma."""
        inputs = (latents, torch.tensor(gamma, dtype=torch.float32, device=latents.device), *skips,
                  *self._upsampler_kernels())
        pixels = self._skip_decoders.run(task, lambda: _Decoder(self._vae, connections, len(skips)), inputs)
        return pixels  # type: ignore[return-value]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Pixels of unscaled latents, as vae.decode(latents).sample."""
        inputs = (latents, *self._upsampler_kernels())
        return self._decoders.run(None, lambda: _PlainDecoder(self._vae), inputs)  # type: ignore[return-value]

    def _upsampler_kernels(self) -> list[torch.Tensor]:
        return self._kernels.current() if self._kernels is not None else []
