"""Task pipelines: inputs in, PIL image out. `Studio` is the public entry point.

Studio is imported on first use, so `pipelines.errors` and `pipelines.limits` can be imported
without loading torch (the UI does).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipelines.studio import Studio

__all__ = ["Studio"]


def __getattr__(name: str) -> object:
    if name == "Studio":
        from pipelines.studio import Studio

        return Studio
    raise AttributeError(f"module 'pipelines' has no attribute {name!r}")
