"""Studio: the one public API the UI and users call. It owns a ModelStore and hands it to the
task pipelines, one method per task."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from models.sources import SourceInfo
from models.specs import SourceName
from models.store import ModelStore, ProgressCallback
from pipelines.edit import edit
from pipelines.images import ImageInput
from pipelines.text_to_image import text_to_image


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
             progress: ProgressCallback | None = None) -> Studio:
        """Load SD-Turbo from source ("auto", "hub", "local" or "tiny") and keep it resident."""
        return cls(ModelStore.load(source, model_dir=model_dir, device=device, dtype=dtype, progress=progress))

    @property
    def source(self) -> SourceInfo:
        return self.store.source

    def text_to_image(self, prompt: str, *, seed: int = 0, width: int = 512, height: int = 512) -> Image.Image:
        """One-step SD-Turbo image of the requested size (256 to 1024 pixels a side)."""
        return text_to_image(self.store, prompt, seed=seed, width=width, height=height)

    def edit(self, image: ImageInput, prompt: str, *, strength: float = 0.5, seed: int = 0) -> Image.Image:
        """SDEdit in one step; strength in (0, 1]; the result has the input's size."""
        return edit(self.store, image, prompt, strength=strength, seed=seed)
