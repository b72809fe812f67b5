"""Real SD-Turbo, read from the Hugging Face cache only; skipped when it is not complete there.

The check uses snapshot_download(local_files_only=True), so it never touches the network; the
load runs with huggingface_hub in offline mode for the same reason.
"""

from __future__ import annotations

from collections.abc import Iterator

import huggingface_hub.constants
import numpy as np
import pytest
from PIL import Image

from models.weights.sources import complete_cached_snapshot
from pipelines import Studio
from tests.conftest import pixel_distance

pytestmark = [
    pytest.mark.real_weights,
    pytest.mark.skipif(complete_cached_snapshot() is None,
                       reason="SD-Turbo is not complete in the Hugging Face cache; "
                              "run `python app.py --source hub` once to download it"),
]

PROMPT = "a watercolor painting of a lighthouse"


@pytest.fixture(scope="module")
def real_studio() -> Iterator[Studio]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        studio = Studio.load("hub", tasks=())
    assert studio.source.active == "hub"
    assert studio.source.meaningful
    yield studio


def test_text_to_image_is_not_degenerate(real_studio: Studio) -> None:
    image = real_studio.text_to_image(PROMPT, seed=0, width=512, height=512)
    assert image.size == (512, 512)
    assert np.asarray(image, np.float64).std() > 10


def test_low_strength_stays_closer_to_the_photo(real_studio: Studio, photo: Image.Image) -> None:
    low = real_studio.edit(photo, PROMPT, strength=0.2, seed=0)
    high = real_studio.edit(photo, PROMPT, strength=0.9, seed=0)
    assert low.size == high.size == photo.size
    assert pixel_distance(low, photo) < pixel_distance(high, photo)
