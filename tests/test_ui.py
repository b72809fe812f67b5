"""The UI layer's own pieces, without a server: it imports no torch, builds every control from
studio.limits, turns the Studio's user errors and warnings into Gradio messages, and its canvas
and style helpers."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from pipelines import Studio
from pipelines.errors import InputError, NonFiniteOutputError, TaskUnavailableError
from pipelines.limits import Limits
from ui import build_app

ROOT = Path(__file__).resolve().parent.parent
SKETCH = ROOT / "assets" / "examples" / "sketch_house.png"


def test_ui_does_not_import_torch() -> None:
    code = "import sys, ui; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT,
                            check=True)
    assert result.stdout.strip() == "False"


# --- controls come from the source's limits ----------------------------------------------------------

class MiniStudio:
    """The tiny Studio as a 128 px source would present it: only the limits differ."""

    def __init__(self, studio: Studio) -> None:
        self.studio = studio
        self.limits = Limits.for_native_side(128)

    def __getattr__(self, name: str) -> object:
        return getattr(self.studio, name)


def components(studio: object) -> dict[str, gr.components.Component]:
    demo = build_app(studio, queue_size=2)  # type: ignore[arg-type]
    return {block.elem_id: block for block in demo.blocks.values() if getattr(block, "elem_id", None)}


@pytest.mark.parametrize("native_side", [512, 128])
def test_controls_follow_the_limits_of_the_source(studio: Studio, native_side: int) -> None:
    shown = MiniStudio(studio) if native_side == 128 else studio
    limits = shown.limits
    built = components(shown)
    for elem_id in ("text-width", "text-height"):
        slider = built[elem_id]
        assert (slider.minimum, slider.maximum, slider.step, slider.value) == (
            limits.min_side, limits.max_side, limits.side_step, native_side)
    assert built["sketch-canvas"].props["side"] == native_side
    assert built["gamma"].value == limits.default_gamma
    assert built["edit-strength"].value == limits.default_strength
    assert (built["edge-low"].value, built["edge-high"].value) == limits.default_thresholds
    assert [value for _, value in built["translate-direction"].choices] == list(limits.directions)
    # the edge model is deterministic, so its mode has no seed (a seed would change nothing)
    assert "sketch-seed" in built and "edge-seed" not in built and "edge-seed-randomize" not in built


def test_limits_give_a_mini_source_its_own_sizes() -> None:
    sd_turbo, mini = Limits.for_native_side(512), Limits.for_native_side(128)
    assert (sd_turbo.min_side, sd_turbo.max_side, sd_turbo.side_step) == (256, 1024, 64)
    assert sd_turbo.sizes == tuple(range(256, 1025, 64)) and sd_turbo.preview_sides == tuple(range(64, 513, 64))
    assert (sd_turbo.default_preview_side("cpu"), sd_turbo.default_preview_side("cuda")) == (256, 512)
    assert (mini.min_side, mini.max_side, mini.side_step) == (64, 256, 16)
    assert (mini.default_preview_side("cpu"), mini.default_preview_side("cuda")) == (128, 128)  # not below 128
    assert Limits.for_native_side(64).default_preview_side("cpu") == 64  # never above the native side
    assert (mini.max_seed, mini.max_input_side, mini.default_gamma) == (2**32 - 1, 4096, 0.4)


# --- errors and warnings ------------------------------------------------------------------------------

def test_user_errors_become_gr_error_with_the_message() -> None:
    from ui.widgets import run_task

    def bad(error: Exception) -> None:
        raise error

    for error in (InputError("gamma=2 must be a number in [0, 1]"), NonFiniteOutputError("The model produced NaN"),
                  TaskUnavailableError("The day_to_night model is not available")):
        with pytest.raises(gr.Error, match=re.escape(str(error))):
            run_task(bad, error)
    for bug in (KeyError("bug"), ValueError("a library's ValueError is a bug, not the user's input")):
        with pytest.raises(type(bug)):  # a bug is not dressed up as a user error
            run_task(bad, bug)


def test_studio_input_errors_are_input_errors(studio: Studio) -> None:
    with pytest.raises(InputError, match="seed=-1"):
        studio.text_to_image("x", seed=-1)
    with pytest.raises(InputError, match="width=100"):
        studio.text_to_image("x", width=100)


def test_truncated_prompt_is_shown_as_a_warning(studio: Studio, monkeypatch: pytest.MonkeyPatch) -> None:
    from ui.widgets import run_task

    shown: list[str] = []
    monkeypatch.setattr(gr, "Warning", lambda message, **_: shown.append(message))
    image = run_task(studio.text_to_image, " ".join(["word"] * 120), width=256, height=256)
    assert image.size == (256, 256)
    assert len(shown) == 1 and "77 tokens" in shown[0]


# --- canvas and styles --------------------------------------------------------------------------------

def test_canvas_value_round_trip_and_refusals() -> None:
    from ui.canvas import decode_drawing, drawing_from, drawing_value

    sketch = Image.open(SKETCH).convert("RGB")
    assert np.array_equal(np.asarray(decode_drawing(drawing_value(sketch, 512), 4096)), np.asarray(sketch))
    big = Image.new("RGBA", (2048, 1024), (0, 0, 0, 0))  # transparent: flattened on white, fitted to 512
    shown = decode_drawing(drawing_value(big, 512), 4096)
    assert shown.size == (512, 256) and shown.getpixel((10, 10)) == (255, 255, 255)
    assert drawing_from("", 4096) is None
    for bad, message in [("data:image/jpeg;base64,AAAA", "PNG data URL"),
                         ("data:image/png;base64,not-base64!", "not a readable PNG"),
                         ("data:image/png;base64," + "A" * 9_000_000, "at most"),
                         (drawing_value(sketch, 512), "largest side allowed is 256")]:
        with pytest.raises(InputError, match=message):
            decode_drawing(bad, 256)
        with pytest.raises(gr.Error, match=message):
            drawing_from(bad, 256)


def test_style_presets_wrap_the_prompt() -> None:
    from ui.styles import NO_STYLE, STYLES, apply_style

    assert list(STYLES)[1:] == ["Cinematic", "3D Model", "Anime", "Digital Art", "Photographic", "Pixel art",
                                "Fantasy art", "Neonpunk", "Manga"]
    assert apply_style(NO_STYLE, "a red barn") == "a red barn"
    for style in list(STYLES)[1:]:
        wrapped = apply_style(style, "a red barn")
        assert "a red barn" in wrapped and wrapped != "a red barn"
    assert "a scene" in apply_style("Anime", "  ")
    with pytest.raises(InputError, match="Cinematic"):
        apply_style("Baroque", "a red barn")
