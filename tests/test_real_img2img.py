"""Real pix2pix-Turbo / CycleGAN-Turbo weights: run only where they are already on disk."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from models.weights.task_loading import checkpoint_cache_dir
from models.weights.sources import complete_cached_snapshot
from models.weights.specs import CHECKPOINTS
from pipelines import Studio


def _weights_present() -> bool:
    cache = checkpoint_cache_dir()
    have_checkpoints = all((cache / spec.converted_filename).is_file() or (cache / spec.filename).is_file()
                           for spec in CHECKPOINTS.values())
    return have_checkpoints and complete_cached_snapshot() is not None


pytestmark = [pytest.mark.real_weights,
              pytest.mark.skipif(not _weights_present(),
                                 reason="real SD-Turbo and img2img-turbo weights are not on this machine "
                                        "(run `python app.py --source hub` once to fetch them)")]


@pytest.fixture(scope="module")
def real_studio() -> Studio:
    return Studio.load("hub")


def test_every_task_loads(real_studio: Studio) -> None:
    assert real_studio.unavailable_tasks == {}


def test_sketch_gamma_one_follows_the_strokes(real_studio: Studio) -> None:
    sketch = np.full((512, 512), 255, dtype=np.uint8)
    sketch[100:400, 250:254] = 0
    image = np.asarray(real_studio.sketch_to_image(sketch, "a lighthouse", gamma=1.0, seed=0).convert("L"), float)
    assert image.std() > 10  # a real picture, not a flat field


def test_day_to_night_darkens_a_bright_scene(real_studio: Studio) -> None:
    bright = Image.new("RGB", (512, 384), (200, 210, 230))
    night = real_studio.translate(bright, direction="day_to_night")
    assert np.asarray(night, float).mean() < np.asarray(bright, float).mean()
