"""The VAE decoder's upsamplers as transposed convolutions (models.running.upsampling): the same
function as diffusers' nearest 2x + 3x3 conv, kernels kept until their weights change, swapped in
only where the upsampler is of that plain kind and restored after."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKL
from diffusers.models.upsampling import Upsample2D
from peft import LoraConfig, inject_adapter_in_model

from models.running.upsampling import (StridedUpsample, UpsamplerKernels, plain_upsamplers, strided_upsamplers,
                                       transposed_kernel)


def small_vae() -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(8, 16, 16), layers_per_block=1,
                         down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                         latent_channels=4, norm_num_groups=4).eval()


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shape", [(1, 16, 8, 8), (2, 16, 5, 7)])
def test_one_transposed_convolution_equals_nearest_upsampling_then_the_conv(shape: tuple[int, ...],
                                                                            channels_last: bool) -> None:
    torch.manual_seed(1)
    upsampler = Upsample2D(16, use_conv=True).eval()
    images = torch.randn(shape)
    if channels_last:
        upsampler.to(memory_format=torch.channels_last)
        images = images.to(memory_format=torch.channels_last)
    strided = StridedUpsample(transposed_kernel(upsampler.conv.weight.detach()), upsampler.conv.bias)
    with torch.no_grad():
        expected, got = upsampler(images), strided(images)
    assert got.shape == (shape[0], 16, 2 * shape[2], 2 * shape[3])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_the_decoder_decodes_the_same_with_the_strided_upsamplers_and_is_restored_after() -> None:
    vae = small_vae()
    latents = torch.randn(1, 4, 6, 6)
    originals = [upsamplers[index] for upsamplers, index in plain_upsamplers(vae.decoder)]
    assert len(originals) == 2  # every up block but the last
    with torch.no_grad():
        expected = vae.decode(latents).sample
        with strided_upsamplers(vae.decoder, UpsamplerKernels(vae.decoder).current()):
            assert all(isinstance(upsamplers[index], StridedUpsample)
                       for upsamplers, index in ((block.upsamplers, 0) for block in vae.decoder.up_blocks[:2]))
            got = vae.decode(latents).sample
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert [upsamplers[index] for upsamplers, index in plain_upsamplers(vae.decoder)] == originals


def test_kernels_are_kept_until_their_weight_changes_in_place() -> None:
    vae = small_vae()
    kernels = UpsamplerKernels(vae.decoder)
    first = kernels.current()
    assert all(kept is new for kept, new in zip(first, kernels.current(), strict=True))
    weight = vae.decoder.up_blocks[0].upsamplers[0].conv.weight
    with torch.no_grad():
        weight.mul_(0.5)  # as folding copies into the weights
    second = kernels.current()
    assert second[0] is not first[0] and second[1] is first[1]
    torch.testing.assert_close(second[0], transposed_kernel(weight.detach()))


def test_only_plain_upsamplers_are_replaced() -> None:
    """Outside a folded call peft wraps the upsampler convs; such upsamplers are left as they are."""
    vae = small_vae()
    inject_adapter_in_model(LoraConfig(r=2, target_modules=["conv"]), vae)
    assert plain_upsamplers(vae.decoder) == []
    with pytest.raises(ValueError, match="1 kernels for 0 plain upsamplers"):
        with strided_upsamplers(vae.decoder, [torch.zeros(16, 16, 4, 4)]):
            pass
