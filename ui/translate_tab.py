"""Day <-> night (and clear <-> rainy) with CycleGAN-Turbo: the result sits beside the photo and
follows the photo and the chosen direction; a webcam streams frames through the translation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gradio as gr
from PIL import Image

from ui.recall import history_panel, remembering, settings_drop, stamp, wire_recall
from ui.widgets import (action, api_endpoint, api_image, example, live, photo_input, result_image, run_task,
                        webcam_input, webcam_stream)

if TYPE_CHECKING:
    from pipelines import Studio
    from pipelines.metadata import Settings

EXAMPLES = [
    [example("photo_day_street.png"), "day_to_night"],
    [example("photo_night_street.png"), "night_to_day"],
    [example("photo_day_street.png"), "clear_to_rainy"],
    [example("photo_rainy_street.png"), "rainy_to_clear"],
]


def direction_label(direction: str) -> str:
    """day_to_night -> "Day → night"."""
    return direction.replace("_to_", " → ").capitalize()


def build(studio: Studio) -> None:
    directions = studio.limits.directions
    with gr.Tab("Day ↔ night", id="translate"):
        with gr.Row():
            with gr.Tabs():
                with gr.Tab("Photo", id="translate-photo-tab"):
                    photo = photo_input("Photo", "translate-photo", studio.limits.max_input_side)
                with gr.Tab("Webcam", id="translate-webcam-tab"):
                    camera = webcam_input("translate-webcam")
            image = result_image("Result", "translate-output")
        with gr.Row(equal_height=True):
            direction = gr.Radio([(direction_label(name), name) for name in directions], value=directions[0],
                                 label="Direction", scale=3,
                                 elem_id="translate-direction")
            run = gr.Button("Translate", variant="primary", scale=1, elem_id="translate-run")
        history = history_panel("translate-history")
        drop = settings_drop("translate-settings-drop")
        gr.Examples(EXAMPLES, inputs=[photo, direction], label="Example photos", elem_id="translate-examples")
        png = api_image("translate-api-output")

    def follow(photo: Image.Image | None, direction: str) -> Image.Image | None:
        """The live view: no photo clears the result instead of raising."""
        return None if photo is None else translate(photo, direction)

    def translate(image: Image.Image, direction: str) -> Image.Image:
        result = run_task(studio.translate, image, direction=direction)
        return stamp(studio, "translate", result, direction=direction)

    def translate_frame(frame: Image.Image | None, direction: str) -> Image.Image | None:
        return None if frame is None else run_task(studio.translate, frame, direction=direction)

    def values(settings: Settings) -> list[Any]:
        return [settings.direction]

    inputs = [photo, direction, history.state]
    live([photo.change, direction.change], remembering(follow), inputs, [image, history.state])
    action([run.click], remembering(translate), inputs, [image, history.state])
    webcam_stream(camera, translate_frame, [camera, direction], image)
    wire_recall("translate", [direction], values, image, history, drop)
    api_endpoint(translate, [photo, direction], png)
