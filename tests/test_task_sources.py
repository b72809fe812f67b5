"""Where task weights come from: a missing checkpoint is reported, a released one is downloaded,
checked and converted once."""

from __future__ import annotations

from pathlib import Path

import pytest

import models.weights.specs
from models.running.errors import TaskUnavailableError
from models.weights.task_loading import locate_task_weights
from models.weights.specs import CHECKPOINTS
from models.weights.tiny import build_tiny_networks, write_tiny_hub_layout
from pipelines import Studio
from tests import reference_img2img as ref
from tests.test_checkpoints import file_server  # noqa: F401  (fixture)


def test_missing_checkpoints_make_tasks_unavailable_with_the_reason(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ONESTEP_CACHE", str(tmp_path / "cache"))
    model_dir = write_tiny_hub_layout(tmp_path / "sd-turbo")
    studio = Studio.load("local", model_dir=model_dir, device="cpu")
    assert set(studio.unavailable_tasks) == set(CHECKPOINTS)
    assert "day2night.pkl was not found" in studio.unavailable_tasks["day_to_night"]
    assert studio.text_to_image("still works", width=256, height=256).size == (256, 256)
    with pytest.raises(TaskUnavailableError, match="--source hub"):
        studio.translate(studio.text_to_image("x", width=256, height=256), direction="day_to_night")


def test_a_released_checkpoint_is_downloaded_checked_and_converted_once(file_server, tmp_path: Path, monkeypatch) -> None:  # noqa: F811
    url, served = file_server
    monkeypatch.setattr(models.weights.specs, "CHECKPOINT_BASE_URL", f"{url}/")
    monkeypatch.setenv("ONESTEP_CACHE", str(tmp_path / "cache"))
    _, unet, vae = build_tiny_networks()
    ref.make_pix2pix(unet, vae, False, 1, served / "edge_to_image_loras.pkl")
    studio = Studio.load("tiny", device="cpu", tasks=())
    spec = CHECKPOINTS["edge_to_image"]
    converted = locate_task_weights(studio.store, spec, allow_download=True)
    cache = tmp_path / "cache" / "img2img-turbo"
    assert converted == cache / "edge_to_image_loras.safetensors"
    assert (cache / "edge_to_image_loras.pkl.sha256").is_file()
    (served / "edge_to_image_loras.pkl").unlink()
    (cache / "edge_to_image_loras.pkl").unlink()
    assert locate_task_weights(studio.store, spec, allow_download=True) == converted
