"""`--source mini`: the models this project trains, loaded offline from their folder (assets/mini,
or $ONESTEP_MINI_DIR, or --model-dir) with the native side the folder records, and `auto`'s
fallback to them when SD-Turbo is not there. Runs on a stand-in folder (tests/mini_folder.py):
the tiny model with random task weights and a recorded native side of 128."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import app
from models.weights.sources import EXPORT_RECORD, MINI_DIR_VARIABLE, resolve_source
from models.weights.specs import MINI_NAME
from pipelines import Studio
from pipelines.batch import main as batch_main
from pipelines.errors import InputError
from pipelines.limits import Limits
from pipelines.metadata import read_settings
from tests.mini_folder import write_fake_mini
from tests.offline_hub import no_hub, set_offline  # noqa: F401  (no_hub is a fixture)
from ui import build_app
from ui.canvas import MIN_DISPLAY_SIDE
from ui.examples import MINI_EDIT, MINI_TEXT
from ui.layout import banner_html
from ui.styles import NO_STYLE

SIDE = 128
MINI_TASKS = ("sketch_to_image", "day_to_night")


@pytest.fixture(scope="module")
def mini_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fake_mini(tmp_path_factory.mktemp("assets") / "mini", tasks=MINI_TASKS)


@pytest.fixture(scope="module")
def mini(mini_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Studio:
    """Loaded offline, with an empty checkpoint cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("ONESTEP_CACHE", str(tmp_path_factory.mktemp("cache")))
        patch.setenv(MINI_DIR_VARIABLE, str(mini_dir))
        return Studio.load("mini", device="cpu", tasks=MINI_TASKS)


def test_mini_loads_its_folder_with_its_tasks(mini: Studio, mini_dir: Path) -> None:
    source = mini.source
    assert (source.active, source.requested, source.base_dir) == ("mini", "mini", mini_dir)
    assert source.meaningful and source.model_name == MINI_NAME
    assert mini.unavailable_tasks == {}
    assert set(mini.store.tasks) == set(MINI_TASKS)


def test_mini_limits_follow_the_recorded_native_side(mini: Studio) -> None:
    limits = mini.limits
    assert limits == Limits.for_native_side(SIDE)
    assert (limits.min_side, limits.max_side, limits.side_step) == (64, 256, 16)
    assert limits.preview_sides[-1] == SIDE and app.preview_side(mini, None) == SIDE  # CPU previews: >= 128 px


def test_mini_runs_every_task_at_its_own_size(mini: Studio, photo: Image.Image) -> None:
    assert mini.text_to_image("a red heart", seed=1).size == (SIDE, SIDE)
    with pytest.raises(InputError, match="256"):
        mini.text_to_image("a red heart", width=512)
    sketch = np.full((SIDE, SIDE), 255, np.uint8)
    sketch[32:96, 64] = 0
    assert mini.sketch_to_image(sketch, "a red heart", gamma=1.0).size == (SIDE, SIDE)
    assert mini.translate(photo, direction="day_to_night").size == photo.size


def test_preview_size_beyond_the_native_side_is_refused(mini: Studio) -> None:
    with pytest.raises(InputError, match="--preview-size 512 is not one of 16, 32,"):
        app.preview_side(mini, 512)


def test_mini_tasks_come_only_from_its_folder(mini_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A task the folder lacks is unavailable, with the reason, even where a converted file of the
    release (made for SD-Turbo) sits in the checkpoint cache."""
    converted = "edge_to_image_loras.safetensors"
    elsewhere = write_fake_mini(tmp_path / "other", tasks=("edge_to_image",))
    (tmp_path / "cache" / "img2img-turbo").mkdir(parents=True)
    (elsewhere / "img2img-turbo" / converted).rename(tmp_path / "cache" / "img2img-turbo" / converted)
    monkeypatch.setenv("ONESTEP_CACHE", str(tmp_path / "cache"))
    studio = Studio.load("mini", model_dir=mini_dir, device="cpu", tasks=("edge_to_image",))
    assert "the mini models have no edge_to_image" in studio.unavailable_tasks["edge_to_image"]
    assert Studio.load("local", model_dir=mini_dir, device="cpu", tasks=("edge_to_image",)).unavailable_tasks == {}


def test_the_ui_takes_its_sizes_from_mini(mini: Studio) -> None:
    """Sliders and canvas at mini's sizes; the 128 px canvas is scaled up on screen to draw on."""
    demo = build_app(mini, queue_size=2)
    built = {block.elem_id: block for block in demo.blocks.values() if getattr(block, "elem_id", None)}
    width = built["text-width"]
    assert (width.minimum, width.maximum, width.step, width.value) == (64, 256, 16, SIDE)
    assert built["sketch-canvas"].props["side"] == SIDE
    assert built["sketch-canvas"].props["display_side"] == MIN_DISPLAY_SIDE > SIDE
    # examples name what mini was trained on, with no style preset
    assert [row[0] for row in built["text-examples"].raw_samples] == [prompt for prompt, _ in MINI_TEXT]
    assert {row[2] for row in built["sketch-examples"].raw_samples} == {NO_STYLE}
    assert built["edit-examples"].raw_samples[0][1] == MINI_EDIT[0][1]


def test_mini_banner_says_what_mini_is(mini: Studio) -> None:
    banner = banner_html(mini)
    assert 'data-source="mini"' in banner and "banner-body meaningful" in banner
    assert f"small models trained by this project on emoji and drawn scenes at {SIDE} px" in banner
    assert "for photographs use the real weights (python app.py --source hub)" in banner


def test_model_dir_names_another_mini_folder(mini_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(MINI_DIR_VARIABLE, str(tmp_path / "elsewhere"))
    assert resolve_source("mini", mini_dir).base_dir == mini_dir
    with pytest.raises(ValueError, match="the mini models are not at .*elsewhere"):
        resolve_source("mini")


def test_incomplete_mini_folder_is_refused_naming_the_file(tmp_path: Path) -> None:
    folder = write_fake_mini(tmp_path / "mini", tasks=())
    (folder / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ValueError, match="incomplete; missing: vae/diffusion_pytorch_model.safetensors"):
        resolve_source("mini", folder)


@pytest.fixture
def bare_mini(tmp_path: Path) -> Path:
    return write_fake_mini(tmp_path / "mini", tasks=())


def test_without_a_recorded_side_the_configs_give_it(bare_mini: Path) -> None:
    """An export without `native_side`: the UNet's 8 latent cells times the tiny VAE's 8."""
    (bare_mini / EXPORT_RECORD).write_text(json.dumps({"tasks": []}))
    assert resolve_source("mini", bare_mini).native_side == 64


@pytest.mark.parametrize("side", [100, 0, "128", 128.0, True])
def test_a_bad_recorded_side_is_refused(bare_mini: Path, side: object) -> None:
    (bare_mini / EXPORT_RECORD).write_text(json.dumps({"native_side": side}))
    with pytest.raises(ValueError, match=rf"EXPORT.json: native_side is {side!r}; .*multiple of 8"):
        resolve_source("mini", bare_mini)


# --- auto: SD-Turbo, else mini, else tiny ----------------------------------------------------------

def test_auto_offline_picks_mini_and_says_why(mini_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                              no_hub: Path) -> None:
    set_offline(monkeypatch, True)
    monkeypatch.setenv(MINI_DIR_VARIABLE, str(mini_dir))
    source = resolve_source("auto")
    assert (source.active, source.requested, source.native_side) == ("mini", "auto", SIDE)
    assert "No complete SD-Turbo copy in the cache and HF_HUB_OFFLINE is set, so the mini models are live." \
        in source.describe()
    assert "Images are not meaningful" not in source.describe()


@pytest.mark.usefixtures("no_hub")
def test_auto_with_the_hub_unreachable_picks_mini(mini_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    set_offline(monkeypatch, False)
    monkeypatch.setenv(MINI_DIR_VARIABLE, str(mini_dir))
    source = resolve_source("auto")
    assert source.active == "mini" and "could not be reached" in source.reason


def test_auto_with_mini_incomplete_falls_back_to_tiny_with_both_reasons(monkeypatch: pytest.MonkeyPatch,
                                                                       no_hub: Path, bare_mini: Path) -> None:
    set_offline(monkeypatch, True)
    (bare_mini / "unet" / "config.json").unlink()
    monkeypatch.setenv(MINI_DIR_VARIABLE, str(bare_mini))
    source = resolve_source("auto")
    assert source.active == "tiny"
    assert "HF_HUB_OFFLINE is set" in source.reason and "missing: unet/config.json" in source.reason
    assert "Images are not meaningful" in source.describe()


# --- batch and the settings of an image ----------------------------------------------------------

def test_batch_takes_source_mini_and_its_default_size(mini_dir: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red heart\n")
    out = tmp_path / "out"
    batch_main(["text_to_image", "--input", str(prompts), "--output", str(out), "--seed", "3",
                "--source", "mini", "--model-dir", str(mini_dir), "--device", "cpu"])
    (written,) = out.iterdir()
    with Image.open(written) as image:
        settings = read_settings(image).settings
    assert settings.size == (SIDE, SIDE)
    assert settings.model == MINI_NAME


def test_app_without_the_mini_folder_exits_with_the_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(MINI_DIR_VARIABLE, str(tmp_path / "absent"))
    with pytest.raises(SystemExit) as exited:
        app.main(["--source", "mini", "--device", "cpu"])
    assert exited.value.code == 2
    assert f"the mini models are not at {tmp_path / 'absent'}" in capsys.readouterr().err
