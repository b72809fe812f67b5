"""pix2pix-Turbo and CycleGAN-Turbo on the shared base match the reference forward pass.

Tiny random SD-Turbo saved in the Hub layout, tiny checkpoints written in each released .pkl
layout; the app loads them with source="local" (converting them to safetensors) and must give what
the reference computation in tests/reference_img2img.py gives, to 1e-4.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.running.img2img_turbo import run_task
from models.speed.acceleration import Acceleration
from models.weights.tiny import build_tiny_networks, write_tiny_hub_layout
from pipelines import Studio
from pipelines.images import seeded_noise
from tests import reference_img2img as ref

TOLERANCE = 1e-4
GAMMAS = (0.2, 0.4, 1.0)
PERTURBED_B2A = "decoder.conv_in.base_layer.weight"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    """Write the base and the six released-layout checkpoints, load them all into one Studio.

    The Studio keeps every network in the NCHW layout the reference uses: on the CPU it otherwise
    stores the VAE channels_last, which rounds differently, and the tiny random VAE's GroupNorms
    amplify that on a sketch's near-constant regions (measured: up to 146 levels on the 512 px
    sketch below, against 1e-3 on random controls). The layouts' agreement is tests/test_speed.py's."""
    root = tmp_path_factory.mktemp("img2img")
    model_dir = write_tiny_hub_layout(root / "sd-turbo")
    checkpoints = model_dir / "img2img-turbo"
    checkpoints.mkdir()
    _, unet, vae = build_tiny_networks()
    references = {
        "edge_to_image": ref.make_pix2pix(unet, vae, False, 1, checkpoints / "edge_to_image_loras.pkl"),
        "sketch_to_image": ref.make_pix2pix(unet, vae, True, 2, checkpoints / "sketch_to_image_stochastic_lora.pkl"),
        "day_to_night": ref.make_cyclegan(unet, vae, 3, checkpoints / "day2night.pkl"),
        "night_to_day": ref.make_cyclegan(unet, vae, 4, checkpoints / "night2day.pkl"),
        "clear_to_rainy": ref.make_cyclegan(unet, vae, 5, checkpoints / "clear2rainy.pkl"),
        "rainy_to_clear": ref.make_cyclegan(unet, vae, 6, checkpoints / "rainy2clear.pkl", perturb_b2a=PERTURBED_B2A),
    }
    cache = root / "cache"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ONESTEP_CACHE", str(cache))
        studio = Studio.load("local", model_dir=model_dir, device="cpu", acceleration=Acceleration())
    return studio, references, cache


def control_map(seed: int, size: tuple[int, int] = (64, 48)) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    lines = (torch.rand((1, 1, size[1], size[0]), generator=generator) > 0.8).float()
    return lines.expand(1, 3, size[1], size[0]).contiguous()


def test_every_task_loads_from_released_layouts(setup) -> None:
    studio, references, cache = setup
    assert studio.unavailable_tasks == {}
    assert set(studio.store.tasks) == set(references)
    converted = sorted(path.name for path in (cache / "img2img-turbo").glob("*.safetensors"))
    assert converted == sorted(spec.converted_filename for spec in (t.spec for t in studio.store.tasks.values()))


def test_vae_weights_are_stored_only_where_they_differ_from_the_base(setup) -> None:
    studio, _, _ = setup
    overrides = {task: sorted(model.vae_overrides) for task, model in studio.store.tasks.items()}
    assert overrides["rainy_to_clear"] == ["decoder.conv_in.weight"]
    assert all(not names for task, names in overrides.items() if task != "rainy_to_clear")


def test_under_bf16_the_vae_is_compared_with_the_base_as_stored(setup, tmp_path: Path, monkeypatch) -> None:
    """The resident VAE is rounded to bf16; conversion must still see that the checkpoint's tensors
    equal SD-Turbo's fp32 ones (else nearly all would be stored as overrides)."""
    studio, _, _ = setup
    monkeypatch.setenv("ONESTEP_CACHE", str(tmp_path / "cache"))
    half = Studio.load("local", model_dir=studio.source.model_dir, device="cpu", dtype="bfloat16",
                       tasks=("day_to_night", "rainy_to_clear"))
    assert half.unavailable_tasks == {}
    overrides = {task: sorted(model.vae_overrides) for task, model in half.store.tasks.items()}
    assert overrides == {"day_to_night": [], "rainy_to_clear": ["decoder.conv_in.weight"]}


def test_edge_model_matches_reference(setup) -> None:
    studio, references, _ = setup
    reference = references["edge_to_image"]
    embeddings = studio.store.prompt_embeddings("a cozy cabin")
    control = control_map(0)
    with studio.store.model_call("edge_to_image") as call:
        ours = run_task(call, control, embeddings)
    expected = ref.reference_forward(reference.unet, reference.vae, control, embeddings)
    assert torch.allclose(ours, expected, atol=TOLERANCE), (ours - expected).abs().max()


@pytest.mark.parametrize("gamma", GAMMAS)
def test_sketch_model_matches_reference(setup, gamma: float) -> None:
    studio, references, _ = setup
    reference = references["sketch_to_image"]
    embeddings = studio.store.prompt_embeddings("a cat")
    control = control_map(1)
    noise = seeded_noise(7, (1, 4, 6, 8), torch.device("cpu"), torch.float32)
    with studio.store.model_call("sketch_to_image", gamma=gamma) as call:
        ours = run_task(call, control, embeddings, noise=noise)
    expected = ref.reference_forward(reference.unet, reference.vae, control, embeddings, gamma=gamma, noise=noise)
    assert torch.allclose(ours, expected, atol=TOLERANCE), (ours - expected).abs().max()


@pytest.mark.parametrize("direction", ["day_to_night", "night_to_day", "clear_to_rainy", "rainy_to_clear"])
def test_cyclegan_directions_match_reference(setup, direction: str) -> None:
    studio, references, _ = setup
    task = studio.store.tasks[direction]
    reference = references[direction]
    vae = reference.vae_a2b if task.spec.vae_side == "a2b" else reference.vae_b2a
    photo = torch.rand((1, 3, 64, 64), generator=torch.Generator().manual_seed(3)) * 2 - 1
    with studio.store.model_call(direction) as call:
        ours = run_task(call, photo, task.caption_embeddings)
    expected = ref.reference_forward(reference.unet, vae, photo, studio.store.prompt_embeddings(task.spec.caption))
    assert torch.allclose(ours, expected, atol=TOLERANCE), (ours - expected).abs().max()


def test_sketch_pipeline_matches_reference_end_to_end(setup) -> None:
    """From a 512x512 PIL sketch (dark strokes on white) to the PIL image, at gamma 0.4."""
    studio, references, _ = setup
    reference = references["sketch_to_image"]
    canvas = np.full((512, 512), 255, dtype=np.uint8)
    canvas[100:400, 200:204] = 0
    canvas[300:304, 50:450] = 0
    image = studio.sketch_to_image(Image.fromarray(canvas), "a cat", gamma=0.4, seed=5)
    control = torch.from_numpy(canvas < 128).float().expand(1, 3, 512, 512)
    noise = seeded_noise(5, (1, 4, 64, 64), torch.device("cpu"), torch.float32)
    expected = ref.reference_forward(reference.unet, reference.vae, control, studio.store.prompt_embeddings("a cat"),
                                     gamma=0.4, noise=noise)
    expected_pixels = ((expected[0].clamp(-1, 1) + 1) * 127.5).round().permute(1, 2, 0).numpy()
    assert np.abs(np.asarray(image, dtype=np.float64) - expected_pixels).max() <= 1


def test_converted_files_are_reused_without_the_pickles(setup, tmp_path: Path, monkeypatch) -> None:
    """Once converted, the .pkl files are no longer needed: a second load reads the safetensors."""
    studio, _, cache = setup
    model_dir = write_tiny_hub_layout(tmp_path / "sd-turbo")  # no img2img-turbo folder this time
    monkeypatch.setenv("ONESTEP_CACHE", str(cache))
    again = Studio.load("local", model_dir=model_dir, device="cpu", acceleration=Acceleration())
    assert again.unavailable_tasks == {}
    sketch = np.full((64, 64), 255, dtype=np.uint8)
    sketch[10:50, 30] = 0
    first = studio.sketch_to_image(sketch, "x", gamma=0.6, seed=2)
    second = again.sketch_to_image(sketch, "x", gamma=0.6, seed=2)
    assert np.array_equal(np.asarray(first), np.asarray(second))
