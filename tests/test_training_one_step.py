"""The one-step (UFOGen) recipe on a tiny teacher and tiny generated captioned data (CPU, seconds)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from models.weights.base_loading import load_sd_turbo
from models.weights.tiny import write_tiny_hub_layout
from training.__main__ import main as training_main
from tests.training_toy import cpu_trainer
from training.common import load_captioned_images
from training.latent_diffusion import euler_from_noise
from training.one_step import (FINAL_TIMESTEP, Discriminator, TeacherTargets, UFOGenDraws, UFOGenSettings,
                               encode_text, generator_inputs, one_step_images, sample_discriminator_steps,
                               sample_timesteps, ufogen_step)

RESOLUTION = 64
SERVED_SIDE = 256  # the smallest side the app draws
COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (30, 60, 220), "yellow": (240, 220, 40)}


def write_captioned(root: Path) -> Path:
    """A captioned image folder (imagefolder layout: train/*.png + train/metadata.jsonl) of coloured shapes."""
    folder = root / "train"
    folder.mkdir(parents=True)
    rows = []
    yy, xx = np.mgrid[:RESOLUTION, :RESOLUTION]
    disc = (yy - 32) ** 2 + (xx - 32) ** 2 < 20 ** 2
    square = (abs(yy - 32) < 18) & (abs(xx - 32) < 18)
    for colour, rgb in COLOURS.items():
        for shape, mask in (("circle", disc), ("square", square)):
            image = np.full((RESOLUTION, RESOLUTION, 3), 255, dtype=np.uint8)
            image[mask] = rgb
            name = f"{colour}_{shape}.png"
            Image.fromarray(image).save(folder / name)
            rows.append({"file_name": name, "text": f"a {colour} {shape}"})
    (folder / "metadata.jsonl").write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return root


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_hub_layout(tmp_path_factory.mktemp("teacher"))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_captioned(tmp_path_factory.mktemp("captioned"))


def run_recipe(teacher: Path, dataset: Path, out: Path, steps: int, *extra: str) -> None:
    training_main(["one-step", "--teacher", str(teacher), "--dataset", str(dataset), "--out", str(out),
                   "--steps", str(steps), "--batch-size", "4", "--resolution", str(RESOLUTION), "--device", "cpu",
                   "--lr", "1e-3", "--checkpoint-every", "2", "--sample-every", "100", *extra])


def test_timesteps_include_the_final_step_and_the_discriminator_step_is_earlier() -> None:
    generator = torch.Generator().manual_seed(0)
    timesteps = sample_timesteps(4000, 0.5, generator)
    assert 0.45 < (timesteps == FINAL_TIMESTEP).float().mean() < 0.55
    assert timesteps.min() >= 1 and timesteps.max() <= FINAL_TIMESTEP
    for gap in (1, 250, 1000):
        steps = sample_discriminator_steps(timesteps, gap, generator)
        assert bool((steps < timesteps).all()) and bool((steps >= (timesteps - gap).clamp(min=0)).all())
    assert bool((sample_discriminator_steps(timesteps, 1, generator) == timesteps - 1).all())
    with pytest.raises(ValueError, match="--final-step-fraction"):
        UFOGenSettings(final_step_fraction=1.5)


def test_final_step_input_is_the_one_step_samplers_start(teacher: Path) -> None:
    base = load_sd_turbo(teacher, torch.device("cpu"), torch.float32)
    x0, noise = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    timesteps = torch.tensor([FINAL_TIMESTEP, 500])
    x_t = generator_inputs(x0, noise, timesteps, base.alphas_cumprod)
    assert torch.allclose(x_t[0], base.add_noise(torch.zeros_like(noise[0]), noise[0], FINAL_TIMESTEP))
    assert torch.allclose(x_t[1], base.add_noise(x0[1], noise[1], 500), atol=1e-6)


def test_losses_are_finite_and_reconstruction_falls_on_a_fixed_batch(teacher: Path) -> None:
    torch.manual_seed(0)
    base = load_sd_turbo(teacher, torch.device("cpu"), torch.float32)
    unet = base.unet.train().requires_grad_(True)
    discriminator = Discriminator(unet)
    latents = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    text = encode_text(base, ["a red circle", "a blue square", "a green circle", "a yellow square"])
    unet_optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    discriminator_optimizer = torch.optim.AdamW(discriminator.parameters(), lr=1e-4, betas=(0.0, 0.999))
    draws = UFOGenDraws.draw(4, (4, 8, 8), UFOGenSettings(), torch.Generator().manual_seed(2))
    trainer = cpu_trainer(4)
    history = [ufogen_step(unet, discriminator, unet_optimizer, discriminator_optimizer, latents, text,
                           base.alphas_cumprod, UFOGenSettings(), draws, trainer)
               for _ in range(20)]
    # the zero-initialised head starts undecided: every logit 0, loss 2 log 2
    assert history[0].discriminator == pytest.approx(2 * math.log(2), abs=1e-6)
    assert all(math.isfinite(value) for losses in history
               for value in (losses.discriminator, losses.adversarial, losses.reconstruction))
    assert history[-1].reconstruction < 0.5 * history[0].reconstruction
    assert history[-1].discriminator < history[0].discriminator  # the discriminator learns to tell them apart


def test_run_resumes_exactly_and_the_model_folder_draws_in_one_step(teacher: Path, dataset: Path,
                                                                     tmp_path: Path) -> None:
    from pipelines.studio import Studio

    whole, split = tmp_path / "whole", tmp_path / "split"
    run_recipe(teacher, dataset, whole, 4)
    run_recipe(teacher, dataset, split, 2)
    run_recipe(teacher, dataset, split, 4, "--resume")
    for name in ("unet", "discriminator", "ema_unet"):
        first = load_file(str(whole / "checkpoints" / "step_000004" / f"{name}.safetensors"))
        second = load_file(str(split / "checkpoints" / "step_000004" / f"{name}.safetensors"))
        assert first.keys() == second.keys()
        assert all(torch.equal(first[key], second[key]) for key in first), name

    record = json.loads((whole / "record.json").read_text())
    assert record["status"] == "finished" and record["steps_done"] == 4
    assert {"d", "adv", "rec"} <= set(record["loss_summary"])
    for grid in ("teacher_one_step.png", "teacher_25_steps.png", "step_000004.png"):
        assert (whole / "samples" / grid).is_file(), grid

    trained = Studio.load(source="local", model_dir=whole / "model", device="cpu", tasks=())
    bare = Studio.load(source="local", model_dir=teacher, device="cpu", tasks=())
    ours = np.asarray(trained.text_to_image("a red circle", seed=3, width=256, height=256), dtype=np.float32)
    theirs = np.asarray(bare.text_to_image("a red circle", seed=3, width=256, height=256), dtype=np.float32)
    assert np.abs(ours - theirs).mean() > 1.0


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_the_generator_learns_the_teachers_samples_from_their_noise(teacher: Path, prediction_type: str) -> None:
    torch.manual_seed(0)
    settings = UFOGenSettings(prediction_type=prediction_type)
    base = load_sd_turbo(teacher, torch.device("cpu"), torch.float32)
    unet = base.unet.train().requires_grad_(True)
    discriminator = Discriminator(unet)
    text = encode_text(base, ["a red circle", "a blue square", "a green circle", "a yellow square"])
    noise = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    start = (1 - base.alphas_cumprod[FINAL_TIMESTEP]).sqrt() * noise
    targets = TeacherTargets(start, text, torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(4)), 1.0)
    unet_optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-3)
    discriminator_optimizer = torch.optim.AdamW(discriminator.parameters(), lr=1e-4, betas=(0.0, 0.999))
    draws = UFOGenDraws.draw(4, (4, 8, 8), settings, torch.Generator().manual_seed(2))
    latents = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    history = [ufogen_step(unet, discriminator, unet_optimizer, discriminator_optimizer, latents, text,
                           base.alphas_cumprod, settings, draws, cpu_trainer(4), teacher=targets).distillation
               for _ in range(30)]
    assert all(math.isfinite(value) for value in history)
    assert history[-1] < 0.5 * history[0], history


def test_teacher_pairs_are_made_once_from_the_teacher_and_resume_is_exact(teacher: Path, dataset: Path,
                                                                           tmp_path: Path) -> None:
    pairs_flags = ("--distill-pairs", "6", "--distill-steps", "3", "--distill-guidance", "2")
    whole, split = tmp_path / "whole", tmp_path / "split"
    run_recipe(teacher, dataset, whole, 4, *pairs_flags)
    run_recipe(teacher, dataset, split, 2, *pairs_flags)
    cache = split / "cache" / "teacher_pairs.safetensors"
    made = cache.stat().st_mtime_ns
    run_recipe(teacher, dataset, split, 4, *pairs_flags, "--resume")  # the trained UNet must not remake them
    assert cache.stat().st_mtime_ns == made
    for name in ("unet", "ema_unet"):
        first = load_file(str(whole / "checkpoints" / "step_000004" / f"{name}.safetensors"))
        second = load_file(str(split / "checkpoints" / "step_000004" / f"{name}.safetensors"))
        assert all(torch.equal(first[key], second[key]) for key in first), name

    pairs = load_file(str(cache))
    assert pairs["noise"].shape == pairs["latents"].shape == (6, 4, 8, 8)
    base = load_sd_turbo(teacher, torch.device("cpu"), torch.float32)
    captions = load_captioned_images(dataset, "train", RESOLUTION).captions
    text = encode_text(base, [captions[index] for index in pairs["caption_index"].tolist()])
    expected = euler_from_noise(base.unet, text, encode_text(base, [""] * 6), 3, 2.0, pairs["noise"])
    assert torch.allclose(pairs["latents"], expected, atol=1e-5)
    record = json.loads((whole / "record.json").read_text())
    assert "distill" in record["loss_summary"] and record["config"]["teacher_pairs"]["count"] == 6
    with pytest.raises(Exception, match="--distill-pairs"):
        run_recipe(teacher, dataset, tmp_path / "bad", 1, "--distill-pairs", "-1")


def test_a_v_prediction_student_is_drawn_by_the_app_as_it_was_trained(teacher: Path, dataset: Path,
                                                                        tmp_path: Path) -> None:
    from pipelines.studio import Studio

    out = tmp_path / "v"
    run_recipe(teacher, dataset, out, 2, "--prediction-type", "v_prediction")
    scheduler = json.loads((out / "model" / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["prediction_type"] == "v_prediction"
    assert json.loads((out / "record.json").read_text())["config"]["prediction_type"] == "v_prediction"

    served = load_sd_turbo(out / "model", torch.device("cpu"), torch.float32)
    text = encode_text(served, ["a red circle"])
    with torch.no_grad():
        trained = {kind: one_step_images(served, served.unet, text, [3], SERVED_SIDE // 8, kind)
                   for kind in ("v_prediction", "epsilon")}
    # float32 as the reference above (the CPU default decodes in bf16 where the CPU has bf16 instructions)
    studio = Studio.load(source="local", model_dir=out / "model", device="cpu", dtype="float32", tasks=())
    drawn = torch.from_numpy(np.asarray(studio.text_to_image("a red circle", seed=3, width=SERVED_SIDE,
                                                             height=SERVED_SIDE), dtype=np.float32))
    as_pixels = {kind: ((images[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5) for kind, images in trained.items()}
    assert (drawn - as_pixels["v_prediction"]).abs().mean() < 1.0
    assert (drawn - as_pixels["epsilon"]).abs().mean() > 5.0


def test_colour_variants_join_the_data_and_the_teacher_pairs_captions(teacher: Path, dataset: Path,
                                                                      tmp_path: Path) -> None:
    out = tmp_path / "variants"
    run_recipe(teacher, dataset, out, 1, "--colour-variants", "--distill-pairs", "64", "--distill-steps", "1")
    config = json.loads((out / "record.json").read_text())["config"]
    assert config["train_images"] == len(COLOURS) * 2 and config["colour_variants"] == len(COLOURS) * 2 * 5
    pairs = load_file(str(out / "cache" / "teacher_pairs.safetensors"))
    assert int(pairs["caption_index"].max()) >= len(COLOURS) * 2  # some pairs are drawn for variant captions


def test_a_teacher_that_is_not_epsilon_is_refused(teacher: Path, dataset: Path, tmp_path: Path) -> None:
    from training.runner import TrainingInputError

    odd = write_tiny_hub_layout(tmp_path / "v-teacher")
    path = odd / "scheduler" / "scheduler_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "prediction_type": "v_prediction"}))
    with pytest.raises(TrainingInputError, match="prediction_type 'v_prediction'"):
        run_recipe(odd, dataset, tmp_path / "out", 1)


def test_bad_input_is_refused_before_training(teacher: Path, dataset: Path, tmp_path: Path) -> None:
    from training.runner import TrainingInputError

    with pytest.raises(TrainingInputError, match="unet/config.json"):
        run_recipe(tmp_path / "no-teacher", dataset, tmp_path / "a", 1)
    with pytest.raises(TrainingInputError, match="--final-step-fraction"):
        run_recipe(teacher, dataset, tmp_path / "b", 1, "--final-step-fraction", "2")
    with pytest.raises(TrainingInputError, match="--dataset"):
        run_recipe(teacher, tmp_path / "no-data", tmp_path / "c", 1)
    assert not any((tmp_path / name).exists() for name in ("a", "b", "c"))


def test_a_decoder_fine_tune_ships_and_another_latent_space_is_refused(teacher: Path, dataset: Path,
                                                                         tmp_path: Path) -> None:
    from diffusers import AutoencoderKL

    from training.runner import TrainingInputError

    tuned = AutoencoderKL.from_pretrained(teacher, subfolder="vae")
    with torch.no_grad():
        tuned.decoder.conv_out.bias.add_(0.25)
    tuned.save_pretrained(tmp_path / "tuned" / "vae")
    run_recipe(teacher, dataset, tmp_path / "run", 1, "--vae", str(tmp_path / "tuned"))
    shipped = AutoencoderKL.from_pretrained(tmp_path / "run" / "model", subfolder="vae")
    assert torch.equal(shipped.decoder.conv_out.bias, tuned.decoder.conv_out.bias)
    with torch.no_grad():
        tuned.encoder.conv_in.bias.add_(0.25)
    tuned.save_pretrained(tmp_path / "other" / "vae")
    with pytest.raises(TrainingInputError, match="not the teacher's latent space"):
        run_recipe(teacher, dataset, tmp_path / "refused", 1, "--vae", str(tmp_path / "other"))
