"""Parameters swapped in for one call read as the replacements inside the block and as the originals after."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, inject_adapter_in_model
from torch import nn

from models.running.swapped import swapped_parameters


def network() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.SiLU(), nn.Conv2d(3, 2, 1))


def test_the_block_sees_the_replacement_and_the_original_is_back_after() -> None:
    model, inputs = network(), torch.randn(1, 2, 5, 5)
    before = model(inputs)
    original = model[2].weight
    with swapped_parameters(model, {"2.weight": torch.zeros_like(original), "2.bias": torch.ones(2)}):
        assert torch.equal(model(inputs), torch.ones_like(before))
    assert model[2].weight is original and torch.equal(model(inputs), before)


def test_an_error_inside_the_block_still_restores() -> None:
    model = network()
    original = model[0].bias
    with pytest.raises(RuntimeError), swapped_parameters(model, {"0.bias": torch.zeros(3)}):
        raise RuntimeError("the call failed")
    assert model[0].bias is original


def test_a_plain_name_reaches_the_layer_under_a_peft_wrapper() -> None:
    model = inject_adapter_in_model(LoraConfig(r=1, target_modules=["0"]), network())
    inputs = torch.randn(1, 2, 5, 5)
    before = model(inputs)
    replacement = torch.zeros_like(model[0].base_layer.weight)
    with swapped_parameters(model, {"0.weight": replacement}):
        assert model[0].base_layer.weight is replacement
        assert not torch.equal(model(inputs), before)
    assert torch.equal(model(inputs), before)


def test_an_unknown_name_is_refused_and_nothing_stays_swapped() -> None:
    model = network()
    original = model[0].weight
    with pytest.raises(KeyError, match="no parameter '1.weight'"):
        with swapped_parameters(model, {"0.weight": torch.zeros_like(original), "1.weight": torch.zeros(1)}):
            pass
    assert model[0].weight is original
