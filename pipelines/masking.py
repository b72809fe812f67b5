"""Masked edit in one step (the inpainting idea of latent diffusion, done by compositing): edit the
whole photo, then keep the edit only inside the user's mask and paste the photo back elsewhere.

A mask is any image of the photo's size: a PIL image or numpy array in grey ("L", "1", HxW), RGB,
or with alpha ("RGBA", "LA", HxWx4; a brush layer from Gradio's ImageEditor). A pixel is inside
when its alpha is non-zero (images with alpha) or its value is non-zero (images without).

The edge is feathered inwards: the edit fades in over `feather` pixels inside the mask (a smooth
step of the distance to the mask's edge), so every pixel outside the mask equals the photo exactly
and every pixel at least `feather` pixels inside it equals the edit exactly.
"""

from __future__ import annotations

import math
from numbers import Real

import cv2
import numpy as np
from PIL import Image

from pipelines.errors import InputError
from pipelines.images import ImageInput, to_rgb
from pipelines.limits import DEFAULT_FEATHER, MAX_FEATHER

ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")

MaskInput = Image.Image | np.ndarray


def _inside_of_pil(mask: Image.Image) -> np.ndarray:
    if mask.mode == "P" and "transparency" in mask.info:
        mask = mask.convert("RGBA")
    if mask.mode in ALPHA_MODES:
        return np.asarray(mask.getchannel("A")) > 0
    if mask.mode in ("RGB", "CMYK", "YCbCr", "LAB", "HSV", "P"):
        return np.asarray(mask.convert("RGB")).max(axis=2) > 0
    return np.asarray(mask) > 0


def _inside_of_array(mask: np.ndarray) -> np.ndarray:
    if mask.ndim == 3 and mask.shape[2] == 4:
        return mask[:, :, 3] > 0
    if mask.ndim == 3 and mask.shape[2] in (1, 3):
        return mask.max(axis=2) > 0
    if mask.ndim == 2:
        return mask > 0
    raise InputError(f"mask has array shape {mask.shape}; expected HxW, HxWx1, HxWx3 or HxWx4")


def mask_inside(mask: object, size: tuple[int, int], name: str = "mask") -> np.ndarray:
    """The mask as an HxW bool array (True inside), checked against the photo's (width, height)."""
    if isinstance(mask, Image.Image):
        inside, mask_size = _inside_of_pil(mask), mask.size
    elif isinstance(mask, np.ndarray):
        inside = _inside_of_array(mask)
        mask_size = (mask.shape[1], mask.shape[0])
    else:
        raise InputError(f"{name} must be a PIL image or a numpy array, not {type(mask).__name__}")
    if mask_size != size:
        raise InputError(f"{name} is {mask_size[0]}x{mask_size[1]} but the photo is {size[0]}x{size[1]}; "
                         f"draw the mask on the photo itself")
    if not inside.any():
        raise InputError(f"{name} is empty: brush over the part of the photo to edit, or give no mask to "
                         f"edit the whole photo")
    return inside


def check_feather(feather: object) -> float:
    if isinstance(feather, bool) or not isinstance(feather, Real) or not 0 <= float(feather) <= MAX_FEATHER \
            or math.isnan(float(feather)):
        raise InputError(f"feather={feather!r} must be a number of pixels from 0 to {MAX_FEATHER:g}")
    return float(feather)


def feathered_alpha(inside: np.ndarray, feather: float) -> np.ndarray:
    """Per-pixel weight of the edit, float32 in [0, 1]: 0 outside the mask, rising smoothly over
    `feather` pixels inside it, 1 beyond. The image border does not count as an edge."""
    if feather == 0:
        return inside.astype(np.float32)
    # Distance of each inside pixel to the nearest outside pixel (outside pixels get 0); a one-pixel
    # border of "inside" keeps the image's own edge from fading the edit.
    padded = np.pad(inside, 1, mode="edge").astype(np.uint8)
    distance = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    ramp = np.clip(distance / feather, 0.0, 1.0)
    return (ramp * ramp * (3.0 - 2.0 * ramp)).astype(np.float32)


def composite(photo: ImageInput, edited: ImageInput, mask: MaskInput, *,
              feather: float = DEFAULT_FEATHER) -> Image.Image:
    """The edited image inside the mask, the photo outside it, blended over `feather` pixels inside
    the mask's edge. InputError for a mask of another size than the photo, an empty mask, or an
    edited image of another size."""
    photo = to_rgb(photo, "image")
    edited = to_rgb(edited, "edited image")
    if edited.size != photo.size:
        raise InputError(f"edited image is {edited.width}x{edited.height} but the photo is "
                         f"{photo.width}x{photo.height}")
    alpha = feathered_alpha(mask_inside(mask, photo.size), check_feather(feather))[:, :, None]
    before = np.asarray(photo, dtype=np.float32)
    after = np.asarray(edited, dtype=np.float32)
    blended = before + alpha * (after - before)
    return Image.fromarray(np.rint(blended).astype(np.uint8))
