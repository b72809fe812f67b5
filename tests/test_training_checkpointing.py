"""--gradient-checkpointing on gives what off gives: every recipe with a checkpointable network runs
one step both ways from the same seed on the CPU in float32, and the trained weights agree (the sketch model's
per-example gamma included, which CUDA's default checkpointing used to break)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
import torch.utils.checkpoint
from safetensors.torch import load_file

from models.weights.tiny import write_tiny_hub_layout
from tests.conftest import FLOAT32_TRAINING
from tests.test_training_ldm import TINY_LDM, TINY_VAE, write_shapes_dataset
from tests.test_training_preview import TINY_PREVIEW
from tests.training_turbo_data import SIZE, write_paired, write_unpaired
from training.__main__ import main as training_main

pytestmark = pytest.mark.usefixtures("fresh_accelerate")

Arguments = Callable[[dict[str, Path]], list[str]]
RECIPES: dict[str, Arguments] = {
    "autoencoder": lambda data: ["autoencoder", "--dataset", str(data["captioned"]), "--batch-size", "2",
                                 "--disc-start", "0", *TINY_VAE],
    "latent-diffusion": lambda data: ["latent-diffusion", "--dataset", str(data["captioned"]), "--vae",
                                      str(data["tiny"]), "--batch-size", "2", "--caption-dropout", "0", *TINY_LDM],
    "one-step": lambda data: ["one-step", "--teacher", str(data["tiny"]), "--dataset", str(data["captioned"]),
                              "--batch-size", "2"],
    "pix2pix-turbo sketch": lambda data: ["pix2pix-turbo", "--base", "tiny", "--dataset", str(data["paired"]),
                                          "--task", "sketch", "--batch-size", "2"],
    "pix2pix-turbo edge": lambda data: ["pix2pix-turbo", "--base", "tiny", "--dataset", str(data["paired"]),
                                        "--task", "edge", "--batch-size", "2"],
    "cyclegan-turbo": lambda data: ["cyclegan-turbo", "--base", "tiny", "--dataset", str(data["unpaired"]),
                                    "--batch-size", "1", "--rank-unet", "4"],
    "preview-decoder": lambda data: ["preview-decoder", "--base", "tiny", "--dataset", str(data["captioned"]),
                                     "--batch-size", "4", *TINY_PREVIEW],
}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("checkpointing")
    return {"captioned": write_shapes_dataset(root / "captioned", size=SIZE), "tiny": write_tiny_hub_layout(root / "tiny"),
            "paired": write_paired(root / "paired"), "unpaired": write_unpaired(root / "unpaired", count=2)}


@pytest.fixture
def checkpoint_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts torch.utils.checkpoint.checkpoint calls (diffusers and the gamma state look it up per call)."""
    calls: list[int] = []
    original = torch.utils.checkpoint.checkpoint

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counting)
    yield calls


def trained_weights(out: Path) -> dict[str, torch.Tensor]:
    folder = out / "checkpoints" / "step_000001"
    return {f"{path.stem}.{key}": tensor for path in sorted(folder.glob("*.safetensors"))
            for key, tensor in load_file(str(path)).items()}


def run_one_step(arguments: list[str], out: Path, checkpointing: str) -> dict[str, torch.Tensor]:
    training_main([*arguments, "--out", str(out), "--steps", "1", "--resolution", str(SIZE), "--device", "cpu",
                   "--seed", "3", "--lr", "1e-2", "--sample-every", "100", "--gradient-checkpointing", checkpointing,
                   *FLOAT32_TRAINING])
    return trained_weights(out)


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_checkpointing_on_trains_the_weights_of_checkpointing_off(recipe: str, data: dict[str, Path], tmp_path: Path,
                                                                    checkpoint_calls: list[int]) -> None:
    arguments = RECIPES[recipe](data)
    plain = run_one_step(arguments, tmp_path / "off", "off")
    assert not checkpoint_calls
    checkpointed = run_one_step(arguments, tmp_path / "on", "on")
    assert checkpoint_calls, "--gradient-checkpointing on checkpointed nothing"
    assert plain.keys() == checkpointed.keys()
    for name, tensor in plain.items():
        assert torch.allclose(tensor, checkpointed[name], rtol=1e-4, atol=1e-6), \
            (name, (tensor - checkpointed[name]).abs().max())
