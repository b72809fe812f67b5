"""Download of files that are not on the Hugging Face Hub: progress bar, resume, sha256 check.

A download goes to `<name>.part` and is renamed only when complete and verified, so an interrupted
or corrupt download never looks finished. Where no checksum is published, the first download's
sha256 is recorded beside the file (`<name>.sha256`) and checked on later downloads.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
from tqdm.auto import tqdm

CHUNK_SIZE = 1 << 20
TIMEOUT = httpx.Timeout(30.0, connect=10.0)


class DownloadError(RuntimeError):
    """A download failed or its checksum did not match."""


def recorded_sha256(destination: Path) -> str | None:
    record = destination.with_name(destination.name + ".sha256")
    return record.read_text().strip() if record.is_file() else None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def _stream_into(url: str, partial: Path, client: httpx.Client) -> None:
    """Append the rest of url to partial, resuming from its current size when the server allows."""
    done = partial.stat().st_size if partial.exists() else 0
    headers = {"Range": f"bytes={done}-"} if done else {}
    with client.stream("GET", url, headers=headers, follow_redirects=True) as response:
        if response.status_code == 416:  # the part file is already complete
            return
        if response.status_code not in (200, 206):
            raise DownloadError(f"GET {url} answered HTTP {response.status_code}")
        if response.status_code == 200:
            done = 0  # the server ignored the range: start over
        total = int(response.headers.get("content-length", 0)) + done or None
        mode = "ab" if done else "wb"
        with partial.open(mode) as handle, tqdm(total=total, initial=done, unit="B", unit_scale=True,
                                                desc=partial.name.removesuffix(".part")) as bar:
            for chunk in response.iter_bytes(CHUNK_SIZE):
                handle.write(chunk)
                bar.update(len(chunk))


def download_file(url: str, destination: Path, expected_sha256: str | None = None,
                  client: httpx.Client | None = None) -> Path:
    """Fetch url to destination (once); verify against expected_sha256 or the recorded checksum."""
    if destination.is_file():
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".part")
    expected = expected_sha256 or recorded_sha256(destination)
    owns_client = client is None
    client = client or httpx.Client(timeout=TIMEOUT)
    try:
        _stream_into(url, partial, client)
    except httpx.HTTPError as error:
        raise DownloadError(f"could not download {url}: {error}. Run again to resume.") from error
    finally:
        if owns_client:
            client.close()
    actual = file_sha256(partial)
    if expected and actual != expected:
        partial.unlink()
        raise DownloadError(f"{url}: sha256 {actual} does not match the expected {expected}; the file was removed")
    record = destination.with_name(destination.name + ".sha256")
    partial_record = record.with_name(record.name + ".part")
    partial_record.write_text(actual + "\n")
    partial_record.replace(record)  # like the file itself: never half-written under its real name
    partial.replace(destination)
    return destination
