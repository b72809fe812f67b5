"""Sample grids: every image lands where the layout says, labels and captions beside it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from training.gallery import COLUMNS, Gallery, caption_lines, tile_origin


def flat_tiles(count: int, seed: int) -> np.ndarray:
    """Tiles of one colour each, all different: JPEG keeps a flat colour within a few levels."""
    colours = np.random.default_rng(seed).integers(0, 256, (count, 3))
    return np.broadcast_to(colours[:, None, None, :], (count, 32, 32, 3)).astype(np.uint8)


def test_each_image_is_drawn_at_its_tile(tmp_path: Path) -> None:
    inputs, outputs = flat_tiles(3, seed=0), flat_tiles(COLUMNS + 2, seed=1)  # more than a row shows
    gallery = Gallery(tmp_path / "grids")
    gallery.add("sketch", "held-out line art", inputs, captions=["a red heart", "a cat", "a very long caption " * 4])
    gallery.add("sketch", "gamma 1", outputs)
    gallery.add("scenes", "input", inputs[:1])
    written = gallery.write()
    assert [path.name for path in written] == ["sketch.jpg", "scenes.jpg"]
    assert sorted(path.name for path in (tmp_path / "grids").iterdir()) == ["scenes.jpg", "sketch.jpg"]
    rows = gallery.sections["sketch"]
    assert len(rows[1].images) == COLUMNS
    picture = np.asarray(Image.open(written[0]).convert("RGB"), np.float32)
    for row_index, images in enumerate((inputs, outputs[:COLUMNS])):
        for column, image in enumerate(images):
            x, y = tile_origin(rows, row_index, column)
            inner = picture[y + 4:y + 28, x + 4:x + 28]  # away from the JPEG ringing at the tile's border
            assert np.abs(inner - image[0, 0]).max() < 12, (row_index, column)
    assert picture[:, :120].min() < 100  # the labels are drawn in black on the white margin


def test_captions_stay_within_their_tile_and_empty_rows_are_left_out(tmp_path: Path) -> None:
    long = "a line drawing of a man getting a haircut in a barber shop"
    for side in (32, 128):
        lines = caption_lines(long, side).split("\n")
        assert len(lines) == 2 and all(0 < len(line) <= side // 6 for line in lines)
    gallery = Gallery(tmp_path)
    gallery.add("edge", "no held-out images", np.zeros((0, 32, 32, 3), np.uint8))
    assert gallery.sections == {} and gallery.write() == []


def test_without_a_folder_nothing_is_kept_or_written() -> None:
    gallery = Gallery(None)
    gallery.add("sketch", "gamma 1", np.zeros((2, 8, 8, 3), np.uint8))
    assert gallery.sections == {} and gallery.write() == []
