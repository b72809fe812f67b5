"""SDEdit-style editing in one step: encode the photo, noise it to the level the strength sets,
predict x0 with the prompt, decode.

strength in (0, 1] picks the timestep t = round(strength * 999): small strength keeps the photo,
strength 1 starts from (almost) pure noise like text to image. The model runs at the photo's
aspect ratio (see pipelines.images) and the result comes back at the photo's size.
"""

from __future__ import annotations

from PIL import Image

from models.running.sd_turbo import FINAL_TIMESTEP
from models.running.store import ModelStore
from pipelines.checks import check_fraction, check_prompt, check_seed
from pipelines.images import ImageInput, model_size, resize, seeded_noise, to_pil, to_rgb, to_tensor
from pipelines.limits import DEFAULT_STRENGTH, limits_of


def strength_to_timestep(strength: float) -> int:
    return int(round(strength * FINAL_TIMESTEP))


def edit(store: ModelStore, image: ImageInput, prompt: str, *, strength: float = DEFAULT_STRENGTH,
         seed: int = 0) -> Image.Image:
    # 1. check inputs
    limits = limits_of(store)
    photo = to_rgb(image, "image", limits.max_input_side)
    prompt = check_prompt(prompt)
    strength = check_fraction(strength, "strength", allow_zero=False)
    seed = check_seed(seed, limits)
    base = store.base
    t = strength_to_timestep(strength)
    # 2. size for the model and convert
    pixels = to_tensor(resize(photo, model_size(*photo.size, limits.native_side)), store.device, store.dtype)
    with store.model_call() as call:
        embeddings = store.prompt_embeddings(prompt)
        # 3. encode (posterior mean: the photo's latent, no sampling noise)
        latents = call.encode(pixels)
        # 4. noise to timestep t with seeded noise
        noise = seeded_noise(seed, tuple(latents.shape), store.device, store.dtype)
        noisy = base.add_noise(latents, noise, t)
        # 5. one step to x0, decode
        denoised = call.predict_x0(noisy, t, embeddings)
        decoded = call.decode(denoised)
    # 6. back to the photo's size
    return resize(to_pil(decoded), photo.size)
