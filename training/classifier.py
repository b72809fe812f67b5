"""Train the project's own image classifier (emoji concept, emoji style, scene condition).

A small conv net (pure torch; about 0.5M parameters at the default widths with the emoji's 1,644
concepts, 0.2M of them in the concept head), trained on the TRAIN split of each --dataset's
captioned images: emoji rows give concept and style labels, scene rows a condition label (day /
night / rainy); a head is trained only on the rows that carry its label.
Augmentation, light on purpose: random crops (zoom 0.85-1), brightness/contrast/saturation jitter
of +-10%, horizontal flips on scenes only (emoji concepts include left and right arrows).

It stands in for the networks that cannot be downloaded here (TRAINING.md, "Yardsticks"):
- its pooled penultimate features give a Frechet distance (training.metrics);
- its heads give concept recognition (top-1 / top-5) and domain success;
- `load_feature_extractor` + `perceptual_distance` give an LPIPS-like perceptual loss.

Writes OUT/model/classifier.safetensors and OUT/model/classifier.json (widths, resolution, label
names); held-out accuracy on each dataset's test split goes into OUT/record.json's metrics.

Several processes (runner.Trainer): augmentation is drawn for the global batch and sharded;
BatchNorm uses the statistics of the batch over all processes (GlobalBatchNorm2d) and the loss
weighs each process's labelled rows by their share, so N processes train what one process with the
global batch trains, up to dropout, which draws from each process's own seed.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from training import runner
from training.common import parameter_count, parse_widths
from training.metrics import network_stamp, top_k_accuracy

RECIPE = "classifier"
WEIGHTS_FILE = "classifier.safetensors"
CONFIG_FILE = "classifier.json"
HEADS = ("concept", "style", "condition")  # the metadata.jsonl field each head learns
IGNORE = -100  # label of a row that does not carry a head's field
LABEL_SMOOTHING = 0.1
WARMUP_STEPS = 50
SAMPLE_COUNT = 16


# ------------------------------------------------------------------------------------ the network

@dataclass(frozen=True)
class ClassifierConfig:
    """What rebuilds the network: input size, stage widths and each head's label names."""

    resolution: int
    widths: tuple[int, ...] = (16, 32, 64, 128)
    labels: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "widths": list(self.widths), "labels": {k: list(v) for k, v in self.labels.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClassifierConfig:
        return cls(int(data["resolution"]), tuple(int(w) for w in data["widths"]),
                   {head: tuple(names) for head, names in data["labels"].items()})


def all_reduced(values: torch.Tensor) -> torch.Tensor:
    """A copy of values summed over the processes."""
    summed = values.clone()
    dist.all_reduce(summed)
    return summed


class SumOverProcesses(torch.autograd.Function):
    """A tensor summed over the processes, its gradient summed back the same way."""

    @staticmethod
    def forward(ctx: Any, values: torch.Tensor) -> torch.Tensor:
        return all_reduced(values)

    @staticmethod
    def backward(ctx: Any, gradient: torch.Tensor) -> torch.Tensor:
        return all_reduced(gradient)


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that, training in several processes, normalises with the statistics of the batch
    over all of them (per-channel sums through SumOverProcesses), so every process normalises as one
    process with the global batch would and keeps the same running statistics (torch's SyncBatchNorm
    does this on GPUs only; this runs on gloo too). Otherwise BatchNorm2d."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        processes = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if not self.training or processes == 1:
            return super().forward(images)
        values = images.float()
        count = values.numel() // values.shape[1] * processes  # every process holds as many rows
        mean = SumOverProcesses.apply(values.sum(dim=(0, 2, 3))) / count
        centred = values - mean.view(1, -1, 1, 1)
        variance = SumOverProcesses.apply(centred.pow(2).sum(dim=(0, 2, 3))) / count
        self._track(mean.detach(), variance.detach(), count)
        normalised = centred * torch.rsqrt(variance + self.eps).view(1, -1, 1, 1)
        return (normalised * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)).to(images.dtype)

    @torch.no_grad()
    def _track(self, mean: torch.Tensor, variance: torch.Tensor, count: int) -> None:
        """Running statistics as BatchNorm2d keeps them (momentum, unbiased variance)."""
        self.num_batches_tracked.add_(1)
        self.running_mean.lerp_(mean, self.momentum)
        self.running_var.lerp_(variance * count / (count - 1), self.momentum)


def _conv_bn_relu(channels_in: int, channels_out: int, stride: int, norm: type[nn.BatchNorm2d]) -> list[nn.Module]:
    return [nn.Conv2d(channels_in, channels_out, 3, stride, 1, bias=False), norm(channels_out), nn.ReLU(inplace=True)]


class ConvClassifier(nn.Module):
    """A strided stem, then stages that halve the size (two 3x3 conv-BN-ReLU each), global average
    pooling (the penultimate features) and one linear head per label kind. Images in [-1, 1].
    Training passes norm=GlobalBatchNorm2d (the same weights, statistics over all processes)."""

    def __init__(self, config: ClassifierConfig, norm: type[nn.BatchNorm2d] = nn.BatchNorm2d) -> None:
        super().__init__()
        widths = config.widths
        stages = [nn.Sequential(*_conv_bn_relu(3, widths[0], 2, norm))]
        for channels_in, channels_out in zip(widths, widths[1:]):
            stages.append(nn.Sequential(*_conv_bn_relu(channels_in, channels_out, 2, norm),
                                        *_conv_bn_relu(channels_out, channels_out, 1, norm)))
        self.stages = nn.ModuleList(stages)
        self.dropout = nn.Dropout(0.2)
        self.heads = nn.ModuleDict({head: nn.Linear(widths[-1], len(names)) for head, names in config.labels.items()})

    def feature_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The activation after each stage (finest first)."""
        maps = []
        for stage in self.stages:
            images = stage(images)
            maps.append(images)
        return maps

    def forward(self, images: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """(logits per head, pooled penultimate features)."""
        features = self.feature_maps(images)[-1].mean(dim=(2, 3))
        dropped = self.dropout(features)
        return {head: layer(dropped) for head, layer in self.heads.items()}, features


# ------------------------------------------------------------------------------- loading, using

@dataclass
class Classifier:
    """A trained classifier ready for inference (eval mode, frozen)."""

    network: ConvClassifier
    config: ClassifierConfig
    weights: Path

    def stamp(self) -> dict[str, str]:
        """Name the network a figure was measured with (path and sha256 of its weights)."""
        return {"network": "training.classifier (the project's own)", **network_stamp(self.weights)}


@dataclass(frozen=True)
class Predictions:
    logits: dict[str, np.ndarray]  # head -> (N, classes)
    features: np.ndarray  # (N, widths[-1]) pooled penultimate features


def classifier_files(path: Path) -> tuple[Path, Path]:
    """(weights, config) from a classifier run folder, its model/ folder, or the weights file."""
    path = Path(path)
    for folder in (path / "model", path, path.parent):
        if (folder / WEIGHTS_FILE).is_file() and (folder / CONFIG_FILE).is_file():
            return folder / WEIGHTS_FILE, folder / CONFIG_FILE
    raise ValueError(f"classifier {path}: no {WEIGHTS_FILE} + {CONFIG_FILE} in it, in {path / 'model'} or beside it "
                     "(train one with `python -m training classifier`)")


def load_classifier(path: Path, device: torch.device | str = "cpu") -> Classifier:
    weights, config_path = classifier_files(path)
    config = ClassifierConfig.from_json(json.loads(config_path.read_text()))
    network = ConvClassifier(config)
    network.load_state_dict(load_file(str(weights)))
    network.to(device).eval().requires_grad_(False)
    return Classifier(network, config, weights)


def to_network_input(images: np.ndarray, resolution: int, device: torch.device) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, resolution, resolution) in [-1, 1] (antialiased resize)."""
    tensor = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    if tensor.shape[-2:] != (resolution, resolution):
        tensor = F.interpolate(tensor, size=(resolution, resolution), mode="bilinear", antialias=True,
                               align_corners=False)
    return tensor


@torch.inference_mode()
def classify(classifier: Classifier, images: np.ndarray, batch_size: int = 64) -> Predictions:
    """Logits and penultimate features of uint8 images (N, H, W, 3), resized to the network's size."""
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (N, H, W, 3), not {images.dtype} {images.shape}")
    device = next(classifier.network.parameters()).device
    logits: dict[str, list[np.ndarray]] = {head: [] for head in classifier.config.labels}
    features = []
    for start in range(0, len(images), batch_size):
        batch = to_network_input(images[start:start + batch_size], classifier.config.resolution, device)
        batch_logits, batch_features = classifier.network(batch)
        for head, values in batch_logits.items():
            logits[head].append(values.float().cpu().numpy())
        features.append(batch_features.float().cpu().numpy())
    width = classifier.config.widths[-1]
    return Predictions({head: np.concatenate(values) if values else np.zeros((0, len(classifier.config.labels[head])))
                        for head, values in logits.items()},
                       np.concatenate(features) if features else np.zeros((0, width)))


class FeatureExtractor(nn.Module):
    """The classifier's stage activations, frozen: images in [-1, 1] (N, 3, H, W) of any size
    (no resizing, like LPIPS) -> list of feature maps, finest first."""

    def __init__(self, network: ConvClassifier) -> None:
        super().__init__()
        self.network = network.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> FeatureExtractor:  # stays in eval mode: BatchNorm statistics are fixed
        return super().train(False)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.network.feature_maps(images)


def load_feature_extractor(path: Path, device: torch.device | str = "cpu") -> FeatureExtractor:
    return FeatureExtractor(load_classifier(path, device).network)


def _unit_channels(features: torch.Tensor) -> torch.Tensor:
    return features * torch.rsqrt(features.pow(2).sum(dim=1, keepdim=True) + 1e-10)


def perceptual_distance(extractor: nn.Module, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """LPIPS-like distance per example (N,): at every depth, unit-normalise each position's feature
    vector over channels, take the squared difference summed over channels and averaged over
    positions; sum over depths (equal weights: LPIPS's learned weights need human judgements).
    Differentiable in a and b; 0 for equal images."""
    if a.shape != b.shape:
        raise ValueError(f"perceptual_distance: images differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    total = a.new_zeros(a.shape[0], dtype=torch.float32)
    for both in extractor(torch.cat([a, b])):
        features_a, features_b = both.float().chunk(2)
        total = total + (_unit_channels(features_a) - _unit_channels(features_b)).pow(2).sum(dim=1).mean(dim=(1, 2))
    return total


# ------------------------------------------------------------------------------------------ data

@dataclass(frozen=True)
class LabelledImages:
    """uint8 images (N, H, W, 3) and, per head, class indices (N,) with IGNORE where unlabelled."""

    images: np.ndarray
    targets: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.images)


def captioned_folder(root: Path) -> Path:
    """A dataset folder's captioned images: ROOT/captioned when there is one, else ROOT itself."""
    root = Path(root)
    return root / "captioned" if (root / "captioned").is_dir() else root


@dataclass(frozen=True)
class DatasetChoice:
    """A --dataset value: DIR, or DIR:N to train on N of its train images (evenly spaced, so every
    condition or concept block of the metadata stays represented)."""

    root: Path
    limit: int | None = None

    @classmethod
    def parse(cls, text: str) -> DatasetChoice:
        folder, _, count = text.rpartition(":")
        if folder and count.isdigit():
            if int(count) < 2:
                raise argparse.ArgumentTypeError(f"{text}: N in DIR:N must be at least 2")
            return cls(Path(folder), int(count))
        return cls(Path(text))

    def __str__(self) -> str:
        return f"{self.root}:{self.limit}" if self.limit else str(self.root)


def read_split(root: Path, split: str, resolution: int,
               limit: int | None = None) -> tuple[np.ndarray, dict[str, list[str]]]:
    """A dataset's captioned images of a split with their metadata labels (field -> value per
    image); with a limit, that many images evenly spaced over the split."""
    from training.data.layouts import DatasetError, load_captioned

    if not Path(root).is_dir():
        raise runner.TrainingInputError(f"--dataset {root}: no such folder")
    try:
        loaded = load_captioned(captioned_folder(root), split, resolution)
    except DatasetError as error:
        raise runner.TrainingInputError(f"--dataset {root}: {error}") from error
    keep = np.arange(len(loaded.images))
    if limit is not None and limit < len(keep):
        keep = np.linspace(0, len(keep) - 1, limit).round().astype(np.int64)
    labels = {key: [values[index] for index in keep] for key, values in loaded.labels.items()}
    return np.ascontiguousarray(loaded.images[keep], dtype=np.uint8), labels


def label_names(labels: dict[str, list[str]]) -> dict[str, tuple[str, ...]]:
    """Per head, the sorted label values present; heads with fewer than 2 values are left out."""
    names = {head: tuple(sorted({value for value in labels.get(head, []) if value})) for head in HEADS}
    return {head: values for head, values in names.items() if len(values) >= 2}


def encode_targets(labels: dict[str, list[str]], count: int,
                   names: dict[str, tuple[str, ...]]) -> dict[str, np.ndarray]:
    """Class indices per head; IGNORE for images without the field or with a value not in the names."""
    targets = {}
    for head, head_names in names.items():
        index = {name: position for position, name in enumerate(head_names)}
        values = labels.get(head, [""] * count)
        targets[head] = np.array([index.get(value, IGNORE) for value in values], dtype=np.int64)
    return targets


def load_labelled(datasets: Sequence[DatasetChoice], split: str, resolution: int,
                  names: dict[str, tuple[str, ...]] | None = None) -> tuple[LabelledImages, dict[str, tuple[str, ...]]]:
    """The split of every dataset, concatenated, with targets for the given label names (by
    default the names found in these splits)."""
    parts = [read_split(dataset.root, split, resolution, dataset.limit if split == "train" else None)
             for dataset in datasets]
    images = np.concatenate([part_images for part_images, _ in parts])
    fields = {key for _, labels in parts for key in labels}
    labels = {key: [value for part_images, part_labels in parts
                    for value in part_labels.get(key, [""] * len(part_images))] for key in fields}
    names = label_names(labels) if names is None else names
    return LabelledImages(images, encode_targets(labels, len(images), names)), names


def has_split(root: Path, split: str) -> bool:
    return (captioned_folder(root) / split / "metadata.jsonl").is_file()


# --------------------------------------------------------------------------------- augmentation

@dataclass(frozen=True)
class Augmentation:
    """Per-image draws (on the CPU) of a random crop (zoom 0.85-1, anywhere inside the image), a
    horizontal flip where the image is flippable, and saturation / contrast / brightness jitter of
    +-10%."""

    zoom: torch.Tensor
    shift_x: torch.Tensor
    shift_y: torch.Tensor
    coin: torch.Tensor  # a flip where < 0.5
    saturation: torch.Tensor
    contrast: torch.Tensor
    brightness: torch.Tensor

    @classmethod
    def draw(cls, count: int, generator: torch.Generator) -> Augmentation:
        def uniform(low: float, high: float) -> torch.Tensor:
            return torch.rand(count, generator=generator).mul(high - low).add(low)

        zoom = uniform(0.85, 1.0)
        shift_x, shift_y = uniform(-1, 1) * (1 - zoom), uniform(-1, 1) * (1 - zoom)
        coin = torch.rand(count, generator=generator)
        return cls(zoom, shift_x, shift_y, coin, uniform(0.9, 1.1), uniform(0.9, 1.1), uniform(-0.1, 0.1))

    def shard(self, trainer: runner.Trainer) -> Augmentation:
        """This process's rows of draws made for the global batch."""
        return Augmentation(**{part.name: trainer.shard(getattr(self, part.name)) for part in fields(self)})

    def apply(self, images: torch.Tensor, flippable: torch.Tensor) -> torch.Tensor:
        """The augmented images, in [-1, 1] (N, 3, H, W) as they come."""
        device = images.device
        zoom, shift_x, shift_y = self.zoom.to(device), self.shift_x.to(device), self.shift_y.to(device)
        flip = torch.where((self.coin.to(device) < 0.5) & flippable, -1.0, 1.0)
        theta = torch.zeros(len(images), 2, 3, device=device)
        theta[:, 0, 0], theta[:, 0, 2] = zoom * flip, shift_x
        theta[:, 1, 1], theta[:, 1, 2] = zoom, shift_y
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        images = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
        grey = images.mean(dim=1, keepdim=True)
        images = grey + (images - grey) * self.saturation.to(device).view(-1, 1, 1, 1)
        mean = images.mean(dim=(1, 2, 3), keepdim=True)
        images = mean + (images - mean) * self.contrast.to(device).view(-1, 1, 1, 1)
        return (images + self.brightness.to(device).view(-1, 1, 1, 1)).clamp(-1, 1)


# ------------------------------------------------------------------------------------- training

def classification_loss(logits: dict[str, torch.Tensor], targets: dict[str, torch.Tensor],
                        trainer: runner.Trainer) -> dict[str, torch.Tensor]:
    """Cross-entropy (label smoothing 0.1) per head over the rows, in all processes, that carry its
    label: a process's mean over its own such rows, weighted by their share of all of them times the
    process count (Trainer.step averages the gradients), so the averaged gradient and loss are
    the mean over every process's rows. A process with none of a head's rows gives it zero (every
    process must hold gradients for the same parameters); a head no process has rows for is left out."""
    known = {head: targets[head] != IGNORE for head in logits}
    counts = torch.stack([rows.sum() for rows in known.values()]).float()
    totals = trainer.sum_over_processes(counts)
    losses = {}
    for (head, rows), count, total in zip(known.items(), counts.tolist(), totals.tolist(), strict=True):
        if total == 0:
            continue
        if count == 0:
            losses[head] = logits[head].sum() * 0.0
            continue
        mean = F.cross_entropy(logits[head][rows].float(), targets[head][rows], label_smoothing=LABEL_SMOOTHING)
        losses[head] = mean * (count * trainer.processes / total)
    return losses


def learning_rate(step: int, total: int, peak: float) -> float:
    """Linear warm-up, then cosine decay to 5% of the peak (a pure function of the step: resumable)."""
    if step < WARMUP_STEPS:
        return peak * (step + 1) / WARMUP_STEPS
    progress = (step - WARMUP_STEPS) / max(1, total - WARMUP_STEPS)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def heldout_accuracy(classifier: Classifier, data: LabelledImages) -> dict[str, Any]:
    """Per head: top-1 (and top-5 for concepts) on the rows whose label the classifier knows."""
    predictions = classify(classifier, data.images)
    metrics: dict[str, Any] = {}
    for head, targets in data.targets.items():
        known = targets != IGNORE
        if not known.any():
            continue
        logits = predictions.logits[head][known]
        metrics[f"{head}_top1"] = top_k_accuracy(logits, targets[known], 1)
        if head == "concept":
            metrics["concept_top5"] = top_k_accuracy(logits, targets[known], min(5, logits.shape[1]))
        metrics[f"{head}_count"] = int(known.sum())
    return metrics


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", type=DatasetChoice.parse, nargs="+", required=True, metavar="DIR[:N]",
                        help="dataset folders with captioned/{train,test}/metadata.jsonl (emoji, scenes); "
                             "DIR:N trains on N of DIR's train images, evenly spaced")
    runner.add_common_arguments(parser, dataset=False, default_resolution=32, default_steps=1000,
                                default_batch_size=64, default_lr=3e-3)
    parser.add_argument("--widths", default="16,32,64,128", help="channels of the stem and each stage")
    parser.add_argument("--weight-decay", type=float, default=5e-4)


def save_classifier(network: ConvClassifier, config: ClassifierConfig, folder: Path,
                    extra: dict[str, Any]) -> Path:
    """Write the weights (safetensors) and the config with label names (JSON) into folder."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().cpu().contiguous() for key, value in network.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_FILE))
    (folder / CONFIG_FILE).write_text(json.dumps({**config.to_json(), **extra}, indent=2))
    return folder / WEIGHTS_FILE


def main(args: argparse.Namespace) -> None:
    widths = parse_widths(args.widths)
    trainer = runner.Trainer(args)
    device = trainer.device
    train, labels = load_labelled(args.dataset, "train", args.resolution)
    if not labels:
        raise runner.TrainingInputError(
            f"--dataset {' '.join(map(str, args.dataset))}: the train metadata gives no field of {HEADS} with "
            "at least two values; nothing to classify")
    flippable_rows = torch.from_numpy(train.targets.get("concept", np.full(len(train), IGNORE)) == IGNORE)
    config = ClassifierConfig(args.resolution, widths, labels)
    torch.manual_seed(args.seed)
    network = ConvClassifier(config, norm=GlobalBatchNorm2d)
    runner.prepare_modules({"classifier": network}, device, args.gradient_checkpointing)
    optimizer = trainer.adamw(network.parameters(), lr=args.lr, weight_decay=args.weight_decay)

    def batch(indices: torch.Tensor) -> torch.Tensor:
        return to_network_input(train.images[indices.numpy()], args.resolution, device)

    def step(index: int) -> dict[str, float]:
        network.train()
        indices = trainer.batch_indices(len(train), index)
        augmentation = Augmentation.draw(trainer.global_batch, runner.step_generator(args.seed, index, stream=1))
        images = augmentation.shard(trainer).apply(batch(indices), flippable_rows[indices].to(device))
        targets = {head: torch.from_numpy(values[indices.numpy()]).to(device) for head, values in train.targets.items()}
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(index, args.steps, args.lr)
        with trainer.autocast():
            logits, _ = network(images)
        losses = classification_loss(logits, targets, trainer)
        total = sum(losses.values())
        trainer.backward(total)
        trainer.step(optimizer)
        return {"loss": total.item(), **{head: value.item() for head, value in losses.items()}}

    def sample(path: Path) -> None:
        shown = torch.linspace(0, len(train) - 1, min(SAMPLE_COUNT, len(train))).round().long()  # every dataset
        augmentation = Augmentation.draw(len(shown), runner.step_generator(args.seed, 0, stream=2))
        runner.save_grid(augmentation.apply(batch(shown), flippable_rows[shown].to(device)), path)

    def finish(model_dir: Path) -> dict[str, Any]:
        network.eval()
        datasets = [str(dataset) for dataset in args.dataset]
        weights = save_classifier(network, config, model_dir, {"trained_on": datasets, "split": "train"})
        classifier = Classifier(network, config, weights)
        metrics: dict[str, Any] = {"network": "training.classifier", "weights": str(args.out / "model" / WEIGHTS_FILE),
                                   "sha256": network_stamp(weights)["sha256"]}
        for dataset in args.dataset:
            if has_split(dataset.root, "test"):
                heldout, _ = load_labelled([dataset], "test", args.resolution, labels)
                metrics[f"test:{dataset.root.name}"] = heldout_accuracy(classifier, heldout)
        return metrics

    runner.run_training(args, recipe=RECIPE, modules={"classifier": network}, optimizers={"classifier": optimizer},
                        step=step, sample=sample, finish=finish,
                        config={**config.to_json(), "parameters": parameter_count(network),
                                "train_images": len(train), "datasets": [str(dataset) for dataset in args.dataset]},
                        trainer=trainer)
