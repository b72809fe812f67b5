"""Sample grids for a model card: one JPEG per section, each row a label and a few images.

`python -m training evaluate ... --grids DIR` fills a Gallery with the held-out inputs, the model's
outputs and the targets it measured, so the grids show exactly the images behind the figures.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

COLUMNS = 8  # images a row shows at most
LABEL_WIDTH = 176  # pixels of the label column
GAP = 4  # pixels between tiles
CAPTION_HEIGHT = 26  # pixels under each tile of a row with captions
LABEL_CHARACTERS = 26  # a label line wraps at this many characters
CHARACTER_WIDTH = 6  # pixels of the default font's character, about: a caption line holds side // 6 of them
JPEG_QUALITY = 90  # full colour resolution (4:4:4): a model card's grids take about 1.5 MB, where PNG takes 4


@dataclass(frozen=True)
class Row:
    label: str
    images: np.ndarray  # (N, H, W, 3) uint8
    captions: tuple[str, ...] = ()


@dataclass
class Gallery:
    """Rows of images by section; with no folder it keeps nothing (evaluate without --grids)."""

    folder: Path | None
    sections: dict[str, list[Row]] = field(default_factory=dict)

    def add(self, section: str, label: str, images: np.ndarray | Sequence[np.ndarray],
            captions: Sequence[str] = ()) -> None:
        if self.folder is None or len(images) == 0:
            return
        kept = np.stack([np.asarray(image, np.uint8)[..., :3] for image in list(images)[:COLUMNS]])
        self.sections.setdefault(section, []).append(Row(label, kept, tuple(captions)[:COLUMNS]))

    def write(self) -> list[Path]:
        """Write every section as FOLDER/SECTION.jpg; returns the paths."""
        if self.folder is None:
            return []
        self.folder.mkdir(parents=True, exist_ok=True)
        written = []
        for section, rows in self.sections.items():
            path = self.folder / f"{section}.jpg"
            temporary = path.with_name(f".tmp-{path.name}")
            try:
                grid(rows).save(temporary, format="JPEG", quality=JPEG_QUALITY, subsampling=0, optimize=True)
                os.replace(temporary, path)
            finally:
                temporary.unlink(missing_ok=True)
            written.append(path)
        return written


def tile_side(rows: Sequence[Row]) -> int:
    return max(max(row.images.shape[1], row.images.shape[2]) for row in rows)


def row_height(row: Row, side: int) -> int:
    return side + (CAPTION_HEIGHT if row.captions else 0)


def tile_origin(rows: Sequence[Row], row_index: int, column: int) -> tuple[int, int]:
    """(x, y) of a tile's top-left corner in the grid `grid(rows)` draws."""
    side = tile_side(rows)
    y = GAP + sum(row_height(row, side) + GAP for row in rows[:row_index])
    return LABEL_WIDTH + GAP + column * (side + GAP), y


def grid(rows: Sequence[Row]) -> Image.Image:
    """White canvas; each row: its label (wrapped) on the left, then its images at their own size."""
    side = tile_side(rows)
    width = LABEL_WIDTH + GAP + COLUMNS * (side + GAP)
    height = GAP + sum(row_height(row, side) + GAP for row in rows)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for index, row in enumerate(rows):
        _, top = tile_origin(rows, index, 0)
        draw.multiline_text((GAP, top + 2), textwrap.fill(row.label, LABEL_CHARACTERS), fill="black", font=font)
        for column, image in enumerate(row.images):
            x, y = tile_origin(rows, index, column)
            canvas.paste(Image.fromarray(image), (x, y))
            if column < len(row.captions):
                draw.multiline_text((x, y + image.shape[0] + 1), caption_lines(row.captions[column], side),
                                    fill="black", font=font)
    return canvas


def caption_lines(caption: str, side: int) -> str:
    """At most two lines, each as wide as a tile (side pixels) at most."""
    width = max(1, side // CHARACTER_WIDTH)
    lines = textwrap.wrap(caption, width)[:2] or [""]
    return "\n".join(line[:width] for line in lines)
