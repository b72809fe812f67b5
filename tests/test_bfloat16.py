"""bfloat16 networks on a float32 store (models.speed.acceleration): which networks are cast, that
every task still runs and gives the float32 image within bf16 rounding, and that the text
encoder, latents and images stay float32. bf16 runs on any CPU (emulated where it has no bf16
instructions), so these tests run everywhere; only the default depends on the CPU."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from diffusers import AutoencoderTiny
from PIL import Image

from bench.build import build_store
from models.running.devices import native_bfloat16
from models.speed import acceleration as speed
from models.speed.acceleration import CONV_NETWORKS, Acceleration, bfloat16_networks
from models.speed.taesd import TINY_TAESD_CONFIG
from pipelines import Studio
from tests.conftest import pixel_distance

CPU = torch.device("cpu")
TASKS = ["sketch_to_image", "edge_to_image", "day_to_night"]
FP32 = Acceleration(attention="sdpa", fold_lora=True)


def tiny_studio(acceleration: Acceleration) -> Studio:
    """The same tiny weights each time (build_store seeds them), prepared with these settings."""
    store = build_store("tiny", CPU, torch.float32, TASKS)
    with torch.random.fork_rng():
        torch.manual_seed(3)
        taesd = AutoencoderTiny(**TINY_TAESD_CONFIG).eval()
    return Studio.prepare(store, preview_decoder=taesd, acceleration=acceleration)


def outputs(studio: Studio, photo: Image.Image) -> dict[str, Image.Image]:
    sketch = np.full((256, 256), 255, dtype=np.uint8)
    sketch[60:200, 128] = 0
    return {
        "text": studio.text_to_image("a red apple", seed=2, width=256, height=256),
        "text preview": studio.text_to_image("a red apple", seed=2, width=256, height=256, preview=True),
        "edit": studio.edit(photo, "a red apple", strength=0.6, seed=2),
        "sketch": studio.sketch_to_image(sketch, "a house", gamma=0.4, seed=2),
        "edge": studio.edge_to_image(photo, "a house")[1],
        "translate": studio.translate(photo, direction="day_to_night"),
    }


def test_the_cpu_default_follows_the_cpus_bf16_instructions() -> None:
    expected = CONV_NETWORKS if native_bfloat16(CPU) else ()
    assert Acceleration.for_device(CPU).bfloat16 == expected
    assert not native_bfloat16(torch.device("meta"))  # only a CPU is asked


def test_small_unets_and_half_precision_stores_stay_as_they_are(monkeypatch: pytest.MonkeyPatch) -> None:
    store = build_store("tiny", CPU, torch.float32, [])
    assert bfloat16_networks(store, CONV_NETWORKS) == ("vae", "preview_decoder")  # the tiny UNet is small
    monkeypatch.setattr(speed, "BFLOAT16_UNET_MIN_PARAMETERS", 1)
    assert bfloat16_networks(store, CONV_NETWORKS) == CONV_NETWORKS
    assert bfloat16_networks(build_store("tiny", CPU, torch.bfloat16, []), CONV_NETWORKS) == ()


def test_the_vae_runs_in_bf16_and_every_task_matches_float32(photo: Image.Image) -> None:
    reference = outputs(tiny_studio(FP32), photo)
    studio = tiny_studio(replace(FP32, bfloat16=CONV_NETWORKS))
    assert studio.acceleration.bfloat16 == ("vae", "preview_decoder")  # as applied: the UNet is small
    base = studio.store.base
    assert (base.vae_dtype, base.unet_dtype, studio.store.dtype) == (torch.bfloat16, torch.float32, torch.float32)
    assert base.vae.decoder.conv_in.weight.dtype == torch.bfloat16
    assert base.unet.conv_in.weight.dtype == torch.float32
    assert next(studio.preview_decoder.parameters()).dtype == torch.bfloat16
    task = studio.store.task("day_to_night")
    assert next(task.skips.parameters()).dtype == torch.bfloat16
    assert all(tensor.dtype == torch.bfloat16 for tensor in task.vae_overrides.values())
    assert studio.store.prompt_embeddings("a red apple").dtype == torch.float32
    mixed = outputs(studio, photo)
    for name, image in mixed.items():
        # bf16 keeps 8 bits of mantissa: measured 0.06-1.0 levels of 255 on average, where two
        # seeds of the same prompt are 38 apart
        assert pixel_distance(image, reference[name]) < 2.0, name
        assert image.size == reference[name].size


def test_a_bf16_unet_runs_too(photo: Image.Image, monkeypatch: pytest.MonkeyPatch) -> None:
    """Large UNets (SD-Turbo) run in bf16 on such CPUs: the conv_in the sketch task swaps in and the
    casts at the UNet's edges follow."""
    monkeypatch.setattr(speed, "BFLOAT16_UNET_MIN_PARAMETERS", 1)
    reference = outputs(tiny_studio(FP32), photo)
    studio = tiny_studio(replace(FP32, bfloat16=CONV_NETWORKS))
    assert studio.store.base.unet_dtype == torch.bfloat16
    assert studio.store.task("sketch_to_image").conv_in[0].dtype == torch.bfloat16
    for name, image in outputs(studio, photo).items():
        assert pixel_distance(image, reference[name]) < 4.0, name


def test_a_dtype_asked_for_is_used_for_every_network() -> None:
    """--dtype float32 turns the bfloat16 VAE off; the default (auto) keeps what the CPU allows."""
    default = Studio.load("tiny", device="cpu", tasks=())
    assert default.acceleration.bfloat16 == tuple(name for name in Acceleration.for_device(CPU).bfloat16
                                                  if name != "unet")
    chosen = Studio.load("tiny", device="cpu", dtype="float32", tasks=())
    assert chosen.acceleration.bfloat16 == ()
    assert chosen.store.base.vae_dtype == torch.float32
    assert next(chosen.preview_decoder.parameters()).dtype == torch.float32
