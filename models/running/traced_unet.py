"""The UNet's forward as TorchScript graphs (models.running.traced_graphs), one per input shape,
for calls in which every layer runs as the plain layer it is.

The mini UNet runs about 3,900 operations at 16x16 latents; traced, its call went 22 -> 15 ms on
this project's 2-core CPU.

The store uses it only inside folded calls (models.running.folding): there peft's wrappers are
swapped out for the layers they wrap and the task's LoRA is already in the weights, so the module
tree is the same for every task. conv_in, which pix2pix tasks swap per call
(models.running.swapped), is an input of the graph. A new latent shape or dtype is traced on its
first call (about a second for the mini UNet).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from diffusers import UNet2DConditionModel
from torch import nn

from models.running.swapped import owner, swapped_parameters
from models.running.traced_graphs import MAX_GRAPHS, TracedGraphs

CONV_IN = ("conv_in.weight", "conv_in.bias")


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
        self._graphs = TracedGraphs("UNet", max_graphs)

    @property
    def traced_shapes(self) -> int:
        return self._graphs.traced

    def __call__(self, sample: torch.Tensor, timestep: torch.Tensor, embeddings: torch.Tensor,
                 replaced: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """replaced: UNet parameters swapped in for this call (conv_in's only)."""
        others = set(replaced) - set(CONV_IN)
        if others:
            raise ValueError(f"a traced UNet takes only conv_in as replaced parameters, not {sorted(others)}")
        weight, bias = (replaced[name] if name in replaced else _parameter(self._unet, name) for name in CONV_IN)
        inputs = (sample, timestep, embeddings, weight, bias)
        return self._graphs.run(None, lambda: _ConvInAsInput(self._unet), inputs)  # type: ignore[return-value]


def _parameter(unet: nn.Module, name: str) -> torch.Tensor:
    module, attribute = owner(unet, name)
    return module._parameters[attribute]  # type: ignore[return-value]
