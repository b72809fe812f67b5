"""The limits and defaults of the loaded source, in one frozen dataclass that the Studio publishes
(`Studio.limits`) and that the pipelines check against and the UI builds its controls from.

Sizes follow the source's native side (SD-Turbo: 512 px): text to image from half to twice it, in
steps of an eighth; img2img tasks run at most at it (translation exactly at it); live previews up
to it. A source with another native side (a 128 px mini model) gets its own sizes from
`Limits.for_native_side`; the seed range, the largest input and the defaults are the same for all.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from models.weights.specs import DIRECTIONS, Direction

if TYPE_CHECKING:
    from models.running.store import ModelStore

MAX_SEED = 2**32 - 1
MAX_INPUT_SIDE = 4096
DEFAULT_GAMMA = 0.4
DEFAULT_STRENGTH = 0.5
DEFAULT_THRESHOLDS = (100, 200)  # Canny's low and high threshold
DEFAULT_FEATHER = 8.0  # masked edit: pixels over which the edit fades in inside the mask's edge
MAX_FEATHER = 128.0
CPU_PREVIEW_FRACTION = 2  # live previews on the CPU: half the native side, a quarter of the pixels
MIN_CPU_PREVIEW_SIDE = 128  # ...but not below this: the 128 px mini models lose the drawing at 64 px


@dataclass(frozen=True)
class Limits:
    """What the loaded source accepts and starts from."""

    native_side: int  # the side the model was trained at; img2img runs at most at it
    min_side: int  # text to image: width and height from min_side to max_side
    max_side: int
    side_step: int  # the step of size sliders and of preview sides
    max_seed: int = MAX_SEED  # seeds are whole numbers from 0 to max_seed
    max_input_side: int = MAX_INPUT_SIDE  # larger uploads are refused
    default_gamma: float = DEFAULT_GAMMA
    default_strength: float = DEFAULT_STRENGTH
    default_thresholds: tuple[int, int] = DEFAULT_THRESHOLDS
    default_feather: float = DEFAULT_FEATHER
    max_feather: float = MAX_FEATHER
    directions: tuple[Direction, ...] = DIRECTIONS

    @classmethod
    @cache
    def for_native_side(cls, native_side: int) -> Limits:
        return cls(native_side=native_side, min_side=native_side // 2, max_side=2 * native_side,
                   side_step=native_side // 8)

    @property
    def sizes(self) -> tuple[int, ...]:
        """The sizes the UI offers for text to image (the API takes any whole number in range)."""
        return tuple(range(self.min_side, self.max_side + 1, self.side_step))

    @property
    def preview_sides(self) -> tuple[int, ...]:
        """Sides a live sketch preview may run at."""
        return tuple(range(self.side_step, self.native_side + 1, self.side_step))

    def default_preview_side(self, device_type: str) -> int:
        """The native side on an accelerator. On the CPU half of it, so strokes stay interactive, but
        at least MIN_CPU_PREVIEW_SIDE: a model trained at 128 px previews at its own side (the mini
        models: 136.5 ms from pen up to image at 128 px, ui/LATENCY.md)."""
        if device_type != "cpu":
            return self.native_side
        return min(self.native_side, max(self.native_side // CPU_PREVIEW_FRACTION, MIN_CPU_PREVIEW_SIDE))


def limits_of(store: ModelStore) -> Limits:
    """The limits of the source the store was loaded from."""
    return Limits.for_native_side(store.source.native_side)
