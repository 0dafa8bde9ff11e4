"""Coarse-to-fine detection of the largest face (probes and enrollment photos).

The detector's cost follows its canvas area. A probe's subject is large, so it shows on a
canvas of half the side (a quarter of the work); the landmarks alignment needs are then
refined on a crop around that face, where it fills half the same small canvas. Where the
small canvas finds nothing, or only a face small enough that a larger one could have been
missed at that scale, the image goes through the full canvas as before.
"""

from __future__ import annotations

import copy

import numpy as np

from serve_app.models.detector import Detections, FaceDetector

# The coarse canvas, as a fraction of the detector's (its longer side).
COARSE_FRACTION = 2
# The largest coarse face must span this share of the canvas's longer side to be trusted as
# the largest: at 320 px, 40 px (faces below ~12 px are missed at that scale, so a face four
# times that is safely the larger).
MIN_COARSE_SHARE = 1 / 8
# A runner-up at least this large (by area) makes "the largest" too close to call coarsely.
CLOSE_RUNNER_UP = 0.6
# The refinement crop: a square this many times the face box's longer side, around it.
CONTEXT = 2.0
# The refined face must be the coarse one (boxes overlapping at least this much).
MIN_IOU = 0.5


def iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    x1, y1 = np.maximum(box[0], others[:, 0]), np.maximum(box[1], others[:, 1])
    x2, y2 = np.minimum(box[2], others[:, 2]), np.minimum(box[3], others[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return np.asarray(inter / np.maximum(area + areas - inter, 1e-6))


class CoarseToFine:
    def __init__(self, detector: FaceDetector) -> None:
        self.detector = detector
        # The same network and session on a smaller canvas (the detector keeps no state
        # per call beyond its input size).
        self.coarse = copy.copy(detector)
        self.coarse.input_size = detector.input_size // COARSE_FRACTION

    def detect_largest(self, images: list[np.ndarray]) -> list[Detections]:
        """The largest face of each image (with score and landmarks), in its pixels; other
        faces are not reported where the coarse canvas settled the question."""
        answers: list[Detections | None] = [None] * len(images)
        crops: list[np.ndarray] = []
        pending: list[tuple[int, np.ndarray, tuple[int, int]]] = []
        for index, (image, found) in enumerate(zip(images, self.coarse.detect(images), strict=True)):
            if len(found) == 0:
                continue
            areas = (found.boxes[:, 2] - found.boxes[:, 0]) * (found.boxes[:, 3] - found.boxes[:, 1])
            order = np.argsort(-areas)
            if len(order) > 1 and areas[order[1]] >= CLOSE_RUNNER_UP * areas[order[0]]:
                continue  # two faces of about one size: which is larger is the full canvas's call
            box = found.boxes[order[0]]
            height, width = image.shape[:2]
            side = float(max(box[2] - box[0], box[3] - box[1]))
            if side * self.coarse.input_size / max(height, width) < MIN_COARSE_SHARE * self.coarse.input_size:
                continue
            half = CONTEXT * side / 2
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            x0, y0 = max(0, int(cx - half)), max(0, int(cy - half))
            x1, y1 = min(width, int(np.ceil(cx + half))), min(height, int(np.ceil(cy + half)))
            crops.append(image[y0:y1, x0:x1])
            pending.append((index, box, (x0, y0)))
        for (index, box, (x0, y0)), found in zip(pending, self.coarse.detect(crops) if crops else [], strict=True):
            if len(found) == 0:
                continue
            offset = np.array([x0, y0], np.float32)
            boxes = found.boxes + np.tile(offset, 2)
            overlap = iou(box, boxes)
            best = int(np.argmax(overlap))
            if overlap[best] < MIN_IOU:
                continue
            answers[index] = Detections(boxes[best:best + 1], found.scores[best:best + 1],
                                        found.landmarks[best:best + 1] + offset)
        rest = [index for index, answer in enumerate(answers) if answer is None]
        for index, found in zip(rest, self.detector.detect([images[i] for i in rest]) if rest else [], strict=True):
            answers[index] = found
        return [answer for answer in answers if answer is not None]
