"""Our speed settings keep the outputs: SDPA vs classic attention, channels_last, merged LoRA,
and the TAESD preview path of text to image (tiny random models, CPU)."""

from __future__ import annotations

import pytest
import torch

from bench.build import build_store
from models.speed.acceleration import (CONV_NETWORKS, Acceleration, accelerate, merge_task, set_attention,
                                       set_channels_last, unmerge_task)
from models.running.img2img_turbo import run_task
from models.running.sd_turbo import FINAL_TIMESTEP
from models.running.store import ModelStore
from models.speed.taesd import TINY_TAESD_CONFIG, build_taesd, preview_decode
from pipelines.text_to_image import text_to_image
from tests.conftest import pixel_distance

CPU = torch.device("cpu")


@pytest.fixture()
def store() -> ModelStore:
    """A fresh tiny store per test: these tests change settings on its modules."""
    return build_store("tiny", CPU, torch.float32, ["edge_to_image", "day_to_night"])


def unet_output(store: ModelStore) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(1, 4, 32, 32, generator=generator)
    with torch.inference_mode():
        return store.base.predict_x0(noise, FINAL_TIMESTEP, store.prompt_embeddings("a cat"))


def edge_output(store: ModelStore) -> torch.Tensor:
    control = (torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1)) > 0.9).float()
    with store.model_call("edge_to_image") as call:
        return run_task(call, control, store.prompt_embeddings("a cat"))


def test_classic_and_sdpa_attention_agree(store: ModelStore) -> None:
    sdpa = unet_output(store)
    set_attention([store.base.unet], "classic")
    torch.testing.assert_close(unet_output(store), sdpa, atol=1e-4, rtol=1e-4)


def test_channels_last_keeps_the_output_and_the_layout(store: ModelStore) -> None:
    before = unet_output(store)
    set_channels_last([store.base.unet], True)
    assert store.base.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(unet_output(store), before, atol=1e-4, rtol=1e-4)


def test_accelerate_keeps_the_image(store: ModelStore) -> None:
    before = text_to_image(store, "a lighthouse", seed=3, width=256, height=256)
    accelerate(store, Acceleration(attention="sdpa", channels_last=CONV_NETWORKS, compile_mode="off"))
    assert pixel_distance(text_to_image(store, "a lighthouse", seed=3, width=256, height=256), before) < 1.0


def test_cpu_defaults_compile_nothing() -> None:
    assert Acceleration.for_device(CPU).compile_mode == "off"
    assert Acceleration.for_device(torch.device("cuda")).compile_mode == "reduce-overhead"


def test_merged_lora_gives_the_unmerged_output_and_unmerging_restores_the_weights(store: ModelStore) -> None:
    unmerged = edge_output(store)
    weights = {name: tensor.clone() for name, tensor in store.base.unet.state_dict().items()}
    task = store.task("edge_to_image")
    with torch.inference_mode():
        merge_task(store, task)
    changed = [name for name, tensor in store.base.unet.state_dict().items() if not torch.equal(tensor, weights[name])]
    assert changed and all("base_layer" in name for name in changed)
    torch.testing.assert_close(edge_output(store), unmerged, atol=1e-4, rtol=1e-4)
    unmerge_task(store, task)
    for name, tensor in store.base.unet.state_dict().items():
        torch.testing.assert_close(tensor, weights[name], atol=1e-6, rtol=1e-6)


def test_taesd_preview_decodes_unet_latents_to_pixels() -> None:
    taesd = build_taesd(TINY_TAESD_CONFIG, CPU, torch.float32)
    with torch.inference_mode():
        pixels = preview_decode(taesd, torch.randn(1, 4, 32, 40))
    assert pixels.shape == (1, 3, 256, 320)
    assert pixels.min() >= -1 and pixels.max() <= 1


def test_text_to_image_preview_uses_taesd(store: ModelStore) -> None:
    taesd = build_taesd(TINY_TAESD_CONFIG, CPU, torch.float32)
    full = text_to_image(store, "a boat", seed=5, width=256, height=264)
    preview = text_to_image(store, "a boat", seed=5, width=256, height=264, preview_decoder=taesd)
    assert preview.size == full.size == (256, 264)
    assert pixel_distance(preview, full) > 1.0
    again = text_to_image(store, "a boat", seed=5, width=256, height=264, preview_decoder=taesd)
    assert pixel_distance(again, preview) == 0.0
