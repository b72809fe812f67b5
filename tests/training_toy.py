"""A toy recipe for the multi-process tests: a linear regression through runner.Trainer, with noise
from the global RNG (each process's own seed) and an optional failure in one process.

    python -m tests.training_toy --out DIR [--fail-rank R --fail-step S] [--threads-report FILE] [runner flags]

--threads-report: the main process writes torch's thread count inside trainer.from_main and after it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import nn
from torch.distributed.elastic.multiprocessing.errors import record

from training import runner


class ToyFailure(RuntimeError):
    pass


def cpu_trainer(batch_size: int = 2) -> runner.Trainer:
    """A one-process CPU Trainer with the default flags, for tests that call a recipe's step directly."""
    parser = argparse.ArgumentParser()
    runner.add_common_arguments(parser, dataset=False)
    return runner.Trainer(parser.parse_args(["--out", "unused", "--device", "cpu", "--batch-size", str(batch_size)]))


def report_threads(trainer: runner.Trainer, path: Path) -> None:
    def write_inside() -> Path:
        path.write_text(json.dumps({"inside_from_main": torch.get_num_threads()}))
        return path

    written = trainer.from_main(write_inside)
    if trainer.is_main:
        written.write_text(json.dumps({**json.loads(written.read_text()), "after": torch.get_num_threads()}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    runner.add_common_arguments(parser, dataset=False, default_steps=6, default_batch_size=4, default_lr=1e-2)
    parser.add_argument("--fail-rank", type=int, default=-1)
    parser.add_argument("--fail-step", type=int, default=-1)
    parser.add_argument("--threads-report", type=Path, default=None)
    args = parser.parse_args(argv)
    trainer = runner.Trainer(args)
    if args.threads_report is not None:
        report_threads(trainer, args.threads_report)
    torch.manual_seed(args.seed)
    model = nn.Linear(3, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    data = torch.randn(40, 3, generator=torch.Generator().manual_seed(1))
    target = data @ torch.tensor([[1.0], [-2.0], [0.5]])

    def step(index: int) -> dict[str, float]:
        if trainer.rank == args.fail_rank and index == args.fail_step:
            raise ToyFailure(f"bad example in process {trainer.rank} at step {index}")
        picked = trainer.batch_indices(len(data), index)
        noise = 0.01 * torch.randn(len(picked), 1)  # the global RNG: per process, checkpointed per process
        loss = (model(data[picked]) - target[picked] - noise).pow(2).mean()
        trainer.backward(loss)
        trainer.step(optimizer, clip=1.0)
        return {"mse": loss.item()}

    runner.run_training(args, recipe="toy", modules={"model": model}, optimizers={"model": optimizer}, step=step,
                        trainer=trainer)


if __name__ == "__main__":
    record(main)()
