"""Sketch to image (pix2pix-Turbo): the output follows every stroke and every control; and a photo
-> Canny edges -> image mode that shows the edge map. Both modes share the style presets."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gradio as gr
from PIL import Image, ImageOps

from ui.canvas import drawing_from, drawing_value, sketch_canvas
from ui.examples import MINI_EDGE, MINI_SKETCH, for_source
from ui.recall import history_panel, remembering, settings_drop, stamp, wire_recall
from ui.styles import NO_STYLE, STYLES, apply_style
from ui.widgets import (action, api_endpoint, api_image, example, live, photo_input, result_image,
                        run_task, seed_controls, uploaded_image)

if TYPE_CHECKING:
    from pipelines import Studio
    from pipelines.metadata import Settings

SKETCH_EXAMPLES = [
    [example("sketch_house.png"), "a cottage in a meadow", "Photographic"],
    [example("sketch_cat.png"), "a ginger cat", "Anime"],
    [example("sketch_mountains.png"), "mountains above a lake", "Fantasy art"],
]
EDGE_EXAMPLES = [
    [example("photo_day_street.png"), "a city street, golden hour", "Cinematic"],
    [example("photo_mountain_lake.png"), "alpine lake under a blue sky", "Photographic"],
]


def style_choice(elem_id: str) -> gr.Dropdown:
    return gr.Dropdown(list(STYLES), value=NO_STYLE, label="Style", elem_id=elem_id)


def build(studio: Studio, *, preview_side: int) -> None:
    """preview_side: live previews (strokes, sliders) run on the sketch scaled to fit this many
    pixels; the Generate button always uses the full drawing."""
    with gr.Tab("Sketch to image", id="sketch"), gr.Tabs():
        build_sketch_mode(studio, preview_side)
        build_edge_mode(studio)


def scaled_to_fit(image: Image.Image, side: int) -> Image.Image:
    return ImageOps.contain(image, (side, side), Image.Resampling.LANCZOS) if max(image.size) > side else image


def build_sketch_mode(studio: Studio, preview_side: int) -> None:
    limits = studio.limits
    with gr.Tab("Draw a sketch", id="draw"):
        with gr.Row():
            with gr.Column():
                canvas = sketch_canvas(side=limits.native_side, label="Sketch", elem_id="sketch-canvas")
                upload = uploaded_image(label="Or load a sketch onto the canvas", height=140,
                                       sources=["upload", "clipboard"], elem_id="sketch-upload",
                                       max_side=limits.max_input_side)
            with gr.Column():
                image = result_image("Image", "sketch-output")
                prompt = gr.Textbox(label="Prompt", elem_id="sketch-prompt", placeholder="What the sketch shows")
                style = style_choice("sketch-style")
                gamma = gr.Slider(0, 1, value=limits.default_gamma, step=0.01, label="Diversity (gamma)", elem_id="gamma",
                                  info="1 follows the sketch exactly; lower values give more varied images")
                seed = seed_controls("sketch-seed", limits.max_seed)
                generate = gr.Button("Generate", variant="primary", elem_id="sketch-generate")
                drop = settings_drop("sketch-settings-drop")
        history = history_panel("sketch-history")
        gr.Examples(for_source(studio, SKETCH_EXAMPLES, MINI_SKETCH), inputs=[upload, prompt, style],
                    label="Example sketches", elem_id="sketch-examples")
        png = api_image("sketch-api-output")

    def draw(drawing: str, prompt: str, style: str, gamma: float, seed: int) -> Image.Image | None:
        """The live view, at preview size; a blank canvas clears the output instead of raising."""
        sketch = drawing_from(drawing, limits.max_input_side)
        if sketch is None:
            return None
        return run_task(studio.sketch_to_image, scaled_to_fit(sketch, preview_side), apply_style(style, prompt),
                        gamma=gamma, seed=seed)

    def generate_from(drawing: str, prompt: str, style: str, gamma: float, seed: int) -> Image.Image:
        sketch = drawing_from(drawing, limits.max_input_side)
        if sketch is None:
            raise gr.Error("The canvas is empty: draw a sketch or load one first.", print_exception=False)
        return sketch_to_image(sketch, apply_style(style, prompt), gamma, seed)

    def sketch_to_image(sketch: Image.Image, prompt: str, gamma: float, seed: int) -> Image.Image:
        result = run_task(studio.sketch_to_image, sketch, prompt, gamma=gamma, seed=seed)
        return stamp(studio, "sketch_to_image", result, prompt=prompt, gamma=gamma, seed=seed)

    def values(settings: Settings) -> list[Any]:
        """The styled prompt as it was run, so the style is reset."""
        return [settings.prompt, NO_STYLE, settings.gamma, settings.seed]

    inputs = [canvas, prompt, style, gamma, seed]
    live([canvas.change, prompt.change, style.change, gamma.change, seed.change], draw, inputs, image)
    action([generate.click], remembering(generate_from), [*inputs, history.state], [image, history.state])
    upload.change(lambda sketch: load_onto_canvas(sketch, limits.native_side), upload, canvas, queue=False,
                  api_visibility="private")
    wire_recall("sketch_to_image", [prompt, style, gamma, seed], values, image, history, drop)
    api_endpoint(sketch_to_image, [upload, prompt, gamma, seed], png)


def load_onto_canvas(sketch: Image.Image | None, side: int) -> str | dict:
    """An uploaded sketch replaces the drawing (and so runs the model); clearing the upload keeps it."""
    return gr.skip() if sketch is None else drawing_value(sketch, side)


def build_edge_mode(studio: Studio) -> None:
    """No seed here: the edge model is deterministic, a seed would change nothing."""
    low_default, high_default = studio.limits.default_thresholds
    with gr.Tab("Edges from a photo", id="edges"):
        with gr.Row():
            with gr.Column():
                photo = photo_input("Photo", "edge-photo", studio.limits.max_input_side)
                with gr.Row():
                    low = gr.Slider(0, 255, value=low_default, step=1, precision=0, label="Low threshold", elem_id="edge-low")
                    high = gr.Slider(0, 255, value=high_default, step=1, precision=0, label="High threshold",
                                     elem_id="edge-high")
                edges = gr.Image(label="Canny edges", type="pil", format="png", interactive=False, elem_id="edge-map")
            with gr.Column():
                image = result_image("Image", "edge-output")
                prompt = gr.Textbox(label="Prompt", elem_id="edge-prompt", placeholder="What the photo shows")
                style = style_choice("edge-style")
                generate = gr.Button("Generate", variant="primary", elem_id="edge-generate")
                drop = settings_drop("edge-settings-drop")
        history = history_panel("edge-history")
        gr.Examples(for_source(studio, EDGE_EXAMPLES, MINI_EDGE), inputs=[photo, prompt, style], label="Example photos",
                    elem_id="edge-examples")
        png = api_image("edge-api-output")

    def follow(photo: Image.Image | None, prompt: str, style: str, low: int,
               high: int) -> tuple[Image.Image | None, Image.Image | None]:
        """The live view: no photo clears both outputs instead of raising."""
        return (None, None) if photo is None else generate_from(photo, prompt, style, low, high)

    def generate_from(photo: Image.Image | None, prompt: str, style: str, low: int,
                      high: int) -> tuple[Image.Image, Image.Image]:
        return edge_to_image(photo, apply_style(style, prompt), low, high)

    def edge_to_image(image: Image.Image, prompt: str, low_threshold: int,
                      high_threshold: int) -> tuple[Image.Image, Image.Image]:
        edge_map, result = run_task(studio.edge_to_image, image, prompt, low_threshold=low_threshold,
                                    high_threshold=high_threshold)
        return edge_map, stamp(studio, "edge_to_image", result, prompt=prompt, low_threshold=low_threshold,
                               high_threshold=high_threshold)

    def values(settings: Settings) -> list[Any]:
        """The styled prompt as it was run, so the style is reset."""
        return [settings.prompt, NO_STYLE, settings.low_threshold, settings.high_threshold]

    inputs = [photo, prompt, style, low, high]
    triggers = [photo.change, prompt.change, style.change, low.change, high.change]
    live(triggers, follow, inputs, [edges, image])
    action([generate.click], remembering(generate_from, pick=lambda pair: pair[1]), [*inputs, history.state],
           [edges, image, history.state])
    wire_recall("edge_to_image", [prompt, style, low, high], values, image, history, drop)
    api_endpoint(edge_to_image, [photo, prompt, low, high], [edges, png])
