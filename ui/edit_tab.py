"""Edit (SDEdit in one step): a photo and a prompt; runs when the strength slider is released, when
Enter is pressed in the prompt, on a new photo, and on the Edit button. An optional mask brushed on
the photo limits the edit to that part (outside it the photo comes back unchanged); a webcam
streams frames through the edit."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import gradio as gr
from PIL import Image, ImageChops

from ui.examples import MINI_EDIT, for_source
from ui.recall import History, history_panel, remembering, settings_drop, stamp, wire_recall
from ui.widgets import (GPU_QUEUE, action, api_endpoint, api_image, example, photo_input,
                        result_image, run_task, seed_controls, uploaded_image, webcam_input, webcam_stream)

if TYPE_CHECKING:
    from pipelines import Studio
    from pipelines.metadata import Settings

EXAMPLES = [
    [example("photo_mountain_lake.png"), "a mountain lake in autumn, oil painting", 0.6],
    [example("photo_day_street.png"), "a street covered in snow", 0.5],
]
MASK_COLOUR = "#ff3b30"


def brushed_mask(editor: Mapping[str, Any] | None, size: tuple[int, int]) -> Image.Image | None:
    """The union of the editor's brush layers as an "L" mask of the photo's size; None when nothing
    is brushed (the whole photo is edited)."""
    layers: Sequence[Image.Image] = (editor or {}).get("layers") or []
    alphas = [layer.convert("RGBA").getchannel("A") for layer in layers if layer is not None]
    if not alphas:
        return None
    mask = alphas[0]
    for alpha in alphas[1:]:
        mask = ImageChops.lighter(mask, alpha.resize(mask.size, Image.Resampling.NEAREST))
    if mask.getbbox() is None:
        return None
    return mask if mask.size == size else mask.resize(size, Image.Resampling.NEAREST)


def fresh_mask(photo: Image.Image | None) -> dict[str, Any] | None:
    """A new photo clears the mask and becomes the editor's background."""
    return None if photo is None else {"background": photo, "layers": [], "composite": None}


def build(studio: Studio) -> None:
    limits = studio.limits
    with gr.Tab("Edit", id="edit"):
        with gr.Row():
            with gr.Column():
                with gr.Tabs():
                    with gr.Tab("Photo", id="edit-photo-tab"):
                        photo = photo_input("Photo", "edit-photo", limits.max_input_side)
                    with gr.Tab("Webcam", id="edit-webcam-tab"):
                        camera = webcam_input("edit-webcam")
                with gr.Accordion("Edit only part of the photo: brush over it", open=False):
                    mask_editor = gr.ImageEditor(type="pil", sources=[], transforms=[], layers=False,
                                                 brush=gr.Brush(colors=[MASK_COLOUR], color_mode="fixed"),
                                                 label="Mask (leave empty to edit the whole photo)",
                                                 elem_id="edit-mask")
                    feather = gr.Slider(0, limits.max_feather, value=limits.default_feather, step=1,
                                        label="Soft edge (pixels)", elem_id="edit-feather",
                                        info="The edit fades in over this many pixels inside the mask's edge")
                prompt = gr.Textbox(label="Prompt (Enter runs the edit)", elem_id="edit-prompt",
                                    placeholder="How the photo should look")
                strength = gr.Slider(0.01, 1, value=limits.default_strength, step=0.01, label="Strength", elem_id="edit-strength",
                                     info="How far the result may move from the photo; runs on release")
                seed = seed_controls("edit-seed", limits.max_seed)
                run = gr.Button("Edit", variant="primary", elem_id="edit-run")
            with gr.Column():
                image = result_image("Result", "edit-output")
                drop = settings_drop("edit-settings-drop")
        history: History = history_panel("edit-history")
        gr.Examples(for_source(studio, EXAMPLES, MINI_EDIT), inputs=[photo, prompt, strength], label="Example photos",
                    elem_id="edit-examples")
        png = api_image("edit-api-output")
        api_mask = uploaded_image(visible=False, elem_id="edit-api-mask", max_side=limits.max_input_side)

    def follow(photo: Image.Image | None, editor: Mapping[str, Any] | None, feather: float, prompt: str,
               strength: float, seed: int) -> Image.Image | None:
        """Automatic runs: no photo clears the result instead of raising."""
        return None if photo is None else edit_brushed(photo, editor, feather, prompt, strength, seed)

    def edit_brushed(photo: Image.Image | None, editor: Mapping[str, Any] | None, feather: float, prompt: str,
                     strength: float, seed: int) -> Image.Image:
        if photo is None:
            raise gr.Error("Add a photo first.", print_exception=False)
        return edit(photo, prompt, strength, seed, brushed_mask(editor, photo.size), feather)

    def edit(image: Image.Image, prompt: str, strength: float, seed: int, mask: Image.Image | None = None,
             feather: float = limits.default_feather) -> Image.Image:
        result = run_task(studio.edit, image, prompt, strength=strength, seed=seed, mask=mask, feather=feather)
        return stamp(studio, "edit", result, prompt=prompt, strength=strength, seed=seed)

    def edit_frame(frame: Image.Image | None, prompt: str, strength: float, seed: int) -> Image.Image | None:
        return None if frame is None else run_task(studio.edit, frame, prompt, strength=strength, seed=seed)

    def values(settings: Settings) -> list[Any]:
        return [settings.prompt, settings.strength, settings.seed]

    inputs = [photo, mask_editor, feather, prompt, strength, seed, history.state]
    # a new photo first clears the mask, then runs
    photo.change(fresh_mask, photo, mask_editor, queue=False, api_visibility="private").then(
        remembering(follow), inputs, [image, history.state], show_progress="full", concurrency_id=GPU_QUEUE,
        api_visibility="private")
    action([strength.release, prompt.submit], remembering(follow), inputs, [image, history.state])
    action([run.click], remembering(edit_brushed), inputs, [image, history.state])
    webcam_stream(camera, edit_frame, [camera, prompt, strength, seed], image)
    wire_recall("edit", [prompt, strength, seed], values, image, history, drop)
    api_endpoint(edit, [photo, prompt, strength, seed, api_mask, feather], png)
