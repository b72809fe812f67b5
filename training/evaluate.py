"""Measure a model folder's quality on held-out data with the project's own classifier.

Loads MODEL_DIR as the app does (`Studio.load`: source `mini` for an export, else `local`) and
measures, on the TEST splits:
- text to image, one step: is the prompted concept in the classifier's top 1 / top 5; Frechet
  distance (classifier features) of one-step images vs held-out real images; with --teacher (a
  latent-diffusion run or model folder) the same for its multi-step DDIM samples (diffusers'
  StableDiffusionPipeline, --teacher-steps, --teacher-guidance) and the ratio one-step / teacher;
- sketch to image at gamma 1 on held-out line art: PSNR vs the colour target and vs returning the
  line art unchanged; spread across seeds at gamma 0.2 / 0.6 / 1.0; edge to image: PSNR;
- day_to_night, night_to_day, clear_to_rainy, rainy_to_clear on held-out scenes: fraction the
  classifier puts in the target condition (the untranslated inputs' rate beside it) and Canny
  edge agreement with the input (training.metrics documents both); where the scenes dataset has
  its paired reference (paired/: the same layouts in both conditions) those scenes are the inputs
  and PSNR / L1 against the same scene in the target condition are added, with the input's own
  PSNR as the do-nothing baseline, and the edge agreement of the input with that reference: what
  a perfect translation would score (day <-> night changes many edges, so it is below 0.5 there);
- edit: L1 and perceptual distance from the photo at growing strength.
A task whose weights are absent is reported as missing (with the reason), not as failed.
Writes --out (JSON) and the same path with .md (a table with the command, date, device and the
classifier's path and sha256). Targets are issue 9's; each figure says it used our classifier.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training import runner
from training.classifier import (Classifier, FeatureExtractor, captioned_folder, classify, load_classifier,
                                 perceptual_distance, to_network_input)
from training.metrics import (domain_success_rate, edge_agreement, frechet_distance, l1_distance, psnr,
                              spread_across_seeds, top_k_hits)

GAMMAS = (0.2, 0.6, 1.0)
EDIT_STRENGTHS = (0.2, 0.4, 0.6, 0.8, 1.0)
TRANSLATIONS: dict[str, tuple[str, str, str]] = {  # direction -> (scenes subfolder, input domain, target condition)
    "day_to_night": ("day_night", "A", "night"),
    "night_to_day": ("day_night", "B", "day"),
    "clear_to_rainy": ("clear_rainy", "A", "rainy"),
    "rainy_to_clear": ("clear_rainy", "B", "day"),  # the scenes' "clear" is a clear day
}
CLASSIFIER_NOTE = "measured with the project's own classifier (training.classifier), not Inception/CLIP/LPIPS"


@dataclass(frozen=True)
class Check:
    """One figure held against issue 9's target."""

    task: str
    measure: str
    value: float
    target: str
    passed: bool

    def to_json(self) -> dict[str, Any]:
        return {"task": self.task, "measure": self.measure, "value": self.value, "target": self.target,
                "passed": self.passed}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_dir", type=Path, metavar="MODEL_DIR",
                        help="folder in the stabilityai/sd-turbo layout (+ img2img-turbo/ task checkpoints)")
    parser.add_argument("--classifier", type=Path, required=True, metavar="RUN", help="a `classifier` run")
    parser.add_argument("--emoji", type=Path, required=True, metavar="DATA",
                        help="emoji dataset (captioned/, sketch/, edge/)")
    parser.add_argument("--scenes", type=Path, required=True, metavar="DATA",
                        help="scenes dataset (captioned/, day_night/, clear_rainy/)")
    parser.add_argument("--teacher", type=Path, default=None, metavar="DIR",
                        help="latent-diffusion run (or its model/ folder): the multi-step yardstick")
    parser.add_argument("--teacher-steps", type=runner.positive_int, default=25)
    parser.add_argument("--teacher-guidance", type=float, default=3.0, help="classifier-free guidance of the teacher")
    parser.add_argument("--prompts", type=runner.positive_int, default=200,
                        help="text-to-image prompts: distinct training captions, evenly spread")
    parser.add_argument("--limit", type=runner.positive_int, default=100, help="held-out images per task")
    parser.add_argument("--spread-images", type=runner.positive_int, default=16,
                        help="held-out sketches for the spread across seeds")
    parser.add_argument("--seeds", type=runner.positive_int, default=3, help="seeds for the spread (at least 2)")
    parser.add_argument("--resolution", type=runner.positive_int, default=128, help="size held-out images are read at")
    parser.add_argument("--size", type=runner.positive_int, default=None,
                        help="text-to-image size (default: the model's native size, within what the Studio accepts)")
    parser.add_argument("--device", default=runner.default_device())
    parser.add_argument("--out", type=Path, required=True, help="results .json (a .md table is written beside it)")


# ------------------------------------------------------------------------------------ helpers

def as_array(image: Any) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def missing(reason: str) -> dict[str, Any]:
    return {"status": "missing", "reason": reason}


def native_size(studio: Any) -> int:
    """The side the loaded model was trained at (the source's limits)."""
    return int(studio.limits.native_side)


def studio_size(studio: Any, requested: int) -> int:
    """The nearest side the Studio's text_to_image accepts for this source."""
    limits = studio.limits
    return max(limits.min_side, min(limits.max_side, requested))


def spaced_indices(total: int, count: int) -> list[int]:
    """count indices evenly spread over range(total) (all of them when there are fewer)."""
    if total <= count:
        return list(range(total))
    return [round(i * (total - 1) / (count - 1)) for i in range(count)] if count > 1 else [0]


def prompt_rows(emoji: Path, concepts: Sequence[str], count: int) -> list[tuple[str, str]]:
    """(caption, concept) pairs: distinct training captions whose concept the classifier knows,
    evenly spread over their sorted list (the same on every run)."""
    from training.data.layouts import load_captioned

    train = load_captioned(captioned_folder(emoji), "train", 8)
    known = set(concepts)
    pairs = sorted({(caption, concept) for caption, concept in zip(train.captions, train.labels.get("concept", []))
                    if concept in known})
    return [pairs[index] for index in spaced_indices(len(pairs), count)]


def real_images(root: Path, split: str, resolution: int, limit: int | None = None) -> np.ndarray:
    from training.data.layouts import load_captioned

    return load_captioned(captioned_folder(root), split, resolution, limit=limit).images


# ------------------------------------------------------------------------------- text to image

def teacher_images(folder: Path, prompts: Sequence[str], steps: int, guidance: float, size: int,
                   device: torch.device, batch: int = 16) -> np.ndarray:
    """The multi-step teacher: diffusers' StableDiffusionPipeline with a DDIM scheduler."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from models.weights.base_loading import load_sd_turbo
    from training.runner import run_model_dir

    model = run_model_dir(folder, "unet")
    base = load_sd_turbo(model, device, torch.float32)
    pipeline = StableDiffusionPipeline(
        vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer, unet=base.unet,
        scheduler=DDIMScheduler.from_pretrained(model, subfolder="scheduler"), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    pipeline.set_progress_bar_config(disable=True)
    images = []
    for start in range(0, len(prompts), batch):
        chunk = list(prompts[start:start + batch])
        generators = [torch.Generator().manual_seed(start + offset) for offset in range(len(chunk))]
        output = pipeline(chunk, height=size, width=size, num_inference_steps=steps, guidance_scale=guidance,
                          generator=generators, output_type="np").images
        images.append((np.clip(output, 0, 1) * 255).round().astype(np.uint8))
    return np.concatenate(images)


def concept_hits(classifier: Classifier, images: np.ndarray, concepts: Sequence[str]) -> dict[str, float]:
    names = classifier.config.labels["concept"]
    targets = np.array([names.index(concept) for concept in concepts])
    logits = classify(classifier, images).logits["concept"]
    return {"concept_top1": float(top_k_hits(logits, targets, 1).mean()),
            "concept_top5": float(top_k_hits(logits, targets, min(5, len(names))).mean())}


def held_out_concepts(emoji: Path, classifier: Classifier, resolution: int) -> tuple[np.ndarray, dict[str, Any]]:
    """The held-out real emoji, and the classifier's concept top-1 / top-5 on those whose concept it
    knows: the yardstick's own ceiling for the text-to-image concept check."""
    from training.data.layouts import load_captioned

    test = load_captioned(captioned_folder(emoji), "test", resolution)
    known = set(classifier.config.labels["concept"])
    rows = [index for index, concept in enumerate(test.labels.get("concept", [])) if concept in known]
    if not rows:
        return test.images, {}
    hits = concept_hits(classifier, test.images[rows], [test.labels["concept"][index] for index in rows])
    return test.images, {"images": len(rows), **hits}


def evaluate_text_to_image(studio: Any, classifier: Classifier, args: argparse.Namespace,
                           checks: list[Check]) -> dict[str, Any]:
    if "concept" not in classifier.config.labels:
        return missing("the classifier has no concept head (train it on the emoji dataset)")
    rows = prompt_rows(args.emoji, classifier.config.labels["concept"], args.prompts)
    if not rows:
        return missing(f"no training caption of {args.emoji} names a concept the classifier knows")
    prompts, concepts = [caption for caption, _ in rows], [concept for _, concept in rows]
    size = studio_size(studio, args.size or native_size(studio))
    generated = np.stack([as_array(studio.text_to_image(prompt, seed=index, width=size, height=size))
                          for index, prompt in enumerate(prompts)])
    held_out, held_out_reference = held_out_concepts(args.emoji, classifier, args.resolution)
    real_features = classify(classifier, held_out).features
    real_train = real_images(args.emoji, "train", args.resolution)
    real_train = real_train[spaced_indices(len(real_train), len(prompts))]

    def distance_to_held_out(images: np.ndarray) -> float:
        return frechet_distance(classify(classifier, images).features, real_features)

    result: dict[str, Any] = {"status": "measured", "prompts": len(prompts), "size": size,
                              "native_size": native_size(studio), "held_out_images": len(held_out),
                              **concept_hits(classifier, generated, concepts),
                              "real_held_out": held_out_reference,
                              "frechet_distance": distance_to_held_out(generated),
                              "frechet_distance_real_train_vs_test": distance_to_held_out(real_train)}
    reference = held_out_reference.get("concept_top5")
    measure = "prompted concept in top 5 (classifier" + (
        f"; real held-out emoji score {reference:.2f})" if reference is not None else ")")
    checks.append(Check("text_to_image", measure, result["concept_top5"], ">= 0.5", result["concept_top5"] >= 0.5))
    if args.teacher is not None:
        teacher = teacher_images(args.teacher, prompts, args.teacher_steps, args.teacher_guidance, size,
                                 studio.device)
        result["teacher"] = {"folder": str(args.teacher), "steps": args.teacher_steps, "sampler": "DDIM",
                             "guidance": args.teacher_guidance, **concept_hits(classifier, teacher, concepts),
                             "frechet_distance": distance_to_held_out(teacher)}
        ratio = result["frechet_distance"] / max(result["teacher"]["frechet_distance"], 1e-12)
        result["frechet_ratio_one_step_to_teacher"] = ratio
        checks.append(Check("text_to_image", "Frechet distance one step / teacher (classifier features)", ratio,
                            "<= 1.5", ratio <= 1.5))
    return result


# -------------------------------------------------------------------------------- sketch / edge

def evaluate_sketch(studio: Any, args: argparse.Namespace, checks: list[Check]) -> dict[str, Any]:
    from training.data.layouts import load_paired

    if "sketch_to_image" not in studio.store.tasks:
        return missing(studio.unavailable_tasks.get("sketch_to_image", "not loaded"))
    pairs = load_paired(args.emoji / "sketch", "test", args.resolution, limit=args.limit)

    def run(gamma: float, seed: int, indices: Sequence[int]) -> np.ndarray:
        return np.stack([as_array(studio.sketch_to_image(pairs.sources[i], pairs.captions[i], gamma=gamma, seed=seed))
                         for i in indices])

    outputs = run(1.0, 0, range(len(pairs)))
    result: dict[str, Any] = {"status": "measured", "images": len(pairs), "gamma": 1.0,
                              "psnr": psnr(outputs, pairs.targets), "l1": l1_distance(outputs, pairs.targets),
                              "identity_psnr": psnr(pairs.sources, pairs.targets)}
    result["psnr_above_identity"] = result["psnr"] - result["identity_psnr"]
    spread_indices = range(min(args.spread_images, len(pairs)))
    seeds = range(max(2, args.seeds))
    result["spread_across_seeds"] = {
        str(gamma): spread_across_seeds(np.stack([run(gamma, seed, spread_indices) for seed in seeds]))
        for gamma in GAMMAS}
    spread = [result["spread_across_seeds"][str(gamma)] for gamma in GAMMAS]
    checks.append(Check("sketch_to_image", "PSNR vs colour target, gamma 1 (dB)", result["psnr"], ">= 18",
                        result["psnr"] >= 18))
    checks.append(Check("sketch_to_image", "PSNR above the unchanged line art (dB)", result["psnr_above_identity"],
                        ">= 3", result["psnr_above_identity"] >= 3))
    checks.append(Check("sketch_to_image", "spread: gamma 0.2 > 0.6 > 1.0", spread[0],
                        f"> {spread[1]:.4f} > {spread[2]:.4f}", spread[0] > spread[1] > spread[2]))
    return result


def evaluate_edge(studio: Any, args: argparse.Namespace) -> dict[str, Any]:
    from training.data.layouts import load_paired

    if "edge_to_image" not in studio.store.tasks:
        return missing(studio.unavailable_tasks.get("edge_to_image", "not loaded"))
    pairs = load_paired(args.emoji / "edge", "test", args.resolution, limit=args.limit)
    outputs = np.stack([as_array(studio.edge_to_image(target, caption)[1])
                        for target, caption in zip(pairs.targets, pairs.captions)])
    return {"status": "measured", "images": len(pairs), "psnr": psnr(outputs, pairs.targets),
            "l1": l1_distance(outputs, pairs.targets), "edge_agreement": edge_agreement(pairs.targets, outputs)}


# --------------------------------------------------------------------------------- translation

def translation_inputs(scenes: Path, subfolder: str, domain: str, resolution: int,
                       limit: int) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Held-out scenes of the input domain, and the same scenes rendered in the target condition
    where the dataset has a paired reference (scenes/paired/...); else the unpaired test split."""
    from training.data.layouts import load_paired, load_unpaired

    reference = scenes / "paired" / subfolder
    if (reference / "test_A").is_dir():
        pairs = load_paired(reference, "test", resolution, limit=limit)
        inputs, targets = (pairs.sources, pairs.targets) if domain == "A" else (pairs.targets, pairs.sources)
        return inputs, targets, str(reference)
    data = load_unpaired(scenes / subfolder, "test", resolution, limit=limit)
    return (data.images_a if domain == "A" else data.images_b), None, str(scenes / subfolder)


def evaluate_translation(studio: Any, classifier: Classifier, args: argparse.Namespace,
                         checks: list[Check]) -> dict[str, Any]:
    conditions = classifier.config.labels.get("condition", ())
    results: dict[str, Any] = {}
    for direction, (subfolder, domain, target) in TRANSLATIONS.items():
        if direction not in studio.store.tasks:
            results[direction] = missing(studio.unavailable_tasks.get(direction, "not loaded"))
            continue
        if target not in conditions:
            results[direction] = missing(f"the classifier has no condition {target!r} (its conditions: {conditions})")
            continue
        inputs, references, source = translation_inputs(args.scenes, subfolder, domain, args.resolution, args.limit)
        outputs = np.stack([as_array(studio.translate(image, direction=direction)) for image in inputs])
        target_index = conditions.index(target)
        result = {"status": "measured", "inputs": source, "images": len(inputs), "target_condition": target,
                  "success_rate": domain_success_rate(classify(classifier, outputs).logits["condition"], target_index),
                  "inputs_success_rate": domain_success_rate(classify(classifier, inputs).logits["condition"],
                                                             target_index),
                  "edge_agreement": edge_agreement(inputs, outputs)}
        edge_measure = "edge agreement with the input"
        if references is not None:
            result["reference"] = {"psnr": psnr(outputs, references), "identity_psnr": psnr(inputs, references),
                                   "l1": l1_distance(outputs, references),
                                   "edge_agreement": edge_agreement(inputs, references)}
            edge_measure += f" (the same scene rendered {target}: {result['reference']['edge_agreement']:.2f})"
        results[direction] = result
        checks.append(Check(direction, f"classified {target} (classifier)", result["success_rate"], ">= 0.9",
                            result["success_rate"] >= 0.9))
        checks.append(Check(direction, edge_measure, result["edge_agreement"], ">= 0.5",
                            result["edge_agreement"] >= 0.5))
    return results


# ---------------------------------------------------------------------------------------- edit

def evaluate_edit(studio: Any, classifier: Classifier, args: argparse.Namespace, checks: list[Check]) -> dict[str, Any]:
    from training.data.layouts import load_captioned

    photos = load_captioned(captioned_folder(args.emoji), "test", args.resolution, limit=args.spread_images)
    extractor = FeatureExtractor(classifier.network)
    device = next(classifier.network.parameters()).device
    photo_tensors = to_network_input(photos.images, classifier.config.resolution, device)
    by_strength = {}
    for strength in EDIT_STRENGTHS:
        edited = np.stack([as_array(studio.edit(photo, caption, strength=strength, seed=index))
                           for index, (photo, caption) in enumerate(zip(photos.images, photos.captions))])
        with torch.inference_mode():
            perceptual = perceptual_distance(extractor, photo_tensors,
                                             to_network_input(edited, classifier.config.resolution, device))
        by_strength[str(strength)] = {"l1": l1_distance(edited, photos.images),
                                      "perceptual": float(perceptual.mean())}
    l1_values = [by_strength[str(s)]["l1"] for s in EDIT_STRENGTHS]
    grows = all(later > earlier for earlier, later in zip(l1_values, l1_values[1:]))
    checks.append(Check("edit", "L1 from the photo grows with strength (0.2 -> 1.0)", l1_values[-1],
                        "increasing: " + " < ".join(f"{v:.3f}" for v in l1_values), grows))
    return {"status": "measured", "images": len(photos), "strengths": by_strength, "grows_with_strength": grows}


# -------------------------------------------------------------------------------------- output

def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this evaluation, rebuilt from the parsed flags."""
    parts = ["python", "-m", "training", "evaluate", str(args.model_dir)]
    for key, value in vars(args).items():
        if key not in ("model_dir", "run", "recipe") and value is not None:
            parts += [f"--{key.replace('_', '-')}", str(value)]
    return " ".join(parts)


def markdown(results: dict[str, Any]) -> str:
    classifier = results["classifier"]
    lines = [f"# Quality of {results['model_dir']}", "",
             f"- command: `{results['command']}`", f"- date (UTC): {results['date']}",
             f"- device: {results['device']}", f"- weights: {results['source']}",
             f"- classifier: `{classifier['path']}` (sha256 {classifier['sha256'][:16]}...); {CLASSIFIER_NOTE}",
             f"- held-out data: {results['data']['emoji']} and {results['data']['scenes']} (test splits, "
             f"{results['data']['resolution']} px)", "",
             "", "\"(classifier)\": measured with the classifier named above; other figures are pixel metrics.", "",
             "| task | measure | value | target | result |", "|---|---|---|---|---|"]
    for check in results["checks"]:
        verdict = "pass" if check["passed"] else "FAIL"
        lines.append(f"| {check['task']} | {check['measure']} | {check['value']:.4g} | {check['target']} | {verdict} |")
    for task, reason in results["missing"].items():
        lines.append(f"| {task} | - | - | - | missing: {reason.split(' (looked in')[0]} |")
    text = results["text_to_image"]
    if text.get("status") == "measured" and text["size"] != text["native_size"]:
        lines += ["", f"Text to image ran at {text['size']} px, the nearest size the Studio accepts; the model's "
                      f"native size is {text['native_size']} px."]
    return "\n".join(lines) + "\n"


def missing_tasks(results: dict[str, Any]) -> dict[str, str]:
    found = {}
    for task, result in results.items():
        if isinstance(result, dict) and result.get("status") == "missing":
            found[task] = result["reason"]
        elif isinstance(result, dict) and task == "translation":
            found.update(missing_tasks(result))
    return found


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".tmp-{path.name}")
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, path)


def source_for(model_dir: Path) -> str:
    """`mini` for a folder `python -m training export` wrote (its native side and tasks are its own,
    as the app serves it with --source mini), else `local` (SD-Turbo's layout and limits)."""
    from models.weights.sources import EXPORT_RECORD

    return "mini" if (model_dir / EXPORT_RECORD).is_file() else "local"


def main(args: argparse.Namespace) -> None:
    from pipelines.studio import Studio

    device = runner.resolve_device(args.device)
    for name, folder in (("--emoji", args.emoji), ("--scenes", args.scenes)):
        if not folder.is_dir():
            raise runner.TrainingInputError(f"{name} {folder}: no such folder")
    if args.out.suffix.lower() != ".json":
        raise runner.TrainingInputError(f"--out {args.out}: give a .json path (the .md table is written beside it)")
    classifier = load_classifier(args.classifier, device)
    studio = Studio.load(source=source_for(args.model_dir), model_dir=args.model_dir, device=device)
    checks: list[Check] = []
    sections: dict[str, Callable[[], dict[str, Any]]] = {
        "text_to_image": lambda: evaluate_text_to_image(studio, classifier, args, checks),
        "sketch_to_image": lambda: evaluate_sketch(studio, args, checks),
        "edge_to_image": lambda: evaluate_edge(studio, args),
        "translation": lambda: evaluate_translation(studio, classifier, args, checks),
        "edit": lambda: evaluate_edit(studio, classifier, args, checks),
    }
    measured = {name: section() for name, section in sections.items()}
    results = {"command": command_line(args), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "device": runner.device_description(device), "model_dir": str(args.model_dir),
               "source": studio.source.describe(), "classifier": {**classifier.stamp(), "note": CLASSIFIER_NOTE},
               "data": {"emoji": str(args.emoji), "scenes": str(args.scenes), "split": "test",
                        "resolution": args.resolution},
               **measured, "checks": [check.to_json() for check in checks], "missing": missing_tasks(measured)}
    write_atomic(args.out, json.dumps(results, indent=2))
    write_atomic(args.out.with_suffix(".md"), markdown(results))
    print(markdown(results))
