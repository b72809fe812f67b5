"""The model flags every command line shares (the app, batch): where the weights come from, the
device and the dtype, and the keyword arguments they give `Studio.load`."""

from __future__ import annotations

import argparse
from pathlib import Path

from models.weights.specs import SOURCE_NAMES

DTYPE_CHOICES = ("auto", "float32", "float16", "bfloat16")


def add_model_flags(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Add --source, --model-dir, --device and --dtype in a "models" group, which is returned so a
    command can add its own model flags to it."""
    models = parser.add_argument_group("models")
    models.add_argument("--source", choices=SOURCE_NAMES, default="auto",
                        help="where the weights come from: auto (cache, else the Hub, else mini, else tiny), hub "
                             "(download once, then cached), local (--model-dir), mini (small models trained by this "
                             "project, shipped in assets/mini), tiny (random weights for development); default: auto")
    models.add_argument("--model-dir", type=Path, help="folder laid out like the stabilityai/sd-turbo repo, plus "
                                                       "the img2img-turbo checkpoints (for --source local or auto); "
                                                       "with --source mini, a mini folder other than assets/mini")
    models.add_argument("--device", help="cpu, cuda, cuda:1, ...; default: CUDA when available, else CPU")
    models.add_argument("--dtype", choices=DTYPE_CHOICES, default="auto",
                        help="default (auto): float16 on CUDA; float32 on the CPU, with the VAE in bfloat16 where "
                             "the CPU has bf16 instructions; a dtype named here is used for every network")
    return models


def load_arguments(args: argparse.Namespace) -> dict[str, object]:
    """`Studio.load` keyword arguments from the parsed model flags."""
    return {"source": args.source, "model_dir": args.model_dir, "device": args.device,
            "dtype": None if args.dtype == "auto" else args.dtype}
