"""Pinned npm packages installed into a cache folder (`npm install --prefix`), skipped when present."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

DEFAULT_CACHE = Path("~/.cache/onestep-studio/npm")


class NpmError(RuntimeError):
    """npm is missing or an install failed."""


def package_dir(cache: Path, name: str) -> Path:
    return cache.expanduser() / "node_modules" / name


def installed_version(cache: Path, name: str) -> str | None:
    manifest = package_dir(cache, name) / "package.json"
    if not manifest.is_file():
        return None
    return json.loads(manifest.read_text(encoding="utf-8")).get("version")


def ensure_packages(cache: Path, pins: dict[str, str]) -> dict[str, Path]:
    """Install each `name@version` not already in the cache; return name -> package folder."""
    cache = cache.expanduser()
    missing = [f"{name}@{version}" for name, version in pins.items() if installed_version(cache, name) != version]
    if missing:
        npm = shutil.which("npm")
        if npm is None:
            raise NpmError("npm not found: install Node.js (Debian: apt-get install npm) to build the emoji dataset")
        cache.mkdir(parents=True, exist_ok=True)
        result = subprocess.run([npm, "install", "--prefix", str(cache), "--no-audit", "--no-fund", "--save-exact", *missing],
                                capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise NpmError(f"npm install {' '.join(missing)} failed:\n{result.stderr.strip()}")
    return {name: package_dir(cache, name) for name in pins}
