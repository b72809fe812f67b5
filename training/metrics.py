"""Yardsticks that need no downloaded network: Frechet distance in our classifier's feature space,
top-k concept recognition, domain success, PSNR, L1, edge-map agreement, spread across seeds.

Images are uint8 arrays (N, H, W, 3) unless a function says otherwise. Every figure computed with
the classifier must name it: `network_stamp(path)` gives the path and sha256 to store beside it.

Definitions (so the numbers can be compared with nothing else implied):
- Frechet distance: ||mu_a - mu_b||^2 + tr(S_a) + tr(S_b) - 2 tr((S_a^1/2 S_b S_a^1/2)^1/2), the
  FID formula on our classifier's penultimate features instead of Inception's; computed with
  symmetric eigendecompositions (no scipy), negative eigenvalues from rounding clipped to 0.
- PSNR: 10 log10(255^2 / MSE) over all pixels and channels of each image, averaged over images.
- L1: mean absolute difference with pixels scaled to [0, 1].
- Edge agreement: Canny maps (grey image, thresholds EDGE_THRESHOLDS) of the two images; an edge
  pixel of one counts as matched when the other has an edge within `tolerance` pixels (a square
  neighbourhood); precision = matched output edges / output edges, recall = matched input edges /
  input edges, agreement = their F1. Two edgeless images agree fully (1.0); one edgeless: 0.0.
- Structure agreement: the same F1 on structure maps, made for translations that change the light:
  the grey image median-filtered (3 x 3: stars, rain streaks and speckle go) and Canny with
  thresholds at the image's own contrast (high = the 90th percentile of its Sobel gradient
  magnitude, low = half that), so a dark night scene is judged by its own edges, not by fixed
  thresholds it never reaches. On the scenes' held-out paired renders (the same layout in both
  conditions) it scores 0.57 day/night and 0.69 clear/rainy, against 0.23 and 0.31 for another
  layout; the fixed-threshold edge agreement scores 0.32 against 0.18 day/night.
- Spread across seeds: per-pixel standard deviation across the seeds (pixels in [0, 1]), averaged
  over pixels, channels and images.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from models.weights.downloads import file_sha256

EDGE_THRESHOLDS = (100, 200)
STRUCTURE_MEDIAN = 3  # pixels of the median filter before a structure map
STRUCTURE_PERCENTILE = 90  # of the gradient magnitude: a structure map's high Canny threshold


def network_stamp(path: Path) -> dict[str, str]:
    """Which network a figure was measured with: its weights file and their sha256."""
    return {"path": str(path), "sha256": file_sha256(path)}


def _check_features(features: np.ndarray, name: str) -> np.ndarray:
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"{name} must be a (N, D) array with N >= 2, not shape {features.shape}")
    if not np.isfinite(features).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return features.astype(np.float64)


def _symmetric_sqrt(matrix: np.ndarray) -> np.ndarray:
    eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0, None))) @ eigenvectors.T


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (rows are samples)."""
    a = _check_features(features_a, "features_a")
    b = _check_features(features_b, "features_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets differ in width: {a.shape[1]} vs {b.shape[1]}")
    mean_a, mean_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_a = _symmetric_sqrt(cov_a)
    cross = root_a @ cov_b @ root_a
    cross_eigenvalues = np.linalg.eigvalsh((cross + cross.T) / 2)
    trace_sqrt = np.sqrt(np.clip(cross_eigenvalues, 0, None)).sum()
    distance = float(((mean_a - mean_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_sqrt)
    return max(distance, 0.0)


def top_k_hits(logits: np.ndarray, targets: np.ndarray, k: int) -> np.ndarray:
    """Per sample: is the target among the k highest logits (ties broken by index)."""
    if logits.ndim != 2 or len(logits) != len(targets):
        raise ValueError(f"logits must be (N, classes) with N = len(targets); got {logits.shape} and {len(targets)}")
    if not 1 <= k <= logits.shape[1]:
        raise ValueError(f"k={k} must be between 1 and the number of classes ({logits.shape[1]})")
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return (top == np.asarray(targets)[:, None]).any(axis=1)


def top_k_accuracy(logits: np.ndarray, targets: np.ndarray, k: int) -> float:
    return float(top_k_hits(logits, targets, k).mean())


def domain_success_rate(condition_logits: np.ndarray, target: int) -> float:
    """Fraction of images whose most likely condition (over all the classifier's conditions) is
    the target one."""
    return float((condition_logits.argmax(axis=1) == target).mean())


def _as_unit(images: np.ndarray) -> np.ndarray:
    return np.asarray(images, dtype=np.float64) / 255.0


def _check_same_shape(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over images of the PSNR in dB (uint8 range); identical images count as 100 dB."""
    _check_same_shape(a, b)
    squared = (_as_unit(a) - _as_unit(b)) ** 2
    mse = squared.reshape(len(a), -1).mean(axis=1) if a.ndim == 4 else squared.mean(keepdims=True)
    return float(np.mean(np.where(mse == 0, 100.0, 10 * np.log10(1.0 / np.maximum(mse, 1e-20)))))


def l1_distance(a: np.ndarray, b: np.ndarray) -> float:
    _check_same_shape(a, b)
    return float(np.abs(_as_unit(a) - _as_unit(b)).mean())


def edge_map(image: np.ndarray) -> np.ndarray:
    """Boolean Canny edges of an RGB uint8 image."""
    grey = cv2.cvtColor(np.ascontiguousarray(image, dtype=np.uint8), cv2.COLOR_RGB2GRAY)
    return cv2.Canny(grey, *EDGE_THRESHOLDS) > 0


def structure_map(image: np.ndarray) -> np.ndarray:
    """Boolean Canny edges of an RGB uint8 image's median-filtered grey, at the image's own contrast."""
    grey = cv2.medianBlur(cv2.cvtColor(np.ascontiguousarray(image, dtype=np.uint8), cv2.COLOR_RGB2GRAY),
                          STRUCTURE_MEDIAN)
    values = grey.astype(np.float32)
    magnitude = np.hypot(cv2.Sobel(values, cv2.CV_32F, 1, 0), cv2.Sobel(values, cv2.CV_32F, 0, 1))
    high = max(float(np.percentile(magnitude, STRUCTURE_PERCENTILE)), 1.0)  # a flat image keeps no edges
    return cv2.Canny(grey, high / 2, high, L2gradient=True) > 0


def _near(edges: np.ndarray, tolerance: int) -> np.ndarray:
    kernel = np.ones((2 * tolerance + 1, 2 * tolerance + 1), np.uint8)
    return cv2.dilate(edges.astype(np.uint8), kernel) > 0


def edge_f1(reference: np.ndarray, candidate: np.ndarray, tolerance: int = 1) -> float:
    """F1 of two boolean edge maps with a pixel tolerance (see the module docstring)."""
    if not reference.any() and not candidate.any():
        return 1.0
    if not reference.any() or not candidate.any():
        return 0.0
    precision = (candidate & _near(reference, tolerance)).sum() / candidate.sum()
    recall = (reference & _near(candidate, tolerance)).sum() / reference.sum()
    return float(0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall))


def edge_agreement(inputs: np.ndarray, outputs: np.ndarray, tolerance: int = 1) -> float:
    """Mean over image pairs of the F1 agreement of their Canny maps."""
    _check_same_shape(inputs, outputs)
    return float(np.mean([edge_f1(edge_map(a), edge_map(b), tolerance) for a, b in zip(inputs, outputs)]))


def structure_agreement(inputs: np.ndarray, outputs: np.ndarray, tolerance: int = 1) -> float:
    """Mean over image pairs of the F1 agreement of their structure maps."""
    _check_same_shape(inputs, outputs)
    return float(np.mean([edge_f1(structure_map(a), structure_map(b), tolerance) for a, b in zip(inputs, outputs)]))


def spread_across_seeds(images: np.ndarray) -> float:
    """images: (seeds, N, H, W, 3); the mean per-pixel standard deviation across seeds in [0, 1]."""
    if images.ndim != 5 or images.shape[0] < 2:
        raise ValueError(f"images must be (seeds >= 2, N, H, W, 3), not shape {images.shape}")
    unit = _as_unit(images)
    same = (unit == unit[0]).all(axis=0)  # float rounding in the mean must not turn "identical" into 1e-19
    return float(np.where(same, 0.0, unit.std(axis=0)).mean())
