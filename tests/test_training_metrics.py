"""The yardsticks on cases whose answer is known."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from training.data.scenes import render, sample_layout
from training.metrics import (domain_success_rate, edge_agreement, edge_f1, frechet_distance, l1_distance, psnr,
                              spread_across_seeds, structure_agreement, top_k_accuracy)


def test_frechet_distance_is_zero_for_identical_sets_and_grows_with_a_shift() -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(500, 8))
    assert frechet_distance(features, features.copy()) == pytest.approx(0.0, abs=1e-6)
    distances = [frechet_distance(features, features + shift) for shift in (0.5, 1.0, 2.0)]
    # a pure shift by s in each of 8 dimensions: exactly 8 s^2 (covariances are equal)
    assert distances == pytest.approx([8 * 0.25, 8 * 1.0, 8 * 4.0], rel=1e-6)


def test_frechet_distance_matches_the_closed_form_for_scaled_gaussians() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=(20000, 3))
    b = 2.0 * rng.normal(size=(20000, 3))
    # equal means, covariances I and 4I: 3 * (1 + 4 - 2 * 2) = 3
    assert frechet_distance(a, b) == pytest.approx(3.0, abs=0.15)


def test_frechet_distance_refuses_bad_shapes() -> None:
    with pytest.raises(ValueError, match="width"):
        frechet_distance(np.zeros((4, 3)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="N >= 2"):
        frechet_distance(np.zeros((1, 3)), np.zeros((4, 3)))


def test_top_k_and_domain_success() -> None:
    logits = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.3], [0.2, 0.3, 0.5]])
    targets = np.array([1, 2, 0])
    assert top_k_accuracy(logits, targets, 1) == pytest.approx(1 / 3)
    assert top_k_accuracy(logits, targets, 2) == pytest.approx(2 / 3)
    assert top_k_accuracy(logits, targets, 3) == 1.0
    assert domain_success_rate(logits, 0) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="k=4"):
        top_k_accuracy(logits, targets, 4)


def test_psnr_and_l1_on_known_differences() -> None:
    black = np.zeros((2, 8, 8, 3), np.uint8)
    grey = np.full((2, 8, 8, 3), 51, np.uint8)  # 0.2 of full scale: MSE 0.04 -> 13.98 dB
    assert psnr(black, grey) == pytest.approx(10 * np.log10(1 / 0.04), abs=1e-6)
    assert psnr(black, black) == 100.0
    assert l1_distance(black, grey) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="shape"):
        psnr(black, grey[:1])


def square(offset: int = 0) -> np.ndarray:
    image = np.full((64, 64, 3), 255, np.uint8)
    cv2.rectangle(image, (16 + offset, 16), (47 + offset, 47), (0, 0, 0), thickness=-1)
    return image


def test_edge_agreement_keeps_a_small_shift_and_drops_a_large_one() -> None:
    same = edge_agreement(square()[None], square()[None])
    assert same == 1.0
    assert edge_agreement(square()[None], square(1)[None], tolerance=1) > 0.9
    assert edge_agreement(square()[None], square(1)[None], tolerance=0) < 0.7
    assert edge_agreement(square()[None], square(8)[None], tolerance=2) < 0.6
    blank = np.full((1, 64, 64, 3), 255, np.uint8)
    assert edge_agreement(square()[None], blank) == 0.0
    assert edge_f1(np.zeros((4, 4), bool), np.zeros((4, 4), bool)) == 1.0


def rendered_scenes(condition: str, count: int = 12) -> np.ndarray:
    """Scenes of the training data's renderer in one condition: layout i is the same in every condition."""
    layouts = [sample_layout(np.random.default_rng([4242, index]), 256) for index in range(count)]
    return np.stack([render(layout, condition, np.random.default_rng(index), 128)
                     for index, layout in enumerate(layouts)])


@pytest.mark.parametrize("condition", ["night", "rainy"])
def test_structure_agreement_tells_a_kept_layout_from_a_lost_one(condition: str) -> None:
    """The same layout rendered by day and at night (or in rain) keeps its structure; another layout
    does not: the translation gate's 0.5 sits between the two, where fixed Canny thresholds put even
    the same layout at night below it (its dim edges never reach them)."""
    days, changed = rendered_scenes("day"), rendered_scenes(condition)
    same_layout = structure_agreement(days, changed)
    other_layout = structure_agreement(days, np.roll(changed, 1, axis=0))
    assert same_layout > 0.5 > other_layout + 0.1, (same_layout, other_layout)
    if condition == "night":
        assert edge_agreement(days, changed) < 0.5  # what the structure measure is for


def test_structure_agreement_ignores_the_light_but_not_the_layout() -> None:
    days = rendered_scenes("day", count=4)
    assert structure_agreement(days, (days * 0.2).astype(np.uint8)) > 0.8  # the same scene, dimmed
    assert structure_agreement(square()[None], square()[None]) == 1.0
    assert structure_agreement(square()[None], np.full((1, 64, 64, 3), 90, np.uint8)) == 0.0  # flat: no edges
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, days.shape, dtype=np.uint8)
    assert structure_agreement(days, noise) < 0.45  # measured 0.38: dense noise edges match some by chance
    smooth_noise = np.stack([cv2.GaussianBlur(image, (0, 0), 2.0) for image in noise])
    assert structure_agreement(days, smooth_noise) < 0.4  # blobs, not the scene's layout


def test_spread_across_seeds() -> None:
    images = np.zeros((3, 2, 4, 4, 3), np.uint8)
    assert spread_across_seeds(images) == 0.0
    identical = np.broadcast_to(np.arange(96, dtype=np.uint8).reshape(1, 2, 4, 4, 3) + 77, images.shape)
    assert spread_across_seeds(identical) == 0.0  # exactly, whatever the float mean rounds to
    images[1] = 255  # one seed of three differs fully: std of (0, 1, 0) = sqrt(2) / 3
    assert spread_across_seeds(images) == pytest.approx(np.sqrt(2) / 3)
    with pytest.raises(ValueError, match="seeds >= 2"):
        spread_across_seeds(images[:1])
