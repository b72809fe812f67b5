"""Latents sized for the UNet: every side a multiple of its upsampling factor (2 ** upsamplers:
8 for SD-Turbo, so 64 px), padded there and cropped back.

diffusers' UNet also runs other sizes, by interpolating each upsampled map to its skip's odd size,
but that branch is a guard in compiled code (`side % factor`): a size off the factor compiled once
more after warm-up. Padding keeps one graph for every size, and every level of the UNet aligned as
it was trained, where the odd-size branch shifts the upsampled maps against their skips. Latents
that hold an image are padded by reflection, so the UNet sees the image go on past its edge; fresh
noise (text to image) is instead drawn at the padded size and its result cropped (`Padding.crop`),
since reflected noise is not the independent noise the UNet expects. Sizes already on the factor
pass unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel


def unet_multiple(unet: UNet2DConditionModel) -> int:
    """The latent side multiple the UNet runs without interpolating to odd sizes."""
    return 2 ** int(unet.num_upsamplers)


def padded_side(side: int, multiple: int) -> int:
    """The side rounded up to the multiple."""
    return -(-side // multiple) * multiple


@dataclass(frozen=True)
class Padding:
    """How many rows and columns were added on each side (about half before, half after)."""

    top: int
    bottom: int
    left: int
    right: int

    @classmethod
    def to_multiple(cls, height: int, width: int, multiple: int) -> Padding:
        rows, columns = padded_side(height, multiple) - height, padded_side(width, multiple) - width
        return cls(top=rows // 2, bottom=rows - rows // 2, left=columns // 2, right=columns - columns // 2)

    @property
    def is_empty(self) -> bool:
        return self.top == self.bottom == self.left == self.right == 0

    def pad(self, latents: torch.Tensor) -> torch.Tensor:
        """The latents with reflected rows and columns added (unchanged when nothing is added)."""
        if self.is_empty:
            return latents
        return F.pad(latents, (self.left, self.right, self.top, self.bottom), mode="reflect")

    def crop(self, padded: torch.Tensor) -> torch.Tensor:
        """The region of a padded map that the unpadded latents cover (the centre, as padded)."""
        if self.is_empty:
            return padded
        height, width = padded.shape[-2] - self.top - self.bottom, padded.shape[-1] - self.left - self.right
        return padded[..., self.top:self.top + height, self.left:self.left + width]

