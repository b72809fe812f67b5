"""Colour yardsticks that need no trained network: the dominant hue of an image, and how far an
image's mean colour moved (the autoencoder's colour check).

Hue names and their ranges (degrees) are calibrated on the emoji data: `python -m training evaluate`
reports the share of real training emoji captioned "a red heart", "a blue circle", ... whose dominant
hue this module names right, beside the generated images' share.
"""

from __future__ import annotations

import re
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


def saturated_hues(image: np.ndarray) -> tuple[np.ndarray, float]:
    """Hues (degrees in [0, 360)) of an RGB uint8 image's pixels that have one (saturation and value
    at least MIN_SATURATION and MIN_VALUE), and their share of the image."""
    hsv = cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2HSV_FULL).astype(np.float32)
    coloured = (hsv[..., 1] / 255.0 >= MIN_SATURATION) & (hsv[..., 2] / 255.0 >= MIN_VALUE)
    return hsv[..., 0][coloured] * (360.0 / 256.0), float(coloured.mean())


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
    hues, share = saturated_hues(image)
    if share < 0.02:
        return None
    names = hue_name(hues)
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


# ------------------------------------------------------------------------------ colour variants

HUE_CENTRES: dict[str, float] = {
    name: ((start + ((end - start) % 360.0) / 2.0) % 360.0) for name, (start, end) in HUE_RANGES.items()}
COLOUR_WORD_PATTERN = re.compile(r"\b(" + "|".join(COLOUR_WORDS) + r")\b")


def rotate_hue(image: np.ndarray, degrees: float) -> np.ndarray:
    """The RGB uint8 image with every pixel's hue turned by `degrees` (white, grey and black,
    which have no saturation, stay as they are)."""
    hsv = cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2HSV_FULL)
    shift = int(round(degrees * 256.0 / 360.0))
    hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + shift) % 256).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL)


def named_hue_mean(image: np.ndarray, colour: str) -> float:
    """Circular mean hue (degrees) of the image's saturated pixels that `colour` names."""
    hues, _ = saturated_hues(image)
    radians = np.deg2rad(hues[hue_name(hues) == colour])
    return float(np.rad2deg(np.arctan2(np.sin(radians).mean(), np.cos(radians).mean())) % 360.0)


def recaptioned(caption: str, source: str, target: str) -> str:
    """The caption with its colour word `source` replaced by `target`, "a" / "an" before it agreeing."""
    def replace(match: re.Match[str]) -> str:
        article = match.group(1)
        if article is None:
            return target
        vowel = target[0] in "aeiou"
        capital = article[0] == "A"
        return f"{('An' if vowel else 'A') if capital else ('an' if vowel else 'a')} {target}"

    return re.sub(rf"\b(?:([Aa]n?) )?{source}\b", replace, caption, count=1)


def colour_variants(images: Sequence[np.ndarray], captions: Sequence[str]) -> tuple[list[np.ndarray], list[str]]:
    """Hue-turned copies of every image whose caption names exactly one of COLOUR_WORDS and whose
    dominant hue is that colour, one per other colour word, recaptioned with it ("a red heart" ->
    "a blue heart", the image's red turned blue); a copy whose dominant hue does not come out as its
    new word is dropped. Colour words are in few captions (about 3% of the emoji's), too few for a
    small text-to-image model to learn them; each copy is a pair that differs in the colour alone."""
    new_images, new_captions = [], []
    for image, caption in zip(images, captions, strict=True):
        words = set(COLOUR_WORD_PATTERN.findall(caption))
        if len(words) != 1:
            continue
        source = words.pop()
        if dominant_hue(image) != source:
            continue
        centre = named_hue_mean(image, source)
        for target in COLOUR_WORDS:
            if target == source:
                continue
            turned = rotate_hue(image, HUE_CENTRES[target] - centre)
            if dominant_hue(turned) == target:
                new_images.append(turned)
                new_captions.append(recaptioned(caption, source, target))
    return new_images, new_captions
