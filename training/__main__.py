"""`python -m training RECIPE ...`: one command line for every recipe.

Each recipe module defines `add_arguments(parser)` and `main(args)`; its docstring's first line is
the help text. Modules are imported only when their recipe is chosen, so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

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


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__.splitlines()[0])
    recipes = parser.add_subparsers(dest="recipe", required=True, metavar="RECIPE")
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
            recipes.add_parser(name, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
