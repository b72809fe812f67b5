"""Image conversion shared by the pipelines: modes and arrays in, RGB out; refusals; model sizes."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.errors import NonFiniteOutputError
from pipelines.images import MIN_MODEL_SIDE, model_size, to_pil, to_rgb
from pipelines.limits import MAX_INPUT_SIDE

MODEL_SIDE = 512  # SD-Turbo's native side, the long side model_size scales down to

SIZE = (40, 30)  # width, height: not square, so a transposed result would show
WHITE = (255, 255, 255)


def two_halves(mode: str, left: object, right: object) -> Image.Image:
    """A SIZE image in the mode whose left half is `left` and right half is `right`."""
    image = Image.new(mode, SIZE, left)
    image.paste(right, (SIZE[0] // 2, 0, SIZE[0], SIZE[1]))
    return image


def palette_image(transparent: bool) -> Image.Image:
    """Palette image: index 0 is red on the left, index 1 is blue on the right; 1 may be transparent."""
    image = two_halves("P", 0, 1)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0, 0, 0] * 254)
    if transparent:
        image.info["transparency"] = 1
    return image


def int16_image() -> Image.Image:
    image = Image.fromarray(np.full(SIZE[::-1], 65535, dtype=np.uint16))
    assert image.mode == "I;16"
    image.paste(0, (SIZE[0] // 2, 0, SIZE[0], SIZE[1]))
    return image


MODE_CASES: dict[str, tuple[Callable[[], Image.Image], tuple[int, int, int], tuple[int, int, int]]] = {
    # name: (make image, expected left pixel, expected right pixel)
    "RGBA": (lambda: two_halves("RGBA", (255, 0, 0, 255), (0, 0, 255, 0)), (255, 0, 0), WHITE),
    "LA": (lambda: two_halves("LA", (0, 255), (0, 0)), (0, 0, 0), WHITE),
    "P": (lambda: palette_image(transparent=False), (255, 0, 0), (0, 0, 255)),
    "P-transparent": (lambda: palette_image(transparent=True), (255, 0, 0), WHITE),
    "L": (lambda: two_halves("L", 100, 200), (100,) * 3, (200,) * 3),
    "I;16": (int16_image, WHITE, (0, 0, 0)),
    "I": (lambda: two_halves("I", 200, 0), (200,) * 3, (0, 0, 0)),
    "CMYK": (lambda: two_halves("CMYK", (0, 0, 0, 0), (0, 0, 0, 255)), WHITE, (0, 0, 0)),
    "1": (lambda: two_halves("1", 1, 0), WHITE, (0, 0, 0)),
    "F": (lambda: two_halves("F", 100.0, 250.0), (100,) * 3, (250,) * 3),
}


def left_right(image: Image.Image) -> tuple[tuple[int, ...], tuple[int, ...]]:
    return image.getpixel((2, 2)), image.getpixel((SIZE[0] - 3, SIZE[1] - 3))


@pytest.mark.parametrize("case", list(MODE_CASES))
def test_every_mode_becomes_rgb_of_the_same_size(case: str) -> None:
    """Modes are converted, not refused; transparency is composited on white."""
    make, left, right = MODE_CASES[case]
    source = make()
    result = to_rgb(source)
    assert result.mode == "RGB"
    assert result.size == source.size == SIZE
    assert left_right(result) == (left, right)


ARRAY_CASES: dict[str, tuple[np.ndarray, tuple[int, int, int]]] = {
    # name: (array of shape (30, 40, ...), expected colour of every pixel)
    "HxW uint8": (np.full((30, 40), 70, np.uint8), (70,) * 3),
    "HxWx1 uint8": (np.full((30, 40, 1), 70, np.uint8), (70,) * 3),
    "HxWx3 uint8": (np.full((30, 40, 3), (10, 20, 30), np.uint8), (10, 20, 30)),
    "HxWx4 uint8 opaque": (np.full((30, 40, 4), (10, 20, 30, 255), np.uint8), (10, 20, 30)),
    "HxWx4 uint8 transparent": (np.full((30, 40, 4), (10, 20, 30, 0), np.uint8), WHITE),
    "HxWx3 uint16": (np.full((30, 40, 3), (0, 257 * 20, 65535), np.uint16), (0, 20, 255)),
    "HxW bool": (np.ones((30, 40), bool), WHITE),
    "HxWx3 float": (np.full((30, 40, 3), (0.0, 0.2, 1.0), np.float32), (0, 51, 255)),
    "HxW float64": (np.full((30, 40), 0.2), (51,) * 3),
}


@pytest.mark.parametrize("case", list(ARRAY_CASES))
def test_numpy_arrays_become_rgb(case: str) -> None:
    array, colour = ARRAY_CASES[case]
    result = to_rgb(array)
    assert result.mode == "RGB"
    assert result.size == (40, 30)
    assert np.all(np.asarray(result) == np.array(colour, np.uint8))


def test_largest_allowed_side_is_accepted() -> None:
    assert to_rgb(Image.new("L", (MAX_INPUT_SIDE, 2))).size == (MAX_INPUT_SIDE, 2)


def nan_array() -> np.ndarray:
    array = np.zeros((8, 8, 3), np.float32)
    array[3, 3, 1] = np.nan
    return array


REFUSED: dict[str, Callable[[], object]] = {
    "None": lambda: None,
    "zero-width PIL": lambda: Image.new("RGB", (0, 5)),
    "zero-height PIL": lambda: Image.new("L", (5, 0)),
    "empty HxWx3 array": lambda: np.zeros((0, 5, 3), np.uint8),
    "empty HxW array": lambda: np.zeros((5, 0), np.uint8),
    "too wide PIL": lambda: Image.new("L", (MAX_INPUT_SIDE + 1, 8)),
    "too tall array": lambda: np.zeros((MAX_INPUT_SIDE + 1, 8), np.uint8),
    "HxWx2 array": lambda: np.zeros((8, 8, 2), np.uint8),
    "HxWx5 array": lambda: np.zeros((8, 8, 5), np.uint8),
    "1-D array": lambda: np.zeros(8, np.uint8),
    "4-D array": lambda: np.zeros((1, 8, 8, 3), np.uint8),
    "int64 array": lambda: np.zeros((8, 8), np.int64),
    "int8 array": lambda: np.zeros((8, 8), np.int8),
    "complex array": lambda: np.zeros((8, 8), np.complex64),
    "object array": lambda: np.full((8, 8), None, dtype=object),
    "NaN float array": nan_array,
    "infinite float array": lambda: np.full((8, 8), np.inf, np.float32),
    "str": lambda: "photo.png",
    "bytes": lambda: b"\x89PNG\r\n",
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_bad_images_are_refused_naming_the_argument(case: str) -> None:
    with pytest.raises(ValueError, match=r"^sketch\b"):
        to_rgb(REFUSED[case](), "sketch")


def test_default_argument_name_is_image() -> None:
    with pytest.raises(ValueError, match=r"^image\b"):
        to_rgb(None)


@pytest.mark.parametrize("size", [(320, 240), (200, 500), (512, 512), (4096, 1024), (257, 1024), (1023, 777),
                                  (600, 300)])
def test_model_size_keeps_aspect_and_caps_the_longer_side(size: tuple[int, int]) -> None:
    """Scaled down (never up) to a longer side of at most MODEL_SIDE; sides are multiples of 8,
    each within 4 px of the exactly scaled side, so the aspect ratio is kept."""
    width, height = size
    model_width, model_height = model_size(width, height, MODEL_SIDE)
    scale = min(1.0, MODEL_SIDE / max(width, height))
    assert max(model_width, model_height) == min(MODEL_SIDE, round(max(width, height) / 8) * 8)
    assert model_width % 8 == 0 and model_height % 8 == 0
    assert abs(model_width - width * scale) <= 4
    assert abs(model_height - height * scale) <= 4


def test_model_size_does_not_upscale() -> None:
    assert model_size(320, 240, MODEL_SIDE) == (320, 240)


@pytest.mark.parametrize(("size", "expected"), [((4096, 16), (MODEL_SIDE, MIN_MODEL_SIDE)), ((100, 50), (96, 64))])
def test_model_size_has_a_floor_for_small_sides(size: tuple[int, int], expected: tuple[int, int]) -> None:
    assert model_size(*size, MODEL_SIDE) == expected


def test_to_pil_maps_minus_one_to_one_onto_0_255() -> None:
    tensor = torch.full((1, 3, 6, 10), -1.0)
    tensor[:, :, :, 5:] = 1.0
    image = to_pil(tensor)
    assert image.mode == "RGB" and image.size == (10, 6)
    assert image.getpixel((0, 0)) == (0, 0, 0) and image.getpixel((9, 5)) == WHITE


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_to_pil_refuses_non_finite_values(bad: float) -> None:
    tensor = torch.zeros((1, 3, 8, 8))
    tensor[0, 1, 4, 4] = bad
    with pytest.raises(NonFiniteOutputError):
        to_pil(tensor)
