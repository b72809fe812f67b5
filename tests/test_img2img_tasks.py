"""Behaviour of sketch, edge and translation tasks on tiny random weights (CPU, no network)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.errors import InputError, TaskUnavailableError
from pipelines import Studio
from pipelines.sketch_to_image import sketch_lines
from tests.conftest import pixel_distance

DIRECTIONS = ("day_to_night", "night_to_day", "clear_to_rainy", "rainy_to_clear")


def cross_sketch(size: tuple[int, int] = (128, 128)) -> np.ndarray:
    width, height = size
    background, stroke = 255, 0
    canvas = np.full((height, width), background, dtype=np.uint8)
    canvas[height // 5: 4 * height // 5, width // 2 - 2: width // 2 + 2] = stroke
    canvas[height // 2 - 2: height // 2 + 2, width // 5: 4 * width // 5] = stroke
    return canvas


def spread_across_seeds(studio: Studio, gamma: float, seeds=range(4)) -> float:
    images = np.stack([np.asarray(studio.sketch_to_image(cross_sketch(), "a cat", gamma=gamma, seed=s), dtype=np.float64)
                       for s in seeds])
    return float(images.std(axis=0).mean())


# --- gamma ------------------------------------------------------------------------------------------

def test_gamma_one_is_deterministic_whatever_the_seed(studio: Studio) -> None:
    assert spread_across_seeds(studio, 1.0) == 0.0


def test_lower_gamma_gives_more_varied_images(studio: Studio) -> None:
    spreads = [spread_across_seeds(studio, gamma) for gamma in (1.0, 0.6, 0.2)]
    assert spreads[0] < spreads[1] < spreads[2], spreads


def test_gamma_changes_the_image(studio: Studio) -> None:
    low = studio.sketch_to_image(cross_sketch(), "a cat", gamma=0.3, seed=1)
    high = studio.sketch_to_image(cross_sketch(), "a cat", gamma=0.7, seed=1)
    assert pixel_distance(low, high) > 1.0


def test_one_calls_settings_never_reach_the_next(studio: Studio) -> None:
    """gamma 0.2 then gamma 1.0 gives, for 1.0, the image a fresh store gives."""
    fresh = Studio.load("tiny", device="cpu", tasks=("sketch_to_image",))
    expected = fresh.sketch_to_image(cross_sketch(), "a cat", gamma=1.0, seed=3)
    studio.sketch_to_image(cross_sketch(), "a cat", gamma=0.2, seed=3)
    studio.translate(Image.new("RGB", (64, 64), "gray"), direction="day_to_night")
    after = studio.sketch_to_image(cross_sketch(), "a cat", gamma=1.0, seed=3)
    assert np.array_equal(np.asarray(after), np.asarray(expected))


@pytest.mark.parametrize("gamma", [-0.01, 1.01, float("nan"), "0.5", None])
def test_bad_gamma_is_refused(studio: Studio, gamma) -> None:
    with pytest.raises(ValueError, match="gamma"):
        studio.sketch_to_image(cross_sketch(), "a cat", gamma=gamma)


# --- sketch input -----------------------------------------------------------------------------------

def test_sketch_accepts_pil_array_and_editor_values(studio: Studio) -> None:
    canvas = cross_sketch()
    as_array = studio.sketch_to_image(canvas, "a cat", gamma=1.0)
    as_pil = studio.sketch_to_image(Image.fromarray(canvas), "a cat", gamma=1.0)
    rgba_layer = np.zeros((128, 128, 4), dtype=np.uint8)
    rgba_layer[canvas == 0] = (0, 0, 0, 255)
    editor = {"background": Image.new("RGBA", (128, 128), (255, 255, 255, 255)),
              "layers": [Image.fromarray(rgba_layer)], "composite": Image.fromarray(rgba_layer)}
    as_editor = studio.sketch_to_image(editor, "a cat", gamma=1.0)
    layers_only = studio.sketch_to_image({"background": None, "layers": [rgba_layer], "composite": None}, "a cat", gamma=1.0)
    for other in (as_pil, as_editor, layers_only):
        assert np.array_equal(np.asarray(as_array), np.asarray(other))


def test_sketches_are_binarised_per_channel_as_upstream() -> None:
    """As the release does: in each channel a value below 0.5 is a line (1), else background (0)."""
    colours = {"black": (0, 0, 0), "red": (255, 0, 0), "blue": (0, 0, 255), "grey 127": (127, 127, 127),
               "grey 128": (128, 128, 128), "white": (255, 255, 255)}
    sketch = Image.fromarray(np.array([list(colours.values())], dtype=np.uint8))
    lines = dict(zip(colours, sketch_lines(sketch)[0].tolist()))
    assert lines == {"black": [True, True, True], "red": [False, True, True], "blue": [True, True, False],
                     "grey 127": [True, True, True], "grey 128": [False, False, False],
                     "white": [False, False, False]}


def test_a_red_sketch_gives_the_model_other_lines_than_a_black_one(studio: Studio) -> None:
    black = np.stack([cross_sketch()] * 3, axis=-1)
    red = black.copy()
    red[..., 0] = 255  # the strokes are (255, 0, 0): lines in green and blue only
    as_black = studio.sketch_to_image(black, "a cat", gamma=1.0)
    as_red = studio.sketch_to_image(red, "a cat", gamma=1.0)
    assert pixel_distance(as_black, as_red) > 0.5


@pytest.mark.parametrize("empty", [np.full((256, 256), 255, np.uint8), np.full((64, 64, 3), 200, np.uint8),
                                   {"background": None, "layers": [], "composite": None},
                                   {"composite": np.zeros((64, 64, 4), np.uint8)}])
def test_empty_canvas_gets_a_clear_message(studio: Studio, empty) -> None:
    with pytest.raises(InputError, match="sketch is empty"):
        studio.sketch_to_image(empty, "a cat")


def test_sketch_of_another_size_keeps_its_size(studio: Studio) -> None:
    image = studio.sketch_to_image(cross_sketch((300, 200)), "a cat", gamma=0.5)
    assert image.size == (300, 200) and image.mode == "RGB"


@pytest.mark.parametrize("upload", ["sketch.png", b"\x89PNG", 42, [[0, 1]]])
def test_non_image_uploads_are_refused(studio: Studio, upload) -> None:
    with pytest.raises(ValueError):
        studio.sketch_to_image(upload, "a cat")
    with pytest.raises(ValueError):
        studio.translate(upload, direction="day_to_night")


# --- edges ------------------------------------------------------------------------------------------

def test_edge_to_image_returns_dark_on_white_edges_and_image_at_input_size(studio: Studio, photo: Image.Image) -> None:
    edges, image = studio.edge_to_image(photo, "a cozy cabin", low_threshold=100, high_threshold=200)
    assert edges.size == image.size == photo.size
    grey = np.asarray(edges.convert("L"))
    assert np.median(grey) == 255 and (grey < 128).mean() > 0.005  # white paper with dark lines


def test_thresholds_change_the_edges(studio: Studio, photo: Image.Image) -> None:
    fine, _ = studio.edge_to_image(photo, "x", low_threshold=10, high_threshold=30)
    coarse, _ = studio.edge_to_image(photo, "x", low_threshold=200, high_threshold=250)
    assert (np.asarray(fine.convert("L")) < 128).sum() > (np.asarray(coarse.convert("L")) < 128).sum()


@pytest.mark.parametrize(("low", "high"), [(200, 100), (100, 100), (-1, 100), (100, 256), (10.5, 20), (None, 200)])
def test_bad_thresholds_are_refused(studio: Studio, photo: Image.Image, low, high) -> None:
    with pytest.raises(ValueError, match="threshold"):
        studio.edge_to_image(photo, "x", low_threshold=low, high_threshold=high)


# --- translation ------------------------------------------------------------------------------------

@pytest.mark.parametrize("direction", DIRECTIONS)
def test_translation_comes_back_at_the_input_size(studio: Studio, photo: Image.Image, direction: str) -> None:
    image = studio.translate(photo, direction=direction)
    assert image.size == photo.size and image.mode == "RGB"


def test_directions_differ(studio: Studio, photo: Image.Image) -> None:
    night = studio.translate(photo, direction="day_to_night")
    rain = studio.translate(photo, direction="clear_to_rainy")
    assert pixel_distance(night, rain) > 1.0


def test_large_inputs_up_to_2048_work(studio: Studio) -> None:
    big = Image.new("RGB", (2048, 1536), (90, 140, 200))
    assert studio.translate(big, direction="night_to_day").size == (2048, 1536)


def test_unknown_direction_lists_the_valid_ones(studio: Studio, photo: Image.Image) -> None:
    with pytest.raises(ValueError) as error:
        studio.translate(photo, direction="horse_to_zebra")
    assert all(direction in str(error.value) for direction in DIRECTIONS)


def test_a_task_not_loaded_says_why() -> None:
    studio = Studio.load("tiny", device="cpu", tasks=())
    with pytest.raises(TaskUnavailableError, match="day_to_night"):
        studio.translate(Image.new("RGB", (64, 64)), direction="day_to_night")


# --- one shared base --------------------------------------------------------------------------------

def _all_tensors(studio: Studio) -> list[torch.Tensor]:
    tensors = [t for module in (studio.store.base.unet, studio.store.base.vae, studio.store.base.text_encoder)
               for t in module.state_dict().values()]
    return tensors + list(_task_tensors(studio))


def _task_tensors(studio: Studio):
    """What tasks hold beside the shared modules: skip convs, conv_in tensors, VAE overrides."""
    for task in studio.store.tasks.values():
        yield from task.skips.state_dict().values()
        yield from (t for pair in (task.conv_in, task.conv_in_pretrained) if pair for t in pair)
        yield from task.vae_overrides.values()


def test_one_copy_of_the_base_unet_with_every_task_loaded(studio: Studio) -> None:
    assert len(studio.store.tasks) == 6
    base = {name: t for name, t in studio.store.base.unet.state_dict().items() if ".lora_" not in name}
    everything = _all_tensors(studio)
    distinctive = {name: t for name, t in base.items() if t.numel() > 1 and not torch.all(t == t.flatten()[0])}
    assert len(distinctive) > 0.5 * len(base)  # constant tensors (norm ones, zero biases) can't be told apart
    for name, tensor in distinctive.items():
        copies = [other for other in everything if other.shape == tensor.shape and torch.equal(other, tensor)]
        assert len(copies) == 1, f"{name} is held {len(copies)} times"
    unet_bytes = sum(t.numel() * t.element_size() for t in base.values())
    task_bytes = sum(t.numel() * t.element_size() for t in _task_tensors(studio))
    assert task_bytes < 0.5 * unet_bytes, (task_bytes, unet_bytes)


def _switch_to(studio: Studio, task_name: str) -> None:
    """Everything that differs between two tasks' calls: which adapters are active, at what scale."""
    with studio.store.model_call(task_name, gamma=0.5):
        pass


@pytest.mark.timing
def test_switching_tasks_costs_under_ten_percent_of_a_call(studio: Studio) -> None:
    """A switch (sketch -> day_to_night adapters and back, halved) against one 128 px sketch call."""
    sketch = cross_sketch()
    call_times, switch_times = [], []
    for _ in range(5):
        start = time.perf_counter()
        studio.sketch_to_image(sketch, "a cat", gamma=0.5, seed=1)
        call_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        _switch_to(studio, "day_to_night")
        _switch_to(studio, "sketch_to_image")
        switch_times.append((time.perf_counter() - start) / 2)
    call, switch = float(np.median(call_times)), float(np.median(switch_times))
    assert switch < 0.10 * call, f"switch {switch * 1e3:.1f} ms vs call {call * 1e3:.1f} ms"
