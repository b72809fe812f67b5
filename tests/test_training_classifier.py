"""The project's own classifier: it learns two clearly different synthetic classes from the train
split and separates them on held-out images; its features give a perceptual distance."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from training.__main__ import main as training_main
from training.classifier import (ClassifierConfig, ConvClassifier, FeatureExtractor, classify, load_classifier,
                                 load_feature_extractor, perceptual_distance)
from training.evaluate import closer_to_the_reference_checks, concept_check, grid_lines, reference_figures
from training.runner import TrainingInputError

SIZE = 16


def write_captioned(folder: Path, rows: list[tuple[np.ndarray, dict[str, str]]]) -> None:
    folder.mkdir(parents=True)
    lines = []
    for index, (image, labels) in enumerate(rows):
        name = f"{index:04d}.png"
        Image.fromarray(image).save(folder / name)
        lines.append(json.dumps({"file_name": name, "text": f"image {index}", **labels}))
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")


def dark_or_bright(rng: np.random.Generator, bright: bool) -> np.ndarray:
    """Noisy images: dark ones around 50, bright ones around 200, with a random blob."""
    image = rng.normal(200 if bright else 50, 20, (SIZE, SIZE, 3))
    y, x = rng.integers(0, SIZE - 4, 2)
    image[y:y + 4, x:x + 4] = rng.uniform(0, 255, 3)
    return np.clip(image, 0, 255).astype(np.uint8)


def make_dataset(root: Path, field: str, classes: tuple[str, str], seed: int, extra: dict[str, str]) -> Path:
    """captioned/{train,test} with 24 / 8 images, half of each class."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", 24), ("test", 8)):
        rows = [(dark_or_bright(rng, index % 2 == 1), {field: classes[index % 2], **extra}) for index in range(count)]
        write_captioned(root / "captioned" / split, rows)
    return root


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("classifier")
    emoji = make_dataset(root / "emoji", "concept", ("moon", "sun"), 0, {"style": "flat"})
    scenes = make_dataset(root / "scenes", "condition", ("night", "day"), 1, {})
    out = root / "run"
    training_main(["classifier", "--dataset", str(emoji), f"{scenes}:12", "--out", str(out), "--device", "cpu",
                   "--resolution", str(SIZE), "--widths", "8,16", "--steps", "40", "--batch-size", "16",
                   "--lr", "0.01", "--sample-every", "40"])
    return out


def test_loss_falls_and_held_out_images_are_separated(trained_run: Path) -> None:
    record = json.loads((trained_run / "record.json").read_text())
    assert record["status"] == "finished"
    assert record["config"]["train_images"] == 24 + 12  # scenes:12 takes 12 of its 24, evenly spaced
    loss = record["loss_summary"]["loss"]
    assert loss["last_10pct_mean"] < 0.7 * loss["first"]
    assert record["metrics"]["test:emoji"]["concept_top1"] == 1.0
    assert record["metrics"]["test:emoji"]["concept_count"] == 8
    assert record["metrics"]["test:scenes"]["condition_top1"] == 1.0
    assert len(record["metrics"]["sha256"]) == 64


def test_saved_classifier_reloads_and_names_its_labels(trained_run: Path) -> None:
    classifier = load_classifier(trained_run)
    assert classifier.config.labels == {"concept": ("moon", "sun"), "condition": ("day", "night")}
    assert "style" not in classifier.config.labels  # one style only: nothing to learn
    rng = np.random.default_rng(5)
    images = np.stack([dark_or_bright(rng, bright) for bright in (False, True, False, True)])
    big = np.repeat(np.repeat(images, 3, axis=1), 3, axis=2)  # other sizes are resized to the network's
    predictions = classify(classifier, big)
    assert predictions.logits["concept"].argmax(axis=1).tolist() == [0, 1, 0, 1]
    assert predictions.features.shape == (4, 16)
    assert classifier.stamp()["sha256"] == json.loads((trained_run / "record.json").read_text())["metrics"]["sha256"]


def test_a_dataset_without_labels_is_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    write_captioned(tmp_path / "plain" / "train", [(dark_or_bright(rng, True), {}) for _ in range(4)])
    with pytest.raises(TrainingInputError, match="nothing to classify"):
        training_main(["classifier", "--dataset", str(tmp_path / "plain"), "--out", str(tmp_path / "run"),
                       "--device", "cpu", "--resolution", str(SIZE), "--steps", "1"])
    assert not (tmp_path / "run").exists()


def random_extractor() -> FeatureExtractor:
    torch.manual_seed(0)
    return FeatureExtractor(ConvClassifier(ClassifierConfig(SIZE, (8, 16, 32), {"concept": ("a", "b")})))


def test_perceptual_distance_is_zero_for_equal_images_and_grows_with_the_difference() -> None:
    extractor = random_extractor()
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(3, 3, 32, 32, generator=generator) * 2 - 1
    noise = torch.randn(images.shape, generator=generator)
    same = perceptual_distance(extractor, images, images.clone())
    near = perceptual_distance(extractor, images, (images + 0.05 * noise).clamp(-1, 1))
    far = perceptual_distance(extractor, images, (images + 0.5 * noise).clamp(-1, 1))
    assert same.shape == (3,)
    assert torch.all(same.abs() < 1e-6)
    assert torch.all(near > 1e-4) and torch.all(far > 2 * near)


def test_perceptual_distance_is_differentiable_and_leaves_the_extractor_frozen() -> None:
    extractor = random_extractor()
    extractor.train()
    assert not extractor.training and not any(p.requires_grad for p in extractor.parameters())
    generator = torch.Generator().manual_seed(2)
    target = torch.rand(2, 3, SIZE, SIZE, generator=generator) * 2 - 1
    guess = (torch.rand(target.shape, generator=generator) * 2 - 1).requires_grad_(True)
    distance = perceptual_distance(extractor, guess, target).sum()
    distance.backward()
    assert guess.grad is not None and torch.isfinite(guess.grad).all() and guess.grad.abs().sum() > 0
    with torch.no_grad():
        stepped = guess - 0.5 * guess.grad / guess.grad.abs().max()
    assert perceptual_distance(extractor, stepped, target).sum() < distance


def test_feature_extractor_loads_from_a_run(trained_run: Path) -> None:
    extractor = load_feature_extractor(trained_run)
    maps = extractor(torch.zeros(1, 3, 32, 32))
    assert [tuple(m.shape[1:]) for m in maps] == [(8, 16, 16), (16, 8, 8)]


# ------------------------------------------------------------------------------ evaluate, end to end

def write_paired(folder: Path, sources: list[np.ndarray], targets: list[np.ndarray], captions: list[str]) -> None:
    """folder/test_A, test_B and test_prompts.json (the paired layout's held-out split)."""
    for side, images in (("A", sources), ("B", targets)):
        (folder / f"test_{side}").mkdir(parents=True)
        for index, image in enumerate(images):
            Image.fromarray(image).save(folder / f"test_{side}" / f"{index}.png")
    (folder / "test_prompts.json").write_text(json.dumps({f"{i}.png": c for i, c in enumerate(captions)}))


def write_unpaired(folder: Path, images_a: list[np.ndarray], images_b: list[np.ndarray]) -> None:
    for side, images in (("A", images_a), ("B", images_b)):
        (folder / f"test_{side}").mkdir(parents=True)
        for index, image in enumerate(images):
            Image.fromarray(image).save(folder / f"test_{side}" / f"{index}.png")
    (folder / "fixed_prompt_a.txt").write_text("driving in the day\n")
    (folder / "fixed_prompt_b.txt").write_text("driving in the night\n")


def line_art(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A black square outline on white and the same square filled with a colour."""
    sketch = np.full((32, 32, 3), 255, np.uint8)
    low, high = rng.integers(4, 12), rng.integers(20, 28)
    sketch[low:high, low] = sketch[low:high, high] = sketch[low, low:high] = sketch[high, low:high + 1] = 0
    colour = np.full((32, 32, 3), 255, np.uint8)
    colour[low:high + 1, low:high + 1] = rng.integers(0, 255, 3)
    return sketch, colour


@pytest.fixture(scope="module")
def evaluation_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from models.weights.checkpoints import save_task_weights
    from models.weights.random_tasks import random_task_weights
    from models.weights.specs import CHECKPOINTS
    from models.weights.tiny import write_tiny_hub_layout
    from pipelines import Studio
    from training.classifier import save_classifier

    root = tmp_path_factory.mktemp("evaluate")
    rng = np.random.default_rng(3)
    emoji, scenes = root / "emoji", root / "scenes"
    for split, count in (("train", 6), ("test", 4)):
        rows = [(dark_or_bright(rng, index % 2 == 1), {"concept": ("moon", "sun")[index % 2],
                                                      "style": ("flat", "line")[index // 2 % 2]})
                for index in range(count)]
        write_captioned(emoji / "captioned" / split, rows)
        write_captioned(scenes / "captioned" / split, [(dark_or_bright(rng, index % 2 == 0),
                                                        {"condition": ("day", "night")[index % 2]})
                                                       for index in range(count)])
    black_only = np.full((32, 32, 3), 255, np.uint8)  # a clock face's line art is its colour image: nothing to colour
    black_only[8:24, 15:17] = black_only[15:17, 8:24] = 0
    pairs = [(black_only, black_only), *(line_art(rng) for _ in range(3))]
    write_paired(emoji / "sketch", [s for s, _ in pairs], [c for _, c in pairs], ["a clock face"] + ["a square"] * 3)
    for subfolder in ("day_night", "clear_rainy"):
        write_unpaired(scenes / subfolder, [dark_or_bright(rng, True) for _ in range(3)],
                       [dark_or_bright(rng, False) for _ in range(3)])
    days = [dark_or_bright(rng, True) for _ in range(3)]
    write_paired(scenes / "paired" / "day_night", days, [day // 4 for day in days], ["driving in the night"] * 3)
    torch.manual_seed(0)
    config = ClassifierConfig(SIZE, (8, 16), {"concept": ("moon", "sun"), "style": ("flat", "line"),
                                             "condition": ("day", "night", "rainy")})
    save_classifier(ConvClassifier(config).eval(), config, root / "classifier" / "model", {})
    model_dir = write_tiny_hub_layout(root / "model")
    base = Studio.load("tiny", device="cpu", tasks=()).store.base
    for task in ("sketch_to_image", "day_to_night"):  # the other four are left missing on purpose
        save_task_weights(random_task_weights(base, task, seed=1),
                          model_dir / "img2img-turbo" / CHECKPOINTS[task].converted_filename)
    return {"root": root, "emoji": emoji, "scenes": scenes, "classifier": root / "classifier", "model": model_dir}


def test_evaluate_measures_present_tasks_and_reports_absent_ones_as_missing(evaluation_inputs: dict[str, Path],
                                                                           monkeypatch: pytest.MonkeyPatch,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    paths = evaluation_inputs
    monkeypatch.setenv("ONESTEP_CACHE", str(paths["root"] / "cache"))
    out = paths["root"] / "results.json"
    training_main(["evaluate", str(paths["model"]), "--classifier", str(paths["classifier"]),
                   "--emoji", str(paths["emoji"]), "--scenes", str(paths["scenes"]), "--teacher", str(paths["model"]),
                   "--teacher-steps", "2", "--prompts", "4", "--limit", "2", "--spread-images", "2", "--seeds", "2",
                   "--resolution", "32", "--device", "cpu", "--out", str(out), "--grids", str(paths["root"] / "grids")])
    results = json.loads(out.read_text())
    progress = capsys.readouterr().err  # which section runs, one line as each starts and ends
    assert "evaluate: [1/7] autoencoder ..." in progress and "evaluate: [7/7] edit done in" in progress
    grids = {Path(path).name for path in results["grids"]}  # every measured section but edge (missing)
    assert grids == {f"{name}.jpg" for name in ("autoencoder", "colour_prompts", "text_to_image", "sketch_to_image",
                                                 "translation", "edit")}
    assert sorted(path.name for path in (paths["root"] / "grids").iterdir()) == sorted(grids)  # nothing half-written
    assert results["classifier"]["sha256"] == load_classifier(paths["classifier"]).stamp()["sha256"]
    assert {"command", "date", "device", "checks", "missing"} <= set(results)
    text = results["text_to_image"]
    assert text["status"] == "measured" and text["prompts"] == 4
    assert 0 <= text["concept_top5"] <= 1 and text["frechet_distance"] > 0
    assert text["teacher"]["steps"] == 2 and text["frechet_ratio_one_step_to_teacher"] > 0
    sketch = results["sketch_to_image"]
    # every held-out pair (4; --limit 2 bounds the other sections only) but the one with nothing to colour
    assert sketch["status"] == "measured" and sketch["images"] == 3 and sketch["left_out_nothing_to_colour"] == 1
    assert sketch["identity_psnr"] < 100 and sketch["spread_across_seeds"]["1.0"] == 0.0  # gamma 1 ignores the seed
    assert sketch["spread_across_seeds"]["0.2"] > 0
    night = results["translation"]["day_to_night"]
    assert night["status"] == "measured" and 0 <= night["success_rate"] <= 1
    assert 0 <= night["structure_agreement"] <= 1 and 0 <= night["edge_agreement"] <= 1
    assert night["inputs"].endswith("paired/day_night") and night["reference"]["identity_psnr"] < 100
    ceiling = night["reference"]["structure_agreement"]  # the input's structure against the same scene at night
    assert 0 <= ceiling <= 1 and 0 <= night["reference"]["output_edge_agreement"] <= 1
    assert set(results["missing"]) == {"edge_to_image", "night_to_day", "clear_to_rainy", "rainy_to_clear"}
    assert "night2day.safetensors" in results["missing"]["night_to_day"]
    assert results["edit"]["status"] == "measured"
    assert set(results["edit"]["strengths"]) == {"0.2", "0.4", "0.6", "0.8", "1.0"}
    measures = {(check["task"], check["measure"]) for check in results["checks"]}
    assert ("day_to_night", "classified night (classifier)") in measures
    floor = night["reference"]["other_scene_structure_agreement"]  # against another scene at night (2 images)
    assert ("day_to_night", f"structure agreement with the input (the same scene rendered night: {ceiling:.2f}, "
            f"another scene: {floor:.2f})") in measures
    assert {("day_to_night", "PSNR vs the same scene rendered night (dB)"),
            ("day_to_night", "edge agreement with the same scene rendered night")} <= measures
    reference = text["real_held_out"]  # the classifier on the held-out real emoji: the check's ceiling
    assert reference["images"] == 4 and 0 <= reference["concept_top1"] <= reference["concept_top5"] == 1  # 2 concepts
    assert ("text_to_image", "prompted concept in top 5 (classifier; real held-out emoji score 1.000, "
            "chance 1.0000)") in measures
    table = out.with_suffix(".md").read_text()
    assert results["classifier"]["sha256"][:16] in table and "missing" in table and "| day_to_night |" in table
    assert results["command"].startswith(f"python -m training evaluate {paths['model']} --classifier")
    autoencoder = results["autoencoder"]
    for data in ("emoji", "scenes"):
        assert autoencoder[data]["images"] > 0 and 0 < autoencoder[data]["psnr"] < 100
        assert autoencoder[data]["mean_colour_error"] >= 0
        assert ("autoencoder", f"PSNR on held-out {data} (dB)") in measures
    following = results["prompt_following"]
    assert len(following["colour_share_per_prompt"]) == 18 and 0 <= following["colour_obeyed"] <= 1
    assert following["seed_difference"] > 0  # random weights still vary with the seed
    teacher = following["teacher"]  # the multi-step teacher on the same 18 prompts: a reference, not a check
    assert teacher["steps"] == 2 and len(teacher["colour_share_per_prompt"]) == 18
    assert 0 <= teacher["colour_obeyed"] <= 1


def night_scene(day: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The day scene darkened, with stars: a condition change that moves many edges."""
    night = (day * 0.3).astype(np.uint8)
    ys, xs = rng.integers(0, 20, 40), rng.integers(0, 64, 40)
    night[ys, xs] = 255
    return night


def test_the_reference_checks_pass_a_perfect_translation_and_fail_returning_the_input() -> None:
    rng = np.random.default_rng(0)
    days = np.full((3, 64, 64, 3), 200, np.uint8)
    days[:, 20:, :] = 90  # a road below the horizon
    days[:, 40:60, 24:40] = (200, 30, 30)  # a car
    nights = np.stack([night_scene(day, rng) for day in days])

    def passed(outputs: np.ndarray) -> list[bool]:
        figures = reference_figures(days, outputs, nights)
        return [check.passed for check in closer_to_the_reference_checks("day_to_night", "night", figures)]

    truth = reference_figures(days, nights, nights)
    assert truth["edge_agreement"] < 0.5 < truth["structure_agreement"]  # fixed Canny thresholds fail the truth
    assert passed(nights) == [True, True]
    assert passed(days) == [False, False]
    assert passed(np.zeros_like(days)) == [True, False]  # dark enough for PSNR, but the layout is gone


def test_evaluate_only_some_sections_needs_no_classifier(evaluation_inputs: dict[str, Path],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    paths = evaluation_inputs
    monkeypatch.setenv("ONESTEP_CACHE", str(paths["root"] / "cache"))
    out = paths["root"] / "autoencoder-only.json"
    common = [str(paths["model"]), "--emoji", str(paths["emoji"]), "--scenes", str(paths["scenes"]),
              "--resolution", "32", "--device", "cpu", "--out", str(out)]
    with pytest.raises(TrainingInputError, match="--classifier RUN is needed to measure text_to_image"):
        training_main(["evaluate", *common])
    training_main(["evaluate", *common, "--only", "autoencoder"])
    results = json.loads(out.read_text())
    assert results["classifier"] is None and set(results["autoencoder"]) >= {"emoji", "scenes"}
    assert "text_to_image" not in results and "classifier: none" in out.with_suffix(".md").read_text()
    assert results["command"].endswith("--only autoencoder")

    vae_only = paths["root"] / "vae-run" / "model"  # an autoencoder run: model/vae and nothing else
    shutil.copytree(paths["model"] / "vae", vae_only / "vae")
    training_main(["evaluate", str(vae_only.parent), *common[1:], "--only", "autoencoder"])
    assert json.loads(out.read_text())["autoencoder"]["emoji"]["psnr"] == results["autoencoder"]["emoji"]["psnr"]


def test_evaluate_update_measures_some_sections_again_and_keeps_the_others(evaluation_inputs: dict[str, Path],
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    paths = evaluation_inputs
    monkeypatch.setenv("ONESTEP_CACHE", str(paths["root"] / "cache"))
    earlier, updated = paths["root"] / "earlier.json", paths["root"] / "updated.json"
    common = [str(paths["model"]), "--emoji", str(paths["emoji"]), "--scenes", str(paths["scenes"]),
              "--resolution", "32", "--device", "cpu", "--seeds", "2", "--spread-images", "2",
              "--grids", str(paths["root"] / "update-grids")]
    training_main(["evaluate", *common, "--only", "autoencoder", "sketch_to_image", "--out", str(earlier)])
    before = json.loads(earlier.read_text())
    assert before["sketch_to_image"]["images"] == 3 and {c["section"] for c in before["checks"]} == {
        "autoencoder", "sketch_to_image"}
    with pytest.raises(TrainingInputError, match="--update needs --only"):
        training_main(["evaluate", *common, "--update", str(earlier), "--out", str(updated)])
    training_main(["evaluate", *common, "--only", "sketch_to_image", "--paired-limit", "2", "--update", str(earlier),
                   "--out", str(updated)])
    after = json.loads(updated.read_text())
    assert after["sketch_to_image"]["images"] == 1  # the first 2 pairs, less the one with nothing to colour
    assert after["autoencoder"] == before["autoencoder"] and after["command"] == before["command"]
    assert after["grids"] == before["grids"]  # the same files, in their places, the sketch's written again
    assert [c["section"] for c in after["checks"]] == [c["section"] for c in before["checks"]]
    assert [c for c in after["checks"] if c["section"] == "autoencoder"] == [
        c for c in before["checks"] if c["section"] == "autoencoder"]
    (psnr_check,) = [c for c in after["checks"] if c["measure"] == "PSNR vs colour target, gamma 1 (dB)"]
    assert psnr_check["value"] == after["sketch_to_image"]["psnr"] != before["sketch_to_image"]["psnr"]
    (update,) = after["updates"]
    assert update["sections"] == ["sketch_to_image"] and f"--update {earlier}" in update["command"]
    assert "--paired-limit 2" in update["command"]
    assert "re-measured on" in updated.with_suffix(".md").read_text()

    without_grids = [arg for arg in common if arg not in ("--grids", str(paths["root"] / "update-grids"))]
    training_main(["evaluate", *without_grids, "--only", "sketch_to_image", "--update", str(earlier), "--out",
                   str(updated)])  # the earlier sketch grid shows the old figures: no longer listed
    assert [Path(path).name for path in json.loads(updated.read_text())["grids"]] == ["autoencoder.jpg"]

    elsewhere = paths["root"] / "elsewhere.json"  # results measured on other data are not mixed with these
    elsewhere.write_text(json.dumps({**before, "data": {**before["data"], "resolution": 64}}))
    with pytest.raises(TrainingInputError, match="measure every section again"):
        training_main(["evaluate", *common, "--only", "sketch_to_image", "--update", str(elsewhere), "--out",
                       str(updated)])
    unmarked = paths["root"] / "unmarked.json"  # results written before checks named their section
    unmarked.write_text(json.dumps({**before, "checks": [{**c, "section": ""} for c in before["checks"]]}))
    with pytest.raises(TrainingInputError, match="do not say which section"):
        training_main(["evaluate", *common, "--only", "sketch_to_image", "--update", str(unmarked), "--out",
                       str(updated)])


def test_grid_lines_name_one_folder_or_every_path() -> None:
    assert grid_lines([]) == []
    assert grid_lines(["a/x.jpg", "a/y.jpg"]) == ["- sample grids: `x.jpg`, `y.jpg` in `a`"]
    assert grid_lines(["a/x.jpg", "b/y.jpg"]) == ["- sample grids: `a/x.jpg`, `b/y.jpg`"]


def test_evaluate_serves_a_run_folder_at_its_own_side(tmp_path: Path) -> None:
    """A run's model/ folder (mini's 128 px, here tiny's 64) is measured as the app serves it with
    --source mini, at its native side, not at SD-Turbo's 512 px limits; SD-Turbo's own configs stay local."""
    from models.weights.tiny import write_tiny_hub_layout
    from training.evaluate import source_for

    folder = write_tiny_hub_layout(tmp_path / "model")
    assert source_for(folder) == "mini"
    config_file = folder / "unet" / "config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "sample_size": config["sample_size"] * 512 // 64}))
    assert source_for(folder) == "local"


def test_the_concept_check_asks_half_of_real_and_ten_times_chance() -> None:
    """1,644 concepts: chance is 0.3%, so 10x chance is 3%; half of a real 40% is 20%."""
    assert concept_check(0.21, 0.40, 1644).passed and not concept_check(0.19, 0.40, 1644).passed
    assert concept_check(0.031, 0.04, 1644).passed and not concept_check(0.029, 0.04, 1644).passed
    assert not concept_check(0.9, None, 1644).passed  # no figure for real images: nothing to judge by
