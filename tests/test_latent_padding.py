"""Latents off the UNet's size multiple run padded to it (models.running.latent_padding): sizes on
it are untouched (the same tensors, so the same images bit for bit), others are reflect-padded
and cropped back, and text to image draws its noise at the padded size."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from diffusers import UNet2DConditionModel

from models.running.latent_padding import Padding, padded_side, unet_multiple
from models.running.sd_turbo import FINAL_TIMESTEP, SDTurbo
from models.speed.acceleration import Acceleration
from pipelines import Studio
from pipelines.images import LATENT_FACTOR


@pytest.fixture(scope="module")
def studio() -> Studio:
    """The tiny base with the UNet run eagerly, so hooks see its calls (traced graphs skip them)."""
    return Studio.load("tiny", device="cpu", tasks=(), acceleration=Acceleration())


@contextmanager
def unet_input_shapes(unet: UNet2DConditionModel) -> Iterator[list[tuple[int, ...]]]:
    """The shapes of the samples the UNet is called with inside the block."""
    shapes: list[tuple[int, ...]] = []
    handle = unet.register_forward_pre_hook(lambda _module, args: shapes.append(tuple(args[0].shape)))
    try:
        yield shapes
    finally:
        handle.remove()


def test_sides_round_up_to_the_multiple() -> None:
    assert [padded_side(side, 8) for side in (8, 9, 15, 16, 17)] == [8, 16, 16, 16, 24]
    assert Padding.to_multiple(17, 64, 8) == Padding(top=3, bottom=4, left=0, right=0)


def test_sizes_on_the_multiple_pass_as_the_same_tensor() -> None:
    latents = torch.randn(1, 4, 16, 24)
    padding = Padding.to_multiple(16, 24, 8)
    assert padding.is_empty
    assert padding.pad(latents) is latents and padding.crop(latents) is latents


def test_padding_reflects_the_edges_and_the_crop_gives_the_latents_back() -> None:
    latents = torch.randn(1, 4, 9, 13)
    padding = Padding.to_multiple(9, 13, 8)
    padded = padding.pad(latents)
    assert padded.shape == (1, 4, 16, 16)
    assert torch.equal(padding.crop(padded), latents)
    top, left = padding.top, padding.left
    assert torch.equal(padded[..., top - 1, left:left + 13], latents[..., 1, :])  # the row above mirrors row 1
    assert torch.equal(padded[..., top:top + 9, left - 1], latents[..., :, 1])


def test_the_multiple_is_two_to_the_number_of_upsamplers(studio: Studio) -> None:
    unet = studio.store.base.unet
    assert unet_multiple(unet) == 2 ** (len(unet.config.block_out_channels) - 1) == studio.store.base.unet_multiple


def eps_formula(base: SDTurbo, latents: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
    """predict_x0 written out with an unpadded UNet call."""
    eps = base.unet(latents, base.timestep(FINAL_TIMESTEP), encoder_hidden_states=embeddings).sample
    alpha_bar = base.alphas_cumprod[FINAL_TIMESTEP]
    return (latents - (1 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()


def test_predict_x0_on_the_multiple_is_the_unpadded_call_bit_for_bit(studio: Studio) -> None:
    base = studio.store.base
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 4, 4 * base.unet_multiple, 6 * base.unet_multiple, generator=generator)
    with studio.store.model_call(), unet_input_shapes(base.unet) as shapes:
        embeddings = studio.store.prompt_embeddings("a cat")
        assert torch.equal(base.predict_x0(latents, FINAL_TIMESTEP, embeddings), eps_formula(base, latents, embeddings))
    assert shapes == [tuple(latents.shape)] * 2


@pytest.mark.parametrize(("height", "width"), [(17, 32), (32, 17), (9, 11)])
def test_predict_x0_off_the_multiple_runs_the_unet_padded_and_keeps_the_size(studio: Studio, height: int,
                                                                               width: int) -> None:
    base = studio.store.base
    multiple = base.unet_multiple
    latents = torch.randn(1, 4, height, width, generator=torch.Generator().manual_seed(1))
    padding = Padding.to_multiple(height, width, multiple)
    with studio.store.model_call(), unet_input_shapes(base.unet) as shapes:
        embeddings = studio.store.prompt_embeddings("a cat")
        x0 = base.predict_x0(latents, FINAL_TIMESTEP, embeddings)
        expected = padding.crop(eps_formula(base, padding.pad(latents), embeddings))
    assert shapes[0] == (1, 4, padded_side(height, multiple), padded_side(width, multiple))
    assert x0.shape == latents.shape
    torch.testing.assert_close(x0, expected)


@pytest.mark.parametrize("width", [264, 259, 392])
def test_text_to_image_draws_noise_at_the_unets_size(studio: Studio, width: int) -> None:
    """Off-multiple widths: the UNet gets fresh noise at the padded size (nothing to pad), the
    image the requested size."""
    base = studio.store.base
    height = studio.limits.min_side
    pixel_multiple = LATENT_FACTOR * base.unet_multiple
    with unet_input_shapes(base.unet) as shapes:
        image = studio.text_to_image("a cat", seed=2, width=width, height=height)
    assert image.size == (width, height)
    assert [shape[-2:] for shape in shapes] == [(padded_side(height, pixel_multiple) // LATENT_FACTOR,
                                                 padded_side(width, pixel_multiple) // LATENT_FACTOR)]
