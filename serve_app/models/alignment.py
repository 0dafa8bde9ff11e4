"""5-point face alignment: the least-squares similarity transform (Umeyama, 1991) that
takes SCRFD's landmarks onto ArcFace's reference points, then one warp to the crop.

ArcFace models were trained on crops made exactly this way, so the reference points
and the estimator are ArcFace's; the implementation is here to keep the model layer
free of a library's deprecation path (scikit-image's `SimilarityTransform.estimate`).
"""

from __future__ import annotations

import cv2
import numpy as np

# Eye centres, nose tip and mouth corners in ArcFace's 112x112 training crops.
ARCFACE_REFERENCE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)


def supports_crop_size(size: int) -> bool:
    """ArcFace's reference points are defined for 112-pixel crops (and 128 with a margin)."""
    return size > 0 and (size % 112 == 0 or size % 128 == 0)


def reference_points(size: int) -> np.ndarray:
    """ArcFace's points scaled to a crop of `size` (128-style crops add a margin left)."""
    if size % 112 == 0:
        return np.asarray(ARCFACE_REFERENCE * (size / 112.0))
    ratio = size / 128.0
    return np.asarray(ARCFACE_REFERENCE * ratio + np.array([8.0 * ratio, 0.0]))


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """2x3 matrix of the rotation + uniform scale + translation that maps `source`
    points onto `target` with least squared error (Umeyama's closed form)."""
    source = np.asarray(source, np.float64)
    target = np.asarray(target, np.float64)
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    source_centred, target_centred = source - source_mean, target - target_mean
    covariance = target_centred.T @ source_centred / len(source)
    u, singular, vt = np.linalg.svd(covariance)
    # A reflection is not a similarity: flip the weakest axis instead.
    signs = np.array([1.0, -1.0 if np.linalg.det(covariance) < 0 else 1.0])
    rotation = u @ np.diag(signs) @ vt
    source_variance = float((source_centred**2).sum(axis=1).mean())
    scale = float((singular * signs).sum()) / max(source_variance, 1e-12)
    translation = target_mean - scale * rotation @ source_mean
    return np.hstack([scale * rotation, translation[:, None]])


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int) -> np.ndarray:
    """The size x size crop that puts the 5 landmarks where ArcFace expects them."""
    matrix = similarity_transform(landmarks, reference_points(size))
    return cv2.warpAffine(image, matrix, (size, size), borderValue=0.0)
