"""What `Studio.warm_up` runs before serving, so no user waits for a first call.

Compiled networks (CUDA: torch.compile with CUDA graphs) record their graphs per input shape and
per adapter setting, so there every task is run at the shapes the app serves by default: text to
image at the native side with the full VAE and with the preview decoder, the sketch model at the
live preview side and at the full canvas side with gamma 1 and with the default gamma (the two
paths: a fixed LoRA scale and a blended one; the second gamma also makes dynamo treat the scale as
a variable), and the other tasks at the native side. The traced UNet of small bases on the CPU
(models.running.traced_unet) also keeps a graph per latent shape, traced on its first call (about a
second), so it is warmed the same way. Otherwise one cheap call per task at the smallest size is
enough: nothing slow happens at start-up.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

from models.weights.specs import Direction
from pipelines.limits import Limits

WarmUpTask = Literal["text_to_image", "edit", "sketch_to_image", "edge_to_image", "translate"]


@dataclass(frozen=True)
class WarmUpCall:
    """One Studio call at a square side."""

    task: WarmUpTask
    side: int
    gamma: float | None = None  # sketch_to_image
    preview: bool = False  # text_to_image through the preview decoder
    direction: Direction | None = None  # translate


def warm_up_plan(limits: Limits, installed: Collection[str], *, per_shape: bool, preview_side: int,
                 has_preview_decoder: bool) -> list[WarmUpCall]:
    """The calls to make: at the served shapes when the networks keep graphs per shape (compiled
    or traced), else once each at the smallest side. installed: the img2img-turbo tasks loaded
    (text to image and edit need only the base)."""
    sides = sorted({preview_side, limits.native_side}) if per_shape else [limits.min_side]
    side = limits.native_side if per_shape else limits.min_side
    gammas = sorted({1.0, limits.default_gamma}) if per_shape else [limits.default_gamma]
    calls = [WarmUpCall("text_to_image", side)]
    if has_preview_decoder:
        calls.append(WarmUpCall("text_to_image", side, preview=True))
    calls.append(WarmUpCall("edit", side))
    if "sketch_to_image" in installed:
        calls += [WarmUpCall("sketch_to_image", each, gamma=gamma) for each in sides for gamma in gammas]
    if "edge_to_image" in installed:
        calls.append(WarmUpCall("edge_to_image", side))
    calls += [WarmUpCall("translate", side, direction=direction) for direction in limits.directions
              if direction in installed]
    return calls
