"""Emoji datasets from npm packages: OpenMoji line art -> colour (paired), edges -> colour, captioned.

Concepts are OpenMoji's emoji without skin-tone variants, flags, extras and components. More
colour styles of the same concepts (Twemoji, Fluent Emoji Flat, Noto) are matched by code point.
SVGs are rendered with cairosvg onto white.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from training.data.output import save_png, stable_fraction, write_json, write_metadata, write_text

OPENMOJI = "openmoji"
EXCLUDED_GROUPS = frozenset({"flags", "extras-openmoji", "extras-unicode", "component"})
TEST_FRACTION = 0.1
SPLIT_SALT = "onestep-emoji-v1"
LINE_STYLE = "openmoji-line"
EDGE_THRESHOLDS = (100, 200)  # the app's edge_to_image defaults


@dataclass(frozen=True)
class PackageInfo:
    """An npm package pinned for a style, with its licence as recorded beside the data."""

    name: str
    version: str
    licence: str
    authors: str
    url: str


PACKAGES: dict[str, PackageInfo] = {
    OPENMOJI: PackageInfo("openmoji", "17.0.0", "CC BY-SA 4.0",
                          "OpenMoji contributors (HfG Schwaebisch Gmuend); per-emoji authors in concepts.json",
                          "https://openmoji.org"),
    "twemoji": PackageInfo("@twemoji/svg", "15.0.0", "CC-BY 4.0 (graphics), MIT (package)",
                           "Twitter, Inc and other contributors (jdecked/twemoji)",
                           "https://github.com/jdecked/twemoji"),
    "fluent-emoji-flat": PackageInfo("@iconify-json/fluent-emoji-flat", "1.2.6", "MIT", "Microsoft Corporation",
                                     "https://github.com/microsoft/fluentui-emoji"),
    "noto": PackageInfo("@iconify-json/noto", "1.2.9", "Apache-2.0", "Google Inc",
                        "https://github.com/googlefonts/noto-emoji"),
}
COLOUR_STYLES: tuple[str, ...] = ("openmoji", "twemoji", "fluent-emoji-flat", "noto")

NUMBER_WORDS = frozenset("one two three four five six seven eight nine ten eleven twelve no".split())
PLURAL_NOUNS = frozenset({"people", "men", "women", "children"})
HEAD_END = re.compile(r" (?:with|of|in|on|behind|holding|for|over|from|under) ")
HAIR_WORDS = ("hair", "beard")


@dataclass(frozen=True)
class Concept:
    """One emoji concept from openmoji.json."""

    hexcode: str
    annotation: str
    group: str
    subgroup: str
    author: str

    @property
    def caption(self) -> str:
        return caption_for(self.annotation)

    @property
    def split(self) -> str:
        return concept_split(self.hexcode)


def _article(phrase: str) -> str:
    words = phrase.split()
    first, last = words[0], HEAD_END.split(phrase)[0].split()[-1]
    is_plural = last in PLURAL_NOUNS or (last.endswith("s") and not last.endswith(("ss", "us", "is")))
    is_name = first[0].isupper() and len(words) == 1
    if is_plural or is_name or first.lower() in NUMBER_WORDS or first[0].isdigit():
        return phrase
    article = "an" if first[0].lower() in "aeio" or (first[0].lower() == "u" and not first.lower().startswith("uni")) else "a"
    return f"{article} {phrase}"


def caption_for(annotation: str) -> str:
    """A short natural caption from an OpenMoji annotation: 'grinning cat face' -> 'a grinning cat face'."""
    text = annotation.replace("\u2019", "'").replace("\u201c", '"').replace("\u201d", '"').strip()
    head, _, detail = text.partition(":")
    head, detail = head.strip(), detail.strip()
    if not detail:
        return _article(head)
    if detail == "bald":
        return _article(f"bald {head}")
    if detail.endswith(HAIR_WORDS):
        return f"{_article(head)} with {detail}"
    if "," in detail:
        *rest, final = [part.strip() for part in detail.split(",")]
        return f"{_article(head)} of {', '.join(rest)} and {final}"
    return f"{_article(head)} {detail}"


def concept_split(hexcode: str, test_fraction: float = TEST_FRACTION) -> str:
    """'test' for a fixed ~10% of concepts (by a hash of the code points), else 'train'."""
    return "test" if stable_fraction(hexcode, SPLIT_SALT) < test_fraction else "train"


def load_concepts(openmoji_json: Path) -> list[Concept]:
    """OpenMoji's emoji minus skin-tone variants, flags, extras and components, in OpenMoji's order."""
    entries = json.loads(openmoji_json.read_text(encoding="utf-8"))
    return [Concept(entry["hexcode"], entry["annotation"], entry["group"], entry.get("subgroups", ""),
                    entry.get("openmoji_author", ""))
            for entry in entries
            if not entry.get("skintone") and entry["group"] not in EXCLUDED_GROUPS]


def select_concepts(concepts: Sequence[Concept], groups: Iterable[str] | None, limit: int | None) -> list[Concept]:
    """Restrict to `groups` (OpenMoji group names) and to the first `limit` concepts."""
    chosen = list(concepts)
    if groups:
        wanted = set(groups)
        known = {concept.group for concept in concepts}
        unknown = sorted(wanted - known)
        if unknown:
            raise ValueError(f"--groups: unknown group(s) {unknown}; choose from {sorted(known)}")
        chosen = [concept for concept in chosen if concept.group in wanted]
    if limit is not None:
        if limit <= 0:
            raise ValueError(f"--limit={limit} must be a positive number of concepts")
        chosen = chosen[:limit]
    return chosen


def codepoint_key(hexcode: str) -> tuple[int, ...]:
    """Code points without the emoji variation selector, so packages spelling them differently match."""
    return tuple(int(part, 16) for part in re.split(r"[-_ ]", hexcode) if part and int(part, 16) != 0xFE0F)


SvgSource = Callable[[str], bytes | None]  # hexcode -> SVG document, None when the style lacks it


def openmoji_source(package: Path, kind: str) -> SvgSource:
    """kind 'color' or 'black' (line art)."""
    folder = package / kind / "svg"

    def source(hexcode: str) -> bytes | None:
        path = folder / f"{hexcode}.svg"
        return path.read_bytes() if path.is_file() else None

    return source


def twemoji_source(package: Path) -> SvgSource:
    files = {codepoint_key(path.stem): path for path in package.glob("*.svg")}

    def source(hexcode: str) -> bytes | None:
        path = files.get(codepoint_key(hexcode))
        return path.read_bytes() if path else None

    return source


def iconify_svg(icon_set: dict, name: str) -> bytes | None:
    """An Iconify JSON icon (following one alias, with its flips) as a standalone SVG document."""
    flips = {"hFlip": False, "vFlip": False}
    if name in icon_set.get("aliases", {}):
        alias = icon_set["aliases"][name]
        if alias.get("rotate"):
            return None
        flips = {key: bool(alias.get(key)) for key in flips}
        name = alias["parent"]
    icon = icon_set["icons"].get(name)
    if icon is None:
        return None
    flips = {key: value != bool(icon.get(key)) for key, value in flips.items()}
    width = icon.get("width", icon_set.get("width", 16))
    height = icon.get("height", icon_set.get("height", 16))
    left, top = icon.get("left", 0), icon.get("top", 0)
    scale_x, scale_y = (-1 if flips["hFlip"] else 1), (-1 if flips["vFlip"] else 1)
    shift_x = 2 * left + width if flips["hFlip"] else 0
    shift_y = 2 * top + height if flips["vFlip"] else 0
    body = f'<g transform="translate({shift_x} {shift_y}) scale({scale_x} {scale_y})">{icon["body"]}</g>'
    return (f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
            f'viewBox="{left} {top} {width} {height}">{body}</svg>').encode()


def iconify_source(package: Path) -> SvgSource:
    icon_set = json.loads((package / "icons.json").read_text(encoding="utf-8"))
    chars = json.loads((package / "chars.json").read_text(encoding="utf-8"))
    names = {codepoint_key(code): name for code, name in chars.items()}

    def source(hexcode: str) -> bytes | None:
        name = names.get(codepoint_key(hexcode))
        return iconify_svg(icon_set, name) if name else None

    return source


def style_sources(packages: dict[str, Path], styles: Sequence[str]) -> dict[str, SvgSource]:
    """Style name -> SVG source; always the OpenMoji line art plus the chosen colour styles."""
    builders: dict[str, Callable[[], SvgSource]] = {
        "openmoji": lambda: openmoji_source(packages[OPENMOJI], "color"),
        "twemoji": lambda: twemoji_source(packages["twemoji"]),
        "fluent-emoji-flat": lambda: iconify_source(packages["fluent-emoji-flat"]),
        "noto": lambda: iconify_source(packages["noto"]),
    }
    sources = {LINE_STYLE: openmoji_source(packages[OPENMOJI], "black")}
    sources.update({style: builders[style]() for style in styles})
    return sources


def render_svg(svg: bytes, resolution: int) -> np.ndarray:
    """Render an SVG to an (R, R, 3) uint8 RGB array, alpha-composited on white."""
    import cairosvg

    png = cairosvg.svg2png(bytestring=svg, output_width=resolution, output_height=resolution)
    rgba = Image.open(io.BytesIO(png)).convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))


def edge_map(image: np.ndarray) -> np.ndarray:
    """Canny edges (100/200, as the app's edge tab) as 3 channels: 255 on edges, 0 elsewhere."""
    edges = cv2.Canny(np.ascontiguousarray(image), *EDGE_THRESHOLDS)
    return np.repeat(edges[:, :, None], 3, axis=2)


def captioned_test_styles(concept: Concept, styles: Sequence[str], test_fraction: float = TEST_FRACTION) -> set[str]:
    """Images of a concept held out for the captioned test split (~10%); one image always stays in train."""
    held = {style for style in styles if stable_fraction(f"{concept.hexcode}/{style}", SPLIT_SALT) < test_fraction}
    return held if len(held) < len(styles) else set(styles[1:])


def style_caption(concept: Concept, style: str) -> str:
    return f"a line drawing of {concept.caption}" if style == LINE_STYLE else concept.caption


def write_concept(out: Path, concept: Concept, images: dict[str, np.ndarray], prompts: dict[str, dict[str, str]],
                  metadata: dict[str, list[dict]]) -> None:
    """Write one concept's images into the sketch, edge and captioned layouts."""
    split = concept.split
    if LINE_STYLE in images and OPENMOJI in images:
        save_png(images[LINE_STYLE], out / "sketch" / f"{split}_A" / f"{concept.hexcode}.png")
        save_png(images[OPENMOJI], out / "sketch" / f"{split}_B" / f"{concept.hexcode}.png")
        prompts[f"sketch/{split}"][f"{concept.hexcode}.png"] = concept.caption
    for style, image in images.items():
        if style == LINE_STYLE:
            continue
        name = f"{concept.hexcode}_{style}.png"
        save_png(edge_map(image), out / "edge" / f"{split}_A" / name)
        save_png(image, out / "edge" / f"{split}_B" / name)
        prompts[f"edge/{split}"][name] = concept.caption
    held_out = captioned_test_styles(concept, list(images))
    for style, image in images.items():
        caption_split = "test" if style in held_out else "train"
        name = f"{concept.hexcode}_{style}.png"
        save_png(image, out / "captioned" / caption_split / name)
        metadata[caption_split].append({"file_name": name, "text": style_caption(concept, style),
                                        "concept": concept.hexcode, "annotation": concept.annotation,
                                        "group": concept.group, "style": style})


def attribution_text(styles: Sequence[str]) -> str:
    """ATTRIBUTION.md: which packages, versions, licences and authors the images come from."""
    lines = ["# Attribution", "",
             "Images rendered from these npm packages (SVG -> PNG with cairosvg, on white). The images keep",
             "their licences: share-alike for OpenMoji (CC BY-SA 4.0) covers derived images and weights",
             "trained on them should credit it too.", "",
             "| style | package | version | licence | authors | home |", "|---|---|---|---|---|---|"]
    for style in ("openmoji", *[s for s in styles if s != OPENMOJI]):
        info = PACKAGES[style]
        lines.append(f"| {style} | {info.name} | {info.version} | {info.licence} | {info.authors} | {info.url} |")
    lines += ["", f"Style `{LINE_STYLE}` is OpenMoji's black line art (same package).",
              "Captions are OpenMoji's annotations (data/openmoji.json) in short sentence form."]
    return "\n".join(lines)


LAYOUT_FOLDERS = ("sketch/train_A", "sketch/train_B", "sketch/test_A", "sketch/test_B",
                  "edge/train_A", "edge/train_B", "edge/test_A", "edge/test_B", "captioned/train", "captioned/test")


def build_emoji(out: Path, resolution: int, packages: dict[str, Path], styles: Sequence[str],
                concepts: Sequence[Concept], progress: Callable[[Iterable], Iterable] = iter) -> dict:
    """Render every concept in every style and write the three layouts into `out` (a fresh folder)."""
    sources = style_sources(packages, styles)
    prompts: dict[str, dict[str, str]] = {f"{kind}/{split}": {} for kind in ("sketch", "edge") for split in ("train", "test")}
    metadata: dict[str, list[dict]] = {"train": [], "test": []}
    per_style = dict.fromkeys(sources, 0)
    for folder in LAYOUT_FOLDERS:
        (out / folder).mkdir(parents=True, exist_ok=True)
    for concept in progress(concepts):
        images = {}
        for style, source in sources.items():
            svg = source(concept.hexcode)
            if svg is not None:
                images[style] = render_svg(svg, resolution)
                per_style[style] += 1
        write_concept(out, concept, images, prompts, metadata)
    for key, captions in prompts.items():
        kind, split = key.split("/")
        write_json(captions, out / kind / f"{split}_prompts.json")
    counts = {split: write_metadata(rows, out / "captioned" / split) for split, rows in metadata.items()}
    write_json([{"hexcode": c.hexcode, "annotation": c.annotation, "caption": c.caption, "group": c.group,
                 "subgroup": c.subgroup, "author": c.author, "split": c.split} for c in concepts], out / "concepts.json")
    write_text(attribution_text(styles), out / "ATTRIBUTION.md")
    summary = {"resolution": resolution, "concepts": len(concepts), "images_per_style": per_style,
               "sketch": {split: len(prompts[f"sketch/{split}"]) for split in ("train", "test")},
               "edge": {split: len(prompts[f"edge/{split}"]) for split in ("train", "test")},
               "captioned": counts,
               "splits": "sketch/edge: by concept (~10% of concepts held out, hash of the code points); "
                         "captioned: every concept in train, ~10% of its images (style chosen by hash) in test",
               "edge_A": "Canny 100/200 of the colour image, white edges on black, 3 channels"}
    write_json(summary, out / "summary.json")
    return summary
