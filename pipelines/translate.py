"""Day <-> night and clear <-> rainy with CycleGAN-Turbo.

As in the release, the model sees the photo resized to a square of the native side (512x512) with
the direction's fixed caption (embedded once at load); the result is resized back to the photo's size.
"""

from __future__ import annotations

from PIL import Image

from models.running.img2img_turbo import run_task
from models.running.store import ModelStore
from models.weights.specs import Direction
from pipelines.checks import check_choice
from pipelines.images import ImageInput, resize, to_pil, to_rgb, to_tensor
from pipelines.limits import limits_of


def translate(store: ModelStore, image: ImageInput, *, direction: Direction) -> Image.Image:
    # 1. check inputs
    limits = limits_of(store)
    direction = check_choice(direction, "direction", limits.directions)  # type: ignore[assignment]
    photo = to_rgb(image, "image", limits.max_input_side)
    # 2. a native-size square in [-1, 1]
    side = limits.native_side
    pixels = to_tensor(resize(photo, (side, side)), store.device, store.dtype)
    with store.model_call(direction) as call:
        # 3. one step with the fixed caption
        translated = run_task(call, pixels, call.require_task().caption_embeddings)
    # 4. back to the photo's size
    return resize(to_pil(translated), photo.size)
