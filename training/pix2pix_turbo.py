"""pix2pix-Turbo: paired translation (sketch or edges -> colour image) on a one-step base.

    python -m training pix2pix-turbo --base {tiny,hub,DIR} --dataset DIR --out RUN --task {sketch,edge}

The dataset is in img2img-turbo's paired layout (train_A/, train_B/ with the same file names,
train_prompts.json; test_* likewise). The recipe of Parmar et al. 2024 on the frozen base: peft
LoRA on the UNet (rank 8, the released target modules) and on the VAE (rank 4, including the four
1x1 skip convs), conv_in retrained, skip convs initialised to 1e-5, one step at t = 999. Only those
train; the base stays SD-Turbo's, so the app loads exactly what is trained.

Inputs are what the app feeds the model: --task sketch binarises train_A (line = 1 for
dark strokes on light, per channel: pipelines.sketch_to_image.sketch_lines); --task edge reads train_A
as Canny maps (white edges on black, edge = 1), or, where the dataset has no train_A, computes
Canny (100/200) of the colour target as pipelines/edge_to_image.py does. Targets are in [-1, 1].

--task sketch trains the stochastic model (paper section 4): gamma ~ U(0, 1) per example; the UNet
sees gamma * encoded sketch + (1 - gamma) * noise; conv_in is (1 - gamma) * pretrained +
gamma * fine-tuned; LoRA outputs and skip activations are scaled by gamma; the reconstruction
terms are weighted by gamma, the GAN term is not. --task edge trains the deterministic model (gamma = 1).

Losses (upstream's weights): L2 1, perceptual 5, GAN 0.5; AdamW, gradient clip 1. Differences from
upstream, because no pretrained network can be downloaded here: the perceptual term uses the
project's own classifier (--perceptual CLASSIFIER_RUN) instead of LPIPS/VGG, or without one a
multi-scale L1; the GAN is a small PatchGAN of our own instead of the CLIP vision-aided
discriminator; upstream's CLIP-similarity term is left out. Upstream's lr is 5e-6 on SD-Turbo; a
small base needs more (the default here is 1e-4).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from peft import set_peft_model_state_dict
from torch import nn

from models.running.adapters import AdapterSwitch
from models.weights.checkpoints import (PEFT_DEFAULT_ALPHA, CheckpointError, TaskWeights, convert_pix2pix,
                                        load_task_weights, save_task_weights)
from models.weights.specs import PIX2PIX_UNET_TARGETS, VAE_TARGETS
from models.running.sd_turbo import SDTurbo
from models.weights.base_loading import load_sd_turbo
from models.weights.downloads import file_sha256
from models.weights.specs import CHECKPOINTS, TaskName
from pipelines.sketch_to_image import LINE_BELOW
from training import runner
from training.common import mirror_rows, shift_rows
from training.turbo_common import (SKIP_TARGETS, BlendedConvIn, CaptionEncoder, GammaState, PatchDiscriminator,
                                   PerceptualLoss, add_lora, check_base_frozen, conv_pair, discriminator_step,
                                   frozen, generator_gan_loss, image_batch, lora_state, new_skip_connections,
                                   one_step, peak_rss_mb, scale_lora_per_example, skip_weights, trainable_parameters)

TASKS: dict[str, TaskName] = {"sketch": "sketch_to_image", "edge": "edge_to_image"}
UNET_ADAPTER = "default"
VAE_ADAPTER = "vae_skip"
EDGE_THRESHOLDS = (100, 200)
SAMPLE_COUNT = 4


def add_arguments(parser: argparse.ArgumentParser) -> None:
    runner.add_common_arguments(parser, base=True, default_resolution=128, default_steps=2000,
                                default_batch_size=4, default_lr=1e-4)
    parser.add_argument("--task", choices=sorted(TASKS), required=True,
                        help="sketch: the stochastic sketch model (gamma); edge: the Canny edge model")
    parser.add_argument("--rank-unet", type=runner.positive_int, default=8, help="UNet LoRA rank (upstream 8)")
    parser.add_argument("--rank-vae", type=runner.positive_int, default=4, help="VAE LoRA rank (upstream 4)")
    parser.add_argument("--lambda-l2", type=float, default=1.0)
    parser.add_argument("--lambda-perceptual", type=float, default=5.0)
    parser.add_argument("--lambda-gan", type=float, default=0.5)
    parser.add_argument("--perceptual", type=Path, default=None, metavar="CLASSIFIER_RUN",
                        help="a `classifier` run whose features give the perceptual loss (default: multi-scale L1)")
    parser.add_argument("--grad-clip", type=float, default=1.0)
    parser.add_argument("--gan-start", type=int, default=0, metavar="STEP",
                        help="train on reconstruction alone before this step, then add the GAN term and the "
                             "discriminator (default 0, as upstream; on a small base a random discriminator "
                             "can win early)")
    parser.add_argument("--mirror", action="store_true",
                        help="mirror each training pair left-right with probability 1/2, control and target "
                             "together (pix2pix's mirroring; against memorising the training concepts)")
    parser.add_argument("--shift", type=runner.non_negative_int, default=0, metavar="PIXELS",
                        help="move each training pair by a random whole-pixel offset of up to PIXELS down and "
                             "right (either way), control and target together; the uncovered border is blank "
                             "(no line, white target). Default 0: no shifts")
    parser.add_argument("--init", type=Path, default=None, metavar="TASK_WEIGHTS",
                        help="start from trained weights of this task instead of upstream's initialisation: a "
                             "task-weights .safetensors file (as export and the app write under img2img-turbo/), "
                             "a model folder holding one (e.g. assets/mini) or a pix2pix-turbo run. Ranks must "
                             "match. --resume takes the run's own checkpoint over it")


# --- data ------------------------------------------------------------------------------------------

def binarise_lines(image: np.ndarray) -> np.ndarray:
    """The app's (and upstream's) sketch rule, per channel: a value below half is a line
    (pipelines.sketch_to_image.sketch_lines). (H, W, 3) bool."""
    return np.asarray(image) < LINE_BELOW


def edge_lines(image: np.ndarray) -> np.ndarray:
    """An edge image as the app's edge map, per channel: bright (Canny's 255, upstream's and our
    datasets' white edges on black) is an edge. (H, W, 3) bool."""
    return np.asarray(image) >= LINE_BELOW


def canny_map(image: np.ndarray) -> np.ndarray:
    """The app's edge rule: cv2.Canny(RGB, 100, 200) > 0 (pipelines.edge_to_image)."""
    return cv2.Canny(np.ascontiguousarray(image), *EDGE_THRESHOLDS) > 0


def control_maps(inputs: np.ndarray | None, targets: np.ndarray, task: str) -> torch.Tensor:
    """bool (N, H, W, 3) control maps: binarised inputs, or Canny of the targets for edges without inputs."""
    if inputs is None:
        if task != "edge":
            raise runner.TrainingInputError("--task sketch needs train_A (the sketches); only edge can derive them")
        return torch.from_numpy(np.stack([np.repeat(canny_map(image)[..., None], 3, axis=-1) for image in targets]))
    if task == "edge":
        return torch.from_numpy(np.stack([edge_lines(image) for image in inputs]))
    return torch.from_numpy(np.stack([binarise_lines(image) for image in inputs]))


def load_pairs(root: Path, task: str, resolution: int) -> tuple[np.ndarray | None, np.ndarray, list[str]]:
    """(train_A or None, train_B, captions): the paired layout; for edges train_A may be absent."""
    from training.data.layouts import DatasetError, load_paired, read_image

    if task == "sketch" or (root / "train_A").is_dir():
        data = load_paired(root, "train", resolution)
        return data.sources, data.targets, data.captions
    folder, prompts_path = root / "train_B", root / "train_prompts.json"
    if not folder.is_dir() or not prompts_path.is_file():
        raise DatasetError(f"{root}: --task edge needs train_B/ and train_prompts.json (train_A/ is optional)")
    prompts = json.loads(prompts_path.read_text(encoding="utf-8"))
    if not isinstance(prompts, dict):
        raise DatasetError(f"{prompts_path} must be a JSON object mapping file name -> caption")
    names = sorted(path.name for path in folder.iterdir() if not path.name.startswith("."))
    missing = [name for name in names if not isinstance(prompts.get(name), str) or not prompts[name].strip()]
    if missing:
        raise DatasetError(f"{prompts_path} has no caption for {missing[:5]}")
    return None, np.stack([read_image(folder / name, resolution) for name in names]), [prompts[n].strip() for n in names]


def control_batch(maps: torch.Tensor, indices: torch.Tensor, device: torch.device) -> torch.Tensor:
    """{0, 1} three-channel float controls, as the pipelines hand them to the model."""
    return maps[indices].to(device=device, dtype=torch.float32).permute(0, 3, 1, 2).contiguous()


# --- the model ---------------------------------------------------------------------------------------

class Pix2PixTurbo(nn.Module):
    """The trainable parts on the frozen base: UNet LoRA + conv_in, VAE LoRA, skips + their LoRA."""

    def __init__(self, base: SDTurbo, stochastic: bool, rank_unet: int, rank_vae: int) -> None:
        super().__init__()
        self.base = base
        self.stochastic = stochastic
        self.rank_unet, self.rank_vae = rank_unet, rank_vae
        self.gamma = GammaState()
        self.pretrained_conv_in = conv_pair(base.unet.conv_in)
        base.unet.conv_in = BlendedConvIn(base.unet.conv_in, self.gamma)
        add_lora(base.unet, UNET_ADAPTER, rank_unet, PEFT_DEFAULT_ALPHA, PIX2PIX_UNET_TARGETS)
        self.vae_targets = [target for target in VAE_TARGETS if target not in SKIP_TARGETS]
        add_lora(base.vae, VAE_ADAPTER, rank_vae, PEFT_DEFAULT_ALPHA, self.vae_targets)
        self.skips = new_skip_connections(base)
        add_lora(self.skips, VAE_ADAPTER, rank_vae, PEFT_DEFAULT_ALPHA, SKIP_TARGETS)
        for module in (base.unet, base.vae, self.skips):
            for name, parameter in module.named_parameters():
                parameter.requires_grad_(".lora_" in name or name.startswith("conv_in.finetuned"))
        for conv in self.skips.convs():
            conv.base_layer.weight.requires_grad_(True)
        scale_lora_per_example([base.unet, base.vae, self.skips], [UNET_ADAPTER, VAE_ADAPTER], self.gamma)
        for model, adapter in ((base.unet, UNET_ADAPTER), (base.vae, VAE_ADAPTER), (self.skips, VAE_ADAPTER)):
            switch = AdapterSwitch(model)
            switch.refresh()
            switch.apply({adapter: 1.0})
        check_base_frozen(base)

    def trained_modules(self) -> dict[str, nn.Module]:
        return {"unet": self.base.unet, "vae": self.base.vae, "skips": self.skips}

    def forward(self, control: torch.Tensor, embeddings: torch.Tensor, gamma: torch.Tensor | None = None,
                noise: torch.Tensor | None = None) -> torch.Tensor:
        with self.gamma.using(gamma):
            return one_step(self.base, self.skips, control, embeddings, gamma, noise)

    def upstream_checkpoint(self) -> dict[str, Any]:
        """The trained weights under the keys upstream's train_pix2pix_turbo.py saves."""
        conv_in: nn.Module = self.base.unet.conv_in
        unet_state = lora_state(self.base.unet, UNET_ADAPTER, keep_adapter_name=UNET_ADAPTER)
        finetuned = conv_pair(conv_in.finetuned)
        if self.stochastic:
            unet_state.update({f"conv_in.conv_in_curr.{k}": v for k, v in finetuned.items()})
            unet_state.update({f"conv_in.conv_in_pretrained.{k}": v for k, v in self.pretrained_conv_in.items()})
        else:
            unet_state.update({f"conv_in.{k}": v for k, v in finetuned.items()})
        vae_state = lora_state(self.base.vae, VAE_ADAPTER, keep_adapter_name=VAE_ADAPTER)
        vae_state.update({f"decoder.{k}": v for k, v in lora_state(self.skips, VAE_ADAPTER, VAE_ADAPTER).items()})
        vae_state.update({f"decoder.{name.replace('.weight', '.base_layer.weight')}": tensor
                          for name, tensor in skip_weights(self.skips).items()})
        return {"unet_lora_target_modules": list(PIX2PIX_UNET_TARGETS), "vae_lora_target_modules": list(VAE_TARGETS),
                "rank_unet": self.rank_unet, "rank_vae": self.rank_vae,
                "state_dict_unet": unet_state, "state_dict_vae": vae_state}

    def task_weights(self, task: TaskName) -> TaskWeights:
        """What the app loads, made from the upstream layout by the app's own converter."""
        return convert_pix2pix(self.upstream_checkpoint(), task)

    def load_trained(self, weights: TaskWeights) -> None:
        """Take trained weights (what task_weights gives) as this model's: every trained parameter of
        each module and no other, at this model's LoRA ranks and scale (CheckpointError naming what
        does not fit)."""
        groups = [weights.unet_lora.get("main"), weights.vae_lora, weights.skip_lora]
        if set(weights.unet_lora) != {"main"} or weights.vae_overrides:
            raise CheckpointError(f"not pix2pix-Turbo weights (UNet LoRA groups {sorted(weights.unet_lora)}, "
                                  f"{len(weights.vae_overrides)} VAE overrides)")
        if any(group is not None and group.alpha != PEFT_DEFAULT_ALPHA for group in groups):
            raise CheckpointError(f"LoRA alpha other than {PEFT_DEFAULT_ALPHA}: the adapters would scale differently")
        skip_lora = weights.skip_lora.state if weights.skip_lora is not None else {}
        loras = {"unet": (weights.unet_lora["main"].state, UNET_ADAPTER),
                 "vae": (weights.vae_lora.state, VAE_ADAPTER), "skips": (skip_lora, VAE_ADAPTER)}
        plain = {"unet": {f"conv_in.finetuned.{key}": value for key, value in weights.conv_in.items()}, "vae": {},
                 "skips": {key.replace(".weight", ".base_layer.weight"): value
                           for key, value in weights.skip_weights.items()}}
        for name, module in self.trained_modules().items():
            state, adapter = loras[name]
            expected_plain = {key for key, parameter in module.named_parameters()
                              if parameter.requires_grad and ".lora_" not in key}
            try:
                result = set_peft_model_state_dict(module, state, adapter_name=adapter)
                module.load_state_dict(plain[name], strict=False)
            except RuntimeError as error:  # the same names at other shapes: other LoRA ranks
                raise CheckpointError(f"the {name} weights do not fit this model (ranks {self.rank_unet}/"
                                      f"{self.rank_vae}): {error}") from error
            missing = sorted({key for key in result.missing_keys if f".{adapter}." in key and ".lora_" in key}
                             | (expected_plain - set(plain[name])))
            unexpected = sorted(set(result.unexpected_keys) | (set(plain[name]) - expected_plain))
            if missing or unexpected:
                raise CheckpointError(f"the {name} weights do not fit this model (missing: {missing[:3]}, "
                                      f"unexpected: {unexpected[:3]}; ranks {self.rank_unet}/{self.rank_vae})")


def init_weights_file(path: Path, task: TaskName) -> Path:
    """--init as a file: itself, or the task's file in a run's model/ (or in a model folder)."""
    filename = CHECKPOINTS[task].converted_filename
    for candidate in (path, path / "model" / "img2img-turbo" / filename, path / "img2img-turbo" / filename):
        if candidate.is_file():
            return candidate
    raise runner.TrainingInputError(f"--init {path}: neither a task-weights file nor a folder holding "
                                    f"img2img-turbo/{filename}")


def load_init_weights(model: Pix2PixTurbo, path: Path, task: TaskName) -> Path:
    """Load --init into the model, with errors that name the file; returns the file."""
    file = init_weights_file(path, task)
    try:
        model.load_trained(load_task_weights(file, task))
    except CheckpointError as error:
        raise runner.TrainingInputError(f"--init {file}: {error}") from error
    return file


# --- training ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LossWeights:
    l2: float = 1.0
    perceptual: float = 5.0
    gan: float = 0.5


@dataclass
class Batch:
    control: torch.Tensor  # {0, 1}, (B, 3, H, W)
    target: torch.Tensor  # [-1, 1], (B, 3, H, W)
    embeddings: torch.Tensor
    gamma: torch.Tensor | None = None  # (B,), the stochastic model only
    noise: torch.Tensor | None = None  # (B, 4, H/8, W/8)


def training_step(model: Pix2PixTurbo, discriminator: nn.Module, optimizers: dict[str, torch.optim.Optimizer],
                  perceptual: PerceptualLoss, batch: Batch, weights: LossWeights, clip: float,
                  adversarial: bool = True, *, trainer: runner.Trainer) -> dict[str, float]:
    """One generator update (reconstruction weighted by gamma, GAN not), then one discriminator
    update; with adversarial=False, the reconstruction terms alone and no discriminator update."""
    device = batch.target.device
    weight = batch.gamma if batch.gamma is not None else torch.ones(len(batch.target), device=device)
    with trainer.autocast():
        fake = model(batch.control, batch.embeddings, batch.gamma, batch.noise).float()
        l2 = (weight * (fake - batch.target).pow(2).flatten(1).mean(1)).mean()
        percept = (weight * perceptual(fake, batch.target)).mean()
        loss = weights.l2 * l2 + weights.perceptual * percept
        if adversarial:
            with frozen(discriminator):
                gan = generator_gan_loss(discriminator(fake))
            loss = loss + weights.gan * gan
    trainer.backward(loss)
    trainer.step(optimizers["generator"], clip)
    losses = {"loss": loss.item(), "l2": l2.item(), "perceptual": percept.item()}
    if adversarial:
        with trainer.autocast():
            d_loss = discriminator_step([discriminator], optimizers["discriminator"], [(batch.target, fake)], clip,
                                        trainer)
        losses.update({"gan": gan.item(), "disc": d_loss.item()})
    return losses


def load_base(args: argparse.Namespace, scratch: Path, trainer: runner.Trainer) -> tuple[SDTurbo, Path]:
    """--base loaded on the trainer's device; the folder is made (tiny) or downloaded (hub) by the
    main process only, and every process has loaded it before scratch may go."""
    folder = trainer.from_main(lambda: runner.base_folder(args.base, scratch))
    base = load_sd_turbo(folder, trainer.device, torch.float32)
    trainer.wait()
    return base, folder


def base_record(args: argparse.Namespace, folder: Path) -> dict[str, str]:
    """How export finds the base again: tiny is rebuilt (deterministic), others by folder."""
    return {"base": args.base, "base_dir": "" if args.base == "tiny" else str(folder.resolve())}


def write_task_folder(model_dir: Path, weights: dict[TaskName, TaskWeights], base: dict[str, str],
                      extra: dict[str, Any]) -> None:
    """OUT/model: img2img-turbo/<the file name the app looks for> per task, and task.json."""
    for task, task_weights in weights.items():
        save_task_weights(task_weights, model_dir / "img2img-turbo" / CHECKPOINTS[task].converted_filename)
    (model_dir / "task.json").write_text(json.dumps({**base, "tasks": sorted(weights), **extra}, indent=2))


def main(args: argparse.Namespace) -> None:
    runner.check_resolution(args.resolution)
    if args.shift * 2 >= args.resolution:
        raise runner.TrainingInputError(f"--shift {args.shift}: less than half of --resolution {args.resolution}, "
                                        f"or whole pairs move out of the image")
    trainer = runner.Trainer(args)
    device = trainer.device
    task = TASKS[args.task]
    sources, target_images, captions = load_pairs(args.dataset, args.task, args.resolution)
    controls = control_maps(sources, target_images, args.task)
    targets = torch.from_numpy(target_images)
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory(prefix="pix2pix-base-") as scratch:
        base, base_dir = load_base(args, Path(scratch), trainer)
    model = Pix2PixTurbo(base, args.task == "sketch", args.rank_unet, args.rank_vae)
    init: dict[str, str] = {}
    if args.init is not None:
        init_file = load_init_weights(model, args.init, task)
        init = {"init": str(init_file.resolve()), "init_sha256": file_sha256(init_file)}
    discriminator = PatchDiscriminator().to(device)
    modules = {**model.trained_modules(), "discriminator": discriminator}
    runner.prepare_modules({"unet": base.unet}, device, args.gradient_checkpointing,
                           model.gamma.checkpoint)
    generator_parameters = trainable_parameters(*model.trained_modules().values())
    optimizers = {"generator": trainer.adamw(generator_parameters, lr=args.lr),
                  "discriminator": trainer.adamw(discriminator.parameters(), lr=args.lr)}
    perceptual = PerceptualLoss(args.perceptual, device)
    encode = CaptionEncoder(base)
    latent_side = args.resolution // 8

    weights = LossWeights(args.lambda_l2, args.lambda_perceptual, args.lambda_gan)

    def step(index: int) -> dict[str, float]:
        indices = trainer.batch_indices(len(targets), index)
        draws = runner.step_generator(args.seed, index)
        gamma = noise = None
        if model.stochastic:  # drawn for the global batch; this process takes its rows
            gamma = trainer.shard(torch.rand(trainer.global_batch, generator=draws)).to(device)
            noise = torch.randn((trainer.global_batch, 4, latent_side, latent_side), generator=draws)
            noise = trainer.shard(noise).to(device)
        control, target = control_batch(controls, indices, device), image_batch(targets, indices, device)
        if args.mirror:  # drawn after gamma and noise, so that a run without --mirror draws as before
            mirrored = trainer.shard(torch.rand(trainer.global_batch, generator=draws) < 0.5).to(device)
            control, target = mirror_rows(control, mirrored), mirror_rows(target, mirrored)
        if args.shift:  # drawn after the mirroring, likewise
            offsets = torch.randint(-args.shift, args.shift + 1, (trainer.global_batch, 2), generator=draws)
            offsets = trainer.shard(offsets)
            control, target = shift_rows(control, offsets, fill=0.0), shift_rows(target, offsets, fill=1.0)
        batch = Batch(control, target, encode([captions[i] for i in indices.tolist()]), gamma, noise)
        return training_step(model, discriminator, optimizers, perceptual, batch, weights, args.grad_clip,
                             adversarial=index >= args.gan_start, trainer=trainer)

    shown = torch.arange(min(SAMPLE_COUNT, len(targets)))

    def sample(path: Path) -> None:
        control = control_batch(controls, shown, device)
        embeddings = encode([captions[i] for i in shown.tolist()])
        rows = [control * 2 - 1, model(control, embeddings).float()]
        if model.stochastic:
            noise = torch.randn((len(shown), 4, latent_side, latent_side), generator=torch.Generator().manual_seed(0))
            rows.append(model(control, embeddings, torch.full((len(shown),), 0.4, device=device), noise.to(device)).float())
        rows.append(image_batch(targets, shown, device))
        runner.save_grid(torch.cat(rows), path, columns=len(shown))

    def finish(model_dir: Path) -> dict[str, Any]:
        write_task_folder(model_dir, {task: model.task_weights(task)}, base_record(args, base_dir),
                          {"recipe": "pix2pix-turbo", "perceptual": perceptual.description})
        return {"peak_rss_mb": peak_rss_mb(), "perceptual_loss": perceptual.description,
                "trainable_parameters": sum(p.numel() for p in generator_parameters)}

    config = {"task": task, "stochastic": model.stochastic, "perceptual": perceptual.description,
              "gan": "PatchDiscriminator (ours; upstream uses a CLIP vision-aided GAN)",
              **base_record(args, base_dir), **init}
    runner.run_training(args, recipe="pix2pix-turbo", modules=modules, optimizers=optimizers, step=step,
                        sample=sample, finish=finish, config=config, trainer=trainer)
