"""CycleGAN-Turbo: unpaired translation between two domains (a <-> b) on a one-step base.

    python -m training cyclegan-turbo --base {tiny,hub,DIR} --dataset DIR --out RUN

The dataset is in img2img-turbo's unpaired layout (train_A/, train_B/, fixed_prompt_a.txt,
fixed_prompt_b.txt; test_A/, test_B/). One network translates both ways: a -> b is conditioned on
b's caption, b -> a on a's. As in upstream's release layout: one UNet with three LoRA adapters
(down blocks + conv_in, up blocks, the rest; lora_alpha = rank), and per direction its own VAE
LoRA (rank 4) and its own skip convs (+ LoRA) on the shared frozen VAE. Losses (upstream's weights):
cycle L1 1 + perceptual 10, identity L1 1 + perceptual 1, GAN 0.5 with one discriminator per
domain; AdamW, gradient clip 10. The generator's terms are summed into one update per step
(upstream steps after each group), which saves a third of the forwards, and each direction's
translation and identity pass share one batched forward.

The discriminators are frozen while the generator's GAN loss is back-propagated, and their update
refuses to run if they hold any gradient: upstream's training let that loss write into the
discriminators (img2img-turbo #56, fixed in #62), teaching them to call fakes real, and the trained
models returned their input unchanged (#53, #87). The run's finish also measures how far outputs
move from the inputs and says so in the record.

The app runs day_to_night / night_to_day and clear_to_rainy / rainy_to_clear with fixed captions
("driving in the day", "driving in the night", "driving in heavy rain"); a run whose fixed prompts
are those pairs is exported as those two tasks. --app-pair trains with the app's captions in place
of the dataset's. Differences from upstream: the perceptual term is our classifier's (or
multi-scale L1), the discriminators are small PatchGANs of our own (upstream: CLIP vision-aided).
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.running.adapters import AdapterSwitch
from models.weights.checkpoints import PEFT_DEFAULT_ALPHA, TaskWeights, convert_cyclegan
from models.weights.random_tasks import cyclegan_unet_target_groups
from models.weights.specs import VAE_TARGETS
from models.weights.task_loading import base_vae_state
from models.running.sd_turbo import SDTurbo
from models.weights.specs import CHECKPOINTS, TaskName, VaeSide
from training import runner
from training.pix2pix_turbo import base_record, load_base, write_task_folder
from training.turbo_common import (SKIP_TARGETS, CaptionEncoder, PatchDiscriminator, PerceptualLoss, add_lora,
                                   check_base_frozen, discriminator_step, frozen, generator_gan_loss, image_batch,
                                   lora_state, new_skip_connections, one_step, peak_rss_mb, skip_weights,
                                   trainable_parameters)

UNET_GROUPS = ("encoder", "decoder", "others")
SIDES: tuple[VaeSide, VaeSide] = ("a2b", "b2a")
VAE_ADAPTER = "vae_skip"
APP_PAIRS: dict[str, tuple[TaskName, TaskName]] = {"day_night": ("day_to_night", "night_to_day"),
                                                  "clear_rainy": ("clear_to_rainy", "rainy_to_clear")}
SAMPLE_COUNT = 4
UNCHANGED_THRESHOLD = 0.02  # mean |output - input| in [-1, 1] units below which a direction "did nothing"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    runner.add_common_arguments(parser, base=True, default_resolution=128, default_steps=2000,
                                default_batch_size=2, default_lr=1e-4)
    parser.add_argument("--rank-unet", type=runner.positive_int, default=16,
                        help="UNet LoRA rank (upstream 128 on SD-Turbo; smaller suits a small base)")
    parser.add_argument("--rank-vae", type=runner.positive_int, default=4, help="VAE LoRA rank (upstream 4)")
    parser.add_argument("--lambda-cycle", type=float, default=1.0)
    parser.add_argument("--lambda-cycle-perceptual", type=float, default=10.0)
    parser.add_argument("--lambda-identity", type=float, default=1.0)
    parser.add_argument("--lambda-identity-perceptual", type=float, default=1.0)
    parser.add_argument("--lambda-gan", type=float, default=0.5)
    parser.add_argument("--perceptual", type=Path, default=None, metavar="CLASSIFIER_RUN",
                        help="a `classifier` run whose features give the perceptual loss (default: multi-scale L1)")
    parser.add_argument("--grad-clip", type=float, default=10.0)
    parser.add_argument("--app-pair", choices=sorted(APP_PAIRS), default=None,
                        help="train with the app's captions for this pair instead of the dataset's fixed prompts")


def app_tasks(caption_a: str, caption_b: str) -> tuple[TaskName, TaskName] | None:
    """The app's (a2b, b2a) tasks that run with exactly these captions, if any."""
    for a2b, b2a in APP_PAIRS.values():
        if CHECKPOINTS[a2b].caption == caption_b and CHECKPOINTS[b2a].caption == caption_a:
            return a2b, b2a
    return None


class CycleGANTurbo(nn.Module):
    """One UNet with three LoRA groups, and per direction a VAE LoRA and skip convs (+ LoRA)."""

    def __init__(self, base: SDTurbo, rank_unet: int, rank_vae: int) -> None:
        super().__init__()
        self.base = base
        self.rank_unet, self.rank_vae = rank_unet, rank_vae
        self.unet_targets = cyclegan_unet_target_groups(base.unet)
        for group in UNET_GROUPS:
            add_lora(base.unet, group, rank_unet, rank_unet, self.unet_targets[group])
        self.vae_targets = [target for target in VAE_TARGETS if target not in SKIP_TARGETS]
        self.skips = nn.ModuleDict()
        for side in SIDES:
            add_lora(base.vae, side, rank_vae, PEFT_DEFAULT_ALPHA, self.vae_targets)
            self.skips[side] = new_skip_connections(base)
            add_lora(self.skips[side], VAE_ADAPTER, rank_vae, PEFT_DEFAULT_ALPHA, SKIP_TARGETS)
        for module in (base.unet, base.vae, self.skips):
            for name, parameter in module.named_parameters():
                parameter.requires_grad_(".lora_" in name or (module is self.skips and "base_layer" in name))
        self.unet_switch = AdapterSwitch(base.unet)
        self.vae_switch = AdapterSwitch(base.vae)
        for switch in (self.unet_switch, self.vae_switch):
            switch.refresh()
        self.unet_switch.apply({group: 1.0 for group in UNET_GROUPS})
        for side in SIDES:
            switch = AdapterSwitch(self.skips[side])
            switch.refresh()
            switch.apply({VAE_ADAPTER: 1.0})
        check_base_frozen(base)

    def trained_modules(self) -> dict[str, nn.Module]:
        return {"unet": self.base.unet, "vae": self.base.vae, "skips": self.skips}

    def forward(self, images: torch.Tensor, side: VaeSide, embeddings: torch.Tensor) -> torch.Tensor:
        self.vae_switch.apply({side: 1.0})
        return one_step(self.base, self.skips[side], images, embeddings)

    def upstream_checkpoint(self) -> dict[str, Any]:
        """The trained weights under the keys upstream's train_cyclegan_turbo.py saves: UNet LoRA
        per group (no adapter name), and both VAEs whole (`vae.` a2b, `vae_b2a.` b2a) with LoRA
        ("vae_skip") and skip convs, in sd_vae_enc and sd_vae_dec alike."""
        vae_states: dict[str, torch.Tensor] = {}
        base_state = {name: tensor.detach().float().cpu() for name, tensor in self.base.vae.state_dict().items()
                      if ".lora_" not in name}
        for side, prefix in zip(SIDES, ("vae.", "vae_b2a."), strict=True):
            state = dict(base_state)
            state.update(lora_state(self.base.vae, side, keep_adapter_name=VAE_ADAPTER))
            state.update({f"decoder.{k}": v for k, v in lora_state(self.skips[side], VAE_ADAPTER, VAE_ADAPTER).items()})
            state.update({f"decoder.{name.replace('.weight', '.base_layer.weight')}": tensor
                          for name, tensor in skip_weights(self.skips[side]).items()})
            vae_states.update({prefix + key: value for key, value in state.items()})
        checkpoint: dict[str, Any] = {
            "l_target_modules_encoder": self.unet_targets["encoder"],
            "l_target_modules_decoder": self.unet_targets["decoder"],
            "l_modules_others": self.unet_targets["others"],
            "rank_unet": self.rank_unet, "rank_vae": self.rank_vae,
            "vae_lora_target_modules": list(VAE_TARGETS),
            "sd_vae_enc": vae_states, "sd_vae_dec": vae_states,
        }
        for group, key in zip(UNET_GROUPS, ("sd_encoder", "sd_decoder", "sd_other"), strict=True):
            checkpoint[key] = lora_state(self.base.unet, group)
        return checkpoint

    def task_weights(self, tasks: tuple[TaskName, TaskName]) -> dict[TaskName, TaskWeights]:
        """The app's two task files (a2b, b2a), made by the app's converter from the upstream layout."""
        raw = self.upstream_checkpoint()
        base_state = base_vae_state(self.base)
        return {task: convert_cyclegan(raw, task, side, base_state) for task, side in zip(tasks, SIDES, strict=True)}


@dataclass(frozen=True)
class LossWeights:
    cycle: float = 1.0
    cycle_perceptual: float = 10.0
    identity: float = 1.0
    identity_perceptual: float = 1.0
    gan: float = 0.5


def training_step(model: CycleGANTurbo, discriminators: tuple[nn.Module, nn.Module],
                  optimizers: dict[str, torch.optim.Optimizer], perceptual: PerceptualLoss, real_a: torch.Tensor,
                  real_b: torch.Tensor, texts: tuple[torch.Tensor, torch.Tensor], weights: LossWeights,
                  clip: float, *, trainer: runner.Trainer) -> dict[str, float]:
    """One generator update on cycle + identity + GAN (discriminators frozen), then one update of
    the discriminators (disc_a: real a vs b->a fakes, disc_b: real b vs a->b fakes)."""
    disc_a, disc_b = discriminators
    emb_a, emb_b = (text.expand(len(real_a), -1, -1) for text in texts)

    def distance(x: torch.Tensor, y: torch.Tensor, perceptual_weight: float) -> torch.Tensor:
        return (x - y).abs().mean() + perceptual_weight * perceptual(x, y).mean()

    with trainer.autocast():
        # each direction translates and keeps (identity) in one batch: four forwards, not six
        fake_b, same_b = model(torch.cat([real_a, real_b]), "a2b", emb_b.repeat(2, 1, 1)).float().chunk(2)
        fake_a, same_a = model(torch.cat([real_b, real_a]), "b2a", emb_a.repeat(2, 1, 1)).float().chunk(2)
        cycle = (distance(model(fake_b, "b2a", emb_a).float(), real_a, weights.cycle_perceptual)
                 + distance(model(fake_a, "a2b", emb_b).float(), real_b, weights.cycle_perceptual))
        identity = (distance(same_b, real_b, weights.identity_perceptual)
                    + distance(same_a, real_a, weights.identity_perceptual))
        with frozen(disc_a, disc_b):
            gan = generator_gan_loss(disc_b(fake_b)) + generator_gan_loss(disc_a(fake_a))
        loss = weights.cycle * cycle + weights.identity * identity + weights.gan * gan
    trainer.backward(loss)
    trainer.step(optimizers["generator"], clip)
    with trainer.autocast():
        d_loss = discriminator_step([disc_a, disc_b], optimizers["discriminator"],
                                    [(real_a, fake_a), (real_b, fake_b)], clip, trainer)
    return {"loss": loss.item(), "cycle": cycle.item(), "identity": identity.item(), "gan": gan.item(),
            "disc": d_loss.item(), "moved": float((fake_b.detach() - real_a).abs().mean())}


def movement(model: CycleGANTurbo, images: torch.Tensor, side: VaeSide, embeddings: torch.Tensor) -> float:
    """Mean |output - input| of a direction: near 0 means it returns its input unchanged."""
    output = model(images, side, embeddings.expand(len(images), -1, -1))
    return float((output.float() - images).abs().mean())


def main(args: argparse.Namespace) -> None:
    from training.data.layouts import load_unpaired

    runner.check_resolution(args.resolution)
    trainer = runner.Trainer(args)
    device = trainer.device
    data = load_unpaired(args.dataset, "train", args.resolution)
    caption_a, caption_b = data.prompt_a, data.prompt_b
    if args.app_pair is not None:
        a2b_task, b2a_task = APP_PAIRS[args.app_pair]
        caption_a, caption_b = CHECKPOINTS[b2a_task].caption, CHECKPOINTS[a2b_task].caption
    tasks = app_tasks(caption_a, caption_b)
    images_a, images_b = torch.from_numpy(data.images_a), torch.from_numpy(data.images_b)
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory(prefix="cyclegan-base-") as scratch:
        base, base_dir = load_base(args, Path(scratch), trainer)
    model = CycleGANTurbo(base, args.rank_unet, args.rank_vae)
    disc_a, disc_b = PatchDiscriminator().to(device), PatchDiscriminator().to(device)
    runner.prepare_modules({"unet": base.unet}, device, args.gradient_checkpointing)
    modules = {**model.trained_modules(), "disc_a": disc_a, "disc_b": disc_b}
    generator_parameters = trainable_parameters(*model.trained_modules().values())
    optimizers = {"generator": trainer.adamw(generator_parameters, lr=args.lr),
                  "discriminator": trainer.adamw([*disc_a.parameters(), *disc_b.parameters()], lr=args.lr)}
    perceptual = PerceptualLoss(args.perceptual, device)
    encode = CaptionEncoder(base)
    text_a, text_b = encode([caption_a]), encode([caption_b])

    weights = LossWeights(args.lambda_cycle, args.lambda_cycle_perceptual, args.lambda_identity,
                          args.lambda_identity_perceptual, args.lambda_gan)

    def step(index: int) -> dict[str, float]:
        real_a = image_batch(images_a, trainer.batch_indices(len(images_a), index), device)
        real_b = image_batch(images_b, trainer.batch_indices(len(images_b), index, seed=args.seed + 1), device)
        return training_step(model, (disc_a, disc_b), optimizers, perceptual, real_a, real_b, (text_a, text_b),
                             weights, args.grad_clip, trainer=trainer)

    shown_a = torch.arange(min(SAMPLE_COUNT, len(images_a)))
    shown_b = torch.arange(min(SAMPLE_COUNT, len(images_b)))

    def sample(path: Path) -> None:
        real_a, real_b = image_batch(images_a, shown_a, device), image_batch(images_b, shown_b, device)
        fake_b = model(real_a, "a2b", text_b.expand(len(real_a), -1, -1)).float()
        fake_a = model(real_b, "b2a", text_a.expand(len(real_b), -1, -1)).float()
        columns = max(len(real_a), len(real_b))
        rows = [torch.cat([row, row.new_ones(columns - len(row), *row.shape[1:])])
                for row in (real_a, fake_b, real_b, fake_a)]
        runner.save_grid(torch.cat(rows), path, columns=columns)

    def finish(model_dir: Path) -> dict[str, Any]:
        metrics: dict[str, Any] = {
            "moved_a2b": movement(model, image_batch(images_a, shown_a, device), "a2b", text_b),
            "moved_b2a": movement(model, image_batch(images_b, shown_b, device), "b2a", text_a),
            "peak_rss_mb": peak_rss_mb(), "perceptual_loss": perceptual.description,
            "trainable_parameters": sum(p.numel() for p in generator_parameters)}
        unchanged = [side for side in SIDES if metrics[f"moved_{side}"] < UNCHANGED_THRESHOLD]
        if unchanged:
            metrics["warning"] = (f"direction(s) {', '.join(unchanged)} return their input nearly unchanged "
                                  f"(mean |output - input| < {UNCHANGED_THRESHOLD}); the translation did not train")
            print(f"WARNING: {metrics['warning']}")
        extra = {"recipe": "cyclegan-turbo", "caption_a": caption_a, "caption_b": caption_b,
                 "perceptual": perceptual.description}
        if tasks is None:
            extra["note"] = ("the fixed prompts match no app task; export refuses this run "
                             f"(retrain with --app-pair {{{','.join(APP_PAIRS)}}} to serve it in the app)")
            write_task_folder(model_dir, {}, base_record(args, base_dir), extra)
        else:
            write_task_folder(model_dir, model.task_weights(tasks), base_record(args, base_dir), extra)
        return metrics

    config = {"caption_a": caption_a, "caption_b": caption_b, "app_tasks": list(tasks or []),
              "perceptual": perceptual.description,
              "gan": "two PatchDiscriminators (ours; upstream uses CLIP vision-aided GANs)",
              **base_record(args, base_dir)}
    runner.run_training(args, recipe="cyclegan-turbo", modules=modules, optimizers=optimizers, step=step,
                        sample=sample, finish=finish, images_per_step=2 * trainer.global_batch, config=config,
                        trainer=trainer)
