"""Argument checks shared by the pipelines: each failure is an InputError that names the argument,
its value and what is allowed."""

from __future__ import annotations

import math
from numbers import Integral, Real

from pipelines.errors import InputError
from pipelines.limits import Limits


def check_prompt(prompt: object, name: str = "prompt") -> str:
    if not isinstance(prompt, str):
        raise InputError(f"{name}={prompt!r} must be a string (it may be empty)")
    return prompt


def check_seed(seed: object, limits: Limits) -> int:
    if isinstance(seed, bool) or not isinstance(seed, Integral) or not 0 <= int(seed) <= limits.max_seed:
        raise InputError(f"seed={seed!r} must be a whole number from 0 to {limits.max_seed}")
    return int(seed)


def check_side(value: object, name: str, limits: Limits) -> int:
    low, high = limits.min_side, limits.max_side
    if isinstance(value, bool) or not isinstance(value, Integral) or not low <= int(value) <= high:
        raise InputError(f"{name}={value!r} must be a whole number of pixels from {low} to {high}")
    return int(value)


def check_fraction(value: object, name: str, *, allow_zero: bool) -> float:
    """A real number in [0, 1] (or (0, 1] when zero is not allowed); NaN is refused."""
    low = "[0" if allow_zero else "(0"
    if isinstance(value, bool) or not isinstance(value, Real) or math.isnan(float(value)):
        raise InputError(f"{name}={value!r} must be a number in {low}, 1]")
    number = float(value)
    if number > 1 or number < 0 or (number == 0 and not allow_zero):
        raise InputError(f"{name}={value!r} must be a number in {low}, 1]")
    return number


def check_choice(value: object, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise InputError(f"{name}={value!r} is not valid; choose one of: {', '.join(choices)}")
    return str(value)
