"""The PNG "parameters" chunk: AUTOMATIC1111's layout, exact round trips for every task through a
real PNG file (and through Gradio's own PNG encoder), malformed chunks read as plain images."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from gradio.processing_utils import encode_pil_to_bytes
from PIL import ExifTags, Image
from PIL.PngImagePlugin import PngInfo

from pipelines.errors import InputError
from pipelines.metadata import (CHUNK_KEY, TASKS, Settings, format_parameters, model_name, read_settings,
                                save_png, with_settings)

AWKWARD_PROMPT = 'a "quoted" fox, in snow: at dusk\nsecond line, émoji 🦊  '


def settings_for(task: str, prompt: str = "a red fox in snow") -> Settings:
    size = (512, 384)
    model = "tiny random sd-turbo"
    return {
        "text_to_image": Settings("text_to_image", size, model, prompt=prompt, seed=7),
        "sketch_to_image": Settings("sketch_to_image", size, model, prompt=prompt, seed=3, gamma=0.37),
        "edge_to_image": Settings("edge_to_image", size, model, prompt=prompt, low_threshold=90,
                                  high_threshold=210),
        "translate": Settings("translate", size, model, direction="night_to_day"),
        "edit": Settings("edit", size, "stabilityai/sd-turbo, fp16: local", prompt=prompt, seed=4294967295,
                         strength=0.1 + 0.2),
    }[task]


def png_round_trip(image: Image.Image, settings: Settings, folder: Path) -> Image.Image:
    path = folder / "out.png"
    save_png(image, path, settings)
    return Image.open(path)


def test_text_to_image_chunk_is_automatic1111_layout() -> None:
    text = format_parameters(settings_for("text_to_image"))
    assert text == "a red fox in snow\nSteps: 1, Seed: 7, Size: 512x384, Model: tiny random sd-turbo, Task: text_to_image"


def test_task_fields_and_quoting() -> None:
    edge = format_parameters(settings_for("edge_to_image")).splitlines()[-1]
    assert edge.endswith("Task: edge_to_image, Low threshold: 90, High threshold: 210")
    translate = format_parameters(settings_for("translate"))
    assert translate == ("Steps: 1, Size: 512x384, Model: tiny random sd-turbo, Task: translate, "
                         "Direction: night_to_day")  # no prompt line, no seed: translate has neither
    edit = format_parameters(settings_for("edit"))
    assert 'Model: "stabilityai/sd-turbo, fp16: local"' in edit and "Strength: 0.30000000000000004" in edit


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("prompt", ["a red fox in snow", AWKWARD_PROMPT, ""])
def test_chunk_round_trips_through_a_png_file(task: str, prompt: str, tmp_path: Path) -> None:
    settings = settings_for(task, prompt)
    opened = png_round_trip(Image.new("RGB", settings.size, (10, 20, 30)), settings, tmp_path)
    read = read_settings(opened)
    assert read.notice is None
    assert read.settings == settings


@pytest.mark.parametrize("task", TASKS)
def test_gradio_png_carries_the_chunk(task: str) -> None:
    """Gradio copies text `info` into every PNG it serves: with_settings is all the app needs."""
    settings = settings_for(task, AWKWARD_PROMPT)
    image = with_settings(Image.new("RGB", settings.size), settings)
    served = Image.open(io.BytesIO(encode_pil_to_bytes(image, "png")))
    assert read_settings(served).settings == settings


@pytest.mark.parametrize("task", TASKS)
def test_gradio_jpeg_carries_the_settings_in_exif(task: str) -> None:
    """The page's result images are JPEG: the same text sits in their EXIF UserComment, as
    AUTOMATIC1111 writes it for a JPEG."""
    settings = settings_for(task, AWKWARD_PROMPT)
    image = with_settings(Image.new("RGB", settings.size), settings)
    served = Image.open(io.BytesIO(encode_pil_to_bytes(image, "jpeg")))
    assert served.format == "JPEG" and read_settings(served).settings == settings


def test_jpeg_with_a_camera_comment_is_plain_without_notice() -> None:
    exif = Image.Exif()
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.UserComment] = b"ASCII\0\0\0OLYMPUS DIGITAL CAMERA"
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "JPEG", exif=exif.tobytes())
    assert read_settings(Image.open(buffer)) == read_settings(Image.new("RGB", (8, 8)))


def test_real_outputs_round_trip_and_restore_the_call(studio, photo, tmp_path: Path) -> None:
    """The settings read back from a saved output reproduce the same image."""
    settings = Settings("edit", photo.size, model_name(studio.source, "edit"), prompt="snow", seed=5, strength=0.6)
    image = studio.edit(photo, **settings.options())
    read = read_settings(png_round_trip(image, settings, tmp_path))
    assert read.settings == settings
    again = studio.edit(photo, **read.settings.options())
    assert again.tobytes() == image.tobytes()


def test_options_are_the_studio_keywords() -> None:
    assert settings_for("text_to_image").options() == {"prompt": "a red fox in snow", "seed": 7,
                                                       "width": 512, "height": 384}
    assert settings_for("translate").options() == {"direction": "night_to_day"}
    assert settings_for("sketch_to_image").options() == {"prompt": "a red fox in snow", "seed": 3, "gamma": 0.37}


def test_model_name_names_the_checkpoint(studio) -> None:
    assert model_name(studio.source, "text_to_image") == "tiny random sd-turbo"
    assert model_name(studio.source, "translate", "day_to_night") == "tiny random sd-turbo + day2night"
    assert model_name(studio.source, "sketch_to_image") == "tiny random sd-turbo + sketch_to_image_stochastic_lora"


MALFORMED = {
    "not parameters": ("just some text", "cannot read"),
    "automatic1111's own": ("a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512, "
                            "Model hash: abc, Model: v1-5", "Task"),
    "seed not a number": ("a cat\nSteps: 1, Seed: x1, Size: 512x512, Model: m, Task: edit, Strength: 0.5", "Seed"),
    "strength out of range": ("a cat\nSteps: 1, Seed: 1, Size: 512x512, Model: m, Task: edit, Strength: 2",
                              "strength"),
    "unknown task": ("Steps: 1, Seed: 1, Size: 512x512, Model: m, Task: upscale", "Task"),
    "bad size": ("a\nSteps: 1, Seed: 1, Size: big, Model: m, Task: text_to_image", "Size"),
    "field of another task": ("a\nSteps: 1, Seed: 1, Size: 512x512, Model: m, Task: edit, Strength: 0.5, "
                              "Gamma: 0.4", "gamma"),
    "missing option": ("a\nSteps: 1, Seed: 1, Size: 512x512, Model: m, Task: edit", "strength"),
    "two steps": ("a\nSteps: 2, Seed: 1, Size: 512x512, Model: m, Task: text_to_image", "Steps"),
    "unterminated quote": ('a\nSteps: 1, Seed: 1, Size: 512x512, Model: "m, Task: text_to_image', "Model"),
    "direction not known": ("Steps: 1, Size: 64x64, Model: m, Task: translate, Direction: left", "direction"),
    "edge with a seed": ("a\nSteps: 1, Seed: 1, Size: 64x64, Model: m, Task: edge_to_image, Low threshold: 1, "
                         "High threshold: 2", "seed"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_chunk_is_a_plain_image_with_a_notice(case: str, tmp_path: Path) -> None:
    text, named = MALFORMED[case]
    info = PngInfo()
    info.add_text(CHUNK_KEY, text)
    path = tmp_path / "bad.png"
    Image.new("RGB", (64, 64)).save(path, pnginfo=info)
    read = read_settings(Image.open(path))
    assert read.settings is None
    assert read.notice is not None and "plain image" in read.notice and named in read.notice


def test_image_without_chunk_is_plain_without_notice() -> None:
    assert read_settings(Image.new("RGB", (8, 8))) == read_settings(Image.new("L", (8, 8)))
    assert read_settings(Image.new("RGB", (8, 8))).settings is None
    assert read_settings(Image.new("RGB", (8, 8))).notice is None


@pytest.mark.parametrize("bad", [
    {"task": "edit", "prompt": "x", "seed": 1},  # no strength
    {"task": "translate", "direction": "day_to_night", "seed": 1},  # translate has no seed
    {"task": "edit", "prompt": "x", "seed": -1, "strength": 0.5},
    {"task": "edge_to_image", "prompt": "x", "low_threshold": 300, "high_threshold": 400},
    {"task": "edge_to_image", "prompt": "x", "low_threshold": 200, "high_threshold": 100},
])
def test_settings_refuse_bad_values(bad: dict[str, object]) -> None:
    with pytest.raises(InputError):
        Settings(size=(512, 512), model="m", **bad)  # type: ignore[arg-type]

