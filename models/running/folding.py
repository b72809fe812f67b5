"""LoRA folded into the base weights for the task that runs: W = W0 + gamma * delta.

Unfolded, every LoRA layer runs three operations where a plain layer runs one; on a small model
that overhead is most of a call (the mini models' sketch preview on the CPU: see bench/RESULTS.md).
Folded, the layers run as plain layers. Each weight is rebuilt from a pristine copy of W0 and a
delta computed once per task (peft's get_delta_weight at scale 1), so a call at the same task and
gamma as the last changes nothing, and every call at a given task and gamma runs on bitwise the
same weights: a result never depends on the calls before it.

The cost is memory (a copy of every weight a task's LoRA touches, plus its deltas) and a rebuild
of those weights whenever the task or gamma changes, so models.speed.acceleration turns this on
for small models only. A task that also swaps in a tensor its LoRA touches (models.running.swapped)
is not folded: the swapped-in tensor would bypass the folded weight.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from peft.tuners.lora.layer import LoraLayer
from torch import nn

from models.running.adapters import lora_layers
from models.running.swapped import owner
from models.running.task_model import SKIP_ADAPTER, TaskModel

Folded = tuple[str, float] | None  # (task name, gamma) whose deltas the weights hold; None: none


@dataclass(frozen=True)
class _Fold:
    weight: nn.Parameter
    delta: torch.Tensor


def _unit_delta(layer: LoraLayer, adapter: str) -> torch.Tensor:
    """The adapter's weight delta at scale 1 (lora_alpha / r, as trained)."""
    scaling = layer.scaling[adapter]
    layer.set_scale(adapter, 1.0)
    try:
        return layer.get_delta_weight(adapter).detach().clone()
    finally:
        layer.scaling[adapter] = scaling


def _layer_folds(model: nn.Module, adapters: Iterable[str]) -> list[_Fold]:
    wanted = list(adapters)
    folds = []
    for layer in lora_layers(model):
        present = [name for name in wanted if name in layer.scaling]
        if present:
            weight = layer.get_base_layer().weight
            delta = torch.stack([_unit_delta(layer, name) for name in present]).sum(dim=0)
            folds.append(_Fold(weight, delta.to(weight.dtype)))
    return folds


class AdapterFolding:
    """Keeps the weights folded for one (task, gamma) at a time; call `use` inside the store's lock."""

    def __init__(self, unet: nn.Module, vae: nn.Module) -> None:
        self._unet = unet
        self._vae = vae
        self._folds: dict[str, list[_Fold] | None] = {}  # task name -> its folds; None: not foldable
        self._pristine: dict[nn.Parameter, torch.Tensor] = {}
        self._folded: Folded = None
        self._touched: list[_Fold] = []

    def foldable(self, task: TaskModel) -> bool:
        return self._task_folds(task) is not None

    def use(self, task: TaskModel | None, gamma: float = 1.0) -> None:
        """Fold `task` at `gamma` into the weights (None: the pristine base weights)."""
        wanted: Folded = (task.spec.task, gamma) if task is not None else None
        if wanted == self._folded:
            return
        folds = self._task_folds(task) if task is not None else []
        if folds is None:
            raise ValueError(f"{task.spec.task} swaps in tensors its LoRA touches; it cannot be folded")
        with torch.no_grad():
            for fold in self._touched:
                fold.weight.copy_(self._pristine[fold.weight])
            for fold in folds:
                fold.weight.add_(fold.delta, alpha=gamma)
        self._touched, self._folded = folds, wanted

    def _task_folds(self, task: TaskModel) -> list[_Fold] | None:
        name = task.spec.task
        if name not in self._folds:
            self.use(None)  # deltas and pristine copies are taken from unfolded weights
            folds = [*_layer_folds(self._unet, task.unet_adapters), *_layer_folds(self._vae, [task.vae_adapter]),
                     *_layer_folds(task.skips, [SKIP_ADAPTER])]
            if self._swapped_parameters(task) & {fold.weight for fold in folds}:
                self._folds[name] = None
            else:
                for fold in folds:
                    self._pristine.setdefault(fold.weight, fold.weight.detach().clone())
                self._folds[name] = folds
        return self._folds[name]

    def _swapped_parameters(self, task: TaskModel) -> set[nn.Parameter]:
        swapped = [owner(self._vae, name) for name in task.vae_overrides]
        if task.conv_in is not None:
            swapped += [owner(self._unet, "conv_in.weight"), owner(self._unet, "conv_in.bias")]
        return {module._parameters[attribute] for module, attribute in swapped}


@dataclass(frozen=True)
class _Wrapper:
    parent: nn.Module
    name: str
    wrapper: nn.Module
    layer: nn.Module


class PlainLayers:
    """Runs peft's LoRA wrappers as the layers they wrap, for calls with every adapter off (all
    folded calls and the plain base). The result is the same: with no active adapter a wrapper
    returns its base layer's output, after checking its adapters in Python, which on the mini
    models' 220 wrappers costs milliseconds a call. Call `refresh` after adapters were injected."""

    def __init__(self, *roots: nn.Module) -> None:
        self._roots = roots
        self._wrappers: list[_Wrapper] = []

    def refresh(self) -> None:
        self._wrappers = [_Wrapper(parent, name, child, child.get_base_layer())
                          for root in self._roots for parent in root.modules()
                          for name, child in parent.named_children() if isinstance(child, LoraLayer)]

    @contextmanager
    def running(self) -> Iterator[None]:
        """Inside the block each wrapper's parent holds the wrapped layer; restored afterwards."""
        try:
            for wrapper in self._wrappers:
                wrapper.parent._modules[wrapper.name] = wrapper.layer
            yield
        finally:
            for wrapper in self._wrappers:
                wrapper.parent._modules[wrapper.name] = wrapper.wrapper
