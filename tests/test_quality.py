"""Face quality measures and the gate's defaults, on package photos and generated variants."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from serve_app.config import Settings
from serve_app.embedding import EmbedRequest, FacePipeline, FaceSelection
from serve_app.quality import QualityLimits, QualityMeasures, exposure, failures, pose, sharpness
from serve_app.samples import adjust, crop_box, encode_jpeg, pad, read_package_image, resize

# A mean adult face in millimetres (x right, y down, z towards the camera): eye centres,
# nose tip, mouth corners. Independent of the estimator's constants only in layout; what
# it checks is the estimator's geometry (roll removal, scale, signs, angle recovery).
_FACE_3D = np.array([[-31.5, 0.0, 0.0], [31.5, 0.0, 0.0], [0.0, 34.7, 30.0], [-25.0, 70.0, 0.0], [25.0, 70.0, 0.0]])


def _project(yaw: float, pitch: float, roll: float = 0.0, scale: float = 1.5, shift=(200.0, 150.0)) -> np.ndarray:
    y, p, r = (math.radians(a) for a in (yaw, pitch, roll))
    turn = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    # Positive pitch tips the face down: the nose tip (z > 0) moves down (+y).
    tilt = np.array([[1, 0, 0], [0, math.cos(p), math.sin(p)], [0, -math.sin(p), math.cos(p)]])
    spin = np.array([[math.cos(r), -math.sin(r)], [math.sin(r), math.cos(r)]])
    points = (_FACE_3D @ (turn @ tilt).T)[:, :2]
    return points @ spin.T * scale + np.array(shift)


@pytest.mark.parametrize("yaw, pitch, yaw_error", [
    (0, 0, 0.5), (20, 0, 0.5), (-35, 0, 0.5), (0, 25, 0.5), (0, -20, 0.5),
    # Turned and tilted at once: yaw reads low when tilted down, high when up (no correction).
    (15, 15, 6.0), (-25, -10, 5.0), (20, -20, 7.0),
])
def test_pose_recovers_the_angles_of_a_projected_face(yaw: float, pitch: float, yaw_error: float) -> None:
    for roll in (0.0, 25.0, -40.0):  # roll and the face's size and place change nothing
        for scale, shift in ((1.5, (200.0, 150.0)), (0.4, (30.0, 900.0))):
            estimated_yaw, estimated_pitch = pose(_project(yaw, pitch, roll, scale, shift))
            assert estimated_yaw == pytest.approx(yaw, abs=yaw_error), (yaw, pitch, roll)
            assert estimated_pitch == pytest.approx(pitch, abs=0.5), (yaw, pitch, roll)


def test_pose_of_a_mirrored_face_changes_the_yaw_sign_only() -> None:
    points = _project(25, 10)
    mirrored = points * [-1, 1]
    mirrored = mirrored[[1, 0, 2, 4, 3]]  # the left eye of the mirror image is the right eye
    yaw, pitch = pose(points)
    mirrored_yaw, mirrored_pitch = pose(mirrored)
    assert mirrored_yaw == pytest.approx(-yaw, abs=1e-6) and mirrored_pitch == pytest.approx(pitch, abs=1e-6)


def test_sharpness_and_exposure_on_synthetic_crops() -> None:
    flat = np.full((112, 112, 3), 128, np.uint8)
    assert sharpness(flat) == 0.0
    assert exposure(flat) == (128.0, 0.0)
    checker = (np.indices((112, 112)).sum(axis=0) % 2 * 255).astype(np.uint8)
    assert sharpness(checker) > 1000 and exposure(checker)[1] == 1.0
    assert sharpness(cv2.GaussianBlur(checker, (0, 0), 2)) < sharpness(checker) / 100
    assert exposure(np.zeros((112, 112, 3), np.uint8)) == (0.0, 1.0)


LIMITS = QualityLimits(min_face_size=32, min_det_score=0.6, min_sharpness=30, min_brightness=50,
                       max_brightness=210, max_clipped=0.1, max_yaw=30, max_pitch=40)
GOOD = QualityMeasures(face_size=100, det_score=0.85, sharpness=250, brightness=140, clipped=0.0, yaw=3, pitch=-5)


def test_each_measure_outside_its_limit_is_named_with_value_and_limit() -> None:
    assert failures(GOOD, LIMITS) == []
    cases = {
        "face_size": {"face_size": 20.0}, "det_score": {"det_score": 0.55}, "sharpness": {"sharpness": 12.0},
        "clipped": {"clipped": 0.3}, "yaw": {"yaw": -45.0}, "pitch": {"pitch": 41.0},
    }
    for name, change in cases.items():
        (failure,) = failures(QualityMeasures(**{**GOOD.rounded(), **change}), LIMITS)
        assert failure.measure == name and failure.value == abs(next(iter(change.values())))
        assert failure.limit == getattr(LIMITS, f"{failure.bound}_{name}")
    dark, bright = (failures(QualityMeasures(**{**GOOD.rounded(), "brightness": v}), LIMITS) for v in (30.0, 240.0))
    assert [(f.measure, f.bound, f.limit) for f in dark + bright] == [("brightness", "min", 50), ("brightness", "max", 210)]
    both = failures(QualityMeasures(**{**GOOD.rounded(), "face_size": 10.0, "yaw": 50.0}), LIMITS)
    assert [f.measure for f in both] == ["face_size", "yaw"]


def test_default_limits_are_the_settings() -> None:
    assert QualityLimits.from_settings(Settings(_env_file=None)) == LIMITS


# --- the default gate on real photos -------------------------------------------------------


def _largest(pipeline: FacePipeline, image: np.ndarray) -> QualityMeasures:
    result = pipeline.run([EmbedRequest(encode_jpeg(image, 95))])[0]
    return result.largest().quality


def _failed(pipeline: FacePipeline, image: np.ndarray) -> set[str]:
    return {failure.measure for failure in failures(_largest(pipeline, image), LIMITS)}


@pytest.mark.parametrize("name", ["frontal", "left", "right", "different_person"])
def test_enrollment_samples_pass_the_default_gate(pipeline, samples, name) -> None:
    result = pipeline.run([EmbedRequest(samples[name])])[0]
    assert failures(result.largest().quality, LIMITS) == [], result.largest().quality


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    return pad(read_package_image("yaoming.jpg"), 0.15)


def _small(image: np.ndarray) -> np.ndarray:
    canvas = np.full((300, 300, 3), 110, np.uint8)
    tiny = resize(image, 0.25)  # a ~27 px face
    canvas[: tiny.shape[0], : tiny.shape[1]] = tiny
    return canvas


def _lower_half_covered(image: np.ndarray) -> np.ndarray:
    covered = image.copy()
    covered[int(image.shape[0] * 0.52):] = 120  # a mask over mouth and chin
    return covered


@pytest.mark.parametrize("variant, expected", [
    (lambda im: cv2.GaussianBlur(im, (0, 0), 2.5), "sharpness"),
    (lambda im: adjust(im, contrast=0.25), "brightness"),
    (lambda im: adjust(im, brightness=60, contrast=1.2), "clipped"),
    (_small, "face_size"),
    (_lower_half_covered, "det_score"),
])
def test_each_gate_refuses_its_degraded_variant(pipeline, portrait, variant, expected) -> None:
    assert _failed(pipeline, portrait) == set()
    assert expected in _failed(pipeline, variant(portrait))


@pytest.mark.parametrize("photo, box, sign", [
    # Faces seen by eye in three-quarter view: t1's man at the top right looks to the
    # image's left, gdp's middle player to its right.
    ("t1.jpg", (906, 59, 1011, 206), -1),
    ("gdp.jpg", (266, 56, 329, 154), 1),
])
def test_turned_faces_fail_on_yaw_and_their_mirror_images_too(pipeline, photo, box, sign) -> None:
    crop = crop_box(read_package_image(photo), box, margin=0.8)
    turned = _largest(pipeline, crop)
    assert sign * turned.yaw > LIMITS.max_yaw, turned
    mirrored = _largest(pipeline, cv2.flip(crop, 1))
    assert -sign * mirrored.yaw > LIMITS.max_yaw, mirrored


def test_gallery_faces_carry_their_measures(pipeline, samples) -> None:
    group = pipeline.run([EmbedRequest(samples["group"], FaceSelection.ALL)])[0]
    sizes = [face.quality.face_size for face in group.faces]
    assert len(sizes) == 6 and min(sizes) > 90
    for face in group.faces:
        assert face.quality.det_score == face.det_score
