"""`python -m training RECIPE ...`: one command line for every recipe.

Each recipe module defines `add_arguments(parser)` and `main(args)`; its docstring's first line is
the help text. Modules are imported only when their recipe is chosen, so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import os
import sys
from pathlib import Path

RECIPES: dict[str, str] = {
    "data": "training.data.cli",
    "classifier": "training.classifier",
    "autoencoder": "training.autoencoder",
    "latent-diffusion": "training.latent_diffusion",
    "one-step": "training.one_step",
    "pix2pix-turbo": "training.pix2pix_turbo",
    "cyclegan-turbo": "training.cyclegan_turbo",
    "preview-decoder": "training.preview_decoder",
    "export": "training.export",
    "evaluate": "training.evaluate",
}


def recipe_summary(module_name: str) -> str:
    """The first line of a recipe module's docstring, read from its source without importing it
    (importing a recipe pulls in torch and diffusers: seconds that `--help` should not wait)."""
    spec = importlib.util.find_spec(module_name)
    if spec is None or spec.origin is None:
        return ""
    docstring = ast.get_docstring(ast.parse(Path(spec.origin).read_text(encoding="utf-8"))) or ""
    return docstring.strip().splitlines()[0] if docstring.strip() else ""


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__.splitlines()[0],
                                     epilog="`python -m training RECIPE --help` lists a recipe's flags.")
    recipes = parser.add_subparsers(dest="recipe", required=True, metavar="RECIPE",
                                    title="recipes (in the order the mini models are made)")
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    for name, module_name in RECIPES.items():
        if name == chosen:
            module = importlib.import_module(module_name)
            summary = (module.__doc__ or name).strip().splitlines()[0]
            sub = recipes.add_parser(name, help=summary, description=module.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
            module.add_arguments(sub)
            sub.set_defaults(run=module.main)
        else:
            recipes.add_parser(name, add_help=False, help=recipe_summary(module_name))
    return parser


def main(argv: list[str] | None = None) -> None:
    """Run a recipe; bad input raises TrainingInputError or DatasetError (`cli` shows them as one line)."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    from models.running.host_memory import retain_for_training

    from torch.distributed.elastic.multiprocessing.errors import record

    retain_for_training()  # every step reuses the last step's freed memory (no page faults)
    record(args.run)(args)  # under torchrun / accelerate launch, the launcher's summary names the error


def is_input_error(error: ValueError) -> bool:
    """A recipe's bad-input error (imported here, once raised: the recipes' modules are loaded by then)."""
    from training.data.layouts import DatasetError
    from training.runner import TrainingInputError

    return isinstance(error, (TrainingInputError, DatasetError))


def cli(argv: list[str] | None = None) -> None:
    """The command line: bad input (a missing folder, a wrong flag value, an unreadable dataset) ends
    with one line naming it and exit status 2, as argparse's own errors do (under torchrun, the first
    process says it, and the launcher then adds its own summary); anything else keeps its traceback."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        main(argv)
    except ValueError as error:
        if not is_input_error(error):
            raise
        if os.environ.get("RANK", "0") == "0":  # under torchrun every process finds the same bad input
            recipe = next((arg for arg in argv if not arg.startswith("-")), "")
            print(f"python -m training {recipe}: error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    cli()
