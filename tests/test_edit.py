"""SDEdit in one step on the tiny SD-Turbo: size, determinism, strength, bad input, image modes."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

from pipelines import Studio
from pipelines.limits import MAX_INPUT_SIDE
from tests.conftest import pixel_distance

PROMPT = "a watercolor painting"


@pytest.mark.parametrize("size", [(320, 240), (200, 500)])
def test_output_has_the_input_size(studio: Studio, photo: Image.Image, size: tuple[int, int]) -> None:
    result = studio.edit(photo.resize(size), PROMPT, strength=0.5, seed=0)
    assert result.mode == "RGB"
    assert result.size == size


def test_same_seed_same_image_and_other_seed_other_image(studio: Studio, photo: Image.Image) -> None:
    first = studio.edit(photo, PROMPT, strength=0.6, seed=11)
    again = studio.edit(photo, PROMPT, strength=0.6, seed=11)
    other = studio.edit(photo, PROMPT, strength=0.6, seed=12)
    assert np.array_equal(np.asarray(first), np.asarray(again))
    assert pixel_distance(first, other) > 1.0


def test_larger_strength_moves_further_from_what_the_model_keeps(studio: Studio, photo: Image.Image) -> None:
    """Mean pixel distance at strength 0.2 < 0.5 < 0.9, measured from the model's own reconstruction
    of the photo (the output at strength 0.01): the tiny VAE has random weights and does not
    reproduce the photo itself, so the photo is no reference; what the model keeps of it is."""
    kept = studio.edit(photo, PROMPT, strength=0.01, seed=0)
    distances = [pixel_distance(studio.edit(photo, PROMPT, strength=strength, seed=0), kept)
                 for strength in (0.2, 0.5, 0.9)]
    assert distances == sorted(distances)
    assert len(set(distances)) == 3


def test_strength_one_is_close_to_text_to_image(studio: Studio, photo: Image.Image) -> None:
    """At strength 1 the photo is all but drowned in the same seeded noise text to image starts from
    (same prompt, seed and size, so the same latent shape)."""
    source = photo.resize((320, 256))
    generated = studio.text_to_image(PROMPT, seed=4, width=320, height=256)
    at_one = pixel_distance(studio.edit(source, PROMPT, strength=1.0, seed=4), generated)
    at_low = pixel_distance(studio.edit(source, PROMPT, strength=0.2, seed=4), generated)
    assert at_one < at_low


@pytest.mark.parametrize("strength", [float("nan"), 0, 0.0, -0.1, 1.01, float("inf"), "0.5", None, True])
def test_bad_strength_names_strength_its_value_and_range(studio: Studio, photo: Image.Image,
                                                          strength: object) -> None:
    with pytest.raises(ValueError) as raised:
        studio.edit(photo, PROMPT, strength=strength, seed=0)
    message = str(raised.value)
    assert f"strength={strength!r}" in message
    assert "(0, 1]" in message


BAD_IMAGES: dict[str, Callable[[], object]] = {
    "None": lambda: None,
    "zero-size PIL": lambda: Image.new("RGB", (0, 5)),
    "empty array": lambda: np.zeros((0, 4, 3), np.uint8),
    "over 4096 px": lambda: Image.new("L", (MAX_INPUT_SIDE + 1, 8)),
    "str": lambda: "photo.png",
}


@pytest.mark.parametrize("case", list(BAD_IMAGES))
def test_bad_image_names_image(studio: Studio, case: str) -> None:
    with pytest.raises(ValueError, match=r"^image\b"):
        studio.edit(BAD_IMAGES[case](), PROMPT, strength=0.5, seed=0)


def sixteen_bit(image: Image.Image) -> Image.Image:
    converted = Image.fromarray(np.asarray(image.convert("L"), dtype=np.uint16) * 257)
    assert converted.mode == "I;16"
    return converted


MODES: dict[str, Callable[[Image.Image], Image.Image]] = {
    "RGBA": lambda image: image.convert("RGBA"),
    "L": lambda image: image.convert("L"),
    "P": lambda image: image.convert("P"),
    "I;16": sixteen_bit,
    "CMYK": lambda image: image.convert("CMYK"),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_other_modes_are_converted_and_keep_the_size(studio: Studio, photo: Image.Image, mode: str) -> None:
    source = MODES[mode](photo.resize((160, 120)))
    assert source.mode == mode
    result = studio.edit(source, PROMPT, strength=0.5, seed=0)
    assert result.mode == "RGB"
    assert result.size == (160, 120)
