"""Edit (SDEdit in one step): a photo and a prompt; runs when the strength slider is released, when
Enter is pressed in the prompt, on a new photo, and on the Edit button."""

from __future__ import annotations

from typing import TYPE_CHECKING

import gradio as gr
from PIL import Image

from ui.widgets import action, api_endpoint, example, photo_input, result_image, run_task, seed_controls

if TYPE_CHECKING:
    from pipelines import Studio

EXAMPLES = [
    [example("photo_mountain_lake.png"), "a mountain lake in autumn, oil painting", 0.6],
    [example("photo_day_street.png"), "a street covered in snow", 0.5],
]


def build(studio: Studio) -> None:
    limits = studio.limits
    with gr.Tab("Edit", id="edit"):
        with gr.Row():
            with gr.Column():
                photo = photo_input("Photo", "edit-photo")
                prompt = gr.Textbox(label="Prompt (Enter runs the edit)", elem_id="edit-prompt",
                                    placeholder="How the photo should look")
                strength = gr.Slider(0.01, 1, value=limits.default_strength, step=0.01, label="Strength", elem_id="edit-strength",
                                     info="How far the result may move from the photo; runs on release")
                seed = seed_controls("edit-seed", limits.max_seed)
                run = gr.Button("Edit", variant="primary", elem_id="edit-run")
            image = result_image("Result", "edit-output")
        gr.Examples(EXAMPLES, inputs=[photo, prompt, strength], label="Example photos", elem_id="edit-examples")

    def follow(photo: Image.Image | None, prompt: str, strength: float, seed: int) -> Image.Image | None:
        """Automatic runs: no photo clears the result instead of raising."""
        return None if photo is None else edit(photo, prompt, strength, seed)

    def edit(image: Image.Image, prompt: str, strength: float, seed: int) -> Image.Image:
        return run_task(studio.edit, image, prompt, strength=strength, seed=seed)

    inputs = [photo, prompt, strength, seed]
    action([photo.change, strength.release, prompt.submit], follow, inputs, image)
    action([run.click], edit, inputs, image)
    api_endpoint(edit, inputs, image)
