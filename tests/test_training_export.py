"""export: trained pix2pix-turbo and cyclegan-turbo runs become one model folder that
Studio.load(source="local") serves, with outputs that differ from the untrained base."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from models.weights.base_loading import load_sd_turbo
from models.weights.configs import TINY_UNET_CONFIG, TINY_VAE_CONFIG
from models.weights.tiny import write_tiny_hub_layout
from pipelines import Studio
from tests.training_turbo_data import domain_images, write_paired, write_unpaired
from training.__main__ import main as training_main
from training.cyclegan_turbo import CycleGANTurbo
from training.pix2pix_turbo import Pix2PixTurbo, control_batch
from training.provenance import lineage, record_names, write_provenance
from training.runner import TrainingInputError
from training.turbo_common import CaptionEncoder

SIZE = 32


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export")
    common = ["--base", "tiny", "--steps", "3", "--resolution", str(SIZE), "--device", "cpu", "--lr", "3e-3"]
    training_main(["pix2pix-turbo", "--dataset", str(write_paired(root / "paired")), "--out", str(root / "sketch"),
                   "--task", "sketch", "--batch-size", "2", *common])
    training_main(["cyclegan-turbo", "--dataset", str(write_unpaired(root / "unpaired", count=3)),
                   "--out", str(root / "day_night"), "--batch-size", "1", "--rank-unet", "4", *common])
    return {"sketch": root / "sketch", "day_night": root / "day_night", "root": root}


@pytest.fixture(scope="module")
def exported(runs: dict[str, Path]) -> Path:
    out = runs["root"] / "model"
    training_main(["export", str(runs["sketch"]), str(runs["day_night"]), "--out", str(out)])
    return out


@pytest.fixture(scope="module")
def studio(exported: Path, tmp_path_factory: pytest.TempPathFactory) -> Studio:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ONESTEP_CACHE", str(tmp_path_factory.mktemp("cache")))
        return Studio.load("local", model_dir=exported, device="cpu",
                           tasks=("sketch_to_image", "day_to_night", "night_to_day"))


def untrained(kind: str, base_dir: Path):
    torch.manual_seed(0)
    base = load_sd_turbo(base_dir, torch.device("cpu"), torch.float32)
    return Pix2PixTurbo(base, True, 8, 4) if kind == "sketch" else CycleGANTurbo(base, 4, 4)


def test_model_folder_has_the_sd_turbo_layout_and_the_task_files(exported: Path) -> None:
    for part in ("tokenizer/vocab.json", "text_encoder/model.safetensors", "unet/diffusion_pytorch_model.safetensors",
                 "vae/diffusion_pytorch_model.safetensors", "scheduler/scheduler_config.json"):
        assert (exported / part).is_file(), part
    tasks = sorted(path.name for path in (exported / "img2img-turbo").iterdir())
    assert tasks == ["day2night.safetensors", "night2day.safetensors", "sketch_to_image_stochastic_lora.safetensors"]
    record = json.loads((exported / "EXPORT.json").read_text())
    assert record["tasks"] == ["day_to_night", "night_to_day", "sketch_to_image"]
    # the side --source mini serves at: latent cells times the VAE's downsampling (tiny: 8 x 8)
    downsampling = 2 ** (len(TINY_VAE_CONFIG["block_out_channels"]) - 1)
    assert record["native_side"] == TINY_UNET_CONFIG["sample_size"] * downsampling == 64


def test_studio_serves_every_exported_task(studio: Studio) -> None:
    assert studio.source.active == "local"
    assert studio.unavailable_tasks == {}


def test_trained_sketch_model_differs_from_the_untrained_base(studio: Studio, exported: Path) -> None:
    sketch = np.full((SIZE, SIZE), 255, np.uint8)
    sketch[8:24, 8] = sketch[8:24, 23] = sketch[8, 8:24] = sketch[23, 8:24] = 0
    served = torch.from_numpy(np.asarray(studio.sketch_to_image(sketch, "a red square", gamma=1.0), np.float32))
    model = untrained("sketch", exported)
    control = control_batch(torch.from_numpy(np.repeat((sketch < 128)[..., None], 3, axis=-1))[None], torch.tensor([0]), torch.device("cpu"))
    with torch.no_grad():
        bare = model(control, CaptionEncoder(model.base)(["a red square"]), torch.tensor([1.0]))
    bare_pixels = ((bare[0].clamp(-1, 1) + 1) * 127.5).round().permute(1, 2, 0)
    assert (served - bare_pixels).abs().mean() > 1.0


def test_trained_translation_differs_from_the_untrained_base(studio: Studio, exported: Path) -> None:
    """day_to_night against the untrained model (at the app's 512 px); night_to_day differs from it."""
    direction = "day_to_night"
    photo = Image.fromarray(domain_images(140, 230, 1, 5)[0])
    served = np.asarray(studio.translate(photo, direction=direction).resize((SIZE, SIZE)), np.float32)
    model = untrained("cyclegan", exported)
    pixels = torch.from_numpy(np.asarray(photo.resize((512, 512), Image.LANCZOS), np.float32)).permute(2, 0, 1)[None]
    caption = "driving in the night" if direction == "day_to_night" else "driving in the day"
    with torch.no_grad():
        bare = model(pixels / 127.5 - 1, "a2b" if direction == "day_to_night" else "b2a",
                     CaptionEncoder(model.base)([caption]))
    bare_image = Image.fromarray(((bare[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy())
    assert np.abs(served - np.asarray(bare_image.resize((SIZE, SIZE)), np.float32)).mean() > 1.0
    other = np.asarray(studio.translate(photo, direction="night_to_day").resize((SIZE, SIZE)), np.float32)
    assert np.abs(served - other).mean() > 1.0


def test_float16_export_halves_the_files_and_still_serves(runs: dict[str, Path], tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "fp16"
    training_main(["export", str(runs["sketch"]), "--out", str(out), "--dtype", "float16"])
    assert (out / "unet" / "diffusion_pytorch_model.fp16.safetensors").is_file()
    with safe_open(str(out / "img2img-turbo" / "sketch_to_image_stochastic_lora.safetensors"), "pt") as handle:
        assert {handle.get_tensor(key).dtype for key in handle.keys()} == {torch.float16}
    monkeypatch.setenv("ONESTEP_CACHE", str(tmp_path / "cache"))
    studio = Studio.load("local", model_dir=out, device="cpu", tasks=("sketch_to_image",))
    assert studio.unavailable_tasks == {}


def test_export_refuses_bad_input(runs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(TrainingInputError, match="task.json"):
        training_main(["export", str(tmp_path), "--out", str(tmp_path / "a")])
    with pytest.raises(TrainingInputError, match="two runs"):
        training_main(["export", str(runs["sketch"]), str(runs["sketch"]), "--out", str(tmp_path / "b")])
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "file").write_text("x")
    with pytest.raises(TrainingInputError, match="not an empty folder"):
        training_main(["export", str(runs["sketch"]), "--out", str(taken)])
    other = write_tiny_hub_layout(tmp_path / "other-base")
    run_info = json.loads((runs["day_night"] / "model" / "task.json").read_text())
    moved = tmp_path / "other-run" / "model"
    (moved / "img2img-turbo").mkdir(parents=True)
    for name in ("day2night.safetensors", "night2day.safetensors"):
        (moved / "img2img-turbo" / name).write_bytes((runs["day_night"] / "model" / "img2img-turbo" / name).read_bytes())
    (moved / "task.json").write_text(json.dumps({**run_info, "base": str(other), "base_dir": str(other)}))
    with pytest.raises(TrainingInputError, match="one base"):
        training_main(["export", str(runs["sketch"]), str(moved.parent), "--out", str(tmp_path / "c")])
    assert not any(path.name.startswith(".tmp-") for path in tmp_path.iterdir())


def test_export_keeps_the_records_of_its_runs_and_lists_them(exported: Path) -> None:
    assert json.loads((exported / "EXPORT.json").read_text())["records"] == ["sketch", "day_night"]
    assert sorted(path.name for path in (exported / "records").iterdir()) == ["day_night.json", "sketch.json"]
    assert json.loads((exported / "records" / "sketch.json").read_text())["recipe"] == "pix2pix-turbo"
    runs = (exported / "RUNS.md").read_text()
    assert "### sketch (pix2pix-turbo): 3 steps" in runs and "### day_night (cyclegan-turbo): 3 steps" in runs
    assert "steps 0 -> 3" in runs  # each session, with its command (here pytest's)


def write_record(run: Path, recipe: str, **arguments: str) -> Path:
    run.mkdir(parents=True)
    session = {"arguments": {"out": str(run.relative_to(run.parents[1])), **arguments}, "start_step": 0,
               "end_step": 10, "wall_time_s": 60.0, "s_per_step": 6.0, "command": ["python", "-m", "training", recipe],
               "started_utc": "2026-12-07T06:00:00+00:00", "device": "cpu"}
    (run / "record.json").write_text(json.dumps({"recipe": recipe, "status": "finished", "steps_done": 10,
                                                 "wall_time_s": 60.0, "sessions": [session],
                                                 "loss_summary": {"l1": {"first": 1.0, "last_10pct_mean": 0.25}},
                                                 "metrics": {"test_psnr_db": 24.5}}))
    return run


def test_the_lineage_follows_model_folders_back_to_the_autoencoder(tmp_path: Path) -> None:
    """Relative paths start where the run was trained (its --out as given ends its folder), absolute
    ones as they are; a model not made by a run (tiny, hub, a folder without a record) ends a line."""
    runs = tmp_path / "runs"
    vae = write_record(runs / "vae", "autoencoder")
    vae_ft = write_record(runs / "vae-ft", "autoencoder", init="runs/vae/model/vae")
    ldm = write_record(runs / "ldm", "latent-diffusion", vae="runs/vae-ft")
    one_step = write_record(runs / "one-step", "one-step", teacher="runs/ldm", vae="None")
    classifier = write_record(runs / "classifier", "classifier")
    sketch = write_record(runs / "sketch", "pix2pix-turbo", base="runs/one-step/model", perceptual="runs/classifier")
    edge = write_record(runs / "edge", "pix2pix-turbo", base=str(one_step / "model"), perceptual=str(classifier))
    other = write_record(tmp_path / "elsewhere" / "sketch", "pix2pix-turbo", base="tiny")
    assert lineage([edge, sketch, other]) == [vae, vae_ft, ldm, one_step, classifier, edge, sketch, other]
    assert record_names([sketch, other]) == {sketch: "sketch", other: "elsewhere-sketch"}

    written = write_provenance([sketch], tmp_path / "model")
    assert written == ["vae", "vae-ft", "ldm", "one-step", "classifier", "sketch"]
    runs_md = (tmp_path / "model" / "RUNS.md").read_text()
    headers = [line for line in runs_md.splitlines() if line.startswith("### ")]
    assert headers[0] == "### vae (autoencoder): 10 steps, 1.0 min, finished" and len(headers) == 6
    assert "steps 0 -> 10, 1.0 min, 6.00 s/step, cpu:\n  `python -m training autoencoder`" in runs_md
    assert "- losses (first -> mean of the last 10%): l1 1 -> 0.25" in runs_md and "test_psnr_db: 24.5" in runs_md
