"""TorchScript graphs of a forward (torch.jit.trace), one per input signature, for the small
networks of folded calls on the CPU (models.running.traced_unet, models.running.traced_vae).

A small network on the CPU spends much of a call in Python: diffusers' and torch's module machinery
around each of thousands of operations. A traced graph runs the same operations without it.
Graphs are traced from modules, so they read the modules' own parameter tensors: weights that
folding (models.running.folding) changes in place are what they compute with.

torch 2.13 marks torch.jit.trace deprecated in favour of torch.compile and torch.export, which
compile C++ kernels: on this project's 2-core CPU a first call then takes over a minute per shape
(and the compiled mini VAE ran slower than the eager one), where tracing takes about a second.
Should tracing fail (a torch without it, a model it cannot follow), that signature runs eagerly,
with a warning: same results, the Python cost back.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Callable, Hashable

import torch
from torch import nn

MAX_GRAPHS = 16
GraphKey = tuple[Hashable, ...]


class TracedGraphs:
    """Graphs of one kind of forward, traced on the first call of each key (the caller's own part,
    such as a task name, plus the inputs' shapes and dtypes); the newest max_graphs are kept.
    Not locked: callers run inside the store's model call, which holds its lock."""

    def __init__(self, network: str, max_graphs: int = MAX_GRAPHS) -> None:
        self._network = network  # named in the warning when tracing fails
        self._max_graphs = max_graphs
        self._graphs: OrderedDict[GraphKey, nn.Module] = OrderedDict()  # traced, or eager where tracing failed

    @property
    def traced(self) -> int:
        """How many kept graphs are traced (not eager fall-backs)."""
        return sum(isinstance(graph, torch.jit.ScriptModule) for graph in self._graphs.values())

    def run(self, part: Hashable, forward: Callable[[], nn.Module], inputs: tuple[torch.Tensor, ...]) -> object:
        """forward(*inputs) through the graph for (part, the inputs' shapes and dtypes), traced
        from the module `forward()` makes on the key's first call."""
        key: GraphKey = (part, *((tuple(tensor.shape), tensor.dtype) for tensor in inputs))
        graph = self._graphs.get(key)
        if graph is None:
            graph = self._graphs[key] = self._trace(forward(), inputs)
            while len(self._graphs) > self._max_graphs:
                self._graphs.popitem(last=False)
        self._graphs.move_to_end(key)
        return graph(*inputs)

    def _trace(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> nn.Module:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape-dependent branches: a graph per shape
                warnings.simplefilter("ignore", DeprecationWarning)  # see the module docstring
                return torch.jit.trace(module, inputs, check_trace=False)
        except Exception as error:  # noqa: BLE001 - any failure to trace leaves the eager forward
            shapes = [tuple(tensor.shape) for tensor in inputs]
            warnings.warn(f"The {self._network} could not be traced for inputs of shapes {shapes} "
                          f"({type(error).__name__}: {error}); it runs eagerly there.", RuntimeWarning, stacklevel=4)
            return module
