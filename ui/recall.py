"""Getting back to what was made. Every result carries its settings (pipelines.metadata: the
"parameters" chunk of each PNG Gradio serves, the EXIF UserComment of each JPEG); each tab keeps
this browser session's results in a history gallery (newest first, at most HISTORY_SIZE, held in
gr.State: not shared between users or sessions, written nowhere but Gradio's own cache); clicking
a history image, or dropping an image made by the app on the tab's drop zone, restores the
settings that made it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gradio as gr
from PIL import Image

from pipelines.metadata import Settings, Task, model_name, read_settings, with_settings
from ui.widgets import uploaded_image

if TYPE_CHECKING:
    from pipelines import Studio

HISTORY_SIZE = 8
HISTORY_SECONDS = 6 * 3600  # a session's history is dropped after this long
TASK_TABS: dict[str, str] = {"text_to_image": "Text to image", "sketch_to_image": "Sketch to image",
                             "edge_to_image": "Sketch to image → Edges from a photo",
                             "translate": "Day ↔ night", "edit": "Edit"}

Values = Callable[[Settings], Sequence[Any]]  # a tab's control values for some settings


def stamp(studio: Studio, task: Task, image: Image.Image, **options: Any) -> Image.Image:
    """The result with its settings attached (options named as in the Studio method)."""
    settings = Settings(task, image.size, model_name(studio.source, task, options.get("direction")), **options)
    return with_settings(image, settings)


@dataclass(frozen=True)
class History:
    """A tab's history: the session's images (gr.State) and the gallery showing them."""

    state: gr.State
    gallery: gr.Gallery


def history_panel(elem_id: str) -> History:
    state = gr.State([], time_to_live=HISTORY_SECONDS)
    gallery = gr.Gallery(label="History (this session; click one to restore its settings)", format="png",
                         columns=HISTORY_SIZE, rows=1, height=150, fit_columns=False, object_fit="contain",
                         allow_preview=False, interactive=False, elem_id=elem_id)
    return History(state, gallery)


def settings_drop(elem_id: str) -> gr.Image:
    """A drop zone: an image made by the app (PNG, or its JPEG result) restores its settings."""
    return uploaded_image(label="Drop an image made here to restore its settings", sources=["upload"], height=120,
                         elem_id=elem_id)


def remember(history: list[Image.Image], image: Image.Image | None) -> list[Image.Image]:
    """The history with `image` in front, at most HISTORY_SIZE long."""
    return history if image is None else [image, *history][:HISTORY_SIZE]


def remembering(fn: Callable[..., Any], pick: Callable[[Any], Image.Image | None] = lambda result: result
                ) -> Callable[..., tuple[Any, ...]]:
    """fn with the history as an extra last input and output: its result (`pick` chooses the image
    to keep) goes in front of the history."""
    def run(*args: Any) -> tuple[Any, ...]:
        *inputs, history = args
        result = fn(*inputs)
        outputs = result if isinstance(result, tuple) else (result,)
        return (*outputs, remember(history, pick(result)))

    run.__name__ = fn.__name__
    return run


def restored(task: Task, image: Image.Image | None, values: Values, count: int) -> list[Any]:
    """The tab's control values from an image's settings; with a message and no change when the
    image has none, has malformed ones, or was made on another tab."""
    unchanged = [gr.skip()] * count
    if image is None:
        return unchanged
    read = read_settings(image)
    if read.notice is not None:
        gr.Warning(read.notice)
        return unchanged
    if read.settings is None:
        gr.Info("This image carries no settings; only PNGs made by this app do.")
        return unchanged
    if read.settings.task != task:
        gr.Warning(f"This PNG was made on the {TASK_TABS[read.settings.task]} tab; drop it there to restore "
                   f"its settings.")
        return unchanged
    return list(values(read.settings))


def wire_recall(task: Task, controls: Sequence[gr.components.Component], values: Values, result: gr.Image,
                history: History, drop: gr.Image) -> None:
    """Clicking a history image shows it and restores its settings into `controls`; so does a PNG
    dropped on `drop` (without replacing the result). None of this runs a model."""
    def from_history(images: list[Image.Image], event: gr.SelectData) -> list[Any]:
        image = images[event.index] if 0 <= event.index < len(images) else None
        return [*restored(task, image, values, len(controls)), gr.skip() if image is None else image]

    def from_drop(image: Image.Image | None) -> list[Any]:
        return restored(task, image, values, len(controls))

    history.gallery.select(from_history, history.state, [*controls, result],
                           api_visibility="private")
    drop.upload(from_drop, drop, list(controls), api_visibility="private")  # queued: its notices show
    history.state.change(lambda images: images, history.state, history.gallery, queue=False,
                         show_progress="hidden", api_visibility="private")
