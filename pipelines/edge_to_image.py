"""Photo -> Canny edges -> image with pix2pix-Turbo's edge model.

Edges come from OpenCV's Canny on the photo at the model's size (longer side at most 512, multiples
of 8; see pipelines.images); the model sees them as a {0, 1} map (edge = 1). The edge model is
deterministic: `seed` is checked and kept for a uniform API but changes nothing. Returns the edge
map as the user should see it (dark lines on white) and the image, both at the photo's size.
"""

from __future__ import annotations

from numbers import Integral

import cv2
import numpy as np
import torch
from PIL import Image

from models.img2img_turbo import get_task, run_task
from models.store import ModelStore
from pipelines.checks import check_prompt, check_seed
from pipelines.images import ImageInput, model_size, resize, to_pil, to_rgb


def check_thresholds(low: object, high: object) -> tuple[int, int]:
    for name, value in (("low_threshold", low), ("high_threshold", high)):
        if isinstance(value, bool) or not isinstance(value, Integral) or not 0 <= int(value) <= 255:
            raise ValueError(f"{name}={value!r} must be a whole number from 0 to 255")
    if not int(low) < int(high):
        raise ValueError(f"low_threshold={low!r} must be below high_threshold={high!r}")
    return int(low), int(high)


def canny_edges(image: Image.Image, low: int, high: int) -> np.ndarray:
    """Canny edges of an RGB image: uint8, 255 on edges."""
    return cv2.Canny(np.asarray(image), low, high)


def edge_to_image(store: ModelStore, image: ImageInput, prompt: str, *, low_threshold: int = 100,
                  high_threshold: int = 200, seed: int = 0) -> tuple[Image.Image, Image.Image]:
    # 1. check inputs
    photo = to_rgb(image, "image")
    prompt = check_prompt(prompt)
    low, high = check_thresholds(low_threshold, high_threshold)
    check_seed(seed)
    # 2. edges at the model's size
    edges = canny_edges(resize(photo, model_size(*photo.size)), low, high)
    control = torch.from_numpy(edges > 0).to(store.dtype).expand(1, 3, *edges.shape).to(store.device)
    with store.lock, torch.inference_mode():
        task = get_task(store, "edge_to_image")
        embeddings = store.prompt_embeddings(prompt)
        # 3. one deterministic step
        pixels = run_task(store, task, control, embeddings)
    # 4. edge view (dark on white) and image at the photo's size
    edge_view = resize(Image.fromarray(255 - edges).convert("RGB"), photo.size)
    return edge_view, resize(to_pil(pixels), photo.size)
