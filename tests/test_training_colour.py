"""The colour yardsticks of `python -m training evaluate` (training.colour): a red heart is named
red, a blue one blue, a grey image names no hue, a browned reconstruction moves the mean colour."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from training.colour import (COLOUR_WORDS, colour_prompts, colour_variants, dominant_hue, hue_accuracy,
                             mean_colour_error, mean_pairwise_difference, recaptioned)

EMOJI_COLOURS = {"red": (221, 46, 68), "orange": (244, 144, 12), "yellow": (253, 203, 88), "green": (120, 177, 89),
                 "blue": (85, 172, 238), "purple": (170, 142, 214)}  # Twemoji's hearts


def heart(colour: tuple[int, int, int], side: int = 64) -> np.ndarray:
    image = np.full((side, side, 3), 255, np.uint8)
    cv2.circle(image, (side // 3, side // 3), side // 5, colour, -1)
    cv2.circle(image, (2 * side // 3, side // 3), side // 5, colour, -1)
    triangle = np.array([[side // 8, side * 2 // 5], [side * 7 // 8, side * 2 // 5], [side // 2, side * 7 // 8]])
    cv2.fillPoly(image, [triangle], colour)
    return image


@pytest.mark.parametrize("word", COLOUR_WORDS)
def test_each_colour_word_names_its_heart(word: str) -> None:
    assert dominant_hue(heart(EMOJI_COLOURS[word])) == word


def test_grey_black_and_white_name_no_hue() -> None:
    assert dominant_hue(heart((128, 128, 128))) is None
    assert dominant_hue(np.zeros((32, 32, 3), np.uint8)) is None


def test_hue_accuracy_counts_right_answers() -> None:
    images = [heart(EMOJI_COLOURS["red"]), heart(EMOJI_COLOURS["blue"])]
    assert hue_accuracy(images, ["red", "blue"]) == 1.0
    assert hue_accuracy(images, ["red", "red"]) == 0.5


def test_prompts_cover_every_colour_with_every_shape() -> None:
    prompts = colour_prompts()
    assert len(prompts) == 18 and ("a red heart", "red") in prompts and ("an orange square", "orange") in prompts


def test_mean_colour_error_catches_a_browned_reconstruction() -> None:
    original = heart(EMOJI_COLOURS["blue"])[None]
    assert mean_colour_error(original, original)[0] == 0
    browned = original.copy()
    browned[~(original >= 240).all(-1)] = (120, 90, 60)
    assert mean_colour_error(original, browned)[0] > 100
    shifted = np.clip(original.astype(int) - 3, 0, 255).astype(np.uint8)
    assert mean_colour_error(original, shifted)[0] <= 3


def test_mean_pairwise_difference() -> None:
    images = np.stack([np.zeros((4, 4, 3), np.uint8), np.full((4, 4, 3), 10, np.uint8), np.full((4, 4, 3), 40, np.uint8)])
    assert mean_pairwise_difference(images) == pytest.approx((10 + 40 + 30) / 3)
    assert mean_pairwise_difference(images[:1].repeat(3, 0)) == 0


def test_a_coloured_heart_gets_one_variant_per_other_colour_word_recaptioned() -> None:
    red = heart(EMOJI_COLOURS["red"])
    images, captions = colour_variants([red], ["a red heart"])
    assert captions == ["an orange heart", "a yellow heart", "a green heart", "a blue heart", "a purple heart"]
    for image, caption in zip(images, captions):
        assert dominant_hue(image) == caption.split()[1]
        background = (red == 255).all(-1)
        assert (image[background] == 255).all()  # white stays white: only the hue turns
        assert np.array_equal((image == 255).all(-1), background)  # the shape is where it was


def test_variants_take_the_brightness_and_saturation_of_their_new_colours_own_images() -> None:
    """A dark blue heart turned yellow by its hue alone is olive; it takes the look of the data's
    yellow hearts instead, and they take the dark blue's look when turned blue."""
    dark_blue, bright_yellow = (20, 40, 110), EMOJI_COLOURS["yellow"]
    images, captions = colour_variants([heart(dark_blue), heart(bright_yellow)], ["a blue heart", "a yellow heart"])
    turned = dict(zip(captions, images))
    inside = ~(heart(dark_blue) == 255).all(-1)

    def saturation_and_value(image: np.ndarray) -> np.ndarray:
        hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV_FULL)[inside].astype(float) / 255.0
        return np.median(hsv[:, 1:], axis=0)

    assert saturation_and_value(turned["a yellow heart"]) == pytest.approx(
        saturation_and_value(heart(bright_yellow)), abs=0.02)
    assert saturation_and_value(turned["a blue heart"]) == pytest.approx(saturation_and_value(heart(dark_blue)), abs=0.02)
    assert dominant_hue(turned["a yellow heart"]) == "yellow" and dominant_hue(turned["a blue heart"]) == "blue"
    mean_rgb = turned["a yellow heart"][inside].astype(float).mean(0)
    assert mean_rgb[2] < 120 and mean_rgb[:2].min() > 200  # bright yellow: red and green high, blue low


def test_only_captions_with_one_colour_word_that_the_image_shows_get_variants() -> None:
    blue, grey = heart(EMOJI_COLOURS["blue"]), heart((128, 128, 128))
    rows = [(blue, "a heart"), (blue, "a red heart"), (grey, "a blue heart"), (blue, "a red and blue flag")]
    images, captions = colour_variants([image for image, _ in rows], [caption for _, caption in rows])
    assert images == [] and captions == []
    _, captions = colour_variants([blue], ["A light blue heart"])
    assert "A light purple heart" in captions and len(captions) == 5


def test_recaptioning_keeps_the_article_right() -> None:
    assert recaptioned("a red heart", "red", "orange") == "an orange heart"
    assert recaptioned("An orange circle", "orange", "blue") == "A blue circle"
    assert recaptioned("red apple", "red", "green") == "green apple"
    assert recaptioned("a redwood tree and a red car", "red", "blue") == "a redwood tree and a blue car"
