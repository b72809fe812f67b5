"""The speed settings as the app runs them (issue 10 items 1 and 2), on tiny models on the CPU:
Studio.load applies the device's settings once, warm-up runs the shapes the app serves when
graphs are compiled, and live text previews decode with the source's preview decoder (TAESD)
while the final image always uses the full VAE."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderTiny
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

from bench.build import build_store
from models.running.img2img_turbo import run_task
from models.running.store import ModelStore
from models.speed.acceleration import CONV_NETWORKS, Acceleration, set_attention
from models.speed.taesd import PREVIEW_FOLDER, TAESD_REPO, TINY_TAESD_CONFIG, preview_decoder_for
from models.weights.sources import SourceInfo
from pipelines import Studio
from pipelines.limits import Limits
from pipelines.text_to_image import text_to_image
from pipelines.warm_up import WarmUpCall, warm_up_plan
from tests.conftest import pixel_distance

CPU = torch.device("cpu")
TASKS = ("edge_to_image", "sketch_to_image", "day_to_night")


@pytest.fixture()
def fresh_studio_parts() -> tuple:
    """A fresh tiny store with three tasks and a tiny TAESD: these tests change module settings."""
    store = build_store("tiny", CPU, torch.float32, list(TASKS))
    return store, AutoencoderTiny(**TINY_TAESD_CONFIG).eval()


# --- item 1: settings applied once at load ---------------------------------------------------------

def test_load_applies_the_device_settings(studio: Studio) -> None:
    defaults = Acceleration.for_device(CPU)
    # as applied: the tiny UNet is too small for bf16 (BFLOAT16_UNET_MIN_PARAMETERS)
    assert studio.acceleration == replace(defaults, bfloat16=tuple(n for n in defaults.bfloat16 if n != "unet"))
    processors = studio.store.base.unet.attn_processors.values()
    assert processors and all(isinstance(processor, AttnProcessor2_0) for processor in processors)
    # on the CPU channels_last pays for the VAE and TAESD, not for the UNet (bench/RESULTS.md)
    channels_last = torch.channels_last
    assert studio.store.base.vae.decoder.conv_in.weight.is_contiguous(memory_format=channels_last)
    assert studio.preview_decoder.decoder.layers[0].weight.is_contiguous(memory_format=channels_last)
    assert not studio.store.base.unet.conv_in.weight.is_contiguous(memory_format=channels_last)


def test_prepare_sets_attention_and_memory_format_and_keeps_the_images(fresh_studio_parts: tuple) -> None:
    store, taesd = fresh_studio_parts
    set_attention([store.base.unet, store.base.vae], "classic")
    before = text_to_image(store, "a lighthouse", seed=3, width=256, height=256)
    edge_before = edge_forward(store)
    before_preview = text_to_image(store, "a lighthouse", seed=3, width=256, height=256, preview_decoder=taesd)
    studio = Studio.prepare(store, preview_decoder=taesd, acceleration=Acceleration(channels_last=CONV_NETWORKS))
    for model in (store.base.unet, store.base.vae):
        assert all(isinstance(p, AttnProcessor2_0) for p in model.attn_processors.values())
    assert not any(isinstance(p, AttnProcessor) for p in store.base.unet.attn_processors.values())
    assert store.base.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert store.base.vae.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert taesd.decoder.layers[0].weight.is_contiguous(memory_format=torch.channels_last)
    skip = next(iter(store.task("edge_to_image").skips.parameters()))
    assert skip.is_contiguous(memory_format=torch.channels_last)
    assert pixel_distance(studio.text_to_image("a lighthouse", seed=3, width=256, height=256), before) < 1.0
    after_preview = studio.text_to_image("a lighthouse", seed=3, width=256, height=256, preview=True)
    assert pixel_distance(after_preview, before_preview) < 1.0
    # a task's forward (skip convs, adapters) on a random control; the tiny random VAE's GroupNorms
    # amplify rounding on near-constant inputs, so tests comparing with a reference load NCHW
    torch.testing.assert_close(edge_forward(store), edge_before, atol=2e-3, rtol=0)


def edge_forward(store: ModelStore) -> torch.Tensor:
    control = (torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1)) > 0.9).float()
    with store.model_call("edge_to_image") as call:
        return run_task(call, control, store.prompt_embeddings("a cat"))


# --- item 1: warm-up at the served shapes --------------------------------------------------------

def test_compiled_warm_up_covers_the_served_shapes() -> None:
    limits = Limits.for_native_side(512)
    plan = warm_up_plan(limits, ("sketch_to_image", "edge_to_image", "day_to_night", "rainy_to_clear"),
                        per_shape=True, preview_side=256, has_preview_decoder=True)
    assert WarmUpCall("text_to_image", 512) in plan and WarmUpCall("text_to_image", 512, preview=True) in plan
    sketches = {(call.side, call.gamma) for call in plan if call.task == "sketch_to_image"}
    assert sketches == {(side, gamma) for side in (256, 512) for gamma in (1.0, limits.default_gamma)}
    assert WarmUpCall("edit", 512) in plan and WarmUpCall("edge_to_image", 512) in plan
    assert {call.direction for call in plan if call.task == "translate"} == {"day_to_night", "rainy_to_clear"}


def test_uncompiled_warm_up_is_one_small_call_per_task() -> None:
    limits = Limits.for_native_side(512)
    plan = warm_up_plan(limits, ("sketch_to_image",), per_shape=False, preview_side=256, has_preview_decoder=False)
    assert plan == [WarmUpCall("text_to_image", 256), WarmUpCall("edit", 256),
                    WarmUpCall("sketch_to_image", 256, gamma=limits.default_gamma)]


def test_warm_up_runs_its_plan(fresh_studio_parts: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    """A compiled Studio warms every task at the served shapes (compilation itself is CUDA's; the
    calls are recorded here, not run)."""
    store, taesd = fresh_studio_parts
    studio = Studio(store, preview_decoder=taesd, acceleration=Acceleration(compile_mode="reduce-overhead"))
    calls: list[tuple[str, object]] = []
    for name in ("text_to_image", "edit", "sketch_to_image", "edge_to_image", "translate"):
        monkeypatch.setattr(studio, name, lambda *args, _name=name, **kwargs: calls.append((_name, kwargs)))
    studio.warm_up(preview_side=128)
    tasks = [name for name, _ in calls]
    assert set(tasks) == {"text_to_image", "edit", "sketch_to_image", "edge_to_image", "translate"}
    assert {kwargs["gamma"] for name, kwargs in calls if name == "sketch_to_image"} == {1.0, 0.4}
    assert [kwargs["preview"] for name, kwargs in calls if name == "text_to_image"] == [False, True]
    native = studio.limits.native_side
    assert all(kwargs["width"] == native for name, kwargs in calls if name == "text_to_image")


# --- item 2: the preview decoder -----------------------------------------------------------------

def test_live_preview_uses_the_preview_decoder_and_the_final_image_the_full_vae(studio: Studio) -> None:
    assert isinstance(studio.preview_decoder, AutoencoderTiny)
    full = studio.text_to_image("a boat", seed=5, width=256, height=256)
    preview = studio.text_to_image("a boat", seed=5, width=256, height=256, preview=True)
    assert pixel_distance(full, text_to_image(studio.store, "a boat", seed=5, width=256, height=256)) == 0.0
    assert pixel_distance(preview, text_to_image(studio.store, "a boat", seed=5, width=256, height=256,
                                                 preview_decoder=studio.preview_decoder)) == 0.0
    assert pixel_distance(preview, full) > 1.0


def test_without_a_preview_decoder_previews_use_the_full_vae(fresh_studio_parts: tuple) -> None:
    store, _ = fresh_studio_parts
    studio = Studio(store)
    full = studio.text_to_image("a boat", seed=5, width=256, height=256)
    assert pixel_distance(studio.text_to_image("a boat", seed=5, width=256, height=256, preview=True), full) == 0.0


def written_taesd(folder: Path) -> AutoencoderTiny:
    """A tiny AutoencoderTiny saved in diffusers' layout (config.json + safetensors), as TAESD is."""
    with torch.random.fork_rng():
        torch.manual_seed(7)
        taesd = AutoencoderTiny(**TINY_TAESD_CONFIG)
    taesd.save_pretrained(folder, safe_serialization=True)
    return taesd


def test_a_taesd_folder_beside_local_weights_is_loaded(tmp_path: Path) -> None:
    written = written_taesd(tmp_path / PREVIEW_FOLDER)
    source = SourceInfo("local", "local", "test", base_dir=tmp_path, model_dir=tmp_path)
    found = preview_decoder_for(source, 4, CPU, torch.float32)
    assert found.decoder is not None and str(tmp_path / PREVIEW_FOLDER) in found.origin
    for name, tensor in written.state_dict().items():
        torch.testing.assert_close(found.decoder.state_dict()[name], tensor)
    assert not found.decoder.training


def test_local_weights_without_taesd_fall_back_to_the_full_vae(tmp_path: Path) -> None:
    found = preview_decoder_for(SourceInfo("local", "local", "test", base_dir=tmp_path), 4, CPU, torch.float32)
    assert found.decoder is None and f"no {PREVIEW_FOLDER}/ folder" in found.origin


def test_a_decoder_for_other_latents_is_not_used(tmp_path: Path) -> None:
    written_taesd(tmp_path / PREVIEW_FOLDER)
    found = preview_decoder_for(SourceInfo("local", "local", "test", base_dir=tmp_path), 8, CPU, torch.float32)
    assert found.decoder is None and "4 latent channels" in found.origin and "makes 8" in found.origin


def test_the_hub_source_fetches_taesd_through_huggingface_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    written_taesd(tmp_path / "snapshot")
    asked: list[dict[str, object]] = []

    def snapshot_download(repo_id: str, **kwargs: object) -> str:
        asked.append({"repo_id": repo_id, **kwargs})
        return str(tmp_path / "snapshot")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    found = preview_decoder_for(SourceInfo("hub", "hub", "test", base_dir=tmp_path / "sd-turbo"), 4, CPU,
                                torch.float32)
    assert found.decoder is not None
    assert asked[0]["repo_id"] == TAESD_REPO and asked[0]["local_files_only"] is False
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    preview_decoder_for(SourceInfo("hub", "hub", "test"), 4, CPU, torch.float32)
    assert asked[1]["local_files_only"] is True  # offline: the cache only


def test_offline_and_not_cached_means_the_full_vae(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    found = preview_decoder_for(SourceInfo("hub", "hub", "test"), 4, CPU, torch.float32)
    assert found.decoder is None and TAESD_REPO in found.origin


# --- item 3: live events keep only the newest input ----------------------------------------------

def test_every_live_event_keeps_only_the_newest_input_and_shares_one_model_queue(studio: Studio) -> None:
    """The browser test shows the behaviour for typing; this pins the wiring of every live event."""
    from ui import build_app

    demo = build_app(studio, queue_size=2)
    live = [fn for fn in demo.fns.values() if fn.api_name and fn.api_name.startswith("live_")]
    assert {fn.api_name for fn in live} >= {"live_preview", "live_draw", "live_follow"}
    for fn in live:
        assert (fn.trigger_mode, fn.concurrency_id, fn.concurrency_limit) == ("always_last", "gpu", "default")
    assert demo._queue.default_concurrency_limit == 1
