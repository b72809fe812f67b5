"""Pieces every tab shares: the one GPU queue, event settings, seed controls, the result image,
named API endpoints, and the call that turns the Studio's user errors and warnings into Gradio
messages.

The UI never imports torch or the task pipelines: it is handed a Studio, calls its methods and
builds its controls from `studio.limits`; it imports only the light pipelines.errors.
"""

from __future__ import annotations

import secrets
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import gradio as gr
from gradio.components import Component
from gradio.data_classes import ImageData
from PIL import Image, UnidentifiedImageError

from pipelines.errors import USER_ERRORS, USER_WARNINGS, InputError
from pipelines.image_files import DECODE_ERRORS, eight_bit, open_image_file
from pipelines.limits import MAX_INPUT_SIDE

GPU_QUEUE = "gpu"  # the one concurrency id of every event that runs a model, webcam streams aside
WEBCAM_QUEUE = "webcam"  # one webcam stream at a time
WEBCAM_EVERY = 0.05  # seconds between frames at most; a slower model sets the pace
WEBCAM_SECONDS = 120  # a stream stops after this long (it holds a worker while it runs)
EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "assets" / "examples"
RESULT_FORMAT = "jpeg"  # what result images are sent as; see ui/LATENCY.md
RESULT_HEIGHT = 512  # px on the page: mini's 128 px results are scaled up to it, SD-Turbo's 512 px fit
RESULT_CLASS = "result-image"
# Gradio shows images with object-fit: scale-down, which never enlarges: a 128 px result stayed a
# thumbnail. Results fill their box instead (the download is still the model's own size).
PAGE_CSS = f".{RESULT_CLASS} img {{ object-fit: contain !important; }}"

T = TypeVar("T")
Components = Component | Sequence[Component]


def example(name: str) -> str:
    """Path of a file in assets/examples (made by assets/make_examples.py)."""
    return str(EXAMPLES_DIR / name)


def run_task(task: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Call a Studio method. Its user errors (bad input, a task not loaded, a non-finite image:
    pipelines.errors.USER_ERRORS) come back as gr.Error with the pipeline's message; its user
    warnings (a truncated prompt) are shown as gr.Warning. Anything else is a bug and propagates
    unchanged.

    Warnings are collected with warnings.catch_warnings, which is process-wide; that is sound here
    because every model call runs in the one GPU queue, one at a time."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = task(*args, **kwargs)
        except USER_ERRORS as error:
            raise gr.Error(str(error), print_exception=False) from error
    for warning in caught:
        if issubclass(warning.category, USER_WARNINGS):
            gr.Warning(str(warning.message))
        else:
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    return result


def seed_controls(elem_id: str, max_seed: int, value: int = 0) -> gr.Number:
    """A seed box with a Randomize button beside it (0 to max_seed; the pipeline checks typed
    values). The box always shows the seed the next run uses, so after a randomized run it shows
    the seed that made the image."""
    with gr.Row(equal_height=True):
        seed = gr.Number(value=value, precision=0, label="Seed", elem_id=elem_id, scale=3)
        randomize = gr.Button("Randomize", size="lg", scale=1, elem_id=f"{elem_id}-randomize")
    randomize.click(lambda: secrets.randbelow(max_seed + 1), None, seed, queue=False, api_visibility="private")
    return seed


def result_image(label: str, elem_id: str) -> gr.Image:
    """A model's output, shown RESULT_HEIGHT tall whatever its size (with PAGE_CSS on the page)."""
    return gr.Image(label=label, type="pil", format=RESULT_FORMAT, interactive=False, elem_id=elem_id,
                    elem_classes=[RESULT_CLASS], height=RESULT_HEIGHT, buttons=["download", "fullscreen"])


def api_image(elem_id: str) -> gr.Image:
    """The image a named endpoint returns: a PNG, so it carries its settings chunk (the page's
    result images are JPEG for speed)."""
    return gr.Image(type="pil", format="png", visible=False, elem_id=elem_id)


class UploadedImage(gr.Image):
    """gr.Image for what users upload (the page and the API): a file that is empty, not an image,
    over max_side, truncated or damaged is refused with a message naming it and the problem
    (pipelines.image_files) instead of failing inside Gradio; an animated image gives its first
    frame, with a warning. The value is a PIL image in RGB, RGBA, L or LA (16-bit, palette and CMYK
    images are converted without losing their range or transparency); the pipelines flatten it."""

    is_template = True  # the page shows it as the plain Image component
    # Gradio sends the page the arguments of the class's own __init__: this class keeps gr.Image's
    # (overriding it would leave the page without the image's settings), and uploaded_image sets the rest.
    max_side: int = MAX_INPUT_SIDE

    def preprocess(self, payload: ImageData | None) -> Image.Image | None:
        if payload is None:
            return None
        name = payload.orig_name or "the image"
        try:
            if payload.path is None or (payload.url or "").startswith("data:"):
                image = super().preprocess(payload)  # a data URL (a pasted image): Gradio decodes it
                return None if image is None else eight_bit(image)  # type: ignore[arg-type]
            opened = open_image_file(payload.path, name, self.max_side)
        except InputError as error:
            raise gr.Error(str(error), print_exception=False) from error
        except (UnidentifiedImageError, *DECODE_ERRORS) as error:
            raise gr.Error(f"{name} is not a readable image ({error})", print_exception=False) from error
        if opened.animated:
            gr.Warning(f"{name} is animated ({opened.frames} frames); only its first frame is used.")
        return eight_bit(opened.image)


def uploaded_image(*, max_side: int = MAX_INPUT_SIDE, **image_arguments: Any) -> UploadedImage:
    """An UploadedImage giving PIL images in their own mode, refusing sides over max_side."""
    image = UploadedImage(type="pil", image_mode=None, **image_arguments)
    image.max_side = max_side
    return image


def photo_input(label: str, elem_id: str, max_side: int = MAX_INPUT_SIDE) -> gr.Image:
    return uploaded_image(label=label, sources=["upload", "clipboard"], elem_id=elem_id, max_side=max_side)


def live(triggers: Sequence[Any], fn: Callable[..., Any], inputs: Components, outputs: Components) -> None:
    """A live preview that follows its triggers: no spinner, and while one runs only the newest
    request waits (trigger_mode always_last), so stale ones are dropped."""
    gr.on(list(triggers), fn, inputs, outputs, show_progress="hidden", trigger_mode="always_last",
          concurrency_id=GPU_QUEUE, api_visibility="private", api_name=f"live_{fn.__name__}")


def action(triggers: Sequence[Any], fn: Callable[..., Any], inputs: Components, outputs: Components) -> None:
    """An explicit action (a button, a slider release, Enter): shows progress on its outputs."""
    gr.on(list(triggers), fn, inputs, outputs, show_progress="full", trigger_mode="always_last",
          concurrency_id=GPU_QUEUE, api_visibility="private", api_name=f"action_{fn.__name__}")


def webcam_input(elem_id: str) -> gr.Image:
    """A live webcam: start recording and each frame goes through the tab's task (webcam_stream)."""
    return gr.Image(label="Webcam (record to stream frames)", sources=["webcam"], streaming=True, type="pil",
                    elem_id=elem_id)


def webcam_stream(camera: gr.Image, fn: Callable[..., Any], inputs: Components, outputs: Components) -> None:
    """Frames of a streaming webcam image through fn. The browser takes the next frame only once
    the previous one is answered, so a slow model drops stale frames instead of queueing them. A
    stream holds its worker until it stops (at most WEBCAM_SECONDS), so it has its own concurrency
    group, one stream at a time; its model calls still take turns with everyone's on the store."""
    camera.stream(fn, inputs, outputs, stream_every=WEBCAM_EVERY, time_limit=WEBCAM_SECONDS,
                  concurrency_id=WEBCAM_QUEUE, concurrency_limit=1, show_progress="hidden",
                  api_visibility="private", api_name=f"stream_{fn.__name__}")


def api_endpoint(fn: Callable[..., Any], inputs: Components, outputs: Components) -> None:
    """A named endpoint for gradio_client, called /<fn name>, with no trigger in the page. Its
    parameters are fn's, named as in the Studio API; the components only give their types and
    preprocessing (an image arrives as a PIL image, a slider value is checked against its range)."""
    gr.on(triggers=[], fn=fn, inputs=inputs, outputs=outputs, api_name=fn.__name__,
          concurrency_id=GPU_QUEUE)
