"""Writing datasets: PNGs, captions, metadata.jsonl, and the atomic swap of a finished dataset."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


@contextmanager
def atomic_directory(out: Path) -> Iterator[Path]:
    """Yield a fresh temporary folder beside `out`; on success it replaces `out` in one rename.

    On any failure (or Ctrl-C) the temporary folder is removed and `out` is left as it was.
    """
    out = out.expanduser().resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    previous = out.parent / f".{out.name}.previous-{os.getpid()}"
    if out.exists():
        os.replace(out, previous)
    os.replace(staging, out)
    shutil.rmtree(previous, ignore_errors=True)


def save_png(image: np.ndarray, path: Path) -> None:
    """Save an (H, W, 3) uint8 RGB array as PNG, creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image, mode="RGB").save(path, optimize=False, compress_level=6)


def link_or_copy(source: Path, destination: Path) -> None:
    """Hard-link a written file into a second layout (no extra disk), copying where links fail."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, destination)
    except OSError:
        shutil.copyfile(source, destination)


def write_json(data: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")


def write_text(text: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.rstrip("\n") + "\n", encoding="utf-8")


def write_metadata(rows: Iterable[Mapping[str, Any]], folder: Path) -> int:
    """Write folder/metadata.jsonl (one JSON object a line, imagefolder convention); return the row count."""
    lines = [json.dumps(dict(row), ensure_ascii=False, sort_keys=True) for row in rows]
    write_text("\n".join(lines), folder / "metadata.jsonl")
    return len(lines)


def stable_fraction(key: str, salt: str) -> float:
    """A deterministic number in [0, 1) from a key (splits that do not depend on order or seed)."""
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64
