"""SCRFD face detector, batched over images.

InsightFace's `SCRFD.detect` runs one image per onnxruntime call. The SCRFD graphs
take a dynamic batch axis, so here every image is letterboxed to one square input and a
whole batch goes through the network in one call (what lets a GPU batch across
requests); decoding reuses InsightFace's box/keypoint helpers and its NMS.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from insightface.model_zoo import get_model
from insightface.model_zoo.scrfd import SCRFD, distance2bbox, distance2kps

from serve_app.models.pack import session_options


@dataclass(frozen=True)
class Detections:
    """Faces found in one image, in that image's pixel coordinates."""

    boxes: np.ndarray  # (n, 4) x1, y1, x2, y2
    scores: np.ndarray  # (n,)
    landmarks: np.ndarray  # (n, 5, 2)

    def __len__(self) -> int:
        return int(self.scores.shape[0])


class FaceDetector:
    def __init__(
        self,
        model_path: Path,
        providers: list[str],
        input_size: int = 640,
        threshold: float = 0.5,
        nms_threshold: float = 0.4,
        intra_op_threads: int = 0,
    ) -> None:
        model = get_model(
            str(model_path),
            providers=providers,
            sess_options=session_options(intra_op_threads),
            download=False,
        )
        if not isinstance(model, SCRFD) or not model.use_kps:
            raise ValueError(f"{model_path} is not an SCRFD detector with landmarks")
        if not model.batched:
            raise ValueError(f"{model_path} has no batch axis; batched detection needs one")
        model.nms_thresh = nms_threshold
        self._model = model
        self._session = model.session
        self.input_size = input_size
        self.threshold = threshold
        self._anchor_centers = {
            stride: self._centers(input_size // stride, stride, model._num_anchors)
            for stride in model._feat_stride_fpn
        }

    @property
    def provider(self) -> str:
        return self._session.get_providers()[0]

    @staticmethod
    def _centers(cells: int, stride: int, anchors: int) -> np.ndarray:
        grid = np.stack(np.mgrid[:cells, :cells][::-1], axis=-1).astype(np.float32)
        centers = (grid * stride).reshape(-1, 2)
        return np.repeat(centers, anchors, axis=0) if anchors > 1 else centers

    def _letterbox(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """Scale the longer side to the input size, pad right/bottom with black."""
        height, width = image.shape[:2]
        scale = self.input_size / max(height, width)
        new_w = max(1, int(round(width * scale)))
        new_h = max(1, int(round(height * scale)))
        canvas = np.zeros((self.input_size, self.input_size, 3), dtype=np.uint8)
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        canvas[:new_h, :new_w] = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
        return canvas, scale

    def detect(self, images: list[np.ndarray]) -> list[Detections]:
        """Detect faces in BGR images; one network call for the whole list."""
        if not images:
            return []
        boxed = [self._letterbox(image) for image in images]
        model = self._model
        blob = cv2.dnn.blobFromImages(
            [canvas for canvas, _ in boxed],
            1.0 / model.input_std,
            (self.input_size, self.input_size),
            (model.input_mean,) * 3,
            swapRB=True,
        )
        outputs = self._session.run(model.output_names, {model.input_name: blob})
        return [self._decode(outputs, index, scale) for index, (_, scale) in enumerate(boxed)]

    def _decode(self, outputs: list[np.ndarray], index: int, scale: float) -> Detections:
        fmc = self._model.fmc
        scores, boxes, landmarks = [], [], []
        for level, stride in enumerate(self._model._feat_stride_fpn):
            level_scores = outputs[level][index].reshape(-1)
            keep = np.where(level_scores >= self.threshold)[0]
            if keep.size == 0:
                continue
            centers = self._anchor_centers[stride][keep]
            scores.append(level_scores[keep])
            boxes.append(distance2bbox(centers, outputs[level + fmc][index][keep] * stride))
            kps = distance2kps(centers, outputs[level + 2 * fmc][index][keep] * stride)
            landmarks.append(kps.reshape(-1, 5, 2))
        if not scores:
            return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                              np.zeros((0, 5, 2), np.float32))
        all_scores = np.concatenate(scores)
        order = np.argsort(-all_scores, kind="stable")
        dets = np.hstack([np.vstack(boxes) / scale, all_scores[:, None]])[order].astype(np.float32)
        kps = (np.vstack(landmarks) / scale)[order].astype(np.float32)
        keep = self._model.nms(dets)
        return Detections(dets[keep, :4], dets[keep, 4], kps[keep])
