"""Opening an image file a user hands in (an upload, a batch input): every way it can be bad is an
InputError that names the file and the problem, found before the model runs.

Checked in order: the file is not empty; PIL recognises it (Image.open reads only the header); its
size is within the largest input side (refused before the pixels are decoded, so a huge image costs
no memory); PIL's verify() walks the file (a cut-off PNG, a bad chunk checksum); the pixels decode
(a truncated JPEG). An animated image gives its first frame. The result is turned upright by its
EXIF orientation and loaded, so the file can go away. No torch here: the UI uses this.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import struct

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pipelines.errors import InputError
from pipelines.limits import MAX_INPUT_SIDE

READABLE = "PNG, JPEG, WebP, GIF, BMP or TIFF"
# what PIL's plugins raise for a file they recognised but cannot decode
DECODE_ERRORS: tuple[type[Exception], ...] = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError,
                                              struct.error, Image.DecompressionBombError)


@dataclass(frozen=True)
class ImageFile:
    """A decoded image file: its first frame, upright, and how many frames the file has."""

    image: Image.Image
    frames: int = 1

    @property
    def animated(self) -> bool:
        return self.frames > 1


def open_image_file(path: Path | str, name: str, max_side: int = MAX_INPUT_SIDE) -> ImageFile:
    """The image in the file at `path`, called `name` in messages; InputError when it is empty,
    not an image, too large, truncated or damaged."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as error:
        raise InputError(f"{name} cannot be read ({error.strerror or error})") from error
    if size == 0:
        raise InputError(f"{name} is an empty file (0 bytes), not an image")
    _check_header(path, name, max_side)
    try:
        with Image.open(path) as checked:
            checked.verify()  # PIL's own integrity check: chunk checksums, a cut-off PNG
        with Image.open(path) as image:
            frames = getattr(image, "n_frames", 1)
            image.seek(0)
            image.load()
            upright = ImageOps.exif_transpose(image)
    except DECODE_ERRORS as error:
        raise InputError(f"{name} is truncated or damaged: its pixels cannot be decoded "
                         f"({type(error).__name__}: {error})") from error
    return ImageFile(upright, frames)


def _check_header(path: Path, name: str, max_side: int) -> None:
    """An image PIL recognises, no larger than max_side a side, by its header alone."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except UnidentifiedImageError as error:
        raise InputError(f"{name} is not a readable image; upload a {READABLE} file") from error
    except Image.DecompressionBombError as error:
        raise InputError(f"{name} is far too large ({error}); the largest side allowed is {max_side} pixels") from error
    except DECODE_ERRORS as error:
        raise InputError(f"{name} is truncated or damaged ({type(error).__name__}: {error})") from error
    if max(width, height) > max_side:
        raise InputError(f"{name} is {width}x{height}; the largest side allowed is {max_side} pixels")
    if width == 0 or height == 0:
        raise InputError(f"{name} has zero size ({width}x{height})")


def wide_int_to_l(image: Image.Image) -> Image.Image:
    """16-bit or 32-bit grey to 8-bit grey, by the value range the mode can hold."""
    values = np.asarray(image).astype(np.float64)
    full_scale = 65535.0 if image.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
    return Image.fromarray((np.clip(values, 0, full_scale) * (255.0 / full_scale)).round().astype(np.uint8))


def eight_bit(image: Image.Image) -> Image.Image:
    """The image in a mode every part of the app shows and saves (RGB, RGBA, L or LA), transparency
    kept: 16-bit and float grey are scaled to 8 bits, palettes and CMYK converted."""
    if image.mode in ("RGB", "RGBA", "L", "LA"):
        return image
    if image.mode.startswith("I"):
        return wide_int_to_l(image)
    if image.mode == "F":
        return Image.fromarray(np.clip(np.asarray(image), 0, 255).astype(np.uint8))
    if image.mode in ("P", "PA", "RGBa", "La"):
        return image.convert("RGBA")
    if image.mode == "1":
        return image.convert("L")
    return image.convert("RGB")
