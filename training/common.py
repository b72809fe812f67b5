"""Small helpers the LDM recipes share: the captioned images as tensors, parameter counts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from training.colour import colour_variants
from training.runner import TrainingInputError


@dataclass(frozen=True)
class CaptionedImages:
    """uint8 images (N, H, W, 3) with one caption each."""

    images: np.ndarray
    captions: list[str]

    def __len__(self) -> int:
        return len(self.images)

    def spread(self, count: int | None) -> CaptionedImages:
        """At most `count` images, evenly spaced over the set (all of them for None)."""
        if count is None or count >= len(self):
            return self
        picked = np.linspace(0, len(self) - 1, count).round().astype(int)
        return CaptionedImages(self.images[picked], [self.captions[i] for i in picked])

    def batch(self, indices: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Float images N, 3, H, W in [-1, 1] on the device."""
        array = torch.from_numpy(self.images[indices.numpy()]).to(device)
        return array.permute(0, 3, 1, 2).float().div(127.5).sub(1)


def load_captioned_images(dataset: Path, split: str, resolution: int) -> CaptionedImages:
    """The dataset's captioned images of a split at the resolution, with clear errors."""
    from training.data.layouts import DatasetError, load_captioned

    if not dataset.is_dir():
        raise TrainingInputError(f"--dataset {dataset}: no such folder")
    try:
        loaded = load_captioned(dataset, split, resolution)
    except DatasetError as error:
        raise TrainingInputError(f"--dataset {dataset}: {error}") from error
    images = np.ascontiguousarray(loaded.images, dtype=np.uint8)
    if len(images) == 0:
        raise TrainingInputError(f"--dataset {dataset}: the {split} split has no images")
    return CaptionedImages(images, list(loaded.captions))


def mirror_rows(images: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) images with the rows where `rows` (bool, (B,)) is true mirrored left-right."""
    return torch.where(rows.view(-1, 1, 1, 1), images.flip(-1), images)


def shift_rows(images: torch.Tensor, offsets: torch.Tensor, fill: float) -> torch.Tensor:
    """(B, C, H, W) images, each moved by its whole-pixel offset (`offsets`: (B, 2) as (down, right));
    what moves out is cut off and the border it uncovers is `fill`."""
    reach = int(offsets.abs().max()) if len(offsets) else 0
    if reach == 0:
        return images
    height, width = images.shape[-2:]
    padded = nn.functional.pad(images, (reach, reach, reach, reach), value=fill)
    return torch.stack([padded[row, :, reach - down:reach - down + height, reach - right:reach - right + width]
                        for row, (down, right) in enumerate(offsets.tolist())])


def parameter_count(*modules: nn.Module) -> int:
    return sum(parameter.numel() for module in modules for parameter in module.parameters())


def parse_widths(text: str) -> tuple[int, ...]:
    """'32,64,128,128' -> (32, 64, 128, 128)."""
    try:
        widths = tuple(int(part) for part in text.split(","))
    except ValueError as error:
        raise TrainingInputError(f"{text!r} is not a comma-separated list of integers") from error
    if not widths or min(widths) < 1:
        raise TrainingInputError(f"{text!r}: widths must be positive integers")
    return widths


def with_colour_variants(data: CaptionedImages) -> CaptionedImages:
    """The images followed by their colour variants (training.colour.colour_variants)."""
    images, captions = colour_variants(data.images, data.captions)
    if not images:
        return data
    return CaptionedImages(np.concatenate([data.images, np.stack(images)]), [*data.captions, *captions])


COLOUR_VARIANTS_HELP = ("also train on recoloured copies of every image whose caption names one of red, orange, "
                        "yellow, green, blue, purple (and whose dominant hue is that colour), one per other colour "
                        "word, recaptioned with it (the hue turned, brightness and saturation those of that "
                        "colour's own images): a pair that differs in the colour alone (colour words are in "
                        "about 3%% of the emoji captions, too few for a small model to learn them)")
