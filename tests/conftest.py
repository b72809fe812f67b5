"""Shared fixtures: one tiny random-weight Studio for the whole session (CPU, no network)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipelines import Studio


@pytest.fixture(scope="session")
def studio() -> Studio:
    return Studio.load(source="tiny", device="cpu")


@pytest.fixture(scope="session")
def photo() -> Image.Image:
    """A smooth 320x240 test photo: gradients plus a bright disc (not a multiple of 64)."""
    ys, xs = np.mgrid[0:240, 0:320]
    red = xs * 255 // 319
    green = ys * 255 // 239
    blue = np.where((xs - 200) ** 2 + (ys - 110) ** 2 < 60**2, 255, 40)
    return Image.fromarray(np.stack([red, green, blue], axis=-1).astype(np.uint8))


def pixel_distance(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).mean())
