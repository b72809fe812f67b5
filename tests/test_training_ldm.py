"""LDM recipes on tiny models and tiny generated data: autoencoder, tokenizer, latent diffusion."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from PIL import Image
from safetensors.torch import load_file
from transformers import CLIPTextModel, CLIPTokenizer

from pipelines import Studio
from training import latent_diffusion, runner
from training.__main__ import main as training_main
from training.tokenizer import build_caption_tokenizer

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (40, 60, 220), "yellow": (240, 200, 20)}
SHAPES = ("circle", "square")
TINY_VAE = ["--vae-channels", "8,16,16,16", "--norm-groups", "4", "--disc-channels", "8", "--disc-layers", "2"]
TINY_LDM = ["--unet-channels", "16,32,32,32", "--norm-groups", "8", "--head-channels", "8", "--text-width", "32",
            "--text-layers", "1", "--text-heads", "2", "--vocab-size", "600", "--sample-steps", "2"]


def shape_image(colour: tuple[int, int, int], shape: str, size: int, shift: int) -> np.ndarray:
    ys, xs = np.mgrid[0:size, 0:size]
    centre, radius = size // 2 + shift, size // 4
    if shape == "circle":
        mask = (xs - centre) ** 2 + (ys - centre) ** 2 < radius**2
    else:
        mask = (abs(xs - centre) < radius) & (abs(ys - centre) < radius)
    image = np.full((size, size, 3), 255, dtype=np.uint8)
    image[mask] = colour
    return image


def write_shapes_dataset(root: Path, size: int = 64) -> Path:
    """Captioned layout: SPLIT/NAME.png + SPLIT/metadata.jsonl (file_name, text)."""
    for split, shifts in (("train", (-4, 0, 4)), ("test", (2,))):
        folder = root / split
        folder.mkdir(parents=True)
        rows = []
        for colour_name, colour in COLOURS.items():
            for shape in SHAPES:
                for shift in shifts:
                    name = f"{colour_name}_{shape}_{shift}.png"
                    Image.fromarray(shape_image(colour, shape, size, shift)).save(folder / name)
                    rows.append({"file_name": name, "text": f"a {colour_name} {shape}"})
        (folder / "metadata.jsonl").write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_shapes_dataset(tmp_path_factory.mktemp("shapes") / "captioned")


@pytest.fixture(scope="module")
def autoencoder_run(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "vae"
    training_main(["autoencoder", "--dataset", str(dataset), "--out", str(out), "--resolution", "32",
                   "--steps", "30", "--batch-size", "24", "--lr", "3e-3", "--disc-start", "25",
                   "--checkpoint-every", "15", "--sample-every", "30", "--device", "cpu", *TINY_VAE])
    return out


def record(out: Path) -> dict:
    return json.loads((out / "record.json").read_text())


def test_autoencoder_learns_and_writes_a_loadable_vae(autoencoder_run: Path) -> None:
    summary = record(autoencoder_run)
    assert summary["status"] == "finished" and summary["steps_done"] == 30
    l1 = summary["loss_summary"]["l1"]
    assert l1["last_10pct_mean"] < 0.6 * l1["first"], l1  # the same 24 images every step
    assert "disc" in summary["loss_summary"] and "gan" in summary["loss_summary"]  # switched on at step 25
    vae = AutoencoderKL.from_pretrained(autoencoder_run / "model", subfolder="vae")
    assert len(vae.config.block_out_channels) == 4 and vae.config.latent_channels == 4
    assert vae.config.scaling_factor == pytest.approx(summary["metrics"]["scaling_factor"])
    assert vae.config.scaling_factor == pytest.approx(1 / summary["metrics"]["latent_std"])
    assert summary["metrics"]["test_psnr_db"] > 10
    assert (autoencoder_run / "samples" / "step_000030.png").is_file()


def test_tokenizer_from_captions_loads_as_clip_tokenizer(tmp_path: Path) -> None:
    captions = ["a red apple", "a grinning cat face", "a blue heart", "a red heart"] * 4
    tokenizer = build_caption_tokenizer(captions, tmp_path / "tokenizer", vocab_size=600)
    loaded = CLIPTokenizer.from_pretrained(tmp_path / "tokenizer")
    ids = loaded("A Red  Apple").input_ids
    assert loaded.convert_ids_to_tokens(ids) == ["<|startoftext|>", "a</w>", "red</w>", "apple</w>", "<|endoftext|>"]
    assert loaded.decode(loaded("a zebra!").input_ids, skip_special_tokens=True) == "a zebra !"
    assert len(tokenizer) <= 600 and tokenizer.model_max_length == 77
    with pytest.raises(ValueError, match="empty"):
        build_caption_tokenizer(["", " "], tmp_path / "empty")


def ldm_args(dataset: Path, vae_run: Path, out: Path, *extra: str) -> list[str]:
    return ["latent-diffusion", "--dataset", str(dataset), "--vae", str(vae_run), "--out", str(out),
            "--resolution", "64", "--batch-size", "24", "--device", "cpu", *TINY_LDM, *extra]


def test_latent_diffusion_learns_and_serves_through_studio(dataset: Path, autoencoder_run: Path,
                                                           tmp_path: Path) -> None:
    out = tmp_path / "ldm"
    training_main(ldm_args(dataset, autoencoder_run, out, "--steps", "30", "--batch-size", "12", "--lr", "2e-3",
                           "--checkpoint-every", "30", "--sample-every", "30"))
    summary = record(out)
    mse = [entry["mse"] for entry in (json.loads((runner.complete_checkpoints(out)[-1] / "state.json").read_text())["history"])]
    assert np.mean(mse[-8:]) < 0.7 * np.mean(mse[:4]), mse
    assert summary["metrics"]["test_eps_mse_ema"] < 1.0
    model = out / "model"
    UNet2DConditionModel.from_pretrained(model, subfolder="unet")
    CLIPTextModel.from_pretrained(model / "text_encoder")
    assert AutoencoderKL.from_pretrained(model, subfolder="vae").config.scaling_factor == pytest.approx(
        record(autoencoder_run)["metrics"]["scaling_factor"])
    studio = Studio.load(source="local", model_dir=model, device="cpu", tasks=())
    image = np.asarray(studio.text_to_image("a red circle", seed=1, width=256, height=256))
    assert image.shape == (256, 256, 3) and image.std() > 0
    assert Image.open(out / "samples" / "step_000030.png").size == (64 * len(summary["config"]["sample_prompts"]), 128)


def test_latent_diffusion_resume_equals_uninterrupted(dataset: Path, autoencoder_run: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    common = ("--lr", "1e-3", "--batch-size", "8", "--checkpoint-every", "2", "--sample-every", "100",
              "--max-images", "16")
    training_main(ldm_args(dataset, autoencoder_run, tmp_path / "a", "--steps", "4", *common))
    training_main(ldm_args(dataset, autoencoder_run, tmp_path / "b", "--steps", "2", *common))
    assert (tmp_path / "b" / "cache" / "train_posteriors.safetensors").is_file()

    encoded_sizes: list[int] = []
    encode = latent_diffusion.encode_posteriors

    def counting_encode(vae: AutoencoderKL, data: object, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        encoded_sizes.append(len(data))
        return encode(vae, data, device)

    monkeypatch.setattr(latent_diffusion, "encode_posteriors", counting_encode)
    training_main(ldm_args(dataset, autoencoder_run, tmp_path / "b", "--steps", "4", "--resume", *common))
    assert encoded_sizes == [8], encoded_sizes  # only the test split (validation); train came from the cache
    for name in ("unet", "ema_unet", "text_encoder", "ema_text_encoder"):
        a = load_file(tmp_path / "a" / "checkpoints" / "step_000004" / f"{name}.safetensors")
        b = load_file(tmp_path / "b" / "checkpoints" / "step_000004" / f"{name}.safetensors")
        assert a.keys() == b.keys()
        assert all(torch.equal(a[key], b[key]) for key in a), name


def test_colour_variants_train_on_recoloured_copies_with_the_originals_tokenizer(
        dataset: Path, autoencoder_run: Path, tmp_path: Path) -> None:
    common = ("--lr", "1e-3", "--batch-size", "8", "--checkpoint-every", "2", "--sample-every", "100")
    training_main(ldm_args(dataset, autoencoder_run, tmp_path / "plain", "--steps", "2", *common))
    training_main(ldm_args(dataset, autoencoder_run, tmp_path / "plain", "--steps", "4", "--resume",
                           "--colour-variants", *common))  # a resumed run may add the variants
    summary = record(tmp_path / "plain")
    originals = 4 * len(SHAPES) * 3  # 4 colours x 2 shapes x 3 positions in train
    assert summary["config"]["train_images"] == originals
    assert summary["config"]["colour_variants"] == originals * 5  # every image: the 5 other colour words
    cache = tmp_path / "plain" / "cache"
    assert load_file(cache / "train_posteriors.safetensors")["mean"].shape[0] == originals * 6
    training_main(ldm_args(dataset, autoencoder_run, tmp_path / "fresh", "--steps", "1", *common))
    key = (cache / "tokenizer.key").read_text()
    assert key == (tmp_path / "fresh" / "cache" / "tokenizer.key").read_text()  # learned from the data's own captions


def test_bad_input_is_refused_before_training(dataset: Path, autoencoder_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "never"
    with pytest.raises(runner.TrainingInputError, match="--resolution 60 is not a multiple of 8"):
        training_main(["autoencoder", "--dataset", str(dataset), "--out", str(out), "--resolution", "60", *TINY_VAE])
    with pytest.raises(runner.TrainingInputError, match="no such folder"):
        training_main(["autoencoder", "--dataset", str(tmp_path / "missing"), "--out", str(out), *TINY_VAE])
    with pytest.raises(runner.TrainingInputError, match="needs 4 widths"):
        training_main(["autoencoder", "--dataset", str(dataset), "--out", str(out), "--vae-channels", "8,16,16"])
    with pytest.raises(runner.TrainingInputError, match="vae/config.json"):
        training_main(ldm_args(dataset, tmp_path, out))
    with pytest.raises(runner.TrainingInputError, match="already holds a run of autoencoder"):
        training_main(["autoencoder", "--dataset", str(dataset), "--out", str(autoencoder_run), *TINY_VAE])
    assert not out.exists()


def test_decoder_only_keeps_the_encoder_and_its_scaling_factor(dataset: Path, autoencoder_run: Path,
                                                                tmp_path: Path) -> None:
    start = AutoencoderKL.from_pretrained(autoencoder_run / "model", subfolder="vae")
    out = tmp_path / "decoder"
    training_main(["autoencoder", "--dataset", str(dataset), "--out", str(out), "--resolution", "32",
                   "--steps", "3", "--batch-size", "4", "--lr", "1e-3", "--init", str(autoencoder_run / "model" / "vae"),
                   "--decoder-only"])
    tuned = AutoencoderKL.from_pretrained(out / "model", subfolder="vae")
    assert tuned.config.scaling_factor == start.config.scaling_factor
    for name, value in start.encoder.state_dict().items():
        assert torch.equal(value, tuned.encoder.state_dict()[name]), name
    assert any(not torch.equal(value, tuned.decoder.state_dict()[name]) for name, value in start.decoder.state_dict().items())
    with pytest.raises(runner.TrainingInputError, match="--decoder-only needs --init"):
        training_main(["autoencoder", "--dataset", str(dataset), "--out", str(tmp_path / "x"), "--decoder-only"])


SHIPPED_MINI = Path(__file__).resolve().parents[1] / "assets" / "mini"


@pytest.mark.skipif(not (SHIPPED_MINI / "vae" / "config.json").is_file(), reason="assets/mini is absent")
def test_recipes_continue_from_the_shipped_fp16_mini_folder(dataset: Path, tmp_path: Path) -> None:
    """assets/mini holds only fp16-variant safetensors; every recipe that takes a model folder reads it."""
    assert not (SHIPPED_MINI / "vae" / "diffusion_pytorch_model.safetensors").exists()
    shipped_vae = AutoencoderKL.from_pretrained(SHIPPED_MINI, subfolder="vae", variant="fp16")

    tuned = tmp_path / "vae"
    training_main(["autoencoder", "--dataset", str(dataset), "--out", str(tuned), "--resolution", "32", "--steps", "1",
                   "--batch-size", "2", "--init", str(SHIPPED_MINI / "vae"), "--decoder-only", "--device", "cpu"])
    tuned_vae = AutoencoderKL.from_pretrained(tuned / "model", subfolder="vae")
    assert tuned_vae.config.block_out_channels == shipped_vae.config.block_out_channels
    assert torch.equal(tuned_vae.encoder.conv_in.weight, shipped_vae.encoder.conv_in.weight.float())

    ldm = tmp_path / "ldm"
    training_main(ldm_args(dataset, SHIPPED_MINI, ldm, "--steps", "1", "--batch-size", "2", "--resolution", "32"))
    assert record(ldm)["status"] == "finished"

    # the shipped UNet is itself a one-step (v-prediction) generator: no teacher for multi-step sampling,
    # and one-step says so; the latent-diffusion run made from the shipped folder is one
    one_step = tmp_path / "one-step"
    one_step_args = ["one-step", "--dataset", str(dataset), "--out", str(one_step), "--resolution", "32",
                     "--steps", "1", "--batch-size", "2", "--device", "cpu"]
    with pytest.raises(runner.TrainingInputError, match="prediction_type 'v_prediction'"):
        training_main([*one_step_args, "--teacher", str(SHIPPED_MINI)])
    training_main([*one_step_args, "--teacher", str(ldm)])
    assert record(one_step)["status"] == "finished"
    assert (one_step / "model" / "unet" / "config.json").is_file()
