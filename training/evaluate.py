"""Measure a model folder's quality on held-out data with the project's own classifier.

Loads MODEL_DIR as the app does (`Studio.load`: source `mini` for an export, else `local`) and
measures, on the TEST splits:
- autoencoder: PSNR of the VAE's reconstructions at --resolution on held-out emoji and scenes, and
  how far each image's mean colour (its non-white area) moved (training.colour);
- prompt following (no classifier): colour words ("a red heart", ... 6 colours x heart, circle,
  square) give images whose dominant hue is that colour (the same yardstick's score on the real
  emoji with those captions beside it), and different prompts give different images (their mean
  pairwise difference at one seed, against the difference between seeds of one prompt);
- text to image, one step: is the prompted concept in the classifier's top 1 / top 5; Frechet
  distance (classifier features) of one-step images vs held-out real images; with --teacher (a
  latent-diffusion run or model folder) the same for its multi-step DDIM samples (diffusers'
  StableDiffusionPipeline, --teacher-steps, --teacher-guidance) and the ratio one-step / teacher;
- sketch to image at gamma 1 on every held-out line art (leaving out the few whose line art already
  is the target; --paired-limit takes the first N): PSNR vs the colour target and vs returning the
  line art unchanged; spread across seeds at gamma 0.2 / 0.6 / 1.0; edge to image: PSNR on every
  held-out pair;
- day_to_night, night_to_day, clear_to_rainy, rainy_to_clear on held-out scenes: fraction the
  classifier puts in the target condition (the untranslated inputs' rate beside it) and the
  structure agreement with the input (Canny at each image's own contrast after a median filter:
  training.metrics documents it; the fixed-threshold edge agreement is reported beside it, and
  misses a night scene's dim edges); where the scenes dataset has its paired reference (paired/:
  the same layouts in both conditions) those scenes are the inputs and PSNR / L1 against the same
  scene in the target condition are added, with the input's own PSNR as the do-nothing baseline,
  and the structure yardstick's own scores: the input against that reference (what a perfect
  translation scores) and against another scene's (what losing the layout scores); two more checks
  ask that the output be nearer that reference than the input is, by PSNR and by edge agreement;
- edit: L1 and perceptual distance from the photo at growing strength.
A task whose weights are absent is reported as missing (with the reason), not as failed.
With --grids DIR, the first held-out inputs, the outputs and the targets behind these figures are
also written as sample grids (training.gallery), one JPEG a section.
Writes --out (JSON) and the same path with .md (a table with the command, date, device and the
classifier's path and sha256). Targets are issue 9's; each figure says it used our classifier.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from training import runner
from training.colour import COLOUR_WORDS, colour_prompts, hue_accuracy, mean_colour_error, mean_pairwise_difference
from training.classifier import (Classifier, FeatureExtractor, captioned_folder, classify, load_classifier,
                                 perceptual_distance, to_network_input)
from training.gallery import Gallery
from training.metrics import (domain_success_rate, edge_agreement, frechet_distance, l1_distance, psnr,
                              spread_across_seeds, structure_agreement, top_k_hits)

if TYPE_CHECKING:
    from training.data.layouts import PairedDataset

GAMMAS = (0.2, 0.6, 1.0)
EDIT_STRENGTHS = (0.2, 0.4, 0.6, 0.8, 1.0)
TRANSLATIONS: dict[str, tuple[str, str, str]] = {  # direction -> (scenes subfolder, input domain, target condition)
    "day_to_night": ("day_night", "A", "night"),
    "night_to_day": ("day_night", "B", "day"),
    "clear_to_rainy": ("clear_rainy", "A", "rainy"),
    "rainy_to_clear": ("clear_rainy", "B", "day"),  # the scenes' "clear" is a clear day
}
COLOUR_SEEDS = 3
CLASSIFIER_SECTIONS = ("text_to_image", "translation", "edit")
SECTIONS = ("autoencoder", "prompt_following", "text_to_image", "sketch_to_image", "edge_to_image", "translation",
            "edit")
DIVERSITY_PROMPTS = 6
GRID_NAMES = {"prompt_following": "colour_prompts"}  # a section's grid, where not named after it
CLASSIFIER_NOTE = "measured with the project's own classifier (training.classifier), not Inception/CLIP/LPIPS"


@dataclass(frozen=True)
class Check:
    """One figure held against issue 9's target."""

    task: str
    measure: str
    value: float
    target: str
    passed: bool
    section: str = ""  # the section that measured it, set by measure_sections

    def to_json(self) -> dict[str, Any]:
        return {"task": self.task, "measure": self.measure, "value": self.value, "target": self.target,
                "passed": self.passed, "section": self.section}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_dir", type=Path, metavar="MODEL_DIR",
                        help="folder in the stabilityai/sd-turbo layout (+ img2img-turbo/ task checkpoints)")
    parser.add_argument("--classifier", type=Path, default=None, metavar="RUN",
                        help=f"a `classifier` run; needed by {', '.join(CLASSIFIER_SECTIONS)}")
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
    parser.add_argument("--limit", type=runner.positive_int, default=100,
                        help="held-out scenes per translation direction (the first N)")
    parser.add_argument("--paired-limit", type=runner.positive_int, default=None, metavar="N",
                        help="held-out pairs for the sketch (gamma 1) and edge PSNR: the first N by name "
                             "(default: every pair, one deterministic call each)")
    parser.add_argument("--spread-images", type=runner.positive_int, default=16,
                        help="held-out sketches for the spread across seeds")
    parser.add_argument("--seeds", type=runner.positive_int, default=3, help="seeds for the spread (at least 2)")
    parser.add_argument("--resolution", type=runner.positive_int, default=128, help="size held-out images are read at")
    parser.add_argument("--size", type=runner.positive_int, default=None,
                        help="text-to-image size (default: the model's native size, within what the Studio accepts)")
    parser.add_argument("--device", default=runner.default_device())
    parser.add_argument("--out", type=Path, required=True, help="results .json (a .md table is written beside it)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=None, metavar="SECTION",
                        help=f"measure only these sections (of {', '.join(SECTIONS)}); default: all")
    parser.add_argument("--update", type=Path, default=None, metavar="RESULTS_JSON",
                        help="with --only: an earlier evaluation's results, written to --out with these sections "
                             "re-measured in place of its own (their figures, checks and grids); its other sections "
                             "stay as they were, and `updates` says which were re-measured, when and by what command")
    parser.add_argument("--grids", type=Path, default=None, metavar="DIR",
                        help="also write sample grids (one JPEG a section: the first held-out inputs, the "
                             "model's outputs and the targets, as measured) to DIR")


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


# ------------------------------------------------------------------------------- autoencoder

def reconstruct(vae: Any, images: np.ndarray, device: torch.device, batch: int = 32) -> np.ndarray:
    """The VAE's mode reconstructions of uint8 RGB images, as uint8."""
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(images), batch):
            chunk = torch.from_numpy(images[start:start + batch]).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1
            decoded = vae.decode(vae.encode(chunk).latent_dist.mode()).sample.clamp(-1, 1)
            outputs.append(((decoded + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())
    return np.concatenate(outputs)


def evaluate_autoencoder(args: argparse.Namespace, device: torch.device, checks: list[Check],
                         gallery: Gallery) -> dict[str, Any]:
    from models.weights.base_loading import load_vae

    vae = load_vae(runner.run_model_dir(args.model_dir, "vae")).to(device).eval()
    result: dict[str, Any] = {"status": "measured", "resolution": args.resolution}
    for name, root in (("emoji", args.emoji), ("scenes", args.scenes)):
        originals = real_images(root, "test", args.resolution)
        reconstructions = reconstruct(vae, originals, device)
        gallery.add("autoencoder", f"held-out {name}", originals)
        gallery.add("autoencoder", "reconstructed (vae/)", reconstructions)
        colour = mean_colour_error(originals, reconstructions)
        result[name] = {"images": len(originals), "psnr": psnr(reconstructions, originals),
                        "mean_colour_error": float(colour.mean()), "worst_colour_error": float(colour.max())}
        checks.append(Check("autoencoder", f"PSNR on held-out {name} (dB)", result[name]["psnr"], ">= 24",
                            result[name]["psnr"] >= 24))
        checks.append(Check("autoencoder", f"mean colour moved, held-out {name} (grey levels)",
                            result[name]["mean_colour_error"], "<= 10", result[name]["mean_colour_error"] <= 10))
    return result


# -------------------------------------------------------------------------- prompt following

def real_colour_images(emoji: Path, resolution: int) -> tuple[list[np.ndarray], list[str]]:
    """Real emoji (train and test) captioned with one of the colour prompts, and their colour words."""
    from training.data.layouts import load_captioned

    wanted = dict(colour_prompts())
    images, colours = [], []
    for split in ("train", "test"):
        data = load_captioned(captioned_folder(emoji), split, resolution)
        for image, caption in zip(data.images, data.captions):
            if caption in wanted:
                images.append(image)
                colours.append(wanted[caption])
    return images, colours


def evaluate_prompt_following(studio: Any, args: argparse.Namespace, checks: list[Check],
                              gallery: Gallery) -> dict[str, Any]:
    size = studio_size(studio, args.size or native_size(studio))

    def draw(prompt: str, seed: int) -> np.ndarray:
        return as_array(studio.text_to_image(prompt, seed=seed, width=size, height=size))

    rows = colour_prompts()
    by_prompt = {prompt: [draw(prompt, seed) for seed in range(COLOUR_SEEDS)] for prompt, _ in rows}
    per_prompt = {prompt: hue_accuracy(by_prompt[prompt], [colour] * COLOUR_SEEDS) for prompt, colour in rows}
    add_colour_rows(gallery, "one step, seed 0", [(prompt, by_prompt[prompt][0]) for prompt, _ in rows])
    obeyed = float(np.mean([share > 0.5 for share in per_prompt.values()]))
    real, real_colours = real_colour_images(args.emoji, args.resolution)
    real_accuracy = hue_accuracy(real, real_colours) if real else None
    reference = f"; real emoji with these captions: {real_accuracy:.2f} of {len(real)}" if real else ""
    checks.append(Check("text_to_image", f"colour word obeyed (dominant hue, most of {COLOUR_SEEDS} seeds{reference})",
                        obeyed, ">= 0.9", obeyed >= 0.9))

    prompts = [prompt for prompt, _ in rows][::len(rows) // DIVERSITY_PROMPTS][:DIVERSITY_PROMPTS]
    across_prompts = mean_pairwise_difference(np.stack([by_prompt[prompt][0] for prompt in prompts]))
    across_seeds = float(np.mean([mean_pairwise_difference(np.stack(by_prompt[prompt])) for prompt in prompts]))
    ratio = across_prompts / max(across_seeds, 1e-9)
    checks.append(Check("text_to_image", "different prompts differ: prompt-to-prompt / seed-to-seed difference",
                        ratio, ">= 0.5", ratio >= 0.5))
    result = {"status": "measured", "size": size, "seeds": COLOUR_SEEDS, "colour_obeyed": obeyed,
              "colour_share_per_prompt": per_prompt, "real_emoji_hue_accuracy": real_accuracy,
              "real_emoji_images": len(real), "prompt_difference": across_prompts, "seed_difference": across_seeds,
              "prompt_to_seed_ratio": ratio}
    if args.teacher is not None:
        result["teacher"] = teacher_colour_following(args, size, studio.device, gallery)
    return result


def add_colour_rows(gallery: Gallery, label: str, drawn: Sequence[tuple[str, np.ndarray]]) -> None:
    """One row a shape (colour_prompts() lists every colour of a shape together)."""
    for start in range(0, len(drawn), len(COLOUR_WORDS)):
        chunk = drawn[start:start + len(COLOUR_WORDS)]
        gallery.add(GRID_NAMES["prompt_following"], label, [image for _, image in chunk],
                    captions=[prompt for prompt, _ in chunk])


def teacher_colour_following(args: argparse.Namespace, size: int, device: torch.device,
                             gallery: Gallery) -> dict[str, Any]:
    """The multi-step teacher on the same colour prompts and seeds count: what one step is distilled
    from (a reference beside the check, not a check)."""
    rows = colour_prompts()
    prompts = [prompt for prompt, _ in rows for _ in range(COLOUR_SEEDS)]
    images = teacher_images(args.teacher, prompts, args.teacher_steps, args.teacher_guidance, size, device)
    add_colour_rows(gallery, f"teacher, DDIM {args.teacher_steps} steps",
                    [(prompt, images[index * COLOUR_SEEDS]) for index, (prompt, _) in enumerate(rows)])
    per_prompt = {prompt: hue_accuracy(list(images[index * COLOUR_SEEDS:(index + 1) * COLOUR_SEEDS]),
                                       [colour] * COLOUR_SEEDS)
                  for index, (prompt, colour) in enumerate(rows)}
    return {"folder": str(args.teacher), "steps": args.teacher_steps, "sampler": "DDIM",
            "guidance": args.teacher_guidance,
            "colour_obeyed": float(np.mean([share > 0.5 for share in per_prompt.values()])),
            "colour_share_per_prompt": per_prompt}


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


def concept_check(top5: float, real_top5: float | None, concepts: int) -> Check:
    """The prompted concept is recognised: the one-step images' top-5 rate at least half of what real
    held-out emoji score with the same classifier, and at least 10x chance (5 / concepts)."""
    chance = min(5, concepts) / concepts
    target = max(0.5 * (real_top5 or 0.0), 10 * chance)
    measure = "prompted concept in top 5 (classifier" + (
        f"; real held-out emoji score {real_top5:.3f}, chance {chance:.4f})" if real_top5 is not None else ")")
    return Check("text_to_image", measure, top5, f">= {target:.3f} (half of real, 10x chance)",
                 real_top5 is not None and top5 >= target)


def evaluate_text_to_image(studio: Any, classifier: Classifier, args: argparse.Namespace,
                           checks: list[Check], gallery: Gallery) -> dict[str, Any]:
    if "concept" not in classifier.config.labels:
        return missing("the classifier has no concept head (train it on the emoji dataset)")
    rows = prompt_rows(args.emoji, classifier.config.labels["concept"], args.prompts)
    if not rows:
        return missing(f"no training caption of {args.emoji} names a concept the classifier knows")
    prompts, concepts = [caption for caption, _ in rows], [concept for _, concept in rows]
    size = studio_size(studio, args.size or native_size(studio))
    generated = np.stack([as_array(studio.text_to_image(prompt, seed=index, width=size, height=size))
                          for index, prompt in enumerate(prompts)])
    gallery.add("text_to_image", "one step (seed = prompt number)", generated, captions=prompts)
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
    checks.append(concept_check(result["concept_top5"], held_out_reference.get("concept_top5"),
                                len(classifier.config.labels["concept"])))
    if args.teacher is not None:
        teacher = teacher_images(args.teacher, prompts, args.teacher_steps, args.teacher_guidance, size,
                                 studio.device)
        gallery.add("text_to_image", f"teacher, DDIM {args.teacher_steps} steps, guidance {args.teacher_guidance:g}",
                    teacher, captions=prompts)
        result["teacher"] = {"folder": str(args.teacher), "steps": args.teacher_steps, "sampler": "DDIM",
                             "guidance": args.teacher_guidance, **concept_hits(classifier, teacher, concepts),
                             "frechet_distance": distance_to_held_out(teacher)}
        ratio = result["frechet_distance"] / max(result["teacher"]["frechet_distance"], 1e-12)
        result["frechet_ratio_one_step_to_teacher"] = ratio
        checks.append(Check("text_to_image", "Frechet distance one step / teacher (classifier features)", ratio,
                            "<= 1.5", ratio <= 1.5))
    return result


# -------------------------------------------------------------------------------- sketch / edge

def with_colour_to_add(pairs: PairedDataset) -> tuple[PairedDataset, int]:
    """The pairs without those whose line art already is the colour target (black-only emoji: a
    clock face, a cyclone), and how many were left out. There is nothing to colour in them, and
    returning the line art scores the metric's 100 dB for identical images on each, which would
    swamp the mean of the line-art baseline (5 of the first 100 held-out sketches add 4 dB to it)."""
    keep = [i for i in range(len(pairs)) if not np.array_equal(pairs.sources[i], pairs.targets[i])]
    kept = dataclasses.replace(pairs, names=[pairs.names[i] for i in keep], sources=pairs.sources[keep],
                               targets=pairs.targets[keep], captions=[pairs.captions[i] for i in keep])
    return kept, len(pairs) - len(keep)


def evaluate_sketch(studio: Any, args: argparse.Namespace, checks: list[Check], gallery: Gallery) -> dict[str, Any]:
    from training.data.layouts import load_paired

    if "sketch_to_image" not in studio.store.tasks:
        return missing(studio.unavailable_tasks.get("sketch_to_image", "not loaded"))
    pairs = load_paired(args.emoji / "sketch", "test", args.resolution, limit=args.paired_limit)
    pairs, nothing_to_colour = with_colour_to_add(pairs)

    def run(gamma: float, seed: int, indices: Sequence[int]) -> np.ndarray:
        return np.stack([as_array(studio.sketch_to_image(pairs.sources[i], pairs.captions[i], gamma=gamma, seed=seed))
                         for i in indices])

    outputs = run(1.0, 0, range(len(pairs)))
    gallery.add("sketch_to_image", "held-out line art", pairs.sources, captions=pairs.captions)
    gallery.add("sketch_to_image", "gamma 1", outputs)
    gallery.add("sketch_to_image", "target", pairs.targets)
    result: dict[str, Any] = {"status": "measured", "images": len(pairs),
                              "left_out_nothing_to_colour": nothing_to_colour, "gamma": 1.0,
                              "psnr": psnr(outputs, pairs.targets), "l1": l1_distance(outputs, pairs.targets),
                              "identity_psnr": psnr(pairs.sources, pairs.targets)}
    result["psnr_above_identity"] = result["psnr"] - result["identity_psnr"]
    result["colour_error"] = float(mean_colour_error(pairs.targets, outputs).mean())
    result["identity_colour_error"] = float(mean_colour_error(pairs.targets, pairs.sources).mean())
    spread_indices = range(min(args.spread_images, len(pairs)))
    seeds = range(max(2, args.seeds))
    spread_images = {gamma: np.stack([run(gamma, seed, spread_indices) for seed in seeds]) for gamma in GAMMAS}
    result["spread_across_seeds"] = {str(gamma): spread_across_seeds(images) for gamma, images in spread_images.items()}
    for gamma in GAMMAS[:-1]:
        for seed in seeds[:2]:
            gallery.add("sketch_to_image", f"gamma {gamma:g}, seed {seed}", spread_images[gamma][seed])
    spread = [result["spread_across_seeds"][str(gamma)] for gamma in GAMMAS]
    checks.append(Check("sketch_to_image", "PSNR vs colour target, gamma 1 (dB)", result["psnr"], ">= 18",
                        result["psnr"] >= 18))
    checks.append(Check("sketch_to_image", "PSNR above the unchanged line art (dB)", result["psnr_above_identity"],
                        ">= 3", result["psnr_above_identity"] >= 3))
    checks.append(Check("sketch_to_image", "shape filled with the target's colours: mean colour error (grey levels; "
                        f"the line art's own: {result['identity_colour_error']:.1f})", result["colour_error"],
                        "<= half the line art's", result["colour_error"] <= 0.5 * result["identity_colour_error"]))
    checks.append(Check("sketch_to_image", "spread: gamma 0.2 > 0.6 > 1.0", spread[0],
                        f"> {spread[1]:.4f} > {spread[2]:.4f}", spread[0] > spread[1] > spread[2]))
    return result


def evaluate_edge(studio: Any, args: argparse.Namespace, checks: list[Check], gallery: Gallery) -> dict[str, Any]:
    from training.data.layouts import load_paired

    if "edge_to_image" not in studio.store.tasks:
        return missing(studio.unavailable_tasks.get("edge_to_image", "not loaded"))
    pairs = load_paired(args.emoji / "edge", "test", args.resolution, limit=args.paired_limit)
    drawn = [studio.edge_to_image(target, caption) for target, caption in zip(pairs.targets, pairs.captions)]
    outputs = np.stack([as_array(image) for _, image in drawn])
    gallery.add("edge_to_image", "Canny edges of the held-out target", [as_array(edges) for edges, _ in drawn],
                captions=pairs.captions)
    gallery.add("edge_to_image", "output", outputs)
    gallery.add("edge_to_image", "target", pairs.targets)
    result = {"status": "measured", "images": len(pairs), "psnr": psnr(outputs, pairs.targets),
              "l1": l1_distance(outputs, pairs.targets), "edge_agreement": edge_agreement(pairs.targets, outputs)}
    checks.append(Check("edge_to_image", "PSNR vs colour target (dB)", result["psnr"], ">= 18", result["psnr"] >= 18))
    return result


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
                         checks: list[Check], gallery: Gallery) -> dict[str, Any]:
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
        gallery.add("translation", f"{direction}: held-out input", inputs)
        gallery.add("translation", "output", outputs)
        if references is not None:
            gallery.add("translation", f"the same scene rendered {target}", references)
        target_index = conditions.index(target)
        result = {"status": "measured", "inputs": source, "images": len(inputs), "target_condition": target,
                  "success_rate": domain_success_rate(classify(classifier, outputs).logits["condition"], target_index),
                  "inputs_success_rate": domain_success_rate(classify(classifier, inputs).logits["condition"],
                                                             target_index),
                  "structure_agreement": structure_agreement(inputs, outputs),
                  "edge_agreement": edge_agreement(inputs, outputs)}
        structure_measure = "structure agreement with the input"
        if references is not None:
            result["reference"] = reference_figures(inputs, outputs, references)
            structure_measure += structure_yardstick(target, result["reference"])
        results[direction] = result
        checks.append(Check(direction, f"classified {target} (classifier)", result["success_rate"], ">= 0.9",
                            result["success_rate"] >= 0.9))
        checks.append(Check(direction, structure_measure, result["structure_agreement"], ">= 0.5",
                            result["structure_agreement"] >= 0.5))
        if references is not None:
            checks.extend(closer_to_the_reference_checks(direction, target, result["reference"]))
    return results


def reference_figures(inputs: np.ndarray, outputs: np.ndarray, references: np.ndarray) -> dict[str, float]:
    """Outputs and untranslated inputs against the same scenes rendered in the target condition; and
    the structure yardstick's own scores: the input against the same scene in the target condition
    (what a perfect translation scores) and against another scene there (what losing the layout scores)."""
    figures = {"psnr": psnr(outputs, references), "identity_psnr": psnr(inputs, references),
               "l1": l1_distance(outputs, references),
               "structure_agreement": structure_agreement(inputs, references),
               "output_structure_agreement": structure_agreement(references, outputs),
               "edge_agreement": edge_agreement(inputs, references),
               "output_edge_agreement": edge_agreement(references, outputs)}
    if len(inputs) > 1:
        figures["other_scene_structure_agreement"] = structure_agreement(inputs, np.roll(references, 1, axis=0))
    return figures


def structure_yardstick(target: str, reference: dict[str, float]) -> str:
    """The structure check's yardstick, as its label says it: the ceiling and the floor on the same inputs."""
    text = f" (the same scene rendered {target}: {reference['structure_agreement']:.2f}"
    if "other_scene_structure_agreement" in reference:
        text += f", another scene: {reference['other_scene_structure_agreement']:.2f}"
    return text + ")"


def closer_to_the_reference_checks(direction: str, target: str, reference: dict[str, float]) -> list[Check]:
    """The output is nearer the same scene rendered in the target condition than the untranslated
    input is, by PSNR and by Canny edge agreement (fixed thresholds): returning the input fails both."""
    scene = f"the same scene rendered {target}"
    return [Check(direction, f"PSNR vs {scene} (dB)", reference["psnr"],
                  f"> the input's {reference['identity_psnr']:.2f}", reference["psnr"] > reference["identity_psnr"]),
            Check(direction, f"edge agreement with {scene}", reference["output_edge_agreement"],
                  f"> the input's {reference['edge_agreement']:.2f}",
                  reference["output_edge_agreement"] > reference["edge_agreement"])]


# ---------------------------------------------------------------------------------------- edit

def evaluate_edit(studio: Any, classifier: Classifier, args: argparse.Namespace, checks: list[Check],
                  gallery: Gallery) -> dict[str, Any]:
    from training.data.layouts import load_captioned

    photos = load_captioned(captioned_folder(args.emoji), "test", args.resolution, limit=args.spread_images)
    extractor = FeatureExtractor(classifier.network)
    device = next(classifier.network.parameters()).device
    photo_tensors = to_network_input(photos.images, classifier.config.resolution, device)
    by_strength = {}
    gallery.add("edit", "held-out photo", photos.images, captions=photos.captions)
    for strength in EDIT_STRENGTHS:
        edited = np.stack([as_array(studio.edit(photo, caption, strength=strength, seed=index))
                           for index, (photo, caption) in enumerate(zip(photos.images, photos.captions))])
        gallery.add("edit", f"strength {strength:g}", edited)
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
            values = value if isinstance(value, list) else [value]
            parts += [f"--{key.replace('_', '-')}", *(str(item) for item in values)]
    return " ".join(parts)


def markdown(results: dict[str, Any]) -> str:
    classifier = results["classifier"]
    lines = [f"# Quality of {results['model_dir']}", "",
             f"- command: `{results['command']}`", f"- date (UTC): {results['date']}",
             f"- device: {results['device']}", f"- weights: {results['source']}",
             (f"- classifier: `{classifier['path']}` (sha256 {classifier['sha256'][:16]}...); {CLASSIFIER_NOTE}"
              if classifier else "- classifier: none (no section that needs it was measured)"),
             f"- held-out data: {results['data']['emoji']} and {results['data']['scenes']} (test splits, "
             f"{results['data']['resolution']} px)",
             *grid_lines(results.get("grids", [])),
             *(f"- re-measured on {update['date']}: {', '.join(update['sections'])}, by `{update['command']}` "
               f"({update['device']}; classifier: "
               f"{update['classifier']['sha256'][:16] + '...' if update['classifier'] else 'none'})"
               for update in results.get("updates", [])), "",
             "", "\"(classifier)\": measured with the classifier named above; other figures are pixel metrics.", "",
             "| task | measure | value | target | result |", "|---|---|---|---|---|"]
    for check in results["checks"]:
        verdict = "pass" if check["passed"] else "FAIL"
        lines.append(f"| {check['task']} | {check['measure']} | {check['value']:.4g} | {check['target']} | {verdict} |")
    for task, reason in results["missing"].items():
        lines.append(f"| {task} | - | - | - | missing: {reason.split(' (looked in')[0]} |")
    text = results.get("text_to_image", {})
    if text.get("status") == "measured" and text["size"] != text["native_size"]:
        lines += ["", f"Text to image ran at {text['size']} px, the nearest size the Studio accepts; the model's "
                      f"native size is {text['native_size']} px."]
    return "\n".join(lines) + "\n"


def grid_lines(grids: list[str]) -> list[str]:
    """The sample grids as a line of the table's header: names and their folder, or paths when in several."""
    if not grids:
        return []
    folders = {str(Path(path).parent) for path in grids}
    if len(folders) > 1:
        return [f"- sample grids: {', '.join(f'`{path}`' for path in grids)}"]
    return [f"- sample grids: {', '.join(f'`{Path(path).name}`' for path in grids)} in `{folders.pop()}`"]


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
    """`mini` for a folder `python -m training export` wrote or one whose configs give another side
    than SD-Turbo's (a run's model/ folder: its native side is its own, as the app serves it with
    --source mini), else `local` (SD-Turbo's layout and limits)."""
    from models.weights.sources import EXPORT_RECORD, configured_native_side
    from models.weights.specs import SD_TURBO

    if (model_dir / EXPORT_RECORD).is_file() or configured_native_side(model_dir) != SD_TURBO.native_side:
        return "mini"
    return "local"


def measure_sections(sections: dict[str, Callable[[], dict[str, Any]]],
                     checks: list[Check]) -> dict[str, dict[str, Any]]:
    """Run each section in turn, saying on stderr which one runs and how long it took (a whole
    evaluation takes minutes on a CPU); each check a section adds is marked with its name."""
    measured = {}
    for number, (name, section) in enumerate(sections.items(), start=1):
        print(f"evaluate: [{number}/{len(sections)}] {name} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        first_check = len(checks)
        measured[name] = section()
        checks[first_check:] = [dataclasses.replace(check, section=name) for check in checks[first_check:]]
        print(f"evaluate: [{number}/{len(sections)}] {name} done in {time.perf_counter() - started:.0f} s",
              file=sys.stderr, flush=True)
    return measured


def read_earlier_results(path: Path) -> dict[str, Any]:
    """--update's results file, refused with a clear error when it cannot be updated section by section."""
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise runner.TrainingInputError(f"--update {path}: not a readable results file ({error})") from error
    if not isinstance(earlier, dict) or not isinstance(earlier.get("checks"), list):
        raise runner.TrainingInputError(f"--update {path}: not the results of `python -m training evaluate`")
    if any(not check.get("section") for check in earlier["checks"]):
        raise runner.TrainingInputError(f"--update {path}: its checks do not say which section measured them "
                                        f"(an evaluation older than --update); measure every section again")
    return earlier


def with_sections_replaced(earlier: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """The earlier results with the update's sections, checks and grids in place of their own; refused
    when the update read other data, or lost a section the earlier results had measured."""
    remeasured = [name for name in SECTIONS if name in update]
    if update["data"] != earlier.get("data"):
        raise runner.TrainingInputError(f"--update: these figures come from {update['data']}, the earlier ones from "
                                        f"{earlier.get('data')}; measure every section again")
    lost = [name for name in remeasured if update[name].get("status") == "missing"
            and earlier.get(name, {}).get("status") == "measured"]
    if lost:
        raise runner.TrainingInputError(f"--update: {', '.join(lost)} could not be measured now "
                                        f"({update[lost[0]].get('reason')}); the earlier results are kept as they were")
    sections = {name: update[name] if name in remeasured else earlier[name]
                for name in SECTIONS if name in remeasured or name in earlier}
    checks = [check for name in SECTIONS
              for check in (update if name in remeasured else earlier)["checks"] if check["section"] == name]
    stale = {f"{GRID_NAMES.get(name, name)}.jpg" for name in remeasured}  # grids of the old figures
    new_grids = {Path(path).name: path for path in update["grids"]}
    grids = [new_grids.pop(Path(path).name, path) for path in earlier.get("grids", [])]
    grids = [path for path in grids if path in update["grids"] or Path(path).name not in stale]
    grids += list(new_grids.values())
    entry = {"sections": remeasured, **{key: update[key] for key in ("command", "date", "device", "model_dir")},
             "classifier": update["classifier"]}
    header = {key: value for key, value in earlier.items()
              if key not in (*SECTIONS, "checks", "missing", "grids", "updates")}
    return {**header, **sections, "checks": checks, "missing": missing_tasks(sections), "grids": grids,
            "updates": [*earlier.get("updates", []), entry]}


def main(args: argparse.Namespace) -> None:
    from pipelines.studio import Studio

    device = runner.resolve_device(args.device)
    if args.update is not None and args.only is None:
        raise runner.TrainingInputError("--update needs --only: the sections to measure again")
    earlier = read_earlier_results(args.update) if args.update is not None else None
    for name, folder in (("--emoji", args.emoji), ("--scenes", args.scenes)):
        if not folder.is_dir():
            raise runner.TrainingInputError(f"{name} {folder}: no such folder")
    if args.out.suffix.lower() != ".json":
        raise runner.TrainingInputError(f"--out {args.out}: give a .json path (the .md table is written beside it)")
    chosen = args.only or SECTIONS
    needs_classifier = [name for name in chosen if name in CLASSIFIER_SECTIONS]
    if needs_classifier and args.classifier is None:
        raise runner.TrainingInputError(f"--classifier RUN is needed to measure {', '.join(needs_classifier)} "
                                        f"(or leave them out with --only)")
    classifier = load_classifier(args.classifier, device) if needs_classifier else None
    # the autoencoder alone needs only vae/: a finished autoencoder run's model folder will do
    studio = functools.cache(lambda: Studio.load(source=source_for(args.model_dir), model_dir=args.model_dir,
                                                 device=device))
    checks: list[Check] = []
    gallery = Gallery(args.grids)
    sections: dict[str, Callable[[], dict[str, Any]]] = {
        "autoencoder": lambda: evaluate_autoencoder(args, device, checks, gallery),
        "prompt_following": lambda: evaluate_prompt_following(studio(), args, checks, gallery),
        "text_to_image": lambda: evaluate_text_to_image(studio(), classifier, args, checks, gallery),
        "sketch_to_image": lambda: evaluate_sketch(studio(), args, checks, gallery),
        "edge_to_image": lambda: evaluate_edge(studio(), args, checks, gallery),
        "translation": lambda: evaluate_translation(studio(), classifier, args, checks, gallery),
        "edit": lambda: evaluate_edit(studio(), classifier, args, checks, gallery),
    }
    measured = measure_sections({name: section for name, section in sections.items()
                                 if args.only is None or name in args.only}, checks)
    results = {"command": command_line(args), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "device": runner.device_description(device), "model_dir": str(args.model_dir),
               "source": studio().source.describe() if set(measured) - {"autoencoder"} else f"vae/ of {args.model_dir}",
               "classifier": {**classifier.stamp(), "note": CLASSIFIER_NOTE} if classifier else None,
               "data": {"emoji": str(args.emoji), "scenes": str(args.scenes), "split": "test",
                        "resolution": args.resolution},
               **measured, "checks": [check.to_json() for check in checks], "missing": missing_tasks(measured),
               "grids": [str(path) for path in gallery.write()]}
    if earlier is not None:
        results = with_sections_replaced(earlier, results)
    write_atomic(args.out, json.dumps(results, indent=2))
    write_atomic(args.out.with_suffix(".md"), markdown(results))
    print(markdown(results))
