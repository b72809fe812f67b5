"""Build datasets: `data emoji` (npm emoji packages) or `data scenes` (rendered day/night/clear/rainy).

emoji  --out DIR: DIR/sketch (paired, line art -> colour), DIR/edge (paired, Canny edges -> colour),
       DIR/captioned (imagefolder with metadata.jsonl), ATTRIBUTION.md, concepts.json, summary.json.
scenes --out DIR: DIR/day_night and DIR/clear_rainy (unpaired), DIR/captioned, DIR/paired (same layouts in
       both conditions, to score translations), summary.json.
The folder is written elsewhere first and swapped in when complete.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from tqdm import tqdm

from training.data.layouts import check_resolution
from training.data.npm import DEFAULT_CACHE


def _resolution(text: str) -> int:
    try:
        return check_resolution(int(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be a positive whole number")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from training.data import emoji

    builders = parser.add_subparsers(dest="builder", required=True, metavar="{emoji,scenes}")
    emoji_parser = builders.add_parser("emoji", help="emoji datasets from pinned npm packages")
    emoji_parser.add_argument("--out", type=Path, required=True, help="dataset folder to write")
    emoji_parser.add_argument("--resolution", type=_resolution, default=128, help="image size (multiple of 8)")
    emoji_parser.add_argument("--groups", nargs="+", metavar="GROUP",
                              help="OpenMoji groups to keep, e.g. smileys-emotion animals-nature food-drink")
    emoji_parser.add_argument("--limit", type=_positive, help="keep only the first N concepts")
    emoji_parser.add_argument("--styles", nargs="+", choices=emoji.COLOUR_STYLES, default=list(emoji.COLOUR_STYLES),
                              help="colour styles (OpenMoji line art is always rendered)")
    emoji_parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="npm install prefix for the packages")

    scenes_parser = builders.add_parser("scenes", help="rendered street/landscape scenes: day, night, clear, rainy")
    scenes_parser.add_argument("--out", type=Path, required=True, help="dataset folder to write")
    scenes_parser.add_argument("--count", type=_positive, default=2000, help="images per condition (train + test)")
    scenes_parser.add_argument("--resolution", type=_resolution, default=128, help="image size (multiple of 8)")
    scenes_parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same images)")


def run_emoji(args: argparse.Namespace) -> dict:
    from training.data import emoji
    from training.data.npm import ensure_packages
    from training.data.output import atomic_directory

    styles = list(dict.fromkeys([emoji.OPENMOJI, *args.styles]))
    pins = {emoji.PACKAGES[style].name: emoji.PACKAGES[style].version for style in styles}
    installed = ensure_packages(args.cache, pins)
    packages = {style: installed[emoji.PACKAGES[style].name] for style in styles}
    concepts = emoji.load_concepts(packages[emoji.OPENMOJI] / "data" / "openmoji.json")
    concepts = emoji.select_concepts(concepts, args.groups, args.limit)
    with atomic_directory(args.out) as staging:
        return emoji.build_emoji(staging, args.resolution, packages, styles, concepts,
                                 progress=lambda items: tqdm(items, desc="emoji", unit="concept"))


def run_scenes(args: argparse.Namespace) -> dict:
    from training.data import scenes
    from training.data.output import atomic_directory

    with atomic_directory(args.out) as staging:
        return scenes.build_scenes(staging, args.count, args.resolution, args.seed,
                                   progress=lambda items: tqdm(items, desc="scenes", unit="scene"))


def main(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    summary = run_emoji(args) if args.builder == "emoji" else run_scenes(args)
    print(f"wrote {args.out} in {time.perf_counter() - started:.1f} s: {summary}")
