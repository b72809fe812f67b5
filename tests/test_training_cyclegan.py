"""cyclegan-turbo training on the tiny base: the recipe runs, its loss falls, outputs move toward the
target domain, the discriminators never receive the generator's gradients (upstream's bug), and
the trained forward is the app's forward in both directions."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import torch

import training.cyclegan_turbo as cyclegan
from models.running.img2img_turbo import run_task
from models.weights.base_loading import load_sd_turbo
from models.weights.tiny import write_tiny_hub_layout
from pipelines import Studio
from tests.conftest import float32_cpu_defaults
from tests.training_toy import cpu_trainer
from tests.training_turbo_data import domain_images, write_unpaired
from training.__main__ import main as training_main
from training.cyclegan_turbo import CycleGANTurbo, LossWeights, app_tasks, training_step
from training.pix2pix_turbo import write_task_folder
from training.turbo_common import (CaptionEncoder, DiscriminatorGradientLeak, PatchDiscriminator, PerceptualLoss,
                                   trainable_parameters)

CPU = torch.device("cpu")
SIDE = 16  # the smallest size the tiny VAE (f = 8) and UNet take: fast enough to train in a test


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_hub_layout(tmp_path_factory.mktemp("cyclegan") / "base")


def setup_training(tiny_dir: Path, lr: float):
    torch.manual_seed(0)
    model = CycleGANTurbo(load_sd_turbo(tiny_dir, CPU, torch.float32), 8, 4)
    discriminators = (PatchDiscriminator(), PatchDiscriminator())
    optimizers = {"generator": torch.optim.AdamW(trainable_parameters(*model.trained_modules().values()), lr=lr),
                  "discriminator": torch.optim.AdamW([p for d in discriminators for p in d.parameters()], lr=lr)}
    encode = CaptionEncoder(model.base)
    return model, discriminators, optimizers, (encode(["bright"]), encode(["dark"]))


def as_tensor(images) -> torch.Tensor:
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    return torch.nn.functional.interpolate(pixels, size=SIDE, mode="area")


def translated_means(model: CycleGANTurbo, bright: torch.Tensor, dark: torch.Tensor, texts) -> tuple[float, float]:
    text_a, text_b = texts
    with torch.no_grad():
        to_dark = model(bright, "a2b", text_b.expand(len(bright), -1, -1))
        to_bright = model(dark, "b2a", text_a.expand(len(dark), -1, -1))
    return float(to_dark.mean()), float(to_bright.mean())


def test_outputs_move_toward_the_target_domain(tiny_dir: Path) -> None:
    """Bright (a) <-> dark (b): a->b makes bright images darker than the bright domain, b->a dark ones brighter."""
    model, discriminators, optimizers, texts = setup_training(tiny_dir, lr=3e-3)
    bright, dark = as_tensor(domain_images(140, 230, 8, 0)), as_tensor(domain_images(25, 115, 8, 1))
    perceptual = PerceptualLoss(None, CPU)
    draws = torch.Generator().manual_seed(0)
    for _ in range(8):
        pick = torch.randint(0, 8, (2,), generator=draws)
        training_step(model, discriminators, optimizers, perceptual, bright[pick], dark[pick], texts, LossWeights(), 10.0,
                      trainer=cpu_trainer())
    to_dark, to_bright = translated_means(model, bright, dark, texts)
    midpoint = float(bright.mean() + dark.mean()) / 2
    assert to_dark < midpoint < to_bright, (to_dark, midpoint, to_bright, float(bright.mean()), float(dark.mean()))


def test_discriminators_get_no_gradient_from_the_generator(tiny_dir: Path, monkeypatch) -> None:
    """Without freezing (upstream's bug), the generator's GAN loss writes into the discriminators:
    the discriminator update refuses to run instead of silently training them to call fakes real."""
    model, discriminators, optimizers, texts = setup_training(tiny_dir, lr=1e-3)
    real_a, real_b = torch.rand((2, 2, 3, SIDE, SIDE), generator=torch.Generator().manual_seed(0)) * 2 - 1
    perceptual = PerceptualLoss(None, CPU)
    training_step(model, discriminators, optimizers, perceptual, real_a, real_b, texts, LossWeights(), 10.0,
                  trainer=cpu_trainer())
    monkeypatch.setattr(cyclegan, "frozen", lambda *modules: contextlib.nullcontext())
    with pytest.raises(DiscriminatorGradientLeak):
        training_step(model, discriminators, optimizers, perceptual, real_a, real_b, texts, LossWeights(), 10.0,
                      trainer=cpu_trainer())


def test_loss_falls_on_a_fixed_batch(tiny_dir: Path) -> None:
    model, discriminators, optimizers, texts = setup_training(tiny_dir, lr=3e-3)
    real_a, real_b = as_tensor(domain_images(140, 230, 2, 0)), as_tensor(domain_images(25, 115, 2, 1))
    perceptual = PerceptualLoss(None, CPU)
    losses = [training_step(model, discriminators, optimizers, perceptual, real_a, real_b, texts, LossWeights(), 10.0,
                            trainer=cpu_trainer())
              for _ in range(6)]
    reconstruction = [entry["cycle"] + entry["identity"] for entry in losses]
    assert max(reconstruction[-2:]) < 0.7 * reconstruction[0], reconstruction


@pytest.mark.parametrize(("layout", "task"), [("converted", "day_to_night"), ("converted", "night_to_day"),
                                              ("released", "night_to_day")])
def test_trained_forward_is_the_apps_forward(tiny_dir: Path, tmp_path: Path, monkeypatch, layout: str,
                                             task: str) -> None:
    """The recipe's files (or its weights under upstream's keys as a released .pkl) serve what it trained."""
    model, _, _, _ = setup_training(tiny_dir, lr=1e-3)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in trainable_parameters(*model.trained_modules().values()):
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)
    model_dir = write_tiny_hub_layout(tmp_path / "model")
    if layout == "converted":
        write_task_folder(model_dir, model.task_weights(("day_to_night", "night_to_day")), {}, {})
    else:
        (model_dir / "img2img-turbo").mkdir()
        torch.save(model.upstream_checkpoint(), model_dir / "img2img-turbo" / "night2day.pkl")
    monkeypatch.setenv("ONESTEP_CACHE", str(tmp_path / "cache"))
    studio = Studio.load("local", model_dir=model_dir, device="cpu", tasks=(task,), acceleration=float32_cpu_defaults())
    served_task = studio.store.tasks[task]
    photo = torch.rand((1, 3, 32, 32), generator=generator) * 2 - 1
    side = "a2b" if task == "day_to_night" else "b2a"
    caption = served_task.spec.caption
    with torch.no_grad():
        trained = model(photo, side, CaptionEncoder(model.base)([caption]))
    with studio.store.model_call(task) as call:
        served = run_task(call, photo, served_task.caption_embeddings)
    assert served_task.vae_overrides == {}  # the base VAE stayed frozen, so nothing but LoRA and skips is stored
    assert torch.allclose(trained, served, atol=1e-4), (trained - served).abs().max()


def test_app_tasks_follow_the_captions() -> None:
    assert app_tasks("driving in the day", "driving in the night") == ("day_to_night", "night_to_day")
    assert app_tasks("driving in the day", "driving in heavy rain") == ("clear_to_rainy", "rainy_to_clear")
    assert app_tasks("a horse", "a zebra") is None


def run_recipe(dataset: Path, out: Path, *extra: str) -> Path:
    training_main(["cyclegan-turbo", "--base", "tiny", "--dataset", str(dataset), "--out", str(out), "--steps", "2",
                   "--batch-size", "1", "--resolution", str(SIDE), "--device", "cpu", "--rank-unet", "4", *extra])
    return out


def test_recipe_runs_and_writes_both_directions(tmp_path: Path) -> None:
    out = run_recipe(write_unpaired(tmp_path / "data", count=3), tmp_path / "run")
    files = sorted(path.name for path in (out / "model" / "img2img-turbo").iterdir())
    assert files == ["day2night.safetensors", "night2day.safetensors"]
    record = json.loads((out / "record.json").read_text())
    assert record["status"] == "finished"
    assert {"moved_a2b", "moved_b2a", "peak_rss_mb"} <= set(record["metrics"])
    assert (out / "samples" / "step_000002.png").is_file()


def test_app_pair_replaces_captions_that_match_no_task(tmp_path: Path) -> None:
    dataset = write_unpaired(tmp_path / "data", "a sunny street", "a rainy street", count=2)
    out = run_recipe(dataset, tmp_path / "run", "--app-pair", "clear_rainy")
    info = json.loads((out / "model" / "task.json").read_text())
    assert info["tasks"] == ["clear_to_rainy", "rainy_to_clear"]
    assert (info["caption_a"], info["caption_b"]) == ("driving in the day", "driving in heavy rain")
