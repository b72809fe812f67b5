"""pix2pix-turbo training on the tiny base: the recipe runs, its loss falls, the trained forward is
the app's forward, gamma behaves as in the paper, bad datasets are refused, --init starts from trained
weights, and --mirror / --shift change the pairs while resume stays exact."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from models.running.img2img_turbo import run_task
from models.weights.base_loading import load_sd_turbo
from models.weights.checkpoints import load_task_weights, save_task_weights
from models.weights.tiny import write_tiny_hub_layout
from pipelines import Studio
from tests.conftest import float32_cpu_defaults
from tests.training_toy import cpu_trainer
from tests.training_turbo_data import SIZE, write_paired
from training.__main__ import main as training_main
from training.common import mirror_rows, shift_rows
from training.data.layouts import DatasetError
from training.pix2pix_turbo import (Batch, LossWeights, Pix2PixTurbo, binarise_lines, canny_map, control_maps,
                                    load_init_weights, training_step, write_task_folder)
from training.runner import TrainingInputError
from training.turbo_common import CaptionEncoder, PatchDiscriminator, PerceptualLoss, trainable_parameters

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_hub_layout(tmp_path_factory.mktemp("pix2pix") / "base")


def fresh_model(tiny_dir: Path, stochastic: bool = True) -> Pix2PixTurbo:
    torch.manual_seed(0)
    return Pix2PixTurbo(load_sd_turbo(tiny_dir, CPU, torch.float32), stochastic, 8, 4)


def perturb(model: Pix2PixTurbo, seed: int = 1, scale: float = 0.05) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in trainable_parameters(*model.trained_modules().values()):
            parameter.add_(torch.randn(parameter.shape, generator=generator) * scale)


def sketch_control(seed: int = 0) -> torch.Tensor:
    lines = torch.rand((1, 1, 32, 24), generator=torch.Generator().manual_seed(seed)) > 0.8
    return lines.float().expand(1, 3, 32, 24).contiguous()


def test_only_lora_conv_in_and_skips_train(tiny_dir: Path) -> None:
    model = fresh_model(tiny_dir)
    names = [name for part in model.trained_modules().values() for name, p in part.named_parameters() if p.requires_grad]
    assert names and all(".lora_" in name or "conv_in.finetuned" in name or "base_layer" in name for name in names)
    assert any("conv_in.finetuned" in name for name in names)
    assert sum("skip_conv" in name and "base_layer" in name for name in names) == 4
    assert not any(p.requires_grad for p in model.base.text_encoder.parameters())


@pytest.mark.parametrize(("layout", "gamma"), [("converted", 0.3), ("converted", 1.0), ("released", 0.3)])
def test_trained_forward_is_the_apps_forward(tiny_dir: Path, tmp_path: Path, monkeypatch, layout: str,
                                             gamma: float) -> None:
    """Weights written by the recipe (or saved under upstream's keys as a released .pkl), loaded by
    Studio(local), give what the training forward gives."""
    model = fresh_model(tiny_dir)
    perturb(model)
    model_dir = write_tiny_hub_layout(tmp_path / "model")
    if layout == "converted":
        write_task_folder(model_dir, {"sketch_to_image": model.task_weights("sketch_to_image")}, {}, {})
    else:
        (model_dir / "img2img-turbo").mkdir()
        torch.save(model.upstream_checkpoint(), model_dir / "img2img-turbo" / "sketch_to_image_stochastic_lora.pkl")
    monkeypatch.setenv("ONESTEP_CACHE", str(tmp_path / "cache"))
    studio = Studio.load("local", model_dir=model_dir, device="cpu", tasks=("sketch_to_image",),
                         acceleration=float32_cpu_defaults())
    assert studio.unavailable_tasks == {}
    control, noise = sketch_control(), torch.randn((1, 4, 4, 3), generator=torch.Generator().manual_seed(2))
    embeddings = CaptionEncoder(model.base)(["a cat"])
    with torch.no_grad():
        trained = model(control, embeddings, torch.tensor([gamma]), noise)
    embeddings = studio.store.prompt_embeddings("a cat")
    with studio.store.model_call("sketch_to_image", gamma=gamma) as call:
        served = run_task(call, control, embeddings, noise=noise)
    assert torch.allclose(trained, served, atol=1e-4), (trained - served).abs().max()


def test_gamma_one_is_deterministic_and_gamma_changes_the_output(tiny_dir: Path) -> None:
    model = fresh_model(tiny_dir)
    perturb(model)
    control = sketch_control()
    embeddings = CaptionEncoder(model.base)(["a cat"])
    noises = [torch.randn((1, 4, 4, 3), generator=torch.Generator().manual_seed(seed)) for seed in (1, 2)]
    with torch.no_grad():
        at_one = [model(control, embeddings, torch.tensor([1.0]), noise) for noise in noises]
        at_half = [model(control, embeddings, torch.tensor([0.5]), noise) for noise in noises]
    assert torch.equal(at_one[0], at_one[1])
    assert (at_half[0] - at_half[1]).abs().mean() > 1e-3
    assert (at_half[0] - at_one[0]).abs().mean() > 1e-3


def test_per_example_gamma_equals_one_example_at_a_time(tiny_dir: Path) -> None:
    """A batch with gamma (0.2, 0.9) gives what two calls with one gamma each give."""
    model = fresh_model(tiny_dir)
    perturb(model)
    control = torch.cat([sketch_control(0), sketch_control(1)])
    embeddings = CaptionEncoder(model.base)(["a cat", "a dog"])
    noise = torch.randn((2, 4, 4, 3), generator=torch.Generator().manual_seed(3))
    gamma = torch.tensor([0.2, 0.9])
    with torch.no_grad():
        batched = model(control, embeddings, gamma, noise)
        single = torch.cat([model(control[i:i + 1], embeddings[i:i + 1], gamma[i:i + 1], noise[i:i + 1]) for i in range(2)])
    assert torch.allclose(batched, single, atol=1e-5)


def test_loss_falls_on_a_fixed_batch(tiny_dir: Path) -> None:
    model = fresh_model(tiny_dir, stochastic=False)
    discriminator = PatchDiscriminator()
    optimizers = {"generator": torch.optim.AdamW(trainable_parameters(*model.trained_modules().values()), lr=3e-3),
                  "discriminator": torch.optim.AdamW(discriminator.parameters(), lr=3e-3)}
    generator = torch.Generator().manual_seed(0)
    target = torch.nn.functional.interpolate(torch.rand((2, 3, 4, 4), generator=generator) * 2 - 1, size=SIZE,
                                             mode="bilinear")
    control = (torch.rand((2, 1, SIZE, SIZE), generator=generator) > 0.8).float().expand(2, 3, SIZE, SIZE)
    batch = Batch(control.contiguous(), target, CaptionEncoder(model.base)(["a", "b"]))
    perceptual = PerceptualLoss(None, CPU)
    losses = [training_step(model, discriminator, optimizers, perceptual, batch, LossWeights(), 1.0,
                            trainer=cpu_trainer()) for _ in range(8)]
    reconstruction = [entry["l2"] + 5 * entry["perceptual"] for entry in losses]
    assert max(reconstruction[-2:]) < 0.8 * reconstruction[0], reconstruction
    before = [p.detach().clone() for p in discriminator.parameters()]
    quiet = training_step(model, discriminator, optimizers, perceptual, batch, LossWeights(), 1.0, adversarial=False,
                          trainer=cpu_trainer())
    assert "gan" not in quiet and all(torch.equal(a, b) for a, b in zip(before, discriminator.parameters()))


def test_controls_follow_the_app(tmp_path: Path) -> None:
    """Sketch lines are binarised with the app's rule, edges are Canny 100/200 of the colour target."""
    sketch = np.full((16, 16, 3), 255, np.uint8)
    sketch[4:12, 8] = 0
    assert binarise_lines(sketch).sum() == 8 * 3
    sketch[2, 2] = (255, 0, 0)  # red: a line in green and blue only, as upstream reads it
    assert binarise_lines(sketch)[2, 2].tolist() == [False, True, True]
    colour = np.zeros((16, 16, 3), np.uint8)
    colour[4:12, 4:12] = 200
    maps = control_maps(None, colour[None], "edge")
    assert torch.equal(maps[0, ..., 0], torch.from_numpy(canny_map(colour)))
    assert torch.equal(maps[0, ..., 0], maps[0, ..., 2])
    assert maps[0].any()
    edge_image = np.repeat(cv2.Canny(colour, 100, 200)[..., None], 3, axis=-1)  # white edges on black
    assert torch.equal(control_maps(edge_image[None], colour[None], "edge"), maps)


def run_recipe(dataset: Path, out: Path, task: str, steps: int = 2, *extra: str) -> Path:
    training_main(["pix2pix-turbo", "--base", "tiny", "--dataset", str(dataset), "--out", str(out), "--task", task,
                   "--steps", str(steps), "--batch-size", "2", "--resolution", str(SIZE), "--device", "cpu",
                   "--lr", "1e-3", *extra])
    return out


def test_mirror_flips_the_chosen_rows_only() -> None:
    images = torch.arange(2 * 3 * 2 * 4, dtype=torch.float32).view(2, 3, 2, 4)
    mirrored = mirror_rows(images, torch.tensor([False, True]))
    assert torch.equal(mirrored[0], images[0])
    assert torch.equal(mirrored[1], images[1].flip(-1))
    assert not torch.equal(mirrored[1], images[1])


def test_shift_moves_each_row_and_blanks_the_uncovered_border() -> None:
    images = torch.arange(2 * 3 * 5 * 6, dtype=torch.float32).view(2, 3, 5, 6) + 10
    shifted = shift_rows(images, torch.tensor([[0, 0], [1, -2]]), fill=-1.0)
    assert torch.equal(shifted[0], images[0])
    assert torch.equal(shifted[1, :, 1:, :4], images[1, :, :4, 2:])  # one down, two left
    assert (shifted[1, :, 0, :] == -1).all() and (shifted[1, :, :, 4:] == -1).all()
    assert torch.equal(shift_rows(images, torch.zeros((2, 2), dtype=torch.long), fill=0.0), images)


def model_weights(model: Pix2PixTurbo, task: str) -> dict[str, torch.Tensor]:
    """Every tensor of the model's task weights, flat."""
    weights = model.task_weights(task)
    groups = {**{f"unet.{k}": v for k, v in weights.unet_lora["main"].state.items()},
              **{f"vae.{k}": v for k, v in weights.vae_lora.state.items()},
              **{f"skip.{k}": v for k, v in weights.skip_weights.items()},
              **{f"conv_in.{k}": v for k, v in weights.conv_in.items()}}
    if weights.skip_lora is not None:
        groups.update({f"skip_lora.{k}": v for k, v in weights.skip_lora.state.items()})
    return groups


@pytest.mark.parametrize(("stochastic", "task"), [(True, "sketch_to_image"), (False, "edge_to_image")])
def test_init_takes_trained_weights_as_the_models_own(tiny_dir: Path, tmp_path: Path, stochastic: bool,
                                                      task: str) -> None:
    trained = fresh_model(tiny_dir, stochastic)
    perturb(trained)
    path = tmp_path / "weights.safetensors"
    save_task_weights(trained.task_weights(task), path)
    started = fresh_model(tiny_dir, stochastic)
    before = model_weights(started, task)
    load_init_weights(started, path, task)
    expected, actual = model_weights(trained, task), model_weights(started, task)
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[key], actual[key]) for key in expected)
    assert any(not torch.equal(before[key], actual[key]) for key in before)
    control, embeddings = sketch_control(), CaptionEncoder(trained.base)(["a cat"])
    with torch.no_grad():
        assert torch.allclose(started(control, embeddings), trained(control, embeddings), atol=1e-6)


def test_init_refuses_weights_that_do_not_fit(tiny_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "weights.safetensors"
    save_task_weights(fresh_model(tiny_dir, stochastic=False).task_weights("edge_to_image"), path)
    lower_rank = Pix2PixTurbo(load_sd_turbo(tiny_dir, CPU, torch.float32), False, 4, 4)
    with pytest.raises(TrainingInputError, match="weights.safetensors: the unet weights do not fit"):
        load_init_weights(lower_rank, path, "edge_to_image")
    with pytest.raises(TrainingInputError, match="not of sketch_to_image"):
        load_init_weights(fresh_model(tiny_dir), path, "sketch_to_image")
    with pytest.raises(TrainingInputError, match="neither a task-weights file"):
        load_init_weights(fresh_model(tiny_dir), tmp_path, "sketch_to_image")


def test_recipe_starts_from_a_runs_weights_with_init(tmp_path: Path) -> None:
    """--init RUN: a run at a vanishing rate ends where the run it started from ended, not where a fresh start would."""
    dataset = write_paired(tmp_path / "data", with_sources=False)
    first = run_recipe(dataset, tmp_path / "first", "edge", 2)
    file = first / "model" / "img2img-turbo" / "edge_to_image_loras.safetensors"
    weights = {}
    for name, extra in (("continued", ("--init", str(first))), ("fresh", ())):
        run = run_recipe(dataset, tmp_path / name, "edge", 1, *extra, "--lr", "1e-12")
        weights[name] = load_task_weights(run / "model" / "img2img-turbo" / file.name).conv_in["weight"]
    started = load_task_weights(file).conv_in["weight"]
    assert torch.allclose(weights["continued"], started, atol=1e-6)
    assert not torch.allclose(weights["fresh"], started, atol=1e-3)


def test_recipe_runs_and_writes_the_app_task(tmp_path: Path) -> None:
    out = run_recipe(write_paired(tmp_path / "data"), tmp_path / "run", "sketch")
    assert (out / "model" / "img2img-turbo" / "sketch_to_image_stochastic_lora.safetensors").is_file()
    assert (out / "samples" / "step_000002.png").is_file()
    assert (out / "checkpoints" / "step_000002" / "unet.safetensors").is_file()
    import json

    record = json.loads((out / "record.json").read_text())
    assert record["status"] == "finished" and record["steps_done"] == 2
    assert record["metrics"]["peak_rss_mb"] > 0


def test_edge_recipe_derives_canny_without_train_a(tmp_path: Path) -> None:
    out = run_recipe(write_paired(tmp_path / "data", with_sources=False), tmp_path / "run", "edge", steps=1)
    assert (out / "model" / "img2img-turbo" / "edge_to_image_loras.safetensors").is_file()


def test_sketch_recipe_refuses_a_dataset_without_sketches(tmp_path: Path) -> None:
    dataset = write_paired(tmp_path / "data", with_sources=False)
    with pytest.raises(DatasetError, match="train_A"):
        run_recipe(dataset, tmp_path / "run", "sketch")
    assert not (tmp_path / "run" / "model").exists()


def checkpoint_weights(run: Path, step: int, part: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run / "checkpoints" / f"step_{step:06d}" / f"{part}.safetensors"))


@pytest.mark.parametrize(("extra", "without_last"), [((), 0), (("--mirror",), 1), (("--mirror", "--shift", "2"), 2)],
                         ids=["plain", "mirror", "mirror-shift"])
def test_resume_reaches_the_weights_of_an_uninterrupted_run(tmp_path: Path, extra: tuple[str, ...],
                                                            without_last: int) -> None:
    dataset = write_paired(tmp_path / "data")
    straight = run_recipe(dataset, tmp_path / "straight", "sketch", 2, *extra)
    resumed = run_recipe(dataset, tmp_path / "resumed", "sketch", 1, *extra)
    run_recipe(dataset, resumed, "sketch", 2, *extra, "--resume")
    for part in ("unet", "vae", "skips", "discriminator"):
        expected, actual = checkpoint_weights(straight, 2, part), checkpoint_weights(resumed, 2, part)
        assert expected.keys() == actual.keys()
        assert all(torch.equal(expected[key], actual[key]) for key in expected), part
    if extra:  # the mirrored (shifted) pairs are what it trained on: the weights differ from a run without
        other = run_recipe(dataset, tmp_path / "other", "sketch", 2, *extra[:-without_last])
        unet, other_unet = checkpoint_weights(straight, 2, "unet"), checkpoint_weights(other, 2, "unet")
        assert any(not torch.equal(unet[key], other_unet[key]) for key in unet)


@pytest.mark.parametrize("shift", ["-1", str(SIZE // 2)])
def test_shift_must_leave_the_pairs_in_the_image(tmp_path: Path, shift: str) -> None:
    dataset = write_paired(tmp_path / "data")
    if shift == "-1":
        with pytest.raises(SystemExit):
            run_recipe(dataset, tmp_path / "run", "sketch", 1, "--shift", shift)
    else:  # half the image side can move a whole pair out of it
        with pytest.raises(TrainingInputError, match="less than half"):
            run_recipe(dataset, tmp_path / "run", "sketch", 1, "--shift", shift)
