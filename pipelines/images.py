"""Image conversion shared by every pipeline: accept what users hand in, size it for the model,
turn it into a tensor and back into a PIL image.

Rules, documented once here:
- Inputs may be PIL images of any mode (RGBA/LA/P are composited on white; 16-bit and CMYK are
  converted) or numpy arrays (HxW, HxWx1/3/4; uint8, uint16, bool or float in [0, 1]).
- Inputs larger than the source's largest input side (Limits.max_input_side, 4096 px) are refused
  with an InputError.
- The model works at the input's aspect ratio, scaled down (never up) so that the longer side is
  at most the source's native side (Limits.native_side, 512 px for SD-Turbo), both sides rounded
  to a multiple of 8 (at least 64); the result is resized back to the input's size.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from pipelines.errors import InputError, NonFiniteOutputError
from pipelines.image_files import wide_int_to_l
from pipelines.limits import MAX_INPUT_SIDE

MIN_MODEL_SIDE = 64
LATENT_FACTOR = 8

ImageInput = Image.Image | np.ndarray


def round_to_multiple(value: float, multiple: int = LATENT_FACTOR) -> int:
    return max(multiple, int(round(value / multiple)) * multiple)


def round_up_to_multiple(value: int, multiple: int = LATENT_FACTOR) -> int:
    return -(-value // multiple) * multiple


def model_size(width: int, height: int, long_side: int) -> tuple[int, int]:
    """The size the model runs at: aspect kept, longer side at most long_side, multiples of 8."""
    scale = min(1.0, long_side / max(width, height))
    return (max(MIN_MODEL_SIDE, round_to_multiple(width * scale)),
            max(MIN_MODEL_SIDE, round_to_multiple(height * scale)))


def array_to_pil(array: np.ndarray, name: str) -> Image.Image:
    """An HxW or HxWxC array (C in 1, 3, 4) of uint8, uint16, bool or floats in [0, 1] to PIL."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise InputError(f"{name} has array shape {array.shape}; expected HxW, HxWx1, HxWx3 or HxWx4")
    if array.size == 0:
        raise InputError(f"{name} is empty (array shape {array.shape})")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype == np.uint16:
        array = (array.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise InputError(f"{name} contains NaN or infinite values")
        array = (np.clip(array, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    elif array.dtype != np.uint8:
        raise InputError(f"{name} has array dtype {array.dtype}; expected uint8, uint16, bool or float")
    return Image.fromarray(np.ascontiguousarray(array))


def flatten_to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode to RGB; transparency is composited on white."""
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I"):
        return wide_int_to_l(image).convert("RGB")
    if image.mode == "F":
        return Image.fromarray(np.clip(np.asarray(image), 0, 255).astype(np.uint8)).convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def to_rgb(image: object, name: str = "image", max_side: int = MAX_INPUT_SIDE) -> Image.Image:
    """Check and convert a user's image: refuses None, empty, non-image and oversized inputs."""
    if image is None:
        raise InputError(f"{name} is missing (None); give a PIL image or a numpy array")
    if isinstance(image, np.ndarray):
        image = array_to_pil(image, name)
    if not isinstance(image, Image.Image):
        raise InputError(f"{name} must be a PIL image or a numpy array, not {type(image).__name__}")
    width, height = image.size
    if width == 0 or height == 0:
        raise InputError(f"{name} has zero size ({width}x{height})")
    if max(width, height) > max_side:
        raise InputError(f"{name} is {width}x{height}; the largest side allowed is {max_side} pixels")
    return flatten_to_rgb(image)


def to_tensor(image: Image.Image, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """RGB PIL image to a (1, 3, H, W) tensor in [-1, 1]."""
    pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)
    return (pixels.to(device=device, dtype=torch.float32) / 127.5 - 1.0).unsqueeze(0).to(dtype)


def to_pil(tensor: torch.Tensor) -> Image.Image:
    """A (1, 3, H, W) tensor in [-1, 1] to an RGB PIL image; non-finite values are an error."""
    if not torch.isfinite(tensor).all():
        raise NonFiniteOutputError(
            "The model produced NaN or infinite values, so no image is returned. This usually means "
            "numerical overflow in half precision: try --dtype float32 or bfloat16.")
    pixels = ((tensor[0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return Image.fromarray(pixels.permute(1, 2, 0).cpu().numpy())


def resize(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    return image if image.size == size else image.resize(size, Image.Resampling.LANCZOS)


def center_crop(image: Image.Image, width: int, height: int) -> Image.Image:
    left = (image.width - width) // 2
    top = (image.height - height) // 2
    return image.crop((left, top, left + width, top + height))


def seeded_noise(seed: int, shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Gaussian noise drawn on the CPU from the seed, so a seed gives the same image on any device."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(device=device, dtype=dtype)
