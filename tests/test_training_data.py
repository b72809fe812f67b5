"""training.data: loaders accept upstream's layouts and refuse bad input; scene and emoji builders (CPU, no network)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from models.weights.specs import CHECKPOINTS
from training.__main__ import main as training_main
from training.data import DatasetError, check_resolution, load_captioned, load_paired, load_unpaired
from training.data import emoji, scenes


def save(path: Path, color: tuple[int, ...], size: tuple[int, int] = (40, 30), mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


def make_paired(root: Path) -> Path:
    """Upstream paired layout with a jpg, a png and an RGBA png of odd sizes."""
    for folder, shade in (("train_A", 0), ("train_B", 200)):
        save(root / folder / "one.png", (shade, 10, 10))
        save(root / folder / "two.jpg", (shade, 90, 90), size=(50, 70))
        save(root / folder / "three.png", (shade, 0, 0, 0), mode="RGBA")  # fully transparent: white
    (root / "train_prompts.json").write_text(json.dumps({"one.png": "a cat", "two.jpg": "a dog", "three.png": "a cow"}))
    return root


def make_unpaired(root: Path) -> Path:
    for index in range(3):
        save(root / "train_A" / f"day{index}.png", (220, 220, 240))
    for index in range(2):
        save(root / "train_B" / f"n{index}.jpg", (10, 10, 30), size=(64, 48))
    (root / "fixed_prompt_a.txt").write_text("driving in the day\n")
    (root / "fixed_prompt_b.txt").write_text("driving in the night\n")
    return root


def make_captioned(root: Path) -> Path:
    rows = []
    for index, (caption, condition) in enumerate((("a red square", "day"), ("a blue square", "night"))):
        save(root / "train" / f"{index}.png", (200 * (1 - index), 0, 200 * index))
        rows.append({"file_name": f"{index}.png", "text": caption, "condition": condition})
    (root / "train" / "metadata.jsonl").write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return root


# --- the loaders accept upstream's layouts ---------------------------------------------------------

def test_paired_layout_loads_resized_with_captions(tmp_path: Path) -> None:
    data = load_paired(make_paired(tmp_path), "train", resolution=16)
    assert data.names == ["one.png", "three.png", "two.jpg"]
    assert data.captions == ["a cat", "a cow", "a dog"]
    assert data.sources.shape == data.targets.shape == (3, 16, 16, 3)
    assert data.sources.dtype == np.uint8
    assert data.sources[0, 8, 8, 0] == 0 and data.targets[0, 8, 8, 0] == 200
    assert (data.sources[1] == 255).all()  # transparency composited on white


def test_unpaired_layout_loads_both_domains_and_prompts(tmp_path: Path) -> None:
    data = load_unpaired(make_unpaired(tmp_path), "train", resolution=24)
    assert data.images_a.shape == (3, 24, 24, 3) and data.images_b.shape == (2, 24, 24, 3)
    assert (data.prompt_a, data.prompt_b) == ("driving in the day", "driving in the night")
    assert data.images_a.mean() > 200 > 50 > data.images_b.mean()


def test_captioned_layout_loads_captions_and_labels(tmp_path: Path) -> None:
    data = load_captioned(make_captioned(tmp_path), "train", resolution=8)
    assert data.captions == ["a red square", "a blue square"]
    assert data.labels == {"condition": ["day", "night"]}
    assert data.images.shape == (2, 8, 8, 3)
    assert len(load_captioned(tmp_path, "train", resolution=8, limit=1)) == 1


# --- and refuse bad input, naming the file or field -------------------------------------------------

@pytest.mark.parametrize("resolution", [0, -8, 60, 12, True, 64.0])
def test_resolution_must_be_a_positive_multiple_of_8(tmp_path: Path, resolution: object) -> None:
    with pytest.raises(DatasetError, match="multiple of 8"):
        load_paired(make_paired(tmp_path), resolution=resolution)  # type: ignore[arg-type]
    assert check_resolution(512) == 512


def spoil_missing_folder(root: Path) -> str:
    for path in (root / "train_B").iterdir():
        path.unlink()
    (root / "train_B").rmdir()
    return "train_B"


def spoil_unpaired_names(root: Path) -> str:
    (root / "train_B" / "two.jpg").rename(root / "train_B" / "deux.jpg")
    return "deux.jpg"


def spoil_not_an_image(root: Path) -> str:
    (root / "train_A" / "notes.txt").write_text("hello")
    return "notes.txt"


def spoil_corrupt_image(root: Path) -> str:
    (root / "train_A" / "one.png").write_bytes(b"not really a png")
    return "one.png"


def spoil_empty_caption(root: Path) -> str:
    (root / "train_prompts.json").write_text(json.dumps({"one.png": "  ", "two.jpg": "a dog", "three.png": "a cow"}))
    return "one.png"


def spoil_missing_caption(root: Path) -> str:
    (root / "train_prompts.json").write_text(json.dumps({"one.png": "a cat", "three.png": "a cow"}))
    return "two.jpg"


def spoil_caption_without_image(root: Path) -> str:
    prompts = json.loads((root / "train_prompts.json").read_text())
    (root / "train_prompts.json").write_text(json.dumps({**prompts, "ghost.png": "a ghost"}))
    return "ghost.png"


def spoil_missing_prompts(root: Path) -> str:
    (root / "train_prompts.json").unlink()
    return "train_prompts.json"


def spoil_prompts_not_json(root: Path) -> str:
    (root / "train_prompts.json").write_text("{oops")
    return "train_prompts.json"


def spoil_empty_folder(root: Path) -> str:
    for folder in ("train_A", "train_B"):
        for path in (root / folder).iterdir():
            path.unlink()
    return "has no images"


@pytest.mark.parametrize("spoil", [spoil_missing_folder, spoil_unpaired_names, spoil_not_an_image,
                                   spoil_corrupt_image, spoil_empty_caption, spoil_missing_caption,
                                   spoil_caption_without_image, spoil_missing_prompts, spoil_prompts_not_json,
                                   spoil_empty_folder])
def test_paired_refuses_bad_input_naming_it(tmp_path: Path, spoil) -> None:
    root = make_paired(tmp_path)
    named = spoil(root)
    with pytest.raises(DatasetError, match=named.replace(".", r"\.")):
        load_paired(root, "train", resolution=16)


@pytest.mark.parametrize(("spoil", "named"), [
    (lambda root: (root / "fixed_prompt_b.txt").unlink(), "fixed_prompt_b.txt"),
    (lambda root: (root / "fixed_prompt_a.txt").write_text("\n"), "fixed_prompt_a.txt"),
    (lambda root: (root / "train_A" / "day0.png").write_text("text"), "day0.png"),
    (lambda root: (root / "train_B" / "readme.md").write_text("text"), "readme.md"),
])
def test_unpaired_refuses_bad_input_naming_it(tmp_path: Path, spoil, named: str) -> None:
    root = make_unpaired(tmp_path)
    spoil(root)
    with pytest.raises(DatasetError, match=named.replace(".", r"\.")):
        load_unpaired(root, "train", resolution=16)
    with pytest.raises(DatasetError, match="test_A"):
        load_unpaired(make_unpaired(tmp_path / "fresh"), "test", resolution=16)


@pytest.mark.parametrize(("line", "named"), [
    ('{"file_name": "1.png"}', "line 2 field 'text'"),
    ('{"file_name": "1.png", "text": ""}', "line 2 field 'text'"),
    ('{"text": "a blue square"}', "line 2: field 'file_name'"),
    ('{"file_name": "1.png", "text": "x"', "line 2 is not valid JSON"),
    ('{"file_name": "9.png", "text": "a nine"}', "9.png"),
])
def test_captioned_refuses_bad_metadata_naming_the_line(tmp_path: Path, line: str, named: str) -> None:
    root = make_captioned(tmp_path)
    metadata = root / "train" / "metadata.jsonl"
    first = metadata.read_text().splitlines()[0]
    metadata.write_text(f"{first}\n{line}\n")
    with pytest.raises(DatasetError, match=named):
        load_captioned(root, "train", resolution=8)


def test_captioned_refuses_images_missing_from_metadata(tmp_path: Path) -> None:
    root = make_captioned(tmp_path)
    save(root / "train" / "extra.png", (1, 2, 3))
    with pytest.raises(DatasetError, match="extra.png"):
        load_captioned(root, "train", resolution=8)
    (root / "train" / "metadata.jsonl").unlink()
    with pytest.raises(DatasetError, match="metadata.jsonl"):
        load_captioned(root, "train", resolution=8)


# --- scenes ------------------------------------------------------------------------------------------

def saturation(image: np.ndarray) -> float:
    return float(cv2.cvtColor(image, cv2.COLOR_RGB2HSV)[..., 1].mean())


def test_scene_renderer_is_deterministic_for_a_seed() -> None:
    first, _ = scenes.render_scene(seed=3, index=5, condition="night", resolution=32)
    again, _ = scenes.render_scene(seed=3, index=5, condition="night", resolution=32)
    other, _ = scenes.render_scene(seed=4, index=5, condition="night", resolution=32)
    assert first.shape == (32, 32, 3) and first.dtype == np.uint8
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_night_is_darker_and_rain_greyer_with_the_same_edges() -> None:
    for index in range(6):
        images = {}
        for condition in scenes.CONDITIONS:  # one layout painted in every condition
            layout = scenes.sample_layout(np.random.default_rng(index), 64)
            images[condition] = scenes.render(layout, condition, np.random.default_rng(99), 32)
        assert images["night"].mean() < 0.7 * images["day"].mean(), layout.kind
        assert saturation(images["rainy"]) < 0.5 * saturation(images["day"]), layout.kind
        for condition, image in images.items():  # buildings / road leave edges in every condition
            assert (cv2.Canny(image, 100, 200) > 0).mean() > 0.05, (condition, layout.kind)


def test_scenes_command_writes_upstream_unpaired_layouts(tmp_path: Path) -> None:
    out = tmp_path / "scenes"
    training_main(["data", "scenes", "--out", str(out), "--count", "4", "--resolution", "32", "--seed", "1"])
    captions = {spec.task: spec.caption for spec in CHECKPOINTS.values()}
    day_night, clear_rainy = load_unpaired(out / "day_night", "train", 32), load_unpaired(out / "clear_rainy", "test", 32)
    assert (day_night.prompt_a, day_night.prompt_b) == (captions["night_to_day"], captions["day_to_night"])
    assert (clear_rainy.prompt_a, clear_rainy.prompt_b) == (captions["rainy_to_clear"], captions["clear_to_rainy"])
    assert len(day_night.names_a) == len(day_night.names_b) == 3 and len(clear_rainy.names_a) == 1
    assert day_night.images_b.mean() < day_night.images_a.mean()
    captioned = load_captioned(out / "captioned", "train", 32)
    assert sorted(set(captioned.labels["condition"])) == ["day", "night", "rainy"]
    assert len(load_captioned(out / "captioned", "test", 32)) == 4
    assert not any(path.name.startswith(".") for path in tmp_path.iterdir())  # no staging folder left
    reference = load_paired(out / "paired" / "day_night", "test", 32)  # same layouts, both conditions
    assert len(reference) == 1 and reference.captions == ["driving in the night"]
    assert reference.targets.mean() < 0.7 * reference.sources.mean()


def test_a_failed_build_leaves_the_old_dataset_and_no_partial_folder(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "scenes"
    training_main(["data", "scenes", "--out", str(out), "--count", "2", "--resolution", "16"])
    before = sorted(path.relative_to(out) for path in out.rglob("*"))

    def broken(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(scenes, "render_scene", broken)
    with pytest.raises(KeyboardInterrupt):
        training_main(["data", "scenes", "--out", str(out), "--count", "2", "--resolution", "16"])
    assert sorted(path.relative_to(out) for path in out.rglob("*")) == before
    assert [path.name for path in tmp_path.iterdir()] == ["scenes"]


# --- emoji -------------------------------------------------------------------------------------------

def test_captions_read_naturally() -> None:
    assert emoji.caption_for("grinning cat face") == "a grinning cat face"
    assert emoji.caption_for("face with tears of joy") == "a face with tears of joy"
    assert emoji.caption_for("airplane") == "an airplane"
    assert emoji.caption_for("socks") == "socks"
    assert emoji.caption_for("man: red hair") == "a man with red hair"
    assert emoji.caption_for("woman: bald") == "a bald woman"
    assert emoji.caption_for("family: man, woman, boy") == "a family of man, woman and boy"
    assert emoji.caption_for("Japanese \u201cvacancy\u201d button") == 'a Japanese "vacancy" button'


def test_styles_match_by_code_point(tmp_path: Path) -> None:
    (tmp_path / "2764.svg").write_text("<svg/>")
    assert emoji.twemoji_source(tmp_path)("2764-FE0F") == b"<svg/>"
    assert emoji.twemoji_source(tmp_path)("1F600") is None
    icon_set = {"width": 32, "height": 32, "icons": {"left-hand": {"body": "<path d='M0 0h4v4z'/>"}},
                "aliases": {"right-hand": {"parent": "left-hand", "hFlip": True}}}
    flipped = emoji.iconify_svg(icon_set, "right-hand").decode()
    assert 'viewBox="0 0 32 32"' in flipped and "translate(32 0) scale(-1 1)" in flipped
    assert emoji.iconify_svg(icon_set, "missing") is None


FAKE_GROUPS = ("smileys-emotion", "animals-nature", "food-drink")


def fake_openmoji(root: Path, concepts: int = 30) -> Path:
    """A tiny openmoji package: kept concepts plus the kinds the builder must leave out."""
    entries = [{"hexcode": f"1F{0x600 + index:03X}", "annotation": f"thing number {index}",
                "group": FAKE_GROUPS[index % 3], "subgroups": "x", "openmoji_author": "Tester", "skintone": ""}
               for index in range(concepts)]
    entries += [{"hexcode": "1F44B-1F3FB", "annotation": "waving hand: light skin tone", "group": "people-body",
                 "skintone": 1}, {"hexcode": "1F1E9-1F1EA", "annotation": "flag: Germany", "group": "flags",
                 "skintone": ""}, {"hexcode": "E000", "annotation": "openmoji extra", "group": "extras-openmoji",
                 "skintone": ""}, {"hexcode": "1F3FB", "annotation": "light skin tone", "group": "component",
                 "skintone": ""}]
    for entry in entries:
        for kind, paint in (("color", 'fill="#ffcc00" stroke="#000"'), ("black", 'fill="none" stroke="#000"')):
            svg = f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 72 72"><circle cx="36" cy="36" r="24" {paint} stroke-width="4"/></svg>'
            (root / kind / "svg").mkdir(parents=True, exist_ok=True)
            (root / kind / "svg" / f"{entry['hexcode']}.svg").write_text(svg)
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "data" / "openmoji.json").write_text(json.dumps(entries))
    return root


def test_concepts_leave_out_variants_flags_extras_and_components(tmp_path: Path) -> None:
    concepts = emoji.load_concepts(fake_openmoji(tmp_path) / "data" / "openmoji.json")
    assert len(concepts) == 30 and all(concept.hexcode.startswith("1F6") for concept in concepts)
    chosen = emoji.select_concepts(concepts, ["food-drink"], limit=4)
    assert [concept.group for concept in chosen] == ["food-drink"] * 4
    with pytest.raises(ValueError, match="unknown group"):
        emoji.select_concepts(concepts, ["flags"], None)


def test_emoji_builder_splits_by_concept_deterministically(tmp_path: Path) -> None:
    pytest.importorskip("cairosvg", reason="cairosvg (and libcairo2) render the SVGs; pip install cairosvg")
    package = fake_openmoji(tmp_path / "openmoji")
    concepts = emoji.load_concepts(package / "data" / "openmoji.json")
    builds = []
    for run in ("first", "second"):
        out = tmp_path / run
        summary = emoji.build_emoji(out, 16, {"openmoji": package}, ["openmoji"], concepts)
        builds.append(out)
        assert summary["sketch"]["train"] + summary["sketch"]["test"] == 30
    train, test = load_paired(builds[0] / "sketch", "train", 16), load_paired(builds[0] / "sketch", "test", 16)
    assert len(test) > 0 and not set(train.names) & set(test.names)
    assert test.names == load_paired(builds[1] / "sketch", "test", 16).names
    assert all(emoji.concept_split(name[:-4]) == "test" for name in test.names)
    assert train.captions[0].startswith("a thing number")
    assert train.sources.mean() > train.targets.mean()  # line art is mostly white, colour fills the disc
    assert train.targets[0, 8, 8].tolist() == [255, 204, 0]  # colour on white, not black
    edges = load_paired(builds[0] / "edge", "train", 16)
    assert set(np.unique(edges.sources)) <= {0, 255} and edges.sources.max() == 255
    captioned = load_captioned(builds[0] / "captioned", "train", 16)
    assert set(captioned.labels["concept"]) == {concept.hexcode for concept in concepts}  # all concepts trained
    assert set(captioned.labels["style"]) == {"openmoji", "openmoji-line"}
    assert any(text.startswith("a line drawing of") for text in captioned.captions)
    assert "CC BY-SA 4.0" in (builds[0] / "ATTRIBUTION.md").read_text()
    assert os.listdir(builds[0] / "sketch" / "test_A") == os.listdir(builds[1] / "sketch" / "test_A")
