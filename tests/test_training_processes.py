"""Recipes under several processes (two gloo CPU processes, launched as a user launches them:
accelerate launch / torchrun): the loss falls, every process holds the same weights, two processes
train what one process trains with the same global batch, resume with the same count is exact and
another count is refused, gradient accumulation equals a larger batch, and a process that raises
ends the whole run with its message. Every recipe that trains is launched here at least once."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from models.weights.tiny import write_tiny_hub_layout
from tests.conftest import FLOAT32_TRAINING
from tests.test_training_classifier import make_dataset
from tests.test_training_ldm import TINY_LDM, TINY_VAE, write_shapes_dataset
from tests.test_training_one_step import write_captioned
from tests.test_training_preview import TINY_PREVIEW
from tests.training_turbo_data import SIZE, write_paired, write_unpaired
from training import runner
from training.__main__ import main as training_main

AUTOENCODER = ["autoencoder", "--resolution", "32", "--crop", "24", "--lr", "3e-3", "--disc-start", "2",
               "--checkpoint-every", "2", "--sample-every", "4", "--device", "cpu", *TINY_VAE, *FLOAT32_TRAINING]
PIX2PIX = ["pix2pix-turbo", "--base", "tiny", "--task", "sketch", "--resolution", str(SIZE), "--lr", "1e-3",
           "--checkpoint-every", "3", "--sample-every", "3", "--device", "cpu", *FLOAT32_TRAINING]
LATENT_DIFFUSION = ["latent-diffusion", "--resolution", "32", "--lr", "1e-3", "--checkpoint-every", "2",
                    "--sample-every", "4", "--device", "cpu", *TINY_LDM, *FLOAT32_TRAINING]
ONE_STEP = ["one-step", "--resolution", "64", "--lr", "1e-3", "--checkpoint-every", "3", "--sample-every", "3",
            "--device", "cpu", *FLOAT32_TRAINING]
CYCLEGAN = ["cyclegan-turbo", "--base", "tiny", "--resolution", str(SIZE), "--rank-unet", "4", "--lr", "1e-3",
            "--checkpoint-every", "2", "--sample-every", "2", "--device", "cpu", *FLOAT32_TRAINING]
CLASSIFIER = ["classifier", "--resolution", "16", "--widths", "8,16", "--lr", "0.01", "--device", "cpu", *FLOAT32_TRAINING]
PREVIEW = ["preview-decoder", "--base", "tiny", "--resolution", "32", "--lr", "3e-3", "--checkpoint-every", "2",
           "--sample-every", "2", "--device", "cpu", *TINY_PREVIEW, *FLOAT32_TRAINING]
LAUNCH_TIMEOUT_S = 240


pytestmark = pytest.mark.usefixtures("fresh_accelerate")


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


def assert_same_training(two: Path, one: Path, weight_tolerance: float = 1e-3) -> None:
    """Two processes trained what one process trained with the same global batch: both processes held
    the same weights at the end, every loss agrees step by step and the weights agree."""
    record = json.loads((two / "record.json").read_text())
    assert record["status"] == "finished" and record["processes_identical_at_step"] == record["steps_done"]
    assert (session(two)["processes"], session(two)["global_batch"]) == (2, session(one)["global_batch"])
    assert_same_losses(two, one)
    assert max_difference(weights(two), weights(one)) < weight_tolerance


def assert_same_losses(a: Path, b: Path) -> None:
    for entry_a, entry_b in zip(history(a), history(b), strict=True):
        assert entry_a.keys() == entry_b.keys()
        for name in entry_b:
            assert entry_a[name] == pytest.approx(entry_b[name], rel=1e-3, abs=1e-5), name


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
    assert_same_training(autoencoder_two, one)  # processes_identical_at_step: sha256 of every process
    assert (autoencoder_two / "model" / "vae" / "config.json").is_file()
    assert history(autoencoder_two)[-1]["l1"] < history(autoencoder_two)[0]["l1"]


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

    toy(["--out", str(tmp_path / "six"), "--device", "cpu", "--batch-size", "6", *FLOAT32_TRAINING])
    toy(["--out", str(tmp_path / "three"), "--device", "cpu", "--batch-size", "3", "--gradient-accumulation-steps", "2",
         *FLOAT32_TRAINING])
    assert session(tmp_path / "three")["global_batch"] == 6
    assert max_difference(weights(tmp_path / "three"), weights(tmp_path / "six")) < 1e-6
    toy(["--out", str(tmp_path / "alone"), "--device", "cpu", "--batch-size", "3", *FLOAT32_TRAINING])
    assert max_difference(weights(tmp_path / "alone"), weights(tmp_path / "six")) > 1e-3  # the check can fail


def test_a_process_that_raises_ends_the_run_with_its_message(tmp_path: Path) -> None:
    out = tmp_path / "toy"
    result = launch("torchrun", "tests.training_toy", "--out", str(out), "--device", "cpu", "--checkpoint-every", "1",
                    "--fail-rank", "1", "--fail-step", "2")
    assert result.returncode != 0
    assert "ToyFailure: bad example in process 1 at step 2" in result.stderr
    assert [path.name for path in runner.complete_checkpoints(out)] == ["step_000001", "step_000002"]
    assert not [path for path in out.rglob("*") if path.name.startswith(runner.TMP_PREFIX)]


def test_work_done_by_the_main_process_alone_uses_every_process_threads(tmp_path: Path) -> None:
    """The others wait while the main process encodes a cache: it takes their threads, then gives them back."""
    report = tmp_path / "threads.json"
    launched("torchrun", "tests.training_toy", "--out", str(tmp_path / "toy"), "--device", "cpu", "--steps", "1",
             "--threads-report", str(report))
    assert json.loads(report.read_text()) == {"inside_from_main": 2, "after": 1}


def test_pix2pix_turbo_two_processes_equal_one(tmp_path: Path) -> None:
    dataset = write_paired(tmp_path / "paired")
    one, two = tmp_path / "one", tmp_path / "two"
    training_main([*PIX2PIX, "--dataset", str(dataset), "--out", str(one), "--steps", "3", "--batch-size", "4"])
    launched("accelerate", "training", *PIX2PIX, "--dataset", str(dataset), "--out", str(two), "--steps", "3",
             "--batch-size", "2")
    assert_same_training(two, one)
    assert (two / "model" / "task.json").is_file()


@pytest.fixture(scope="module")
def vae_run(shapes: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("vae") / "vae"
    training_main([*AUTOENCODER, "--dataset", str(shapes), "--out", str(out), "--steps", "1", "--batch-size", "4"])
    return out


@pytest.fixture(scope="module")
def ldm_two(shapes: Path, vae_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four latent-diffusion steps of two processes with 3 images each, through torchrun."""
    out = tmp_path_factory.mktemp("ldm") / "two"
    launched("torchrun", "training", *LATENT_DIFFUSION, "--dataset", str(shapes), "--vae", str(vae_run), "--out",
             str(out), "--steps", "4", "--batch-size", "3")
    return out


@pytest.fixture(scope="module")
def ldm_one(shapes: Path, vae_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ldm") / "one"
    training_main([*LATENT_DIFFUSION, "--dataset", str(shapes), "--vae", str(vae_run), "--out", str(out),
                   "--steps", "4", "--batch-size", "6"])
    return out


def test_latent_diffusion_two_processes_equal_one(ldm_two: Path, ldm_one: Path) -> None:
    assert_same_training(ldm_two, ldm_one)
    assert all(math.isfinite(entry["mse"]) and entry["grad_norm"] > 0 for entry in history(ldm_two))
    cache = sorted(path.name for path in (ldm_two / "cache").iterdir())
    assert cache == ["tokenizer", "tokenizer.key", "train_posteriors.safetensors"]  # written once, by the main process
    shipped, cached = (ldm_two / folder / "tokenizer" / "vocab.json" for folder in ("model", "cache"))
    assert shipped.read_text() == cached.read_text()
    assert (ldm_two / "samples" / "step_000004.png").is_file()


def test_latent_diffusion_resume_with_two_processes_equals_the_uninterrupted_run(
        shapes: Path, vae_run: Path, ldm_two: Path, tmp_path: Path) -> None:
    """The run cut back to its step-2 checkpoint (what an interrupted run leaves) and resumed."""
    out = tmp_path / "resumed"
    shutil.copytree(ldm_two, out)
    for finished in (last_checkpoint(out), out / "model"):
        shutil.rmtree(finished)
    common = [*LATENT_DIFFUSION, "--dataset", str(shapes), "--vae", str(vae_run), "--out", str(out),
              "--batch-size", "3"]
    launched("torchrun", "training", *common, "--steps", "4", "--resume")
    assert max_difference(weights(out), weights(ldm_two)) == 0  # the EMA copies included
    assert history(out) == history(ldm_two)
    with pytest.raises(runner.TrainingInputError, match="written by a run of 2 process"):
        training_main([*common, "--steps", "6", "--resume"])


def test_latent_diffusion_accumulation_equals_the_larger_batch(shapes: Path, vae_run: Path, ldm_one: Path,
                                                                tmp_path: Path) -> None:
    """Two micro-batches of 3 per step train what one batch of 6 trains; the EMA follows each step once."""
    out = tmp_path / "accumulated"
    training_main([*LATENT_DIFFUSION, "--dataset", str(shapes), "--vae", str(vae_run), "--out", str(out),
                   "--steps", "4", "--batch-size", "3", "--gradient-accumulation-steps", "2"])
    assert session(out)["global_batch"] == 6
    assert_same_losses(out, ldm_one)  # mse over both micro-batches, grad_norm of the step's gradient
    assert max_difference(weights(out), weights(ldm_one)) < 5e-4  # float rounding, grown by AdamW's scaling


def test_one_step_two_processes_equal_one(tmp_path: Path) -> None:
    teacher = write_tiny_hub_layout(tmp_path / "teacher")
    dataset = write_captioned(tmp_path / "captioned")
    one, two = tmp_path / "one", tmp_path / "two"
    common = [*ONE_STEP, "--teacher", str(teacher), "--dataset", str(dataset), "--steps", "3"]
    training_main([*common, "--out", str(one), "--batch-size", "4"])
    launched("accelerate", "training", *common, "--out", str(two), "--batch-size", "2")
    assert_same_training(two, one)
    assert {"d", "adv", "rec"} <= set(history(two)[-1])
    assert all(math.isfinite(value) for entry in history(two) for value in entry.values())
    assert sorted(path.name for path in (two / "samples").iterdir()) == [
        "step_000003.png", "teacher_25_steps.png", "teacher_one_step.png"]


def test_cyclegan_turbo_two_processes_equal_one(tmp_path: Path) -> None:
    dataset = write_unpaired(tmp_path / "unpaired", count=4)
    one, two = tmp_path / "one", tmp_path / "two"
    training_main([*CYCLEGAN, "--dataset", str(dataset), "--out", str(one), "--steps", "2", "--batch-size", "2"])
    launched("torchrun", "training", *CYCLEGAN, "--dataset", str(dataset), "--out", str(two), "--steps", "2",
             "--batch-size", "1")
    assert_same_training(two, one)
    assert json.loads((two / "record.json").read_text())["metrics"]["moved_a2b"] > 0


def test_preview_decoder_two_processes_equal_one(shapes: Path, tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    training_main([*PREVIEW, "--dataset", str(shapes), "--out", str(one), "--steps", "2", "--batch-size", "4"])
    launched("torchrun", "training", *PREVIEW, "--dataset", str(shapes), "--out", str(two), "--steps", "2",
             "--batch-size", "2")
    assert_same_training(two, one)
    assert json.loads((two / "record.json").read_text())["config"]["generated_per_global_batch"] == 2


def test_classifier_two_processes_share_batch_statistics(tmp_path: Path) -> None:
    """BatchNorm normalises with the statistics of the batch over both processes: after one step the
    running statistics are what one process with the global batch keeps (the weights differ: dropout
    draws from each process's own seed)."""
    emoji = make_dataset(tmp_path / "emoji", "concept", ("moon", "sun"), 0, {"style": "flat"})
    scenes = make_dataset(tmp_path / "scenes", "condition", ("night", "day"), 1, {})
    one, two = tmp_path / "one", tmp_path / "two"
    common = [*CLASSIFIER, "--dataset", str(emoji), str(scenes), "--steps", "1"]
    training_main([*common, "--out", str(one), "--batch-size", "16"])
    launched("torchrun", "training", *common, "--out", str(two), "--batch-size", "8")
    assert json.loads((two / "record.json").read_text())["processes_identical_at_step"] == 1
    statistics = {key: value for key, value in weights(two).items() if ".running_" in key}
    reference = {key: value for key, value in weights(one).items() if ".running_" in key}
    assert len(statistics) == 6 and max_difference(statistics, reference) < 1e-5
    assert all(math.isfinite(value) for value in history(two)[0].values())
    assert history(two)[0]["loss"] == pytest.approx(history(one)[0]["loss"], rel=0.1)
