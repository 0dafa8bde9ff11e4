"""Face quality: how usable one detected face is as an enrollment photo or a probe.

Pure functions of what the embedder already has for each face: the box and detector
score, the 5 landmarks, and the aligned crop the recognizer sees. Sharpness and exposure
are measured on the crop's face region (the warp's black border left out), so they do
not depend on the photo's size or framing. Pose is a geometric estimate from the
landmarks: rough (a few degrees), but enough to tell a frontal face from a turned one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import cv2
import numpy as np

from serve_app.config import Settings

# The face region of an ArcFace crop, in 112-pixel units: brows to chin, cheek to cheek
# around the reference points (eyes at y 51.6, mouth at y 92.3).
_REGION_X = (24.0, 88.0)
_REGION_Y = (36.0, 104.0)
# Luminance at or beyond these counts as clipped (crushed shadows or blown highlights).
_DARK, _BRIGHT = 8, 247
# Pose model: how far ahead of the eyes' line the nose tip sits, in half eye distances,
# and ahead of the eyes-mouth plane in eye-to-mouth heights. From average adult face
# geometry (inter-pupil ~63 mm, nose tip ~30 mm ahead, eyes to mouth ~70 mm).
_NOSE_DEPTH_YAW = 0.95
_NOSE_DEPTH_PITCH = 0.43
# In a frontal face the nose tip lies this far from the eyes towards the mouth line
# (ArcFace's reference points: (71.74 - 51.60) / (92.28 - 51.60)).
_NOSE_HEIGHT_FRONTAL = 0.495


@dataclass(frozen=True)
class QualityMeasures:
    face_size: float  # shorter side of the detected box, in image pixels
    det_score: float  # the detector's confidence
    sharpness: float  # variance of the Laplacian of the crop's face region
    brightness: float  # mean luminance of the face region, 0-255
    clipped: float  # fraction of face-region pixels crushed to black or blown to white
    yaw: float  # degrees, + = face turned towards the image's right
    pitch: float  # degrees, + = face tilted down

    def rounded(self) -> dict[str, float]:
        return {name: round(float(value), 3) for name, value in asdict(self).items()}


Bound = Literal["min", "max"]


@dataclass(frozen=True)
class QualityLimits:
    """The gate: each measure's allowed range (yaw and pitch are limits on |angle|)."""

    min_face_size: float
    min_det_score: float
    min_sharpness: float
    min_brightness: float
    max_brightness: float
    max_clipped: float
    max_yaw: float
    max_pitch: float

    @classmethod
    def from_settings(cls, settings: Settings) -> QualityLimits:
        return cls(
            min_face_size=settings.quality_min_face_size,
            min_det_score=settings.quality_min_det_score,
            min_sharpness=settings.quality_min_sharpness,
            min_brightness=settings.quality_min_brightness,
            max_brightness=settings.quality_max_brightness,
            max_clipped=settings.quality_max_clipped,
            max_yaw=settings.quality_max_yaw,
            max_pitch=settings.quality_max_pitch,
        )


@dataclass(frozen=True)
class QualityFailure:
    measure: str
    value: float
    limit: float
    bound: Bound

    def describe(self) -> dict[str, float | str]:
        return {"measure": self.measure, "value": round(self.value, 3), "limit": self.limit, "bound": self.bound}


def _face_region(crop: np.ndarray) -> np.ndarray:
    gray = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
    scale = gray.shape[0] / 112.0
    (x1, x2), (y1, y2) = ((int(round(v * scale)) for v in pair) for pair in (_REGION_X, _REGION_Y))
    return gray[y1:y2, x1:x2]


def _sharpness(region: np.ndarray) -> float:
    return float(cv2.Laplacian(region, cv2.CV_64F).var())


def _exposure(region: np.ndarray) -> tuple[float, float]:
    clipped = np.count_nonzero((region <= _DARK) | (region >= _BRIGHT)) / max(region.size, 1)
    return float(region.mean()), float(clipped)


def sharpness(crop: np.ndarray) -> float:
    """Variance of the Laplacian: high for crisp edges, near zero for a blurred face."""
    return _sharpness(_face_region(crop))


def exposure(crop: np.ndarray) -> tuple[float, float]:
    """Mean luminance of the face region and the fraction of it clipped at either end."""
    return _exposure(_face_region(crop))


def pose(landmarks: np.ndarray) -> tuple[float, float]:
    """(yaw, pitch) in degrees from SCRFD's 5 points (eyes, nose tip, mouth corners).

    The points are first turned so the eyes lie level (removing roll) and scaled by the
    eye distance. Turning the head moves the nose tip, which stands out of the face,
    sideways against the eyes (yaw) or up and down against the eyes-mouth span (pitch).
    """
    points = np.asarray(landmarks, np.float64).reshape(5, 2)
    left_eye, right_eye, nose, mouth_left, mouth_right = points
    eye_vector = right_eye - left_eye
    eye_distance = float(np.hypot(*eye_vector))
    if eye_distance < 1e-6:
        return 90.0, 90.0
    cos_r, sin_r = eye_vector / eye_distance
    unroll = np.array([[cos_r, sin_r], [-sin_r, cos_r]])
    eyes_mid = (left_eye + right_eye) / 2
    nose_x, nose_y = unroll @ (nose - eyes_mid)
    _, mouth_y = unroll @ ((mouth_left + mouth_right) / 2 - eyes_mid)
    if mouth_y <= 1e-6:  # mouth at or above the eyes: no upright face to speak of
        return 90.0, 90.0
    # Each angle assumes the other is small. A head both turned and tilted down reads
    # with less yaw than it has (its nose tip comes nearer the eyes' depth); that is
    # not corrected with the pitch, because a smile also reads as pitch (mouth corners
    # rise) and the correction then turned smiling frontal faces into turned ones.
    yaw = math.atan2(nose_x / (eye_distance / 2), _NOSE_DEPTH_YAW)
    pitch = math.atan2(nose_y / mouth_y - _NOSE_HEIGHT_FRONTAL, _NOSE_DEPTH_PITCH)
    return math.degrees(yaw), math.degrees(pitch)


def measure(crop: np.ndarray, landmarks: np.ndarray, box: tuple[float, float, float, float],
            det_score: float) -> QualityMeasures:
    region = _face_region(crop)
    brightness, clipped = _exposure(region)
    yaw, pitch = pose(landmarks)
    return QualityMeasures(
        face_size=float(min(box[2] - box[0], box[3] - box[1])),
        det_score=float(det_score),
        sharpness=_sharpness(region),
        brightness=brightness,
        clipped=clipped,
        yaw=yaw,
        pitch=pitch,
    )


def failures(measures: QualityMeasures, limits: QualityLimits) -> list[QualityFailure]:
    """Every measure outside its limit, in a fixed order (empty when the face passes)."""
    checks: list[tuple[str, float, float, Bound]] = [
        ("face_size", measures.face_size, limits.min_face_size, "min"),
        ("det_score", measures.det_score, limits.min_det_score, "min"),
        ("sharpness", measures.sharpness, limits.min_sharpness, "min"),
        ("brightness", measures.brightness, limits.min_brightness, "min"),
        ("brightness", measures.brightness, limits.max_brightness, "max"),
        ("clipped", measures.clipped, limits.max_clipped, "max"),
        ("yaw", abs(measures.yaw), limits.max_yaw, "max"),
        ("pitch", abs(measures.pitch), limits.max_pitch, "max"),
    ]
    return [
        QualityFailure(name, value, limit, bound)
        for name, value, limit, bound in checks
        if (value < limit if bound == "min" else value > limit)
    ]
