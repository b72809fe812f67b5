"""Where the weights come from: the Hub (cached), a local folder, the mini models this project
trains (shipped in assets/mini), or the tiny built-in stand-in.

`auto` takes what is complete in the local cache, else the Hub if it answers, else mini, else (mini
missing too) the tiny fallback, and always says which source is live and why.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from models.weights.specs import SD_TURBO, SOURCE_NAMES, BaseModelSpec, SourceName, mini_spec

ActiveSource = Literal["hub", "local", "mini", "tiny"]
HUB_PROBE_TIMEOUT_S = 3.0
DOWNLOAD_COMMAND = "python app.py --source hub"
SHIPPED_MINI_DIR = Path(__file__).resolve().parents[2] / "assets" / "mini"
MINI_DIR_VARIABLE = "ONESTEP_MINI_DIR"  # replaces SHIPPED_MINI_DIR (tests, a fresh export)
EXPORT_RECORD = "EXPORT.json"  # what `python -m training export` writes beside the weights
MINI_SUMMARY = ("Mini: small models trained by this project on emoji and drawn scenes at {side} px; "
                f"for photographs use the real weights ({DOWNLOAD_COMMAND}).")


@dataclass(frozen=True)
class SourceInfo:
    """The source that is live, why it was chosen, and the folder its base weights sit in."""

    active: ActiveSource
    requested: SourceName
    reason: str
    base_dir: Path | None = None  # folder in the Hub layout; None for tiny
    model_dir: Path | None = None  # searched for task weights: the user's --model-dir, or mini's folder
    spec: BaseModelSpec = SD_TURBO  # the model these weights are (tiny stands in for SD-Turbo)

    @property
    def native_side(self) -> int:
        return self.spec.native_side

    @property
    def meaningful(self) -> bool:
        """Tiny random weights make images that mean nothing."""
        return self.active != "tiny"

    @property
    def model_name(self) -> str:
        """The model an image's settings name: the spec's name, or the tiny random stand-in."""
        return self.spec.name if self.meaningful else "tiny random sd-turbo"

    def describe(self) -> str:
        """One line for the console and the UI banner."""
        where = f" ({self.base_dir})" if self.base_dir else ""
        text = f"Weights: {self.active}{where}. {self.reason}"
        if self.active == "mini":
            text += " " + MINI_SUMMARY.format(side=self.native_side)
        if not self.meaningful:
            text += f" Images are not meaningful. To get the real models run: {DOWNLOAD_COMMAND}"
        return text


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it (any of 1, true, yes, on)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def missing_files(directory: Path, spec: BaseModelSpec = SD_TURBO) -> list[str]:
    """Files a folder lacks to be a complete SD-Turbo copy in either the fp16 or the full variant."""
    best: list[str] | None = None
    for variant in ("fp16", None):
        missing = [name for name in spec.required_files(variant) if not (directory / name).is_file()]
        if best is None or len(missing) < len(best):
            best = missing
    return best or []


def complete_cached_snapshot(spec: BaseModelSpec = SD_TURBO) -> Path | None:
    """The cached snapshot folder of the repo if it holds every required file, without network."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(spec.repo_id, revision=spec.revision, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError):
        return None
    return folder if not missing_files(folder, spec) else None


def hub_unreachable_reason(spec: BaseModelSpec = SD_TURBO) -> str | None:
    """None when the Hub answers for the repo within a few seconds, else why not."""
    from huggingface_hub import HfApi

    if hub_offline():
        return "HF_HUB_OFFLINE is set"
    try:
        HfApi().model_info(spec.repo_id, revision=spec.revision, timeout=HUB_PROBE_TIMEOUT_S)
    except Exception as error:  # any failure to reach the Hub means "use the fallback"
        return f"the Hugging Face Hub could not be reached ({type(error).__name__})"
    return None


def download_base(variant: str | None, spec: BaseModelSpec = SD_TURBO) -> Path:
    """Download (or reuse from the cache) the files of the repo, with huggingface_hub's progress bars."""
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(spec.repo_id, revision=spec.revision, allow_patterns=spec.allow_patterns(variant))
    except Exception as error:
        raise RuntimeError(
            f"Could not download {spec.repo_id} from the Hugging Face Hub: {error}. "
            "Check the network, or use --source local --model-dir DIR, or --source mini."
        ) from error
    return Path(folder)


def check_local_dir(model_dir: Path | str | None) -> Path:
    if model_dir is None:
        raise ValueError("source='local' needs model_dir: a folder laid out like the stabilityai/sd-turbo repo")
    directory = Path(model_dir).expanduser()
    if not directory.is_dir():
        raise ValueError(f"model_dir={str(directory)!r} is not a folder")
    missing = missing_files(directory)
    if missing:
        raise ValueError(f"model_dir={str(directory)!r} is not a complete SD-Turbo copy; missing: {', '.join(missing)}")
    return directory


def default_mini_dir() -> Path:
    """Where the mini models are: $ONESTEP_MINI_DIR, else assets/mini in this repository."""
    return Path(os.environ.get(MINI_DIR_VARIABLE) or SHIPPED_MINI_DIR).expanduser()


def _checked_side(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 8 or value % 8:
        raise ValueError(f"{where} is {value!r}; the native side must be a whole number of pixels, "
                         "a multiple of 8 and at least 8")
    return value


def configured_native_side(directory: Path) -> int:
    """The side a folder in the sd-turbo layout is made for: the UNet's sample size (in latent
    cells) times the VAE's downsampling, 2 ** (VAE blocks - 1) (SD-Turbo: 64 * 8 = 512)."""
    unet = json.loads((directory / "unet" / "config.json").read_text(encoding="utf-8"))
    vae = json.loads((directory / "vae" / "config.json").read_text(encoding="utf-8"))
    side = unet.get("sample_size")
    if isinstance(side, int) and not isinstance(side, bool):
        side *= 2 ** (len(vae.get("block_out_channels", ())) - 1)
    return _checked_side(side, f"{directory / 'unet' / 'config.json'}: sample_size x the VAE's downsampling")


def native_side_of(directory: Path) -> int:
    """The native side EXPORT.json records (`native_side`), else the one the configs give."""
    record = directory / EXPORT_RECORD
    if record.is_file():
        recorded = json.loads(record.read_text(encoding="utf-8")).get("native_side")
        if recorded is not None:
            return _checked_side(recorded, f"{record}: native_side")
    return configured_native_side(directory)


def check_mini_dir(directory: Path) -> tuple[Path, int]:
    """The mini folder, complete in the sd-turbo layout, and its native side."""
    if not directory.is_dir():
        raise ValueError(f"the mini models are not at {directory} (the repository ships them in assets/mini; "
                         f"${MINI_DIR_VARIABLE} or --model-dir with --source mini names another folder)")
    missing = missing_files(directory)
    if missing:
        raise ValueError(f"the mini folder {directory} is incomplete; missing: {', '.join(missing)}")
    return directory, native_side_of(directory)


def mini_source(requested: SourceName, directory: Path, reason: str) -> SourceInfo:
    mini_dir, side = check_mini_dir(directory)
    return SourceInfo("mini", requested, reason, mini_dir, mini_dir, mini_spec(side))


def resolve_source(requested: SourceName, model_dir: Path | str | None = None,
                   variant: str | None = None) -> SourceInfo:
    """Decide where the base weights come from, downloading them when the Hub is chosen. With
    `mini`, model_dir (if given) replaces the default mini folder."""
    if requested not in SOURCE_NAMES:
        raise ValueError(f"source={requested!r} is not one of {', '.join(SOURCE_NAMES)}")
    user_dir = Path(model_dir).expanduser() if model_dir is not None else None
    if requested == "tiny":
        return SourceInfo("tiny", requested, "Tiny random weights were asked for.", model_dir=user_dir)
    if requested == "local":
        return SourceInfo("local", requested, "Loaded from the given folder.", check_local_dir(model_dir), user_dir)
    if requested == "mini":
        return mini_source(requested, user_dir or default_mini_dir(), "The mini models were asked for.")
    if requested == "hub":
        return SourceInfo("hub", requested, "Downloaded from or cached for the Hub.", download_base(variant), user_dir)
    return _resolve_auto(user_dir, variant)


def _resolve_auto(model_dir: Path | None, variant: str | None) -> SourceInfo:
    if model_dir is not None and model_dir.is_dir() and not missing_files(model_dir):
        return SourceInfo("local", "auto", "Found a complete copy in the given folder.", model_dir, model_dir)
    cached = complete_cached_snapshot()
    if cached is not None:
        return SourceInfo("hub", "auto", "Found a complete copy in the Hugging Face cache.", cached, model_dir)
    unreachable = hub_unreachable_reason()
    if unreachable is not None:
        return _offline_fallback(f"No complete SD-Turbo copy in the cache and {unreachable}", model_dir)
    return SourceInfo("hub", "auto", "Downloaded from the Hub.", download_base(variant), model_dir)


def base_weights_fix(info: SourceInfo, path: Path) -> str:
    """What to do about a damaged file of the base model: the folder to remove or the command to run."""
    if info.active == "hub":
        repo = next((folder for folder in path.parents if folder.name.startswith("models--")), path)
        return f"Remove the folder {repo} and run `{DOWNLOAD_COMMAND}` to download SD-Turbo again."
    if info.active == "mini" and info.base_dir is not None:
        shipped = SHIPPED_MINI_DIR.resolve()
        if info.base_dir.resolve() == shipped:
            relative = path.resolve().relative_to(shipped.parents[1])
            return f"Restore the shipped file with `git checkout -- {relative}` (in {shipped.parents[1]})."
        return (f"Export the mini models into {info.base_dir} again (`python -m training export RUNS... --out "
                f"{info.base_dir}`), or start with --source tiny.")
    return (f"Replace it with a complete copy of the file from the {info.spec.repo_id} repository, or use "
            f"another --model-dir.")


def _offline_fallback(why: str, model_dir: Path | None) -> SourceInfo:
    """Mini when its folder is complete, else tiny with both reasons."""
    try:
        return mini_source("auto", default_mini_dir(), f"{why}, so the mini models are live.")
    except (ValueError, OSError) as error:
        reason = f"{why}, and {error}, so the built-in tiny fallback is live."
        return SourceInfo("tiny", "auto", reason, model_dir=model_dir)
