"""Text to image on the tiny SD-Turbo: sizes, determinism, bad input, long prompts, non-finite
output, and equivalence with diffusers' own one-step SD-Turbo sampling."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline
from PIL import Image

import pipelines.text_to_image as text_to_image_module
from models.weights.configs import SCHEDULER_CONFIG
from models.running.sd_turbo import FINAL_TIMESTEP
from models.running.errors import PromptTruncatedWarning
from pipelines import Studio
from pipelines.errors import InputError, NonFiniteOutputError
from pipelines.images import seeded_noise
from tests.conftest import float32_cpu_defaults, pixel_distance

PROMPT = "a red fox in snow"
LONG_PROMPT = "a red fox standing in deep fresh snow under a pale winter sky " * 4
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def own_studio() -> Studio:
    """A separate tiny Studio without tasks, for tests that hook or break its models."""
    return Studio.load("tiny", device="cpu", tasks=(), acceleration=float32_cpu_defaults())


@pytest.mark.parametrize(("width", "height"), [(256, 256), (300, 260), (257, 1024)])
def test_output_is_rgb_of_the_requested_size(studio: Studio, width: int, height: int) -> None:
    """Sizes that are not multiples of 8 too (generated at the next multiple, centre-cropped)."""
    image = studio.text_to_image(PROMPT, seed=0, width=width, height=height)
    assert isinstance(image, Image.Image)
    assert image.mode == "RGB"
    assert image.size == (width, height)


def test_same_seed_same_image_and_other_seed_other_image(studio: Studio) -> None:
    first = studio.text_to_image(PROMPT, seed=7, width=256, height=256)
    again = studio.text_to_image(PROMPT, seed=7, width=256, height=256)
    other = studio.text_to_image(PROMPT, seed=8, width=256, height=256)
    assert np.array_equal(np.asarray(first), np.asarray(again))
    assert pixel_distance(first, other) > 1.0


SIDE_RANGE = "256 to 1024"
SEED_RANGE = "0 to 4294967295"
BAD_ARGUMENTS: list[tuple[str, object, str]] = [
    *((side, value, SIDE_RANGE) for side in ("width", "height") for value in (255, 1025, 512.5, True, "512")),
    *(("seed", value, SEED_RANGE) for value in (-1, 2**32, 1.5, None)),
    *(("prompt", value, "string") for value in (None, 3)),
]


@pytest.mark.parametrize(("name", "value", "allowed"), BAD_ARGUMENTS)
def test_bad_arguments_name_argument_value_and_range(studio: Studio, name: str, value: object, allowed: str) -> None:
    arguments: dict[str, object] = {"prompt": PROMPT, "seed": 0, "width": 256, "height": 256, name: value}
    with pytest.raises(InputError) as raised:
        studio.text_to_image(**arguments)
    message = str(raised.value)
    assert f"{name}={value!r}" in message
    assert allowed in message


def test_sides_default_to_the_native_side_of_the_source(studio: Studio) -> None:
    assert studio.limits.native_side == 512
    assert studio.text_to_image(PROMPT, height=256).size == (512, 256)


def test_long_prompt_is_truncated_with_a_warning(studio: Studio) -> None:
    with pytest.warns(PromptTruncatedWarning):
        image = studio.text_to_image(LONG_PROMPT, seed=0, width=256, height=256)
    assert image.size == (256, 256)


def prompt_of_tokens(studio: Studio, count: int) -> str:
    """A one-word prompt that the tokenizer turns into exactly `count` ids (start and end included)."""
    tokenizer = studio.store.base.tokenizer
    for length in range(1, 200):
        prompt = "a" * length
        if len(tokenizer(prompt).input_ids) == count:
            return prompt
    raise AssertionError(f"no prompt of {count} tokens")


def test_truncation_warning_starts_above_77_tokens_and_repeats_on_cache_hits(studio: Studio) -> None:
    store = studio.store
    with warnings.catch_warnings():
        warnings.simplefilter("error", PromptTruncatedWarning)
        store.prompt_embeddings(prompt_of_tokens(studio, store.base.max_prompt_tokens))
    too_long = prompt_of_tokens(studio, store.base.max_prompt_tokens + 1)
    for _ in range(2):
        with pytest.warns(PromptTruncatedWarning):
            store.prompt_embeddings(too_long)


def test_non_finite_model_output_is_an_error_not_a_black_image() -> None:
    """One NaN weight in a separate Studio's UNet; the shared session Studio is left alone."""
    broken = Studio.load("tiny", device="cpu", tasks=())
    broken.store.base.unet.conv_out.bias.data[0] = float("nan")
    with pytest.raises(NonFiniteOutputError):
        broken.text_to_image(PROMPT, seed=0, width=256, height=256)


@pytest.fixture
def decoded_pixels(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[torch.Tensor]]:
    """The VAE output that text_to_image hands to to_pil, in [-1, 1], captured per call."""
    captured: list[torch.Tensor] = []
    convert = text_to_image_module.to_pil

    def capture(tensor: torch.Tensor) -> Image.Image:
        captured.append(tensor.clone())
        return convert(tensor)

    monkeypatch.setattr(text_to_image_module, "to_pil", capture)
    yield captured


def diffusers_pipeline(studio: Studio) -> StableDiffusionPipeline:
    """diffusers' SD pipeline on the Studio's own tiny components, with SD-Turbo's Euler scheduler."""
    base = studio.store.base
    pipeline = StableDiffusionPipeline(
        vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer, unet=base.unet,
        scheduler=EulerDiscreteScheduler.from_config(SCHEDULER_CONFIG), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def test_x0_prediction_equals_one_euler_step(own_studio: Studio) -> None:
    """predict_x0 at t = 999 on x_t equals diffusers' Euler step from sigma_max to 0 on the sample
    x = x_t * sqrt(sigma^2 + 1), whose scaled model input is x_t again (the maths are in the
    docstring of test_equals_diffusers_one_step_sd_turbo)."""
    base = own_studio.store.base
    scheduler = EulerDiscreteScheduler.from_config(SCHEDULER_CONFIG)
    scheduler.set_timesteps(1)
    sigma = scheduler.sigmas[0]
    x_t = seeded_noise(5, (1, 4, 32, 32), base.device, base.dtype)
    embeddings = own_studio.store.prompt_embeddings(PROMPT)
    with torch.inference_mode():
        ours = base.predict_x0(x_t, FINAL_TIMESTEP, embeddings)
        sample = x_t * (sigma**2 + 1) ** 0.5
        eps = base.unet(scheduler.scale_model_input(sample, scheduler.timesteps[0]), scheduler.timesteps[0],
                        encoder_hidden_states=embeddings).sample
        theirs = scheduler.step(eps, scheduler.timesteps[0], sample).prev_sample
    assert float(scheduler.timesteps[0]) == FINAL_TIMESTEP
    assert torch.allclose(ours, theirs, atol=TOLERANCE, rtol=0)


def test_equals_diffusers_one_step_sd_turbo(own_studio: Studio, decoded_pixels: list[torch.Tensor]) -> None:
    """Our text_to_image equals diffusers' StableDiffusionPipeline run as SD-Turbo's model card
    runs it (EulerDiscreteScheduler, "trailing" spacing, num_inference_steps=1, guidance_scale=0)
    on the same components and the same seeded noise n, to 1e-4 in [0, 1] pixels.

    The maths. With abar = alphas_cumprod[999] and sigma = sigma_max = sqrt((1 - abar) / abar):
    diffusers' prepare_latents multiplies the latents passed in by init_noise_sigma, which is sigma
    for "trailing" spacing, so the sample is x = sigma * n (n is passed in as is; multiplying it by
    init_noise_sigma here would scale it twice). scale_model_input divides by sqrt(sigma^2 + 1) =
    1 / sqrt(abar), so the UNet sees x_t = sqrt(1 - abar) * n at t = 999. The one Euler step to
    sigma = 0 for an epsilon model gives x0 = x - sigma * eps = sigma * (n - eps), and the DDPM x0
    formula on that x_t gives (x_t - sqrt(1 - abar) * eps) / sqrt(abar) = sigma * (n - eps): the
    same. So the two agree exactly when our pipeline starts from x_t = sqrt(1 - abar) * n, the
    forward diffusion of a zero latent to t = 999 (what edit at strength 1 also does).
    """
    width = height = 256
    image = own_studio.text_to_image(PROMPT, seed=3, width=width, height=height)
    ours = (decoded_pixels[0] / 2 + 0.5).clamp(0, 1)
    noise = seeded_noise(3, (1, 4, height // 8, width // 8), torch.device("cpu"), torch.float32)
    theirs = diffusers_pipeline(own_studio)(
        PROMPT, num_inference_steps=1, guidance_scale=0.0, latents=noise, height=height, width=width,
        output_type="pt").images
    assert image.size == (width, height)
    assert ours.shape == theirs.shape
    assert float((ours - theirs).abs().max()) <= TOLERANCE
