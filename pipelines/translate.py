"""Day <-> night and clear <-> rainy with CycleGAN-Turbo.

As in the release, the model sees the photo resized to 512x512 with the direction's fixed caption
(embedded once at load); the result is resized back to the photo's size.
"""

from __future__ import annotations

import torch
from PIL import Image

from models.img2img_turbo import get_task, run_task
from models.specs import DIRECTIONS, Direction
from models.store import ModelStore
from pipelines.checks import check_choice
from pipelines.images import MODEL_SIDE, ImageInput, resize, to_pil, to_rgb, to_tensor


def translate(store: ModelStore, image: ImageInput, *, direction: Direction) -> Image.Image:
    # 1. check inputs
    direction = check_choice(direction, "direction", DIRECTIONS)  # type: ignore[assignment]
    photo = to_rgb(image, "image")
    # 2. 512x512 in [-1, 1]
    pixels = to_tensor(resize(photo, (MODEL_SIDE, MODEL_SIDE)), store.device, store.dtype)
    with store.lock, torch.inference_mode():
        task = get_task(store, direction)
        # 3. one step with the fixed caption
        translated = run_task(store, task, pixels, task.caption_embeddings)
    # 4. back to the photo's size
    return resize(to_pil(translated), photo.size)
