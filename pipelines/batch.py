"""Run one task over a folder of images, or over a text file of prompts for text_to_image.

    python -m pipelines.batch translate --input photos/ --output night/ --direction day_to_night
    python -m pipelines.batch edit --input photos/ --output snowy/ --prompt "in deep snow" --strength 0.6
    python -m pipelines.batch text_to_image --input prompts.txt --output pictures/ --seed 7

Each input gives one PNG in --output carrying its settings (see pipelines.metadata): an image
keeps its name (photo.jpg -> photo.png), prompt line N gives NNNN-first-words.png. An output that
is already there is skipped, so a rerun resumes; each is written to a temporary file and renamed,
so an interrupted run leaves no half-written PNG. Files that cannot be read or processed are
reported by name at the end without stopping the run; the exit status is then 1. An output that
cannot be written (a full disk) stops the run with the reason and how to resume (exit status 1).
"""

from __future__ import annotations

import argparse
import errno
import inspect
import os
import re
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from models.weights.specs import DIRECTIONS
from pipelines.checks import check_side
from pipelines.errors import NonFiniteOutputError
from pipelines.image_files import open_image_file
from pipelines.metadata import TASK_OPTIONS, TASKS, Settings, Task, model_name, save_png
from pipelines.model_flags import add_model_flags, load_arguments
from pipelines.studio import Studio

PROMPT_TASK: Task = "text_to_image"
SLUG_WORDS = re.compile(r"[a-z0-9]+")
SLUG_LENGTH = 40
TASK_HELP: dict[Task, str] = {
    "text_to_image": "SD-Turbo: one image per line of a text file of prompts",
    "sketch_to_image": "pix2pix-Turbo: an image per sketch",
    "edge_to_image": "Canny edges, then pix2pix-Turbo: an image per photo",
    "translate": "CycleGAN-Turbo: day <-> night, clear <-> rainy, per photo",
    "edit": "SDEdit in one step: an edited image per photo",
}


@dataclass(frozen=True)
class Item:
    """One unit of work: what it is called in reports, where its result goes, and its input
    (an image file, or the prompt for text_to_image)."""

    name: str
    output: Path
    source: Path | None = None
    prompt: str | None = None


@dataclass
class BatchReport:
    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (input name, reason)
    stopped: str | None = None  # why the run stopped early (an output could not be written)

    def summary(self) -> str:
        lines = [f"Wrote {len(self.written)}, skipped {len(self.skipped)} already done, "
                 f"{len(self.failed)} failed."]
        lines += [f"  {name}: {reason}" for name, reason in self.failed]
        if self.stopped is not None:
            lines.append(f"Stopped early: {self.stopped}")
        return "\n".join(lines)


def api_default(task: Task, option: str) -> object:
    """The default of `Studio.<task>`'s keyword, so the command line and the API agree."""
    return inspect.signature(getattr(Studio, task)).parameters[option].default


def slug(prompt: str) -> str:
    words = "-".join(SLUG_WORDS.findall(prompt.lower()))
    return words[:SLUG_LENGTH].rstrip("-") or "prompt"


def prompt_items(prompts_file: Path, output: Path) -> list[Item]:
    """One item per non-blank line; the line number keeps the names stable when lines are added."""
    lines = prompts_file.read_text(encoding="utf-8").splitlines()
    return [Item(f"{prompts_file.name} line {number}", output / f"{number:04d}-{slug(line.strip())}.png",
                 prompt=line.strip())
            for number, line in enumerate(lines, start=1) if line.strip()]


def image_items(folder: Path, output: Path) -> list[Item]:
    """One item per file with an image extension PIL knows, sorted by name; hidden files are left out."""
    extensions = {extension.lower() for extension in Image.registered_extensions()}
    files = sorted(path for path in folder.iterdir()
                   if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in extensions)
    return [Item(path.name, output / f"{path.stem}.png", source=path) for path in files]


def read_image(path: Path) -> Image.Image:
    """The file's image (its first frame), upright by its EXIF orientation; InputError naming the
    file when it is empty, not an image, too large, truncated or damaged (pipelines.image_files)."""
    return open_image_file(path, path.name).image


def run_task(studio: Studio, task: Task, item: Item, options: dict[str, object]) -> Image.Image:
    if task == PROMPT_TASK:
        return studio.text_to_image(item.prompt or "", **options)  # type: ignore[arg-type]
    image = read_image(item.source)  # type: ignore[arg-type]
    result = getattr(studio, task)(image, **options)
    return result[1] if task == "edge_to_image" else result  # edge_to_image gives (edge map, image)


def write_atomically(image: Image.Image, path: Path, settings: Settings) -> None:
    """Save to a temporary file beside `path`, then rename it into place."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".png.part")
    os.close(descriptor)
    try:
        save_png(image, temporary, settings)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def settings_for(studio: Studio, task: Task, options: dict[str, object], size: tuple[int, int],
                 prompt: str | None) -> Settings:
    values = {name: value for name, value in options.items() if name not in ("width", "height")}
    if prompt is not None:
        values["prompt"] = prompt
    return Settings(task, size, model_name(studio.source, task, options.get("direction")),  # type: ignore[arg-type]
                    **values)  # type: ignore[arg-type]


def run_batch(studio: Studio, task: Task, items: Sequence[Item], options: dict[str, object], *,
              progress: Callable[[Sequence[Item]], Sequence[Item]] = lambda items: items) -> BatchReport:
    """Run `task` with `options` (Studio keywords, prompt included for image tasks) on every item."""
    report = BatchReport()
    claimed: dict[Path, str] = {}
    for item in progress(items):
        if item.output in claimed:
            report.failed.append((item.name, f"same output name {item.output.name} as {claimed[item.output]}"))
            continue
        claimed[item.output] = item.name
        if item.output.exists():
            report.skipped.append(item.output)
            continue
        try:
            image = run_task(studio, task, item, options)
        except (OSError, ValueError, NonFiniteOutputError, Image.DecompressionBombError) as error:
            report.failed.append((item.name, str(error) or type(error).__name__))
            continue
        try:
            write_atomically(image, item.output, settings_for(studio, task, options, image.size, item.prompt))
        except OSError as error:  # a full disk, a folder gone read-only: the next writes would fail too
            report.stopped = stopped_reason(item.output, error)
            break
        report.written.append(item.output)
    return report


def stopped_reason(output: Path, error: OSError) -> str:
    """Why a write stopped the run, and how to resume it."""
    cause = "the disk is full" if error.errno in (errno.ENOSPC, errno.EDQUOT) else (error.strerror or str(error))
    return (f"{output} could not be written ({cause}); no half-written file was left. Make room (or fix the "
            f"folder) and run the same command again: it skips what is done and resumes with {output.name}.")


def parser() -> argparse.ArgumentParser:
    parse = argparse.ArgumentParser(prog="python -m pipelines.batch",
                                    description="Run one task over a folder of images (or a file of prompts); "
                                                "reruns skip what is done.")
    tasks = parse.add_subparsers(dest="task", required=True, metavar="TASK")
    for task in TASKS:
        command = tasks.add_parser(task, help=TASK_HELP[task], description=TASK_HELP[task])
        inputs = command.add_argument_group("files")
        inputs.add_argument("--input", type=Path, required=True,
                            help="text file of prompts, one a line" if task == PROMPT_TASK else "folder of images")
        inputs.add_argument("--output", type=Path, required=True, help="folder for the PNGs (made if missing)")
        add_task_options(command.add_argument_group(f"{task} options (as in Studio.{task})"), task)
        add_model_flags(command)
    return parse


def add_task_options(group: argparse._ArgumentGroup, task: Task) -> None:
    def option(name: str, kind: type, text: str) -> None:
        default = api_default(task, name)
        shown = "the model's native side" if default is None else default
        group.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, default=default,
                           help=f"{text} (default: {shown})")

    if task == "translate":
        group.add_argument("--direction", choices=DIRECTIONS, required=True, help="which translation")
        return
    if task != PROMPT_TASK:
        group.add_argument("--prompt", required=True, help="the prompt for every image")
    if "seed" in TASK_OPTIONS[task]:
        option("seed", int, "seed of the noise, 0 to 4294967295")
    if task == PROMPT_TASK:
        option("width", int, "width in pixels, half to twice the model's native side")
        option("height", int, "height in pixels, half to twice the model's native side")
    elif task == "sketch_to_image":
        option("gamma", float, "1 follows the sketch, lower gives more varied images; 0 to 1")
    elif task == "edge_to_image":
        option("low_threshold", int, "Canny low threshold, 0 to 255")
        option("high_threshold", int, "Canny high threshold, 0 to 255")
    elif task == "edit":
        option("strength", float, "how much of the photo is redrawn, above 0 up to 1")


def task_options(args: argparse.Namespace) -> dict[str, object]:
    names = {"prompt", "seed", "width", "height", "gamma", "low_threshold", "high_threshold", "direction",
             "strength"}
    return {name: value for name, value in vars(args).items() if name in names}


def collect_items(task: Task, source: Path, output: Path) -> list[Item]:
    """The work to do; ValueError for an input of the wrong kind, an empty one, or output == input."""
    if task == PROMPT_TASK:
        if not source.is_file():
            raise ValueError(f"--input {source} must be a text file of prompts, one a line")
        items = prompt_items(source, output)
    else:
        if not source.is_dir():
            raise ValueError(f"--input {source} must be a folder of images")
        if source.resolve() == output.resolve():
            raise ValueError(f"--output {output} is the input folder; write the results to another folder")
        items = image_items(source, output)
    if not items:
        raise ValueError(f"--input {source} holds no {'prompts' if task == PROMPT_TASK else 'images'}")
    return items


def check_options(task: Task, options: dict[str, object]) -> None:
    """Refuse bad option values before loading any model (the checks of the outputs' settings;
    sizes are checked against the loaded source's limits by `check_sizes`)."""
    probe = {name: value for name, value in options.items() if name not in ("width", "height")}
    if task == PROMPT_TASK:
        probe["prompt"] = ""
    Settings(task, (1, 1), "", **probe)  # type: ignore[arg-type]


def check_sizes(studio: Studio, options: dict[str, object]) -> None:
    for name in ("width", "height"):
        if options.get(name) is not None:
            check_side(options[name], name, studio.limits)


def print_progress(fraction: float, message: str) -> None:
    print(f"[{fraction:4.0%}] {message}", file=sys.stderr, flush=True)


def needed_checkpoints(task: Task, options: dict[str, object]) -> tuple[str, ...]:
    if task == "translate":
        return (str(options["direction"]),)
    return (task,) if task in ("sketch_to_image", "edge_to_image") else ()


def main(argv: Sequence[str] | None = None) -> int:
    parse = parser()
    args = parse.parse_args(argv)
    task: Task = args.task
    options = task_options(args)
    try:
        check_options(task, options)
        items = collect_items(task, args.input, args.output)
        args.output.mkdir(parents=True, exist_ok=True)
        studio = Studio.load(**load_arguments(args), tasks=needed_checkpoints(task, options),  # type: ignore[arg-type]
                             progress=print_progress)
        check_sizes(studio, options)
    except (ValueError, OSError) as error:
        parse.exit(2, f"{parse.prog}: error: {error}\n")
    except RuntimeError as error:
        parse.exit(1, f"{parse.prog}: could not load the models: {error}\n")
    print(studio.source.describe(), file=sys.stderr, flush=True)
    for name in needed_checkpoints(task, options):
        if name in studio.unavailable_tasks:
            parse.exit(1, f"{parse.prog}: {task} is unavailable: {studio.unavailable_tasks[name]}\n")
    report = run_batch(studio, task, items, options,
                       progress=lambda work: tqdm(work, desc=task, unit="file", file=sys.stderr))
    print(report.summary(), flush=True)
    return 1 if report.failed or report.stopped else 0


if __name__ == "__main__":
    sys.exit(main())
