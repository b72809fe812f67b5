"""channels_last against the default layout, per network, on random weights of SD-Turbo's full-size
UNet and VAE and of TAESD: the calls alternate (default, channels_last, default, ...) so that load
from other processes on a shared machine falls on both sides alike. Decides where Studio.load
applies channels_last on a device.

    python -m bench.memory_format --device cpu --size 256 --pairs 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from bench.build import FULL_SEED, build_preview_decoder
from bench.hardware import device_description, library_versions
from models.running.devices import resolve_device
from models.speed.acceleration import set_channels_last
from models.speed.taesd import preview_decode
from models.weights.configs import FULL_UNET_CONFIG, FULL_VAE_CONFIG
from pipelines.images import LATENT_FACTOR

Call = Callable[[], object]


def timed(call: Call, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    with torch.inference_mode():
        call()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def alternate(module: torch.nn.Module, call: Call, pairs: int, device: torch.device) -> tuple[list[float], list[float]]:
    """One untimed call per layout, then `pairs` pairs of timed calls, default first."""
    default: list[float] = []
    channels_last: list[float] = []
    for index in range(pairs + 1):
        for layout, times in ((False, default), (True, channels_last)):
            set_channels_last([module], layout)
            seconds = timed(call, device)
            if index:
                times.append(seconds)
    set_channels_last([module], False)
    return default, channels_last


def main(argv: list[str] | None = None) -> int:
    parse = argparse.ArgumentParser(prog="python -m bench.memory_format", description=__doc__.split("\n\n")[0])
    parse.add_argument("--device", default="cpu")
    parse.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    parse.add_argument("--pairs", type=int, default=3, help="timed pairs per network (default 3)")
    parse.add_argument("--threads", type=int, help="CPU threads for torch")
    args = parse.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    side = args.size // LATENT_FACTOR
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(FULL_SEED)
        unet = UNet2DConditionModel(**FULL_UNET_CONFIG).eval()
        vae = AutoencoderKL(**FULL_VAE_CONFIG).eval()
        latents = torch.randn(1, 4, side, side)
        pixels = torch.rand(1, 3, args.size, args.size) * 2 - 1
        embeddings = torch.randn(1, 77, FULL_UNET_CONFIG["cross_attention_dim"])
    taesd = build_preview_decoder("full", device, torch.float32)
    timestep = torch.tensor([999], device=device)
    networks: list[tuple[str, torch.nn.Module, Call]] = [
        ("UNet", unet, lambda: unet(latents, timestep, encoder_hidden_states=embeddings)),
        ("VAE decode", vae, lambda: vae.decode(latents)),
        ("VAE encode", vae, lambda: vae.encode(pixels)),
        ("TAESD decode", taesd, lambda: preview_decode(taesd, latents)),
    ]
    print(f"{device_description(device)}, {args.size}x{args.size}, "
          f"{', '.join(f'{k} {v}' for k, v in library_versions().items())}", flush=True)
    print("| network | default median ms | channels_last median ms | speed-up | pairs where channels_last won |")
    print("|---|---|---|---|---|")
    for name, module, call in networks:
        default, last = alternate(module, call, args.pairs, device)
        wins = sum(b < a for a, b in zip(default, last))
        print(f"| {name} | {statistics.median(default) * 1e3:,.0f} | {statistics.median(last) * 1e3:,.0f} | "
              f"{statistics.median(default) / statistics.median(last):.2f}x | {wins} of {args.pairs} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
