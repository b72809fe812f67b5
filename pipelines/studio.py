"""Studio: the one public API the UI and users call. It owns a ModelStore and hands it to the
task pipelines, one method per task."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from models.img2img_turbo import load_tasks
from models.sources import SourceInfo, hub_offline
from models.specs import CHECKPOINTS, DIRECTIONS, Direction, SourceName, TaskName
from models.store import ModelStore, ProgressCallback
from pipelines.edge_to_image import edge_to_image
from pipelines.edit import edit
from pipelines.images import ImageInput
from pipelines.sketch_to_image import SketchInput, sketch_to_image
from pipelines.text_to_image import text_to_image
from pipelines.translate import translate

ALL_TASKS: tuple[TaskName, ...] = tuple(CHECKPOINTS)


class Studio:
    """One-step generation and translation on one resident SD-Turbo.

    >>> studio = Studio.load(source="tiny", device="cpu")
    >>> image = studio.text_to_image("a red fox in snow", seed=1)
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
        store.unavailable_tasks.update(load_tasks(
            store, list(tasks), allow_download=allow_download,
            progress=lambda fraction, message: report(0.5 + 0.5 * fraction, message)))
        report(1.0, "Models are resident")
        return cls(store)

    @property
    def source(self) -> SourceInfo:
        return self.store.source

    @property
    def device(self) -> torch.device:
        return self.store.device

    @property
    def unavailable_tasks(self) -> dict[str, str]:
        return dict(self.store.unavailable_tasks)

    def text_to_image(self, prompt: str, *, seed: int = 0, width: int = 512, height: int = 512) -> Image.Image:
        """One-step SD-Turbo image of the requested size (256 to 1024 pixels a side)."""
        return text_to_image(self.store, prompt, seed=seed, width=width, height=height)

    def edit(self, image: ImageInput, prompt: str, *, strength: float = 0.5, seed: int = 0) -> Image.Image:
        """SDEdit in one step; strength in (0, 1]; the result has the input's size."""
        return edit(self.store, image, prompt, strength=strength, seed=seed)

    def sketch_to_image(self, sketch: SketchInput, prompt: str, *, gamma: float = 0.4, seed: int = 0) -> Image.Image:
        """pix2pix-Turbo from a sketch; gamma in [0, 1] trades sketch fidelity (1) for variety (0)."""
        return sketch_to_image(self.store, sketch, prompt, gamma=gamma, seed=seed)

    def edge_to_image(self, image: ImageInput, prompt: str, *, low_threshold: int = 100, high_threshold: int = 200,
                      seed: int = 0) -> tuple[Image.Image, Image.Image]:
        """Canny edges of the photo, then pix2pix-Turbo; returns (edge map, image)."""
        return edge_to_image(self.store, image, prompt, low_threshold=low_threshold,
                             high_threshold=high_threshold, seed=seed)

    def translate(self, image: ImageInput, *, direction: Direction) -> Image.Image:
        """CycleGAN-Turbo: day_to_night, night_to_day, clear_to_rainy or rainy_to_clear."""
        return translate(self.store, image, direction=direction)

    def warm_up(self) -> None:
        """Run every loaded task once at a small size so the first user action is fast."""
        photo = Image.new("RGB", (256, 256), (128, 128, 128))
        sketch = np.full((256, 256), 255, dtype=np.uint8)
        sketch[96:160, 128] = 0
        self.text_to_image("warm up", width=256, height=256)
        self.edit(photo, "warm up", strength=0.5)
        if "sketch_to_image" in self.store.tasks:
            self.sketch_to_image(sketch, "warm up")
        if "edge_to_image" in self.store.tasks:
            self.edge_to_image(photo, "warm up")
        for direction in DIRECTIONS:
            if direction in self.store.tasks:
                self.translate(photo, direction=direction)
