"""Masked edit compositing: outside the mask the photo comes back exactly, deep inside the edit,
a smooth blend over the feather; wrong-size and empty masks are refused by name."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from pipelines.errors import InputError
from pipelines.masking import composite, feathered_alpha

FEATHER = 6.0


def disc_mask(size: tuple[int, int], centre: tuple[int, int], radius: int) -> Image.Image:
    mask = Image.new("L", size, 0)
    x, y = centre
    ImageDraw.Draw(mask).ellipse((x - radius, y - radius, x + radius, y + radius), fill=255)
    return mask


@pytest.fixture(scope="module")
def edited(studio, photo) -> Image.Image:
    return studio.edit(photo, "a red car", strength=0.8, seed=3)


def test_outside_the_mask_equals_the_photo_and_deep_inside_the_edit(photo, edited) -> None:
    mask = disc_mask(photo.size, (120, 100), 50)
    result = np.asarray(composite(photo, edited, mask, feather=FEATHER)).astype(int)
    before, after = np.asarray(photo).astype(int), np.asarray(edited).astype(int)
    inside = np.asarray(mask) > 0
    assert np.array_equal(result[~inside], before[~inside])
    deep = np.asarray(disc_mask(photo.size, (120, 100), 50 - int(FEATHER) - 1)) > 0
    assert np.array_equal(result[deep], after[deep])
    band = inside & ~deep
    low, high = np.minimum(before, after)[band], np.maximum(before, after)[band]
    assert ((result[band] >= low) & (result[band] <= high)).all()
    assert (result[band] != before[band]).any() and (result[band] != after[band]).any()  # blended, not cut


def test_gradio_brush_layer_is_a_mask(photo, edited) -> None:
    """An RGBA layer from ImageEditor: any non-zero alpha is inside, whatever its colour."""
    layer = Image.new("RGBA", photo.size, (0, 0, 0, 0))
    ImageDraw.Draw(layer).rectangle((40, 30, 140, 130), fill=(0, 0, 0, 40))
    grey = Image.new("L", photo.size, 0)
    ImageDraw.Draw(grey).rectangle((40, 30, 140, 130), fill=255)
    assert composite(photo, edited, layer).tobytes() == composite(photo, edited, grey).tobytes()
    array_mask = np.asarray(layer)
    assert composite(photo, edited, array_mask).tobytes() == composite(photo, edited, grey).tobytes()


def test_zero_feather_is_a_hard_paste(photo, edited) -> None:
    mask = disc_mask(photo.size, (160, 120), 40)
    inside = np.asarray(mask) > 0
    result = np.asarray(composite(photo, edited, mask, feather=0))
    assert np.array_equal(result[inside], np.asarray(edited)[inside])
    assert np.array_equal(result[~inside], np.asarray(photo)[~inside])


def test_mask_touching_the_border_does_not_fade_there() -> None:
    inside = np.zeros((20, 30), dtype=bool)
    inside[:, :10] = True
    alpha = feathered_alpha(inside, 4.0)
    assert (alpha[:, 0] == 1).all() and (alpha[:, 9] < 1).all() and (alpha[:, 10:] == 0).all()


def test_wrong_size_mask_is_refused(photo, edited) -> None:
    with pytest.raises(InputError, match=r"mask is 100x100 but the photo is 320x240"):
        composite(photo, edited, Image.new("L", (100, 100), 255))


@pytest.mark.parametrize("empty", [Image.new("L", (320, 240), 0), Image.new("RGBA", (320, 240), (255, 0, 0, 0)),
                                   np.zeros((240, 320), dtype=np.uint8)])
def test_empty_mask_is_refused(photo, edited, empty) -> None:
    with pytest.raises(InputError, match="mask is empty"):
        composite(photo, edited, empty)


def test_bad_feather_and_mask_type_are_refused(photo, edited) -> None:
    with pytest.raises(InputError, match="feather=-1"):
        composite(photo, edited, Image.new("L", photo.size, 255), feather=-1)
    with pytest.raises(InputError, match="mask must be a PIL image"):
        composite(photo, edited, "mask.png")  # type: ignore[arg-type]


def test_studio_edit_with_a_mask(studio, photo, edited) -> None:
    """Studio.edit(mask=...) is the plain edit pasted back: the same image inside, the photo outside."""
    mask = disc_mask(photo.size, (200, 110), 60)
    masked = studio.edit(photo, "a red car", strength=0.8, seed=3, mask=mask)
    assert masked.tobytes() == composite(photo, edited, mask).tobytes()
    outside = np.asarray(mask) == 0
    assert np.array_equal(np.asarray(masked)[outside], np.asarray(photo)[outside])


def test_studio_edit_refuses_a_bad_mask_before_running(studio, photo, monkeypatch) -> None:
    monkeypatch.setattr(studio.store, "model_call", lambda *a, **k: pytest.fail("the model ran"))
    with pytest.raises(InputError, match="mask is 32x32 but the photo is 320x240"):
        studio.edit(photo, "x", mask=Image.new("L", (32, 32), 255))
    with pytest.raises(InputError, match="mask is empty"):
        studio.edit(photo, "x", mask=Image.new("L", photo.size, 0))
