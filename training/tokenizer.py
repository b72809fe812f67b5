"""A CLIP-compatible BPE tokenizer learned from a dataset's captions.

`tokenizers`' BPE trainer learns the merges with CLIP's normalisation (NFC, whitespace collapsed,
lower case), CLIP's word-splitting pattern and byte-level characters, marking word ends with
"</w>". The vocabulary is then laid out as CLIP's is: the 256 byte characters, the same with
"</w>", the merged tokens in merge order, then <|startoftext|> and <|endoftext|> (the order
models/tiny.py uses), written as vocab.json + merges.txt + tokenizer_config.json, which
transformers' CLIPTokenizer loads.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import CLIPTokenizer

from models.weights.tiny import BOS_TOKEN, EOS_TOKEN, byte_alphabet, write_tiny_tokenizer

END_OF_WORD = "</w>"
CLIP_WORD_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
BASE_VOCAB_SIZE = 2 * 256 + 2  # bytes, bytes at word end, bos, eos


def learn_merges(captions: Iterable[str], vocab_size: int) -> list[tuple[str, str]]:
    """BPE merges learned from the captions, at most vocab_size - 514 of them, in merge order."""
    learner = Tokenizer(models.BPE(end_of_word_suffix=END_OF_WORD))
    learner.normalizer = normalizers.Sequence([
        normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    learner.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(CLIP_WORD_PATTERN), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    alphabet = byte_alphabet()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 2, show_progress=False, min_frequency=2,
                                  initial_alphabet=alphabet, end_of_word_suffix=END_OF_WORD)
    learner.train_from_iterator(captions, trainer=trainer)
    merges = json.loads(learner.to_str())["model"]["merges"]
    pairs = [tuple(merge) if isinstance(merge, list) else tuple(merge.split(" ")) for merge in merges]
    return [(left, right) for left, right in pairs][: max(0, vocab_size - BASE_VOCAB_SIZE)]


def clip_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    """CLIP's vocabulary order: bytes, bytes + </w>, one token per merge, bos, eos."""
    alphabet = byte_alphabet()
    tokens = [*alphabet, *(char + END_OF_WORD for char in alphabet)]
    seen = set(tokens)
    for left, right in merges:
        merged = left + right
        if merged not in seen:
            tokens.append(merged)
            seen.add(merged)
    tokens += [BOS_TOKEN, EOS_TOKEN]
    return {token: index for index, token in enumerate(tokens)}


def build_caption_tokenizer(captions: list[str], directory: Path, vocab_size: int = 1024) -> CLIPTokenizer:
    """Learn a tokenizer from the captions, write it in the SD-Turbo tokenizer layout, load it."""
    if vocab_size < BASE_VOCAB_SIZE:
        raise ValueError(f"vocab_size={vocab_size} is below the {BASE_VOCAB_SIZE} byte tokens CLIP needs")
    if not any(caption.strip() for caption in captions):
        raise ValueError("the captions are all empty: a tokenizer cannot be learned from them")
    write_tiny_tokenizer(directory)  # tokenizer_config.json as SD-Turbo's; vocab and merges replaced below
    merges = learn_merges(captions, vocab_size)
    vocab = clip_vocab(merges)
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2", *(f"{left} {right}" for left, right in merges)]
    (directory / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return CLIPTokenizer.from_pretrained(directory)
