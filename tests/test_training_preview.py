"""preview-decoder: a tiny autoencoder distilled from a base's VAE, exported beside the base and
used by the Studio for live text previews (tiny base and tiny generated data, CPU, seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderTiny
from safetensors import safe_open

from pipelines import Studio
from tests.test_training_ldm import write_shapes_dataset
from tests.training_turbo_data import write_paired
from training.__main__ import main as training_main
from training.runner import TrainingInputError

SIZE = 32
TINY_PREVIEW = ["--decoder-width", "8", "--decoder-blocks", "1,1,1,0", "--encoder-width", "8",
                "--encoder-blocks", "1,1,1,1"]


def run_preview(dataset: Path, out: Path, steps: int, *extra: str) -> None:
    training_main(["preview-decoder", "--base", "tiny", "--dataset", str(dataset), "--out", str(out),
                   "--steps", str(steps), "--batch-size", "8", "--resolution", str(SIZE), "--lr", "3e-3",
                   "--checkpoint-every", "5", "--sample-every", "100", "--device", "cpu", *TINY_PREVIEW, *extra])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_shapes_dataset(tmp_path_factory.mktemp("shapes") / "captioned", size=SIZE)


@pytest.fixture(scope="module")
def preview_run(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "preview"
    run_preview(dataset, out, 40)
    return out


def record(out: Path) -> dict:
    return json.loads((out / "record.json").read_text())


def test_the_tiny_decoder_learns_to_match_the_full_vae(preview_run: Path) -> None:
    summary = record(preview_run)
    assert summary["status"] == "finished" and summary["steps_done"] == 40
    l1 = summary["loss_summary"]["l1"]
    assert l1["last_10pct_mean"] < 0.5 * l1["first"], l1
    metrics = summary["metrics"]
    assert metrics["test_images"] > 0
    assert metrics["decoder_parameters"] < metrics["full_decoder_parameters"]
    assert metrics["test_psnr_vs_full_vae_encoded_db"] > 12, metrics  # one step scores about 7 dB here
    tiny = AutoencoderTiny.from_pretrained(preview_run / "model" / "taesd")
    assert tiny.config.scaling_factor == 1.0 and tiny.config.num_decoder_blocks == [1, 1, 1, 0]
    assert json.loads((preview_run / "model" / "preview.json").read_text())["base"] == "tiny"


def test_a_resumed_run_ends_where_an_unbroken_one_does(dataset: Path, tmp_path: Path) -> None:
    run_preview(dataset, tmp_path / "whole", 10)
    run_preview(dataset, tmp_path / "split", 5)
    run_preview(dataset, tmp_path / "split", 10, "--resume")
    weights = [tmp_path / name / "model" / "taesd" / "diffusion_pytorch_model.safetensors" for name in ("whole", "split")]
    with safe_open(str(weights[0]), "pt") as whole, safe_open(str(weights[1]), "pt") as split:
        for key in whole.keys():
            assert torch.equal(whole.get_tensor(key), split.get_tensor(key)), key


@pytest.mark.parametrize(("flag", "value", "message"), [("--decoder-blocks", "3,3", "4 non-negative"),
                                                         ("--encoder-blocks", "a,b,c,d", "integers"),
                                                         ("--generated-fraction", "1.5", "[0, 1]")])
def test_bad_settings_are_refused_before_training(dataset: Path, tmp_path: Path, flag: str, value: str,
                                                  message: str) -> None:
    with pytest.raises(TrainingInputError, match=message):
        run_preview(dataset, tmp_path / "bad", 2, flag, value)


def test_export_puts_it_beside_the_base_and_the_studio_previews_with_it(
        preview_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sketch_run = tmp_path / "sketch"
    training_main(["pix2pix-turbo", "--dataset", str(write_paired(tmp_path / "paired")), "--out", str(sketch_run),
                   "--task", "sketch", "--batch-size", "2", "--base", "tiny", "--steps", "1",
                   "--resolution", str(SIZE), "--device", "cpu"])
    exported = tmp_path / "model"
    training_main(["export", str(sketch_run), "--out", str(exported), "--dtype", "float16",
                   "--preview-decoder", str(preview_run)])
    with safe_open(str(exported / "taesd" / "diffusion_pytorch_model.safetensors"), "pt") as handle:
        assert {handle.get_tensor(key).dtype for key in handle.keys()} == {torch.float16}
    assert "block_out_channels" not in json.loads((exported / "taesd" / "config.json").read_text())  # no load warning
    assert json.loads((exported / "EXPORT.json").read_text())["preview_decoder"] == str(preview_run.resolve())
    monkeypatch.setenv("ONESTEP_CACHE", str(tmp_path / "cache"))
    studio = Studio.load("local", model_dir=exported, device="cpu", tasks=("sketch_to_image",))
    assert studio.preview_decoder is not None
    assert studio.preview_decoder.config.num_decoder_blocks == [1, 1, 1, 0]
    preview = studio.text_to_image("a red circle", seed=3, preview=True)
    final = studio.text_to_image("a red circle", seed=3)
    assert preview.size == final.size and preview.tobytes() != final.tobytes()


def test_export_refuses_a_preview_decoder_of_another_base(preview_run: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "preview.json").write_text(json.dumps({"base": "/elsewhere", "base_dir": "/elsewhere"}))
    sketch_run = tmp_path / "sketch"
    training_main(["pix2pix-turbo", "--dataset", str(write_paired(tmp_path / "paired")), "--out", str(sketch_run),
                   "--task", "sketch", "--batch-size", "2", "--base", "tiny", "--steps", "1",
                   "--resolution", str(SIZE), "--device", "cpu"])
    with pytest.raises(TrainingInputError, match="distilled from base /elsewhere"):
        training_main(["export", str(sketch_run), "--out", str(tmp_path / "model"), "--preview-decoder", str(other)])
    assert not (tmp_path / "model").exists()
