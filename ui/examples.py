"""Example rows for the mini source: prompts that name what its models were trained on (emoji
concepts, drawn street scenes), without a style preset, whose words mini's text encoder never saw.
The tabs keep their own rows for SD-Turbo (hub, local) and tiny, and take these for mini."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ui.styles import NO_STYLE
from ui.widgets import example

if TYPE_CHECKING:
    from pipelines import Studio

MINI_TEXT = [["a red heart", 7], ["a grinning cat", 42], ["a green apple", 1234]]
MINI_SKETCH = [
    [example("sketch_cat.png"), "a grinning cat", NO_STYLE],
    [example("sketch_house.png"), "a red house", NO_STYLE],
    [example("sketch_mountains.png"), "a snow-capped mountain", NO_STYLE],
]
MINI_EDGE = [  # the drawings' edges in another colour: the photos' edges came back as grey blotches
    [example("drawing_red_heart.png"), "a blue heart", NO_STYLE],
    [example("drawing_red_apple.png"), "a green apple", NO_STYLE],
]
MINI_EDIT = [  # emoji-style drawings: mini edits what it was trained on (photos come back as blotches)
    [example("drawing_red_heart.png"), "a blue heart", 0.9],
    [example("drawing_red_apple.png"), "a green apple", 0.9],
]


def for_source(studio: Studio, rows: list[list[Any]], mini_rows: list[list[Any]]) -> list[list[Any]]:
    """mini_rows when the mini models are live, else the tab's own rows."""
    return mini_rows if studio.source.active == "mini" else rows
