"""Tiny random-weight SD-Turbo: the production classes built from tiny configs.

Deterministic (fixed seed, the caller's RNG untouched), a few MB, no network. The tokenizer is a
byte-level CLIP BPE vocabulary with no merges, written to disk in the Hub's file layout.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from models.weights.configs import SCHEDULER_CONFIG, TINY_UNET_CONFIG, TINY_VAE_CONFIG, tiny_text_encoder_config

TINY_SEED = 20240318
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"


def byte_alphabet() -> list[str]:
    """The 256 characters byte-level BPE uses for the byte values: printable bytes stand for
    themselves, the others are shifted past 255 in order."""
    printable = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)}
    alphabet: list[str] = []
    shifted = 0
    for byte in range(256):
        if byte in printable:
            alphabet.append(chr(byte))
        else:
            alphabet.append(chr(256 + shifted))
            shifted += 1
    return alphabet


def tiny_vocab() -> dict[str, int]:
    alphabet = byte_alphabet()
    tokens = [*alphabet, *(c + "</w>" for c in alphabet), BOS_TOKEN, EOS_TOKEN]
    return {token: index for index, token in enumerate(tokens)}


def write_tiny_tokenizer(directory: Path) -> None:
    """Write vocab.json, merges.txt and tokenizer_config.json as the SD-Turbo repo lays them out."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(tiny_vocab()), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "unk_token": EOS_TOKEN,
        "pad_token": EOS_TOKEN,
        "do_lower_case": True,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")


def build_tiny_networks() -> tuple[CLIPTextModel, UNet2DConditionModel, AutoencoderKL]:
    """Text encoder, UNet and VAE with seeded random weights, in fp32 on the CPU."""
    vocab = tiny_vocab()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        text_config = CLIPTextConfig(**tiny_text_encoder_config(len(vocab), vocab[BOS_TOKEN], vocab[EOS_TOKEN]))
        text_encoder = CLIPTextModel(text_config)
        unet = UNet2DConditionModel(**TINY_UNET_CONFIG)
        vae = AutoencoderKL(**TINY_VAE_CONFIG)
    return text_encoder.eval(), unet.eval(), vae.eval()


def write_tiny_hub_layout(directory: Path) -> Path:
    """Save the tiny model in the stabilityai/sd-turbo folder layout (for `local` and its tests)."""
    text_encoder, unet, vae = build_tiny_networks()
    write_tiny_tokenizer(directory / "tokenizer")
    text_encoder.save_pretrained(directory / "text_encoder", safe_serialization=True)
    unet.save_pretrained(directory / "unet", safe_serialization=True)
    vae.save_pretrained(directory / "vae", safe_serialization=True)
    (directory / "scheduler").mkdir(parents=True, exist_ok=True)
    (directory / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHEDULER_CONFIG, indent=2))
    return directory
