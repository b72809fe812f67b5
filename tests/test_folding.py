"""LoRA folded into the weights (the CPU default for small bases): the same images as unfolded
adapters, every adapter off while folded, and results that do not depend on earlier calls."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from models.running.adapters import lora_layers
from models.speed.acceleration import Acceleration
from pipelines import Studio
from tests.conftest import float32_cpu_defaults


@pytest.fixture(scope="module")
def folded() -> Studio:
    studio = Studio.load("tiny", device="cpu", acceleration=float32_cpu_defaults())  # compared with fp32 below
    assert studio.acceleration.fold_lora, "the CPU default for a small base folds LoRA"
    return studio


@pytest.fixture(scope="module")
def unfolded() -> Studio:
    return Studio.load("tiny", device="cpu", acceleration=Acceleration(fold_lora=False))


def sketch() -> np.ndarray:
    drawing = np.full((64, 64), 255, np.uint8)
    drawing[16:48, 20] = drawing[40, 10:54] = 0
    return drawing


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def calls(studio: Studio, photo: Image.Image) -> dict[str, Image.Image]:
    return {"sketch 0.4": studio.sketch_to_image(sketch(), "a cat", gamma=0.4, seed=3),
            "sketch 1.0": studio.sketch_to_image(sketch(), "a cat", gamma=1.0),
            "edges": studio.edge_to_image(photo, "a street"),
            "night": studio.translate(photo, direction="day_to_night"),
            "text": studio.text_to_image("a cat", seed=1)}


def test_folded_adapters_give_the_unfolded_images(folded: Studio, unfolded: Studio, photo: Image.Image) -> None:
    ours, reference = calls(folded, photo), calls(unfolded, photo)
    for name in ours:  # float rounding only, which the random tiny networks amplify at a few pixels
        difference = np.abs(pixels(ours[name]) - pixels(reference[name]))  # (the edge task most: 14 levels)
        assert np.quantile(difference, 0.99) <= 2 and difference.mean() < 0.2, (name, difference.max())


def test_a_result_does_not_depend_on_the_calls_before_it(folded: Studio, photo: Image.Image) -> None:
    first = pixels(folded.sketch_to_image(sketch(), "a cat", gamma=0.4, seed=3))
    folded.translate(photo, direction="night_to_day")
    folded.sketch_to_image(sketch(), "a cat", gamma=0.9, seed=3)
    folded.text_to_image("a dog", seed=2)
    assert np.array_equal(pixels(folded.sketch_to_image(sketch(), "a cat", gamma=0.4, seed=3)), first)


def test_a_base_call_runs_on_the_pristine_weights_with_every_adapter_off(folded: Studio,
                                                                        unfolded: Studio) -> None:
    pristine = {name: tensor.clone() for name, tensor in unfolded.store.base.unet.state_dict().items()}
    store = folded.store
    with store.model_call("sketch_to_image", gamma=0.7):
        pass  # the weights stay folded after the call, until another task or gamma runs
    assert all(not layer.active_adapters for layer in lora_layers(store.base.unet) + lora_layers(store.base.vae))
    changed = [name for name, tensor in store.base.unet.state_dict().items() if not torch.equal(tensor, pristine[name])]
    assert changed, "the sketch task's LoRA is folded into some UNet weights"
    with store.model_call():
        pass
    assert all(torch.equal(tensor, pristine[name]) for name, tensor in store.base.unet.state_dict().items())


def test_folded_calls_run_the_plain_layers_and_give_the_wrappers_back(folded: Studio) -> None:
    store = folded.store
    wrappers = lora_layers(store.base.unet) + lora_layers(store.base.vae)
    assert wrappers
    for task in ("sketch_to_image", None):
        with store.model_call(task, gamma=0.5):
            assert not lora_layers(store.base.unet) and not lora_layers(store.base.vae)
            assert "down_blocks.0.resnets.0.conv1.weight" in store.base.unet.state_dict()
        assert lora_layers(store.base.unet) + lora_layers(store.base.vae) == wrappers


def test_without_folding_the_wrappers_stay(unfolded: Studio) -> None:
    store = unfolded.store
    with store.model_call("sketch_to_image", gamma=0.5):
        assert lora_layers(store.base.unet)
