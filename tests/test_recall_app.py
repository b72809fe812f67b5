"""Issue 12 in the served app (tiny weights, gradio_client): every endpoint returns a PNG whose
settings chunk round-trips; /edit takes an optional mask and keeps the photo outside it; the
history, restore and mask helpers of the UI; the webcam inputs stream into their tasks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image, ImageDraw

import app
from pipelines import Studio
from pipelines.metadata import Settings, model_name, read_settings, save_png
from tests.conftest import opened, serving
from ui import build_app
from ui.edit_tab import brushed_mask
from ui.recall import HISTORY_SIZE, remember, restored
from ui.widgets import WEBCAM_QUEUE

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "examples"
PHOTO = ASSETS / "photo_day_street.png"  # 512x384
SKETCH = ASSETS / "sketch_house.png"


@pytest.fixture(scope="module")
def served(studio: Studio) -> Iterator[app.Served]:
    with serving(studio) as served:
        yield served


@pytest.fixture(scope="module")
def client(served: app.Served) -> Client:
    return Client(served.local_url, verbose=False)


def settings_of(path: str) -> Settings | None:
    with Image.open(path) as image:
        assert image.format == "PNG"
        read = read_settings(image)
    assert read.notice is None
    return read.settings


# --- the settings chunk on every endpoint's PNG ------------------------------------------------------

def test_every_endpoint_returns_its_settings(client: Client, studio: Studio) -> None:
    def model(task: str, direction: str | None = None) -> str:
        return model_name(studio.source, task, direction)  # type: ignore[arg-type]

    text = client.predict(prompt="a fox, in snow", seed=11, width=256, height=320, api_name="/text_to_image")
    assert settings_of(text) == Settings("text_to_image", (256, 320), model("text_to_image"), prompt="a fox, in snow",
                                         seed=11)
    sketch = client.predict(sketch=handle_file(SKETCH), prompt="a cottage", gamma=0.25, seed=3,
                            api_name="/sketch_to_image")
    assert settings_of(sketch) == Settings("sketch_to_image", Image.open(SKETCH).size, model("sketch_to_image"),
                                           prompt="a cottage", gamma=0.25, seed=3)
    _, edge = client.predict(image=handle_file(PHOTO), prompt="a street", low_threshold=50, high_threshold=150,
                             api_name="/edge_to_image")
    assert settings_of(edge) == Settings("edge_to_image", (512, 384), model("edge_to_image"), prompt="a street",
                                         low_threshold=50, high_threshold=150)
    night = client.predict(image=handle_file(PHOTO), direction="day_to_night", api_name="/translate")
    assert settings_of(night) == Settings("translate", (512, 384), model("translate", "day_to_night"),
                                          direction="day_to_night")
    edited = client.predict(image=handle_file(PHOTO), prompt="snow", strength=0.4, seed=9, api_name="/edit")
    assert settings_of(edited) == Settings("edit", (512, 384), model("edit"), prompt="snow", strength=0.4, seed=9)


def test_settings_from_an_endpoint_reproduce_its_image(client: Client, studio: Studio) -> None:
    path = client.predict(image=handle_file(PHOTO), prompt="autumn", strength=0.6, seed=5, api_name="/edit")
    settings = settings_of(path)
    assert settings is not None
    again = studio.edit(Image.open(PHOTO), **settings.options())
    assert np.array_equal(np.asarray(again), np.asarray(opened(path)))


# --- masked edit through /edit --------------------------------------------------------------------------

def test_edit_with_a_mask_keeps_the_photo_outside_it(client: Client, tmp_path: Path) -> None:
    mask = Image.new("L", (512, 384), 0)
    ImageDraw.Draw(mask).ellipse((150, 100, 350, 300), fill=255)
    mask.save(tmp_path / "mask.png")
    path = client.predict(image=handle_file(PHOTO), prompt="a red car", strength=0.9, seed=1,
                          mask=handle_file(tmp_path / "mask.png"), feather=6, api_name="/edit")
    result, photo = np.asarray(opened(path)), np.asarray(opened(PHOTO))
    outside = np.asarray(mask) == 0
    assert np.array_equal(result[outside], photo[outside])
    assert not np.array_equal(result[~outside], photo[~outside])


@pytest.mark.parametrize(("mask", "message"), [(Image.new("L", (64, 64), 255), "mask is 64x64 but the photo is 512x384"),
                                               (Image.new("L", (512, 384), 0), "mask is empty")])
def test_edit_refuses_a_bad_mask_with_the_message(client: Client, tmp_path: Path, mask: Image.Image,
                                                  message: str) -> None:
    mask.save(tmp_path / "mask.png")
    with pytest.raises(AppError, match=message):
        client.predict(image=handle_file(PHOTO), prompt="x", strength=0.5, seed=0,
                       mask=handle_file(tmp_path / "mask.png"), feather=8, api_name="/edit")


# --- the UI's history, restore and mask helpers ------------------------------------------------------------

def test_history_is_newest_first_and_bounded() -> None:
    images = [Image.new("L", (1, 1), value) for value in range(HISTORY_SIZE + 3)]
    history: list[Image.Image] = []
    for image in images:
        history = remember(history, image)
    assert [image.getpixel((0, 0)) for image in history] == list(range(HISTORY_SIZE + 2, 2, -1))
    assert remember(history, None) is history


def edit_values(settings: Settings) -> list[object]:
    return [settings.prompt, settings.strength, settings.seed]


def test_restore_takes_the_settings_of_the_tab_and_nothing_else(tmp_path: Path) -> None:
    settings = Settings("edit", (8, 8), "m", prompt="snow", strength=0.3, seed=4)
    save_png(Image.new("RGB", (8, 8)), tmp_path / "made.png", settings)
    assert restored("edit", Image.open(tmp_path / "made.png"), edit_values, 3) == ["snow", 0.3, 4]
    skipped = [gr.skip()] * 3
    with pytest.warns(UserWarning, match="made on the Edit tab"):
        assert restored("translate", Image.open(tmp_path / "made.png"), edit_values, 3) == skipped
    assert restored("edit", Image.new("RGB", (8, 8)), edit_values, 3) == skipped  # no chunk
    broken = Image.new("RGB", (8, 8))
    broken.info["parameters"] = "snow\nSteps: 1, Seed: many"
    with pytest.warns(UserWarning, match="used as a plain image"):
        assert restored("edit", broken, edit_values, 3) == skipped  # malformed: a notice, no change
    assert restored("edit", None, edit_values, 3) == skipped


def test_brushed_mask_is_the_union_of_the_layers() -> None:
    first, second = Image.new("RGBA", (40, 30), (0, 0, 0, 0)), Image.new("RGBA", (40, 30), (0, 0, 0, 0))
    ImageDraw.Draw(first).rectangle((0, 0, 9, 9), fill=(255, 59, 48, 255))
    ImageDraw.Draw(second).rectangle((20, 10, 29, 19), fill=(255, 59, 48, 128))
    mask = brushed_mask({"background": None, "layers": [first, second]}, (40, 30))
    assert mask is not None and np.count_nonzero(np.asarray(mask)) == 200
    assert brushed_mask({"layers": [Image.new("RGBA", (40, 30))]}, (40, 30)) is None  # nothing brushed
    assert brushed_mask(None, (40, 30)) is None
    assert brushed_mask({"layers": [first]}, (80, 60)).size == (80, 60)  # an editor canvas of another scale


# --- webcam streaming inputs -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def demo(studio: Studio) -> gr.Blocks:
    return build_app(studio, queue_size=4)


FRAME_SETTINGS = {"translate": ["day_to_night"], "edit": ["snow", 0.5, 0]}  # the other inputs of each stream


@pytest.mark.parametrize(("camera", "task"), [("translate-webcam", "translate"), ("edit-webcam", "edit")])
def test_webcam_inputs_stream_into_their_task(demo: gr.Blocks, studio: Studio, camera: str, task: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The webcam is a streaming image input whose stream event runs the task on each frame (one
    stream at a time, in its own concurrency group); a frame given to that event is answered."""
    component = next(block for block in demo.blocks.values() if getattr(block, "elem_id", None) == camera)
    assert component.streaming and component.sources == ["webcam"]
    stream = next(fn for fn in demo.fns.values()
                  if fn.connection == "stream" and [block._id for block in fn.inputs][:1] == [component._id])
    assert (stream.concurrency_id, stream.concurrency_limit) == (WEBCAM_QUEUE, 1) and stream.time_limit
    calls: list[str] = []
    original = getattr(studio, task)
    monkeypatch.setattr(studio, task, lambda *args, **kwargs: calls.append(task) or original(*args, **kwargs))
    frame = Image.open(PHOTO).convert("RGB")
    answer = stream.fn(frame, *FRAME_SETTINGS[task])
    assert calls == [task] and answer.size == frame.size
