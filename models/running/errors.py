"""What the model layer tells the user: a task that is not loaded, a prompt that was cut.

No torch here, so the UI can name these types without loading the networks.
"""

from __future__ import annotations


class TaskUnavailableError(RuntimeError):
    """A task's weights could not be found or fetched; the message says why."""


class PromptTruncatedWarning(UserWarning):
    """A prompt was longer than the text encoder's 77 tokens and was cut."""
