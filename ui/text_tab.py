"""Text to image: a live preview that follows the prompt as it is typed, and a Generate button."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gradio as gr
from PIL import Image

from ui.examples import MINI_TEXT, for_source
from ui.recall import history_panel, remembering, settings_drop, stamp, wire_recall
from ui.widgets import action, api_endpoint, api_image, live, result_image, run_task, seed_controls

if TYPE_CHECKING:
    from pipelines import Studio
    from pipelines.metadata import Settings

EXAMPLES = [
    ["a lighthouse on a cliff at sunset, oil painting", 7],
    ["a red fox curled up in fresh snow, wildlife photograph", 42],
    ["a cosy reading nook with plants and warm lamp light", 1234],
]


def build(studio: Studio) -> None:
    limits = studio.limits
    with gr.Tab("Text to image", id="text"):
        with gr.Row():
            with gr.Column():
                prompt = gr.Textbox(label="Prompt", lines=2, elem_id="text-prompt",
                                    placeholder="Describe the image; the preview follows as you type")
                with gr.Row():
                    width, height = (gr.Slider(limits.min_side, limits.max_side, value=limits.native_side,
                                               step=limits.side_step, precision=0, label=label, elem_id=elem_id)
                                     for label, elem_id in (("Width", "text-width"), ("Height", "text-height")))
                seed = seed_controls("text-seed", limits.max_seed)
                generate = gr.Button("Generate", variant="primary", elem_id="text-generate")
            with gr.Column():
                image = result_image("Image", "text-output")
                drop = settings_drop("text-settings-drop")
        history = history_panel("text-history")
        gr.Examples(for_source(studio, EXAMPLES, MINI_TEXT), inputs=[prompt, seed], label="Examples",
                    elem_id="text-examples")
        png = api_image("text-api-output")

    def text_to_image(prompt: str, seed: int, width: int, height: int) -> Image.Image:
        result = run_task(studio.text_to_image, prompt, seed=seed, width=width, height=height)
        return stamp(studio, "text_to_image", result, prompt=prompt, seed=seed)

    def preview(prompt: str, seed: int, width: int, height: int) -> Image.Image:
        """The live view: decoded by the preview decoder where the source has one (Generate and
        the API always decode with the full VAE)."""
        result = run_task(studio.text_to_image, prompt, seed=seed, width=width, height=height, preview=True)
        return stamp(studio, "text_to_image", result, prompt=prompt, seed=seed)

    def values(settings: Settings) -> list[Any]:
        return [settings.prompt, settings.seed, *settings.size]

    inputs = [prompt, seed, width, height]
    live([prompt.change, seed.change, width.release, height.release], preview, inputs, image)
    action([generate.click], remembering(text_to_image), [*inputs, history.state], [image, history.state])
    wire_recall("text_to_image", inputs, values, image, history, drop)
    api_endpoint(text_to_image, inputs, png)
