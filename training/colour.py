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


def coloured_pixels(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Hue (degrees in [0, 360)), saturation and value (0-1) of an RGB uint8 image's pixels that have
    a hue (saturation and value at least MIN_SATURATION and MIN_VALUE), and their share of the image."""
    hsv = cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2HSV_FULL).astype(np.float32)
    hues, saturations, values = hsv[..., 0] * (360.0 / 256.0), hsv[..., 1] / 255.0, hsv[..., 2] / 255.0
    coloured = (saturations >= MIN_SATURATION) & (values >= MIN_VALUE)
    return hues[coloured], saturations[coloured], values[coloured], float(coloured.mean())


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
    hues, _, _, share = coloured_pixels(image)
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


def recolour(image: np.ndarray, degrees: float, saturation_scale: float = 1.0,
             value_scale: float = 1.0) -> np.ndarray:
    """The RGB uint8 image with every pixel's hue turned by `degrees`, and the saturation and value
    of its coloured pixels scaled (fully from MIN_SATURATION and MIN_VALUE up, fading to nothing
    towards white, grey and black, which stay as they are)."""
    hsv = cv2.cvtColor(np.ascontiguousarray(image[..., :3]).astype(np.float32) / 255.0, cv2.COLOR_RGB2HSV)
    hue, saturation, value = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    coloured = np.clip(saturation / MIN_SATURATION, 0.0, 1.0) * np.clip(value / MIN_VALUE, 0.0, 1.0)
    turned = np.stack([(hue + degrees) % 360.0,
                       np.clip(saturation * (1.0 + coloured * (saturation_scale - 1.0)), 0.0, 1.0),
                       np.clip(value * (1.0 + coloured * (value_scale - 1.0)), 0.0, 1.0)], axis=-1)
    rgb = cv2.cvtColor(turned.astype(np.float32), cv2.COLOR_HSV2RGB)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def named_look(image: np.ndarray, colour: str) -> tuple[float, float, float]:
    """Circular mean hue (degrees), median saturation and median value (0-1) of the image's
    coloured pixels that `colour` names."""
    hues, saturations, values, _ = coloured_pixels(image)
    named = hue_name(hues) == colour
    radians = np.deg2rad(hues[named])
    hue = float(np.rad2deg(np.arctan2(np.sin(radians).mean(), np.cos(radians).mean())) % 360.0)
    return hue, float(np.median(saturations[named])), float(np.median(values[named]))


def shown_colour(image: np.ndarray, caption: str) -> str | None:
    """The caption's colour word when it names exactly one and it is the image's dominant hue."""
    words = set(COLOUR_WORD_PATTERN.findall(caption))
    if len(words) != 1:
        return None
    word = words.pop()
    return word if dominant_hue(image) == word else None


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


def typical_looks(colours: Sequence[str], looks: Sequence[tuple[float, float, float]]) -> dict[str, tuple[float, float]]:
    """Each colour word's median saturation and value over the looks (named_look) of its images."""
    words, saturations_and_values = np.array(colours), np.array(looks, dtype=float).reshape(-1, 3)[:, 1:]
    return {word: tuple(np.median(saturations_and_values[words == word], axis=0).tolist()) for word in set(colours)}


def colour_variants(images: Sequence[np.ndarray], captions: Sequence[str]) -> tuple[list[np.ndarray], list[str]]:
    """Recoloured copies of every image whose caption names exactly one of COLOUR_WORDS and whose
    dominant hue is that colour, one per other colour word, recaptioned with it ("a red heart" ->
    "a blue heart"): the hue turned to the new word's centre, and saturation and brightness scaled
    to the median look of that word's own images in the data (a dark blue turned yellow alone is
    olive, and orange brown); a copy whose dominant hue does not come out as its new word is
    dropped. Colour words are in few captions (about 3% of the emoji's), too few for a small
    text-to-image model to learn them; each copy is a pair that differs in the colour alone."""
    shown = [(image, caption, colour) for image, caption in zip(images, captions, strict=True)
             if (colour := shown_colour(image, caption)) is not None]
    looks = [named_look(image, colour) for image, _, colour in shown]
    typical = typical_looks([colour for _, _, colour in shown], looks)
    new_images, new_captions = [], []
    for (image, caption, source), (hue, saturation, value) in zip(shown, looks):
        for target in COLOUR_WORDS:
            if target == source:
                continue
            target_saturation, target_value = typical.get(target, (saturation, value))
            turned = recolour(image, HUE_CENTRES[target] - hue, target_saturation / max(saturation, 1e-3),
                              target_value / max(value, 1e-3))
            if dominant_hue(turned) == target:
                new_images.append(turned)
                new_captions.append(recaptioned(caption, source, target))
    return new_images, new_captions
