"""The VAE decoder's upsamplers as transposed convolutions, for the traced decoders.

diffusers' Upsample2D doubles the image by nearest-neighbour interpolation, then runs a 3x3
convolution (padding 1) at the doubled size. Every output pixel of that pair depends on a 2x2
patch of the input, with one of four kernels by the pixel's phase, so the pair is exactly one
transposed convolution of stride 2 with a 4x4 kernel made of sums of the 3x3 one: per axis
[w2, w1 + w2, w0 + w1, w0]. It does 4 multiplies per input pixel and axis pair where the pair does
9 at four times the pixels, and skips the interpolated image: on this project's CPU the mini
decoder's three upsamplers (bf16) take about half the time.

Building the kernels costs about as much as they save (2 ms a decode in bf16 here), so
UpsamplerKernels keeps them and rebuilds one only when its 3x3 weight has changed in place (folding
a task's LoRA copies into the weights, which bumps their version); the traced decoders take them as
inputs. The results equal the pair's to float rounding. Only upsamplers of that plain kind are
replaced, and only inside `strided_upsamplers`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from diffusers.models.upsampling import Upsample2D
from torch import nn


def transposed_kernel(weight: torch.Tensor) -> torch.Tensor:
    """A 3x3 conv weight (out, in, 3, 3) as the 4x4 kernel (in, out, 4, 4) of the stride-2
    transposed conv that equals nearest 2x upsampling followed by that conv."""

    def along(kernel: torch.Tensor, dim: int) -> torch.Tensor:
        before, centre, after = kernel.unbind(dim)
        return torch.stack([after, centre + after, before + centre, before], dim)

    kernel = along(along(weight, 2), 3).transpose(0, 1)
    channels_last = weight.is_contiguous(memory_format=torch.channels_last)
    return kernel.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


class StridedUpsample(nn.Module):
    """An Upsample2D of the plain kind (see plain_upsampler) as one transposed convolution with a
    kernel from transposed_kernel and the upsampler's own bias."""

    def __init__(self, kernel: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.kernel = kernel
        self.bias = bias

    def forward(self, hidden_states: torch.Tensor, output_size: int | None = None) -> torch.Tensor:
        if output_size is not None:
            raise ValueError("StridedUpsample doubles the input; an output_size is not supported")
        return F.conv_transpose2d(hidden_states, self.kernel, self.bias, stride=2, padding=1)


def plain_upsampler(module: nn.Module) -> bool:
    """Whether this is an Upsample2D that interpolates by 2 and then runs a plain 3x3 conv
    (padding 1, stride 1, one group, zero padding), with no norm: the kind StridedUpsample equals.
    Inside a folded call peft's wrappers have given way to the plain convs."""
    if type(module) is not Upsample2D or module.norm is not None or module.use_conv_transpose:
        return False
    conv = getattr(module, "conv", None)
    return (module.use_conv and module.interpolate and type(conv) is nn.Conv2d
            and conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1)
            and conv.dilation == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros")


def plain_upsamplers(decoder: nn.Module) -> list[tuple[nn.ModuleList, int]]:
    """Where the decoder's up blocks have a plain upsampler: (its list, its index), in order."""
    return [(upsamplers, index) for block in getattr(decoder, "up_blocks", [])
            for upsamplers in [getattr(block, "upsamplers", None) or nn.ModuleList()]
            for index, upsampler in enumerate(upsamplers) if plain_upsampler(upsampler)]


class UpsamplerKernels:
    """The transposed kernels of a decoder's plain upsamplers, each rebuilt only when its 3x3
    weight is another tensor or has changed in place since (its version counter)."""

    def __init__(self, decoder: nn.Module) -> None:
        self._decoder = decoder
        self._kernels: dict[int, tuple[torch.Tensor, int, torch.Tensor]] = {}  # position: (weight, version, kernel)

    def current(self) -> list[torch.Tensor]:
        """One kernel per plain upsampler, in the decoder's order."""
        kernels = []
        for position, (upsamplers, index) in enumerate(plain_upsamplers(self._decoder)):
            weight = upsamplers[index].conv.weight
            kept = self._kernels.get(position)
            if kept is None or kept[0] is not weight or kept[1] != weight._version:
                kept = self._kernels[position] = (weight, weight._version, transposed_kernel(weight))
            kernels.append(kept[2])
        return kernels


@contextmanager
def strided_upsamplers(decoder: nn.Module, kernels: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> Iterator[None]:
    """Inside the block the decoder's plain upsamplers run as StridedUpsample with these kernels
    (UpsamplerKernels.current, or the traced graph's inputs that carry them); restored afterwards."""
    places = plain_upsamplers(decoder)
    if len(places) != len(kernels):
        raise ValueError(f"{len(kernels)} kernels for {len(places)} plain upsamplers")
    originals = [upsamplers[index] for upsamplers, index in places]
    try:
        for (upsamplers, index), original, kernel in zip(places, originals, kernels, strict=True):
            upsamplers[index] = StridedUpsample(kernel, original.conv.bias)
        yield
    finally:
        for (upsamplers, index), original in zip(places, originals, strict=True):
            upsamplers[index] = original
