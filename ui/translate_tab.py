"""Day <-> night (and clear <-> rainy) with CycleGAN-Turbo: the result sits beside the photo and
follows the photo and the chosen direction."""

from __future__ import annotations

from typing import TYPE_CHECKING

import gradio as gr
from PIL import Image

from ui.widgets import action, api_endpoint, example, live, photo_input, result_image, run_task

if TYPE_CHECKING:
    from pipelines import Studio

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
            photo = photo_input("Photo", "translate-photo")
            image = result_image("Result", "translate-output")
        with gr.Row(equal_height=True):
            direction = gr.Radio([(direction_label(name), name) for name in directions], value=directions[0],
                                 label="Direction", scale=3,
                                 elem_id="translate-direction")
            run = gr.Button("Translate", variant="primary", scale=1, elem_id="translate-run")
        gr.Examples(EXAMPLES, inputs=[photo, direction], label="Example photos", elem_id="translate-examples")

    def follow(photo: Image.Image | None, direction: str) -> Image.Image | None:
        """The live view: no photo clears the result instead of raising."""
        return None if photo is None else translate(photo, direction)

    def translate(image: Image.Image, direction: str) -> Image.Image:
        return run_task(studio.translate, image, direction=direction)

    live([photo.change, direction.change], follow, [photo, direction], image)
    action([run.click], translate, [photo, direction], image)
    api_endpoint(translate, [photo, direction], image)
