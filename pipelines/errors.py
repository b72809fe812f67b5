"""The errors and warnings the Studio hands to its users, with messages written for them.

InputError is the one type for bad input. USER_ERRORS and USER_WARNINGS are what the UI shows as
messages; anything else is a bug. No torch here, so the UI can import this without the models.
"""

from __future__ import annotations

from models.running.errors import PromptTruncatedWarning, TaskUnavailableError


class InputError(ValueError):
    """An argument is missing, malformed or out of range; the message names it, its value and what
    is allowed."""


class NonFiniteOutputError(RuntimeError):
    """The model produced NaN or infinite values; the image is withheld instead of shown black."""


USER_ERRORS: tuple[type[Exception], ...] = (InputError, TaskUnavailableError, NonFiniteOutputError)
USER_WARNINGS: tuple[type[Warning], ...] = (PromptTruncatedWarning,)

__all__ = ["USER_ERRORS", "USER_WARNINGS", "InputError", "NonFiniteOutputError", "PromptTruncatedWarning",
           "TaskUnavailableError"]
