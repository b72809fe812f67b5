"""The UNet's forward as TorchScript graphs (torch.jit.trace), one per input shape, for calls in
which every layer runs as the plain layer it is.

A small UNet on the CPU spends most of a call in Python: the mini UNet runs about 3,900 operations
at 16x16 latents, each through diffusers' and torch's module machinery. A traced graph runs the
same operations without the Python: 22 -> 15 ms a call on this project's 2-core CPU.

The store uses it only inside folded calls (models.running.folding): there peft's wrappers are
swapped out for the layers they wrap and the task's LoRA is already in the weights, so the module
tree is the same for every task. The graphs are traced from a module, so they read the UNet's own
parameter tensors, and weights that folding later changes in place are what they compute with.
conv_in, which pix2pix tasks swap per call (models.running.swapped), is an input of the graph.
A new latent shape or dtype is traced on its first call (about a second for the mini UNet); the
last MAX_GRAPHS shapes are kept.

torch 2.13 marks torch.jit.trace deprecated in favour of torch.compile and torch.export, which
compile C++ kernels: on this CPU a first call then takes over a minute per shape, where tracing
takes a second. Should tracing fail (a torch without it, a model it cannot follow), that shape runs
eagerly, with a warning: same images, the Python cost back.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Mapping

import torch
from diffusers import UNet2DConditionModel
from torch import nn

from models.running.swapped import owner, swapped_parameters

MAX_GRAPHS = 16
CONV_IN = ("conv_in.weight", "conv_in.bias")
GraphKey = tuple[tuple[tuple[int, ...], torch.dtype], ...]


class _ConvInAsInput(nn.Module):
    """The UNet's forward with conv_in's weight and bias taken as arguments."""

    def __init__(self, unet: UNet2DConditionModel) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, embeddings: torch.Tensor,
                weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        with swapped_parameters(self.unet, dict(zip(CONV_IN, (weight, bias), strict=True))):
            return self.unet(sample, timestep, encoder_hidden_states=embeddings, return_dict=False)[0]


class TracedUNet:
    """Epsilon from the UNet through a traced graph per input shape (see the module docstring)."""

    def __init__(self, unet: UNet2DConditionModel, max_graphs: int = MAX_GRAPHS) -> None:
        self._unet = unet
        self._max_graphs = max_graphs
        self._graphs: OrderedDict[GraphKey, nn.Module] = OrderedDict()  # traced, or eager where tracing failed

    @property
    def traced_shapes(self) -> int:
        return len(self._graphs)

    def __call__(self, sample: torch.Tensor, timestep: torch.Tensor, embeddings: torch.Tensor,
                 replaced: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """replaced: UNet parameters swapped in for this call (conv_in's only)."""
        others = set(replaced) - set(CONV_IN)
        if others:
            raise ValueError(f"a traced UNet takes only conv_in as replaced parameters, not {sorted(others)}")
        weight, bias = (replaced[name] if name in replaced else _parameter(self._unet, name) for name in CONV_IN)
        inputs = (sample, timestep, embeddings, weight, bias)
        key: GraphKey = tuple((tuple(tensor.shape), tensor.dtype) for tensor in inputs)
        graph = self._graphs.get(key)
        if graph is None:
            graph = self._graphs[key] = self._trace(inputs)
            while len(self._graphs) > self._max_graphs:
                self._graphs.popitem(last=False)
        self._graphs.move_to_end(key)
        return graph(*inputs)

    def _trace(self, inputs: tuple[torch.Tensor, ...]) -> nn.Module:
        forward = _ConvInAsInput(self._unet)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape-dependent branches: a graph per shape
                warnings.simplefilter("ignore", DeprecationWarning)  # see the module docstring
                return torch.jit.trace(forward, inputs, check_trace=False)
        except Exception as error:  # noqa: BLE001 - any failure to trace leaves the eager forward
            warnings.warn(f"The UNet could not be traced for inputs of shapes {[tuple(t.shape) for t in inputs]} "
                          f"({type(error).__name__}: {error}); it runs eagerly there.", RuntimeWarning, stacklevel=3)
            return forward


def _parameter(unet: nn.Module, name: str) -> torch.Tensor:
    module, attribute = owner(unet, name)
    return module._parameters[attribute]  # type: ignore[return-value]
