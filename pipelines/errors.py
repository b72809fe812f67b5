"""Errors the pipelines raise besides ValueError for bad arguments."""

from __future__ import annotations


class NonFiniteOutputError(RuntimeError):
    """The model produced NaN or infinite values; the image is withheld instead of shown black."""
