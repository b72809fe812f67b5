"""Task pipelines: inputs in, PIL image out. `Studio` is the public entry point."""

from pipelines.studio import Studio

__all__ = ["Studio"]
