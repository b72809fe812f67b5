"""Studio: the one public API the UI and users call. It owns a ModelStore, hands it to the task
pipelines (one method per task) and publishes the limits and defaults of the loaded source."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from models.running.store import ModelStore, ProgressCallback
from models.weights.sources import SourceInfo, hub_offline
from models.weights.specs import CHECKPOINTS, Direction, SourceName, TaskName
from models.weights.task_loading import load_tasks
from pipelines.edge_to_image import edge_to_image
from pipelines.edit import edit
from pipelines.images import ImageInput, to_rgb
from pipelines.limits import DEFAULT_FEATHER, DEFAULT_GAMMA, DEFAULT_STRENGTH, DEFAULT_THRESHOLDS, Limits, limits_of
from pipelines.masking import MaskInput, check_feather, composite, mask_inside
from pipelines.sketch_to_image import SketchInput, sketch_to_image
from pipelines.text_to_image import text_to_image
from pipelines.translate import translate

ALL_TASKS: tuple[TaskName, ...] = tuple(CHECKPOINTS)


class Studio:
    """One-step generation and translation on one resident SD-Turbo.

    >>> studio = Studio.load(source="tiny", device="cpu")
    >>> image = studio.text_to_image("a red fox in snow", seed=1)

    Bad arguments raise pipelines.errors.InputError (a ValueError) naming the argument, its value
    and what `studio.limits` allows.
    """

    def __init__(self, store: ModelStore) -> None:
        self.store = store

    @classmethod
    def load(cls, source: SourceName = "auto", *, model_dir: Path | str | None = None,
             device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
             tasks: tuple[TaskName, ...] = ALL_TASKS, progress: ProgressCallback | None = None) -> Studio:
        """Load SD-Turbo from source ("auto", "hub", "local" or "tiny"), then the img2img-turbo
        tasks on top of it; everything stays resident. A task whose weights cannot be had is
        listed in `unavailable_tasks` with the reason, and its method raises with that reason."""
        report = progress or (lambda fraction, message: None)
        store = ModelStore.load(source, model_dir=model_dir, device=device, dtype=dtype,
                                progress=lambda fraction, message: report(0.5 * fraction, message))
        allow_download = store.source.active == "hub" and not hub_offline()
        load_tasks(store, list(tasks), allow_download=allow_download,
                   progress=lambda fraction, message: report(0.5 + 0.5 * fraction, message))
        report(1.0, "Models are resident")
        return cls(store)

    @property
    def source(self) -> SourceInfo:
        return self.store.source

    @property
    def limits(self) -> Limits:
        """Sizes, seed range, largest input, defaults and directions of the loaded source."""
        return limits_of(self.store)

    @property
    def device(self) -> torch.device:
        return self.store.device

    @property
    def unavailable_tasks(self) -> dict[str, str]:
        return self.store.unavailable_tasks

    def text_to_image(self, prompt: str, *, seed: int = 0, width: int | None = None,
                      height: int | None = None) -> Image.Image:
        """One-step SD-Turbo image; width and height from limits.min_side to limits.max_side
        (default: the native side)."""
        return text_to_image(self.store, prompt, seed=seed, width=width, height=height)

    def edit(self, image: ImageInput, prompt: str, *, strength: float = DEFAULT_STRENGTH, seed: int = 0,
             mask: MaskInput | None = None, feather: float = DEFAULT_FEATHER) -> Image.Image:
        """SDEdit in one step; strength in (0, 1]; the result has the input's size. With a mask (the
        photo's size; non-zero, or non-transparent, pixels are inside) the edit applies only inside
        it, fading in over `feather` pixels inside its edge, and outside it the photo comes back
        unchanged (see pipelines.masking)."""
        if mask is None:
            return edit(self.store, image, prompt, strength=strength, seed=seed)
        photo = to_rgb(image, "image", self.limits.max_input_side)
        inside = mask_inside(mask, photo.size)  # a bad mask is refused before the model runs
        check_feather(feather)
        edited = edit(self.store, photo, prompt, strength=strength, seed=seed)
        return composite(photo, edited, inside, feather=feather)

    def sketch_to_image(self, sketch: SketchInput, prompt: str, *, gamma: float = DEFAULT_GAMMA,
                        seed: int = 0) -> Image.Image:
        """pix2pix-Turbo from a sketch; gamma in [0, 1] trades sketch fidelity (1) for variety (0)."""
        return sketch_to_image(self.store, sketch, prompt, gamma=gamma, seed=seed)

    def edge_to_image(self, image: ImageInput, prompt: str, *, low_threshold: int = DEFAULT_THRESHOLDS[0],
                      high_threshold: int = DEFAULT_THRESHOLDS[1]) -> tuple[Image.Image, Image.Image]:
        """Canny edges of the photo, then pix2pix-Turbo; returns (edge map, image). Deterministic:
        the same photo, prompt and thresholds give the same image, so there is no seed."""
        return edge_to_image(self.store, image, prompt, low_threshold=low_threshold, high_threshold=high_threshold)

    def translate(self, image: ImageInput, *, direction: Direction) -> Image.Image:
        """CycleGAN-Turbo: one of limits.directions (day_to_night, night_to_day, clear_to_rainy,
        rainy_to_clear)."""
        return translate(self.store, image, direction=direction)

    def warm_up(self) -> None:
        """Run every loaded task once at the smallest size so the first user action is fast."""
        side = self.limits.min_side
        photo = Image.new("RGB", (side, side), (128, 128, 128))
        sketch = np.full((side, side), 255, dtype=np.uint8)
        sketch[side * 3 // 8: side * 5 // 8, side // 2] = 0
        self.text_to_image("warm up", width=side, height=side)
        self.edit(photo, "warm up")
        if "sketch_to_image" in self.store.tasks:
            self.sketch_to_image(sketch, "warm up")
        if "edge_to_image" in self.store.tasks:
            self.edge_to_image(photo, "warm up")
        for direction in self.limits.directions:
            if direction in self.store.tasks:
                self.translate(photo, direction=direction)
