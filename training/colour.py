"""Colour yardsticks that need no trained network: the dominant hue of an image, and how far an
image's mean colour moved (the autoencoder's colour check).

Hue names and their ranges (degrees) are calibrated on the emoji data: `python -m training evaluate`
reports the share of real training emoji captioned "a red heart", "a blue circle", ... whose dominant
hue this module names right, beside the generated images' share.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

COLOUR_WORDS: tuple[str, ...] = ("red", "orange", "yellow", "green", "blue", "purple")
COLOUR_SHAPES: tuple[str, ...] = ("heart", "circle", "square")
# [start, end) in degrees; red wraps around 0
HUE_RANGES: dict[str, tuple[float, float]] = {
    "red": (340.0, 15.0), "orange": (15.0, 37.0), "yellow": (37.0, 70.0), "green": (70.0, 170.0),
    "blue": (170.0, 260.0), "purple": (260.0, 340.0),
}
MIN_SATURATION = 0.25  # below this a pixel is grey, white or black and names no hue
MIN_VALUE = 0.25
WHITE_LEVEL = 240  # a pixel with every channel at or above this is background


def colour_prompts() -> list[tuple[str, str]]:
    """(prompt, colour word) for every colour word with every shape: "a red heart", ..."""
    return [(f"{'an' if colour[0] in 'aeiou' else 'a'} {colour} {shape}", colour)
            for shape in COLOUR_SHAPES for colour in COLOUR_WORDS]


def hue_name(degrees: np.ndarray) -> np.ndarray:
    """The colour word of each hue (degrees in [0, 360))."""
    names = np.empty(degrees.shape, dtype=object)
    for name, (start, end) in HUE_RANGES.items():
        inside = (degrees >= start) & (degrees < end) if start < end else (degrees >= start) | (degrees < end)
        names[inside] = name
    return names


def dominant_hue(image: np.ndarray) -> str | None:
    """The colour word covering most of an RGB uint8 image's saturated pixels, or None when fewer
    than 2% of its pixels have a hue at all."""
    hsv = cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2HSV_FULL).astype(np.float32)
    hue, saturation, value = hsv[..., 0] * (360.0 / 256.0), hsv[..., 1] / 255.0, hsv[..., 2] / 255.0
    coloured = (saturation >= MIN_SATURATION) & (value >= MIN_VALUE)
    if coloured.mean() < 0.02:
        return None
    names = hue_name(hue[coloured])
    words, counts = np.unique(names.astype(str), return_counts=True)
    return str(words[np.argmax(counts)])


def hue_accuracy(images: Sequence[np.ndarray], colours: Sequence[str]) -> float:
    """Share of images whose dominant hue is the given colour word."""
    if not len(images):
        raise ValueError("no images")
    return float(np.mean([dominant_hue(image) == colour for image, colour in zip(images, colours, strict=True)]))


def mean_colour_error(originals: np.ndarray, reconstructions: np.ndarray) -> np.ndarray:
    """Per image, the largest channel difference (grey levels, 0-255) between the mean colours of
    the original's non-white area in the original and in the reconstruction (the whole image where
    it has no such area)."""
    errors = []
    for original, reconstruction in zip(originals, reconstructions, strict=True):
        area = ~(original[..., :3] >= WHITE_LEVEL).all(-1)
        if not area.any():
            area = np.ones(area.shape, dtype=bool)
        before = original[..., :3][area].astype(np.float64).mean(0)
        after = reconstruction[..., :3][area].astype(np.float64).mean(0)
        errors.append(np.abs(before - after).max())
    return np.array(errors)


def mean_pairwise_difference(images: np.ndarray) -> float:
    """Mean absolute pixel difference (grey levels) over every pair of images."""
    if len(images) < 2:
        raise ValueError("needs at least two images")
    flat = images.reshape(len(images), -1).astype(np.float32)
    total, pairs = 0.0, 0
    for index in range(len(flat) - 1):
        total += float(np.abs(flat[index + 1:] - flat[index]).mean(1).sum())
        pairs += len(flat) - index - 1
    return total / pairs
