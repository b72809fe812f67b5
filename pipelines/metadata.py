"""Settings that travel with the image: a PNG "parameters" text chunk in the format AUTOMATIC1111
writes, and the typed settings read back from it.

The chunk is the prompt (any number of lines, empty for translate), then one line of
`Label: value` pairs joined by ", ":

    a red fox in snow
    Steps: 1, Seed: 7, Size: 512x512, Model: stabilityai/sd-turbo, Task: text_to_image

Every task writes Steps (always 1), Seed (except the deterministic edge_to_image and translate,
which take none), Size (the image's WxH), Model and Task, then its own options: Gamma
(sketch_to_image), Low threshold and High threshold (edge_to_image), Direction (translate),
Strength (edit). A value holding a comma, a colon, a quote, a line break or outer spaces is
written as a JSON string, as AUTOMATIC1111 does. Reading gives the same Settings back exactly; a
chunk that is not ours or is malformed gives no settings and a notice, never an exception.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from PIL import ExifTags, Image
from PIL.PngImagePlugin import PngInfo

from models.weights.sources import SourceInfo
from models.weights.specs import CHECKPOINTS, DIRECTIONS, Direction
from pipelines.checks import check_choice, check_fraction, check_prompt
from pipelines.errors import InputError
from pipelines.limits import MAX_SEED

CHUNK_KEY = "parameters"
UNICODE_COMMENT = b"UNICODE\0"  # EXIF's charset prefix of a UTF-16 UserComment
STEPS = 1

Task = Literal["text_to_image", "sketch_to_image", "edge_to_image", "translate", "edit"]
TASKS: tuple[Task, ...] = get_args(Task)

# The label each option has in the chunk, in the order it is written.
LABELS = {"seed": "Seed", "gamma": "Gamma", "low_threshold": "Low threshold",
          "high_threshold": "High threshold", "direction": "Direction", "strength": "Strength"}
TASK_OPTIONS: dict[Task, tuple[str, ...]] = {
    "text_to_image": ("prompt", "seed"),
    "sketch_to_image": ("prompt", "seed", "gamma"),
    "edge_to_image": ("prompt", "low_threshold", "high_threshold"),
    "translate": ("direction",),
    "edit": ("prompt", "seed", "strength"),
}
MAX_THRESHOLD = 255

PARAMETER = re.compile(r'\s*(\w[\w ]*):\s*("(?:\\.|[^\\"])*"|[^,]*?)\s*(?:,|$)')
SIZE = re.compile(r"([0-9]+)x([0-9]+)")
WHOLE = re.compile(r"[0-9]+")
NEEDS_QUOTES = re.compile(r'[,:"\n\r]|^\s|\s$')


@dataclass(frozen=True)
class Settings:
    """What made an image: the task, its options named as in `Studio`, the image's size and the model.

    Options a task does not take are None. Construction checks every value (InputError); sizes
    are checked against a source's limits only when the settings are used."""

    task: Task
    size: tuple[int, int]
    model: str
    prompt: str | None = None
    seed: int | None = None
    gamma: float | None = None
    low_threshold: int | None = None
    high_threshold: int | None = None
    direction: Direction | None = None
    strength: float | None = None

    def __post_init__(self) -> None:
        check_choice(self.task, "Task", TASKS)
        wanted = TASK_OPTIONS[self.task]
        for name in ("prompt", *LABELS):
            given = getattr(self, name) is not None
            if given and name not in wanted:
                raise InputError(f"{name} does not apply to {self.task}; it takes {', '.join(wanted)}")
            if not given and name in wanted:
                raise InputError(f"{self.task} needs {name}")
        _check_values(self)

    def options(self) -> dict[str, object]:
        """Keyword arguments for the Studio method `task` (text_to_image also gets width and height)."""
        values = {name: getattr(self, name) for name in TASK_OPTIONS[self.task]}
        if self.task == "text_to_image":
            values["width"], values["height"] = self.size
        return values


@dataclass(frozen=True)
class ReadSettings:
    """The settings found in an image; None with a notice when its chunk is malformed or not ours,
    None without a notice when it has none (a plain image)."""

    settings: Settings | None
    notice: str | None = None


def _check_whole(value: object, name: str, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        raise InputError(f"{name}={value!r} must be a whole number from 0 to {high}")


def _check_values(settings: Settings) -> None:
    """The checks that hold for every source; the Studio checks sizes against its own limits."""
    width, height = settings.size
    if isinstance(width, bool) or not isinstance(width, int) or isinstance(height, bool) \
            or not isinstance(height, int) or min(width, height) < 1:
        raise InputError(f"Size={width}x{height} must be whole numbers of pixels, at least 1x1")
    if settings.prompt is not None:
        check_prompt(settings.prompt)
    if settings.seed is not None:
        _check_whole(settings.seed, "seed", MAX_SEED)
    if settings.gamma is not None:
        check_fraction(settings.gamma, "gamma", allow_zero=True)
    if settings.strength is not None:
        check_fraction(settings.strength, "strength", allow_zero=False)
    if settings.direction is not None:
        check_choice(settings.direction, "direction", DIRECTIONS)
    if settings.low_threshold is not None and settings.high_threshold is not None:
        _check_whole(settings.low_threshold, "low_threshold", MAX_THRESHOLD)
        _check_whole(settings.high_threshold, "high_threshold", MAX_THRESHOLD)
        if settings.low_threshold >= settings.high_threshold:
            raise InputError(f"low_threshold={settings.low_threshold} must be below "
                             f"high_threshold={settings.high_threshold}")


def model_name(source: SourceInfo, task: Task, direction: Direction | None = None) -> str:
    """The Model field: SD-Turbo (or mini, or the tiny random stand-in) plus the task's checkpoint, if any."""
    base = source.model_name
    checkpoint = direction if task == "translate" else task
    if checkpoint in CHECKPOINTS:
        return f"{base} + {Path(CHECKPOINTS[checkpoint].filename).stem}"
    return base


def _quote(value: str) -> str:
    return json.dumps(value, ensure_ascii=False) if NEEDS_QUOTES.search(value) else value


def _unquote(label: str, value: str) -> str:
    if not value.startswith('"'):
        return value
    try:
        text = json.loads(value)
    except json.JSONDecodeError:
        text = None
    if not isinstance(text, str):
        raise InputError(f"{label}: {value[:40]!r} is not a complete quoted string")
    return text


def format_parameters(settings: Settings) -> str:
    """The chunk's text: the prompt's lines, then `Steps: 1, Seed: N, Size: WxH, Model: ..., Task: ...`
    and the task's own options."""
    pairs = [("Steps", str(STEPS))]
    if settings.seed is not None:
        pairs.append(("Seed", str(settings.seed)))
    pairs += [("Size", "{}x{}".format(*settings.size)), ("Model", settings.model), ("Task", settings.task)]
    pairs += [(label, repr(value) if isinstance(value, float) else str(value))
              for name, label in LABELS.items()
              if name != "seed" and (value := getattr(settings, name)) is not None]
    line = ", ".join(f"{label}: {_quote(value)}" for label, value in pairs)
    return f"{settings.prompt}\n{line}" if settings.prompt else line


def _split_pairs(line: str) -> dict[str, str]:
    """`Label: value, Label: value` to a dict; InputError on text that is not such a list."""
    pairs: dict[str, str] = {}
    position = 0
    while position < len(line):
        match = PARAMETER.match(line, position)
        if match is None or match.end() == position:
            raise InputError(f"cannot read {line[position:position + 40]!r} as 'Label: value'")
        label, value = match.group(1).strip(), match.group(2)
        if label in pairs:
            raise InputError(f"{label} appears twice")
        pairs[label] = _unquote(label, value)
        position = match.end()
    return pairs


def _whole(pairs: dict[str, str], label: str) -> int:
    text = pairs[label]
    if not WHOLE.fullmatch(text):
        raise InputError(f"{label}: {text!r} is not a whole number")
    return int(text)


def _number(pairs: dict[str, str], label: str) -> float:
    try:
        return float(pairs[label])
    except ValueError:
        raise InputError(f"{label}: {pairs[label]!r} is not a number") from None


def parse_parameters(text: str) -> Settings:
    """The Settings a chunk's text describes; InputError naming what is wrong when it is malformed."""
    prompt, newline, line = text.rpartition("\n")
    pairs = _split_pairs(line)
    missing = [label for label in ("Steps", "Size", "Model", "Task") if label not in pairs]
    if missing:
        raise InputError(f"the chunk has no {', '.join(missing)} (it was not written by this app)")
    if pairs["Steps"] != str(STEPS):
        raise InputError(f"Steps: {pairs['Steps']} (this app makes images in {STEPS} step)")
    task = check_choice(pairs["Task"], "Task", TASKS)
    size = SIZE.fullmatch(pairs["Size"])
    if size is None:
        raise InputError(f"Size: {pairs['Size']!r} is not WIDTHxHEIGHT")
    known = {"Steps", "Size", "Model", "Task", *LABELS.values()}
    unknown = sorted(set(pairs) - known)
    if unknown:
        raise InputError(f"unknown field {', '.join(unknown)}")
    options: dict[str, object] = {}
    for name, label in LABELS.items():
        if label not in pairs:
            continue
        if name in ("gamma", "strength"):
            options[name] = _number(pairs, label)
        elif name == "direction":
            options[name] = pairs[label]
        else:
            options[name] = _whole(pairs, label)
    if "prompt" in TASK_OPTIONS[task]:
        options["prompt"] = prompt
    elif newline:
        raise InputError(f"{task} takes no prompt, but the chunk starts with one")
    width, height = int(size.group(1)), int(size.group(2))
    return Settings(task=task, size=(width, height), model=pairs["Model"], **options)  # type: ignore[arg-type]


def png_info(settings: Settings) -> PngInfo:
    """PIL's PngInfo holding the chunk, for `image.save(path, pnginfo=...)`."""
    info = PngInfo()
    info.add_text(CHUNK_KEY, format_parameters(settings))
    return info


def exif_with_comment(text: str) -> bytes:
    """EXIF holding `text` as its UserComment (UTF-16), where AUTOMATIC1111 keeps the parameters of
    a JPEG."""
    exif = Image.Exif()
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.UserComment] = UNICODE_COMMENT + text.encode("utf-16-be")
    return exif.tobytes()


def exif_comment(image: Image.Image) -> str | None:
    """The EXIF UserComment of an image (a JPEG's parameters), or None."""
    comment = image.getexif().get_ifd(ExifTags.IFD.Exif).get(ExifTags.Base.UserComment)
    if not isinstance(comment, bytes):
        return None
    if comment.startswith(UNICODE_COMMENT):
        return comment[len(UNICODE_COMMENT):].decode("utf-16-be", errors="replace")
    return comment[len(UNICODE_COMMENT):].decode("ascii", errors="replace").rstrip("\0")


def with_settings(image: Image.Image, settings: Settings) -> Image.Image:
    """The image with its settings in `info`: the chunk, which Gradio copies into every PNG it
    serves, and the EXIF UserComment, which it writes into every JPEG."""
    text = format_parameters(settings)
    image.info[CHUNK_KEY] = text
    image.info["exif"] = exif_with_comment(text)
    return image


def save_png(image: Image.Image, path: Path | str, settings: Settings) -> None:
    """Write the image as PNG with the chunk."""
    image.save(path, format="PNG", pnginfo=png_info(settings))


def read_settings(image: Image.Image) -> ReadSettings:
    """The settings an image carries (a PNG's chunk, else a JPEG's EXIF UserComment). None: a plain
    image. Malformed or from another program: a plain image with a notice saying why."""
    text = image.info.get(CHUNK_KEY)
    if text is None and image.format != "PNG":
        comment = exif_comment(image)
        text = comment if comment and "Steps:" in comment else None  # a camera's own comment is no notice
    if text is None:
        return ReadSettings(None)
    if not isinstance(text, str):
        return ReadSettings(None, "The image's parameters chunk is not text; it is used as a plain image.")
    try:
        return ReadSettings(parse_parameters(text))
    except ValueError as error:
        return ReadSettings(None, f"The image's settings could not be read ({error}); it is used as a plain image.")

