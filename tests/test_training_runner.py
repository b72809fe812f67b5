"""The training core: resume equals an uninterrupted run, interruptions leave complete checkpoints,
records and sample grids are written, a foreign --out is refused."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from models.running.devices import native_bfloat16
from training import runner


class Crash(RuntimeError):
    pass


def parse(out: Path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    runner.add_common_arguments(parser, dataset=False)
    return parser.parse_args(["--out", str(out), "--device", "cpu", "--steps", "6", "--batch-size", "4",
                              "--checkpoint-every", "2", "--sample-every", "3", *extra])


def train(args: argparse.Namespace, crash_at: int | None = None) -> nn.Module:
    """A small regression with AdamW; data from step_generator and noise from the global RNG."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.Linear(8, 1))
    frozen_target = nn.Linear(3, 1).requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    data = torch.randn(10, 3, generator=torch.Generator().manual_seed(1))

    def step(index: int) -> dict[str, float]:
        if index == crash_at:
            raise Crash("simulated failure")
        batch = data[runner.batch_indices(len(data), args.batch_size, args.seed, index)]
        noise = torch.randn(len(batch), 1)  # global RNG: saved and restored by the runner
        loss = (model(batch) - frozen_target(batch) - 0.01 * noise).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return {"mse": loss.item()}

    def sample(path: Path) -> None:
        torch.randn(5)  # must not disturb the training RNG
        runner.save_grid(torch.zeros(3, 3, 8, 8), path)

    def finish(model_dir: Path) -> dict[str, float]:
        (model_dir / "weights.txt").write_text("done")
        return {"score": 1.5}

    runner.run_training(args, recipe="toy", modules={"model": model}, optimizers={"model": optimizer},
                        step=step, sample=sample, finish=finish)
    return model


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name


def test_resume_after_crash_equals_uninterrupted_run(tmp_path: Path) -> None:
    reference = train(parse(tmp_path / "a"))
    with pytest.raises(Crash):
        train(parse(tmp_path / "b"), crash_at=3)
    checkpoints = runner.complete_checkpoints(tmp_path / "b")
    assert [path.name for path in checkpoints] == ["step_000002"]
    leftovers = [path for path in (tmp_path / "b").rglob("*") if path.name.startswith(runner.TMP_PREFIX)]
    assert leftovers == []
    assert not (tmp_path / "b" / "model").exists()
    interrupted = json.loads((tmp_path / "b" / "record.json").read_text())
    assert interrupted["status"] == "interrupted" and interrupted["steps_done"] == 3

    resumed = train(parse(tmp_path / "b", "--resume"))
    assert_same_weights(reference, resumed)
    record_a = json.loads((tmp_path / "a" / "record.json").read_text())
    record_b = json.loads((tmp_path / "b" / "record.json").read_text())
    assert record_b["loss_summary"] == record_a["loss_summary"]
    assert len(record_b["sessions"]) == 2 and record_b["sessions"][1]["start_step"] == 2


def test_record_samples_checkpoints_and_model_folder(tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(parse(out))
    record = json.loads((out / "record.json").read_text())
    assert record["status"] == "finished" and record["steps_done"] == 6 and record["recipe"] == "toy"
    assert record["metrics"] == {"score": 1.5}
    assert set(record["loss_summary"]["mse"]) == {"first", "last", "min", "last_10pct_mean"}
    session = record["sessions"][0]
    assert session["versions"]["torch"] and "command" in session
    assert session["images_per_s"] > 0 and session["device"].startswith("cpu")
    assert 0 < session["step_s_median"] and session["step_images_per_s"] == pytest.approx(4 / session["step_s_median"], rel=0.05)
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step_000003.png", "step_000006.png"]
    assert Image.open(out / "samples" / "step_000006.png").size == (16, 16)
    # keep-checkpoints 2: steps 4 and 6 remain
    assert [p.name for p in runner.complete_checkpoints(out)] == ["step_000004", "step_000006"]
    assert (out / "model" / "weights.txt").read_text() == "done"
    optimizer_state = torch.load(out / "checkpoints" / "step_000006" / "optimizers.pt", weights_only=True)
    assert "model" in optimizer_state


def test_frozen_parameters_are_not_checkpointed() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    model[0].weight.requires_grad_(False)
    state = runner.checkpoint_state(model)
    assert "0.weight" not in state and "0.bias" in state and "1.running_mean" in state


def test_out_is_refused_unless_resuming_the_same_recipe(tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(parse(out))
    with pytest.raises(runner.TrainingInputError, match="--resume"):
        train(parse(out))
    args = parse(out, "--resume")
    with pytest.raises(runner.TrainingInputError, match="recipe 'toy'"):
        runner.run_training(args, recipe="other", modules={}, optimizers={}, step=lambda i: {})
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(runner.TrainingInputError, match="not a training run"):
        train(parse(foreign, "--resume"))


def test_batch_indices_cover_each_epoch_once() -> None:
    first_epoch = torch.cat([runner.batch_indices(10, 4, seed=3, step=s) for s in range(3)])[:10]
    assert sorted(first_epoch.tolist()) == list(range(10))
    assert torch.equal(runner.batch_indices(10, 4, 3, 5), runner.batch_indices(10, 4, 3, 5))
    assert not torch.equal(runner.batch_indices(10, 4, 3, 0), runner.batch_indices(10, 4, 4, 0))


def test_save_grid_lays_out_images(tmp_path: Path) -> None:
    images = np.zeros((5, 4, 6, 3), dtype=np.uint8)
    images[4] = 200
    path = runner.save_grid(images, tmp_path / "grid.png", columns=2)
    grid = np.asarray(Image.open(path))
    assert grid.shape == (12, 12, 3)
    assert (grid[8:12, 0:6] == 200).all() and (grid[8:12, 6:12] == 255).all()


def test_resolution_check_names_the_flag() -> None:
    with pytest.raises(runner.TrainingInputError, match="--resolution 100 is not a multiple of 8"):
        runner.check_resolution(100)


def test_cpu_training_autocasts_to_bf16_only_where_the_cpu_has_bf16_instructions() -> None:
    cpu = torch.device("cpu")
    with runner.autocast(cpu):
        enabled = torch.is_autocast_enabled("cpu")
        dtype = torch.get_autocast_dtype("cpu")
        product = torch.ones(4, 4) @ torch.ones(4, 4)
    assert enabled == native_bfloat16(cpu)
    assert product.dtype == (torch.bfloat16 if enabled else torch.float32)
    if enabled:
        assert dtype == torch.bfloat16
    assert ("bf16 autocast" in runner.device_description(cpu)) == native_bfloat16(cpu)


def test_cosine_schedule_falls_to_a_tenth_and_resume_follows_it(tmp_path: Path) -> None:
    rates = [runner.scheduled_lr(1e-3, "cosine", step, 6) for step in range(7)]
    assert rates[0] == pytest.approx(1e-3) and rates[-1] == pytest.approx(1e-4)
    assert all(later < earlier for earlier, later in zip(rates, rates[1:]))
    assert runner.scheduled_lr(1e-3, "constant", 5, 6) == 1e-3

    reference = train(parse(tmp_path / "a", "--lr-schedule", "cosine"))
    constant = train(parse(tmp_path / "c"))
    with pytest.raises(AssertionError):
        assert_same_weights(reference, constant)  # the schedule changes the weights
    with pytest.raises(Crash):
        train(parse(tmp_path / "b", "--lr-schedule", "cosine"), crash_at=3)
    assert_same_weights(reference, train(parse(tmp_path / "b", "--lr-schedule", "cosine", "--resume")))


def test_a_training_run_records_that_freed_memory_is_retained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from models.running.host_memory import TRAINING_VARIABLE, retain_freed_memory

    train(parse(tmp_path / "run"))
    session = json.loads((tmp_path / "run" / "record.json").read_text())["sessions"][0]
    assert session["retain_host_memory"] == retain_freed_memory()
    monkeypatch.setenv(TRAINING_VARIABLE, "0")
    train(parse(tmp_path / "off"))
    assert json.loads((tmp_path / "off" / "record.json").read_text())["sessions"][0]["retain_host_memory"] is False


def test_help_lists_every_recipe_with_its_summary_without_importing_torch() -> None:
    import subprocess
    import sys

    from training.__main__ import RECIPES

    script = ("import sys\nfrom training.__main__ import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
              "print('TORCH_IMPORTED' if 'torch' in sys.modules else 'TORCH_NOT_IMPORTED')")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[1])
    assert "TORCH_NOT_IMPORTED" in result.stdout
    for name in RECIPES:
        assert f"    {name}" in result.stdout
    assert "LDM stage 1: train an AutoencoderKL" in result.stdout


def test_8bit_adamw_is_refused_clearly_without_cuda_or_bitsandbytes(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """--optimizer adamw8bit imports bitsandbytes only when asked; off CUDA, or without the package,
    the run stops before training with what to do."""
    with pytest.raises(runner.TrainingInputError, match="adamw8bit needs CUDA.*use --optimizer adamw"):
        runner.Trainer(parse(tmp_path / "run", "--optimizer", "adamw8bit"))
    assert not (tmp_path / "run").exists()
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # importing it raises ImportError
    with pytest.raises(runner.TrainingInputError, match="needs bitsandbytes, which is not installed: pip install"):
        runner.adamw_class("adamw8bit", torch.device("cuda"))
    optimizer = runner.Trainer(parse(tmp_path / "run")).adamw([nn.Parameter(torch.zeros(1))], lr=1e-3)
    assert type(optimizer) is torch.optim.AdamW


def test_a_step_whose_gradient_norm_overflows_is_skipped_and_the_next_one_trains(tmp_path: Path) -> None:
    """Clipping by an infinite norm (a bf16 overflow) would zero the gradients, or make every weight
    NaN where one gradient is infinite: the step is skipped, the weights kept, the norm reported."""
    trainer = runner.Trainer(parse(tmp_path / "run"))
    weight = nn.Parameter(torch.ones(3))
    optimizer = trainer.adamw([weight], lr=0.1)
    (weight * torch.tensor([1.0, float("inf"), 1.0])).sum().backward()
    assert torch.isinf(trainer.step(optimizer, clip=1.0))
    assert torch.equal(weight.detach(), torch.ones(3)) and weight.grad is None
    (weight * 2).sum().backward()
    assert float(trainer.step(optimizer, clip=1.0)) == pytest.approx(2 * 3 ** 0.5)
    assert bool((weight.detach() < 1).all())
