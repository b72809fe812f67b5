"""Photo -> Canny edges -> image with pix2pix-Turbo's edge model.

Edges come from OpenCV's Canny on the photo at the model's size (longer side at most the native
side, multiples of 8; see pipelines.images); the model sees them as a {0, 1} map (edge = 1). The
edge model is deterministic (the encoder's posterior mean, no noise mixed in), so it takes no seed.
Returns the edge map as the user should see it (dark lines on white) and the image, both at the
photo's size.
"""

from __future__ import annotations

from numbers import Integral

import cv2
import numpy as np
import torch
from PIL import Image

from models.running.img2img_turbo import run_task
from models.running.store import ModelStore
from pipelines.checks import check_prompt
from pipelines.errors import InputError
from pipelines.images import ImageInput, model_size, resize, to_pil, to_rgb
from pipelines.limits import DEFAULT_THRESHOLDS, limits_of


def check_thresholds(low: object, high: object) -> tuple[int, int]:
    for name, value in (("low_threshold", low), ("high_threshold", high)):
        if isinstance(value, bool) or not isinstance(value, Integral) or not 0 <= int(value) <= 255:
            raise InputError(f"{name}={value!r} must be a whole number from 0 to 255")
    if not int(low) < int(high):
        raise InputError(f"low_threshold={low!r} must be below high_threshold={high!r}")
    return int(low), int(high)


def canny_edges(image: Image.Image, low: int, high: int) -> np.ndarray:
    """Canny edges of an RGB image: uint8, 255 on edges."""
    return cv2.Canny(np.asarray(image), low, high)


def edge_to_image(store: ModelStore, image: ImageInput, prompt: str, *, low_threshold: int = DEFAULT_THRESHOLDS[0],
                  high_threshold: int = DEFAULT_THRESHOLDS[1]) -> tuple[Image.Image, Image.Image]:
    # 1. check inputs
    limits = limits_of(store)
    photo = to_rgb(image, "image", limits.max_input_side)
    prompt = check_prompt(prompt)
    low, high = check_thresholds(low_threshold, high_threshold)
    # 2. edges at the model's size
    edges = canny_edges(resize(photo, model_size(*photo.size, limits.native_side)), low, high)
    control = torch.from_numpy(edges > 0).to(store.dtype).expand(1, 3, *edges.shape).to(store.device)
    with store.model_call("edge_to_image") as call:
        embeddings = store.prompt_embeddings(prompt)
        # 3. one deterministic step
        pixels = run_task(call, control, embeddings)
    # 4. edge view (dark on white) and image at the photo's size
    edge_view = resize(Image.fromarray(255 - edges).convert("RGB"), photo.size)
    return edge_view, resize(to_pil(pixels), photo.size)
