"""Recipes under several processes (two gloo CPU processes, launched as a user launches them:
accelerate launch / torchrun): the loss falls, every process holds the same weights, two processes
train what one process trains with the same global batch, resume with the same count is exact and
another count is refused, gradient accumulation equals a larger batch, and a process that raises
ends the whole run with its message."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.test_training_ldm import TINY_VAE, write_shapes_dataset
from tests.training_turbo_data import SIZE, write_paired
from training import runner
from training.__main__ import main as training_main

AUTOENCODER = ["autoencoder", "--resolution", "32", "--crop", "24", "--lr", "3e-3", "--disc-start", "2",
               "--checkpoint-every", "2", "--sample-every", "4", "--device", "cpu", *TINY_VAE]
PIX2PIX = ["pix2pix-turbo", "--base", "tiny", "--task", "sketch", "--resolution", str(SIZE), "--lr", "1e-3",
           "--checkpoint-every", "3", "--sample-every", "3", "--device", "cpu"]
LAUNCH_TIMEOUT_S = 240


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(launcher: str, module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`accelerate launch` or `torchrun` with two CPU processes of one thread each."""
    if launcher == "accelerate":
        command = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                   "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port())]
    else:
        command = ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port())]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *command, "-m", module, *args], capture_output=True, text=True,
                          env=env, timeout=LAUNCH_TIMEOUT_S, cwd=Path(__file__).parents[1])


def launched(launcher: str, module: str, *args: str) -> None:
    result = launch(launcher, module, *args)
    assert result.returncode == 0, result.stderr[-4000:]


def last_checkpoint(out: Path) -> Path:
    return runner.complete_checkpoints(out)[-1]


def weights(out: Path) -> dict[str, torch.Tensor]:
    folder = last_checkpoint(out)
    return {f"{path.stem}.{key}": value for path in sorted(folder.glob("*.safetensors"))
            for key, value in load_file(str(path)).items()}


def history(out: Path) -> list[dict[str, float]]:
    return json.loads((last_checkpoint(out) / "state.json").read_text())["history"]


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[key].float() - b[key].float()).abs().max()) for key in a)


def session(out: Path) -> dict:
    return json.loads((out / "record.json").read_text())["sessions"][-1]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_shapes_dataset(tmp_path_factory.mktemp("shapes") / "captioned")


@pytest.fixture(scope="module")
def autoencoder_two(shapes: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four steps of two processes with 3 images each (global batch 6), through accelerate launch."""
    out = tmp_path_factory.mktemp("two") / "vae"
    launched("accelerate", "training", *AUTOENCODER, "--dataset", str(shapes), "--out", str(out), "--steps", "4",
             "--batch-size", "3")
    return out


def test_two_processes_train_what_one_process_trains_with_the_global_batch(shapes: Path, autoencoder_two: Path,
                                                                           tmp_path: Path) -> None:
    one = tmp_path / "one"
    training_main([*AUTOENCODER, "--dataset", str(shapes), "--out", str(one), "--steps", "4", "--batch-size", "6"])
    two_session, one_session = session(autoencoder_two), session(one)
    assert (two_session["processes"], two_session["global_batch"], two_session["batch_size_per_process"]) == (2, 6, 3)
    assert (one_session["processes"], one_session["global_batch"]) == (1, 6)
    assert len(set(two_session["process_seeds"])) == 2
    record = json.loads((autoencoder_two / "record.json").read_text())
    assert record["status"] == "finished" and record["processes_identical_at_step"] == 4  # sha256 of every process
    assert (autoencoder_two / "model" / "vae" / "config.json").is_file()
    losses_two, losses_one = history(autoencoder_two), history(one)
    assert losses_two[-1]["l1"] < losses_two[0]["l1"]
    for entry_two, entry_one in zip(losses_two, losses_one, strict=True):
        assert entry_two.keys() == entry_one.keys()
        for name in entry_one:
            assert entry_two[name] == pytest.approx(entry_one[name], rel=1e-3, abs=1e-5), name
    assert max_difference(weights(autoencoder_two), weights(one)) < 1e-3


def test_resume_with_two_processes_equals_the_uninterrupted_run(shapes: Path, autoencoder_two: Path,
                                                                tmp_path: Path) -> None:
    out = tmp_path / "resumed"
    common = [*AUTOENCODER, "--dataset", str(shapes), "--out", str(out), "--batch-size", "3"]
    launched("torchrun", "training", *common, "--steps", "2")
    launched("torchrun", "training", *common, "--steps", "4", "--resume")
    assert max_difference(weights(out), weights(autoencoder_two)) == 0
    assert history(out) == history(autoencoder_two)
    rng = torch.load(last_checkpoint(out) / "rng.pt", weights_only=True)
    assert len(rng["processes"]) == 2 and not torch.equal(rng["processes"][0]["torch"], rng["processes"][1]["torch"])


def test_resume_with_another_process_count_is_refused(shapes: Path, autoencoder_two: Path) -> None:
    with pytest.raises(runner.TrainingInputError, match="written by a run of 2 process"):
        training_main([*AUTOENCODER, "--dataset", str(shapes), "--out", str(autoencoder_two), "--steps", "6",
                       "--batch-size", "6", "--resume"])


def test_gradient_accumulation_equals_the_larger_batch(tmp_path: Path) -> None:
    """Two micro-batches of 3 per step train what one batch of 6 trains (the toy recipe, one process)."""
    from tests.training_toy import main as toy

    toy(["--out", str(tmp_path / "six"), "--device", "cpu", "--batch-size", "6"])
    toy(["--out", str(tmp_path / "three"), "--device", "cpu", "--batch-size", "3", "--gradient-accumulation-steps", "2"])
    assert session(tmp_path / "three")["global_batch"] == 6
    assert max_difference(weights(tmp_path / "three"), weights(tmp_path / "six")) < 1e-6
    toy(["--out", str(tmp_path / "alone"), "--device", "cpu", "--batch-size", "3"])
    assert max_difference(weights(tmp_path / "alone"), weights(tmp_path / "six")) > 1e-3  # the check can fail


def test_a_process_that_raises_ends_the_run_with_its_message(tmp_path: Path) -> None:
    out = tmp_path / "toy"
    result = launch("torchrun", "tests.training_toy", "--out", str(out), "--device", "cpu", "--checkpoint-every", "1",
                    "--fail-rank", "1", "--fail-step", "2")
    assert result.returncode != 0
    assert "ToyFailure: bad example in process 1 at step 2" in result.stderr
    assert [path.name for path in runner.complete_checkpoints(out)] == ["step_000001", "step_000002"]
    assert not [path for path in out.rglob("*") if path.name.startswith(runner.TMP_PREFIX)]


def test_pix2pix_turbo_two_processes_equal_one(tmp_path: Path) -> None:
    dataset = write_paired(tmp_path / "paired")
    one, two = tmp_path / "one", tmp_path / "two"
    training_main([*PIX2PIX, "--dataset", str(dataset), "--out", str(one), "--steps", "3", "--batch-size", "4"])
    launched("accelerate", "training", *PIX2PIX, "--dataset", str(dataset), "--out", str(two), "--steps", "3",
             "--batch-size", "2")
    assert json.loads((two / "record.json").read_text())["processes_identical_at_step"] == 3
    losses_two, losses_one = history(two), history(one)
    for entry_two, entry_one in zip(losses_two, losses_one, strict=True):
        for name in entry_one:
            assert entry_two[name] == pytest.approx(entry_one[name], rel=1e-3, abs=1e-5), name
    assert max_difference(weights(two), weights(one)) < 1e-3
    assert (two / "model" / "task.json").is_file()
