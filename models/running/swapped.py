"""Run shared modules with some parameters replaced for one call, restored afterwards.

torch.func.functional_call does the same, but walks every module and parameter of the root on each
call: on the mini UNet with six tasks' adapters that walk was 58 ms of a 160 ms sketch preview on
this 2-core CPU. Here the cost grows with the number of replaced tensors only. Callers hold the
store's model-call lock, so no other call sees the replaced tensors.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn


def owner(root: nn.Module, name: str) -> tuple[nn.Module, str]:
    """The module that holds parameter `name` and its attribute; a plain name (no peft `.base_layer`)
    reaches the wrapped layer's own parameter."""
    module_name, _, attribute = name.rpartition(".")
    module = root.get_submodule(module_name) if module_name else root
    if attribute not in module._parameters and isinstance(getattr(module, "base_layer", None), nn.Module):
        module = module.base_layer
    if attribute not in module._parameters:
        raise KeyError(f"{type(root).__name__} has no parameter {name!r}")
    return module, attribute


@contextmanager
def swapped_parameters(root: nn.Module, tensors: Mapping[str, torch.Tensor]) -> Iterator[None]:
    """Inside the block, root's parameters named in `tensors` read as those tensors."""
    originals: list[tuple[nn.Module, str, nn.Parameter | None]] = []
    try:
        for name, tensor in tensors.items():
            module, attribute = owner(root, name)
            originals.append((module, attribute, module._parameters[attribute]))
            module._parameters[attribute] = tensor  # type: ignore[assignment]
        yield
    finally:
        for module, attribute, original in reversed(originals):
            module._parameters[attribute] = original
