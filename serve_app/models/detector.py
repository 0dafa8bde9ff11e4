"""SCRFD face detector, batched over images.

InsightFace's `SCRFD.detect` runs one image per onnxruntime call. The SCRFD graphs
take dynamic batch, height and width axes, so here every image is scaled as InsightFace
scales it (longer side to the input size) and images go through the network in batches
(what lets a GPU batch across requests); decoding reuses InsightFace's box/keypoint
helpers and its NMS.

InsightFace pads every image to the full input square. Here an image's canvas is only as
large as the scaled image, rounded up to the coarsest stride (32): the network's cost
follows its input area, and a 4:3 photo's padding was a quarter of it. Scale, and
therefore what is detected, stay InsightFace's. Images of one canvas shape share a
network call; on a GPU, photos from one camera or client mostly share one.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from insightface.model_zoo import get_model
from insightface.model_zoo.scrfd import SCRFD, distance2bbox, distance2kps

from serve_app.models.pack import session_options

# The coarsest feature stride of SCRFD: canvas sides are multiples of it.
_STRIDE_ALIGN = 32


@lru_cache(maxsize=128)
def _anchor_centers(rows: int, cols: int, stride: int, anchors: int) -> np.ndarray:
    """(x, y) of every anchor of a rows x cols feature map, in the network's row-major order."""
    grid = np.stack(list(np.mgrid[:rows, :cols][::-1]), axis=-1).astype(np.float32)
    centers = (grid * stride).reshape(-1, 2)
    return np.repeat(centers, anchors, axis=0) if anchors > 1 else centers


def _align_up(value: int) -> int:
    return -(-value // _STRIDE_ALIGN) * _STRIDE_ALIGN


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
        if input_size % _STRIDE_ALIGN:
            raise ValueError(f"detector input size {input_size} is not a multiple of {_STRIDE_ALIGN}")
        self.input_size = input_size
        self.threshold = threshold

    @property
    def provider(self) -> str:
        return str(self._session.get_providers()[0])

    def _scaled(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """Longer side to the input size (InsightFace's scale), aspect kept."""
        height, width = image.shape[:2]
        scale = self.input_size / max(height, width)
        new_w = min(self.input_size, max(1, int(round(width * scale))))
        new_h = min(self.input_size, max(1, int(round(height * scale))))
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        return cv2.resize(image, (new_w, new_h), interpolation=interpolation), scale

    def detect(self, images: list[np.ndarray]) -> list[Detections]:
        """Detect faces in BGR images; one network call per canvas shape in the list."""
        scaled = [self._scaled(image) for image in images]
        # Each image gets its own canvas shape, whatever it is batched with: the padding
        # reaches the network's receptive fields, so sharing a larger canvas would move
        # landmarks (and embeddings) by a hair depending on the other requests.
        groups: dict[tuple[int, int], list[int]] = {}
        for index, (resized, _) in enumerate(scaled):
            shape = (_align_up(resized.shape[0]), _align_up(resized.shape[1]))
            groups.setdefault(shape, []).append(index)
        found: dict[int, Detections] = {}
        model = self._model
        for (rows, cols), members in groups.items():
            canvases = []
            for index in members:
                resized = scaled[index][0]
                # Pad right and bottom with black, as InsightFace does.
                canvas = np.zeros((rows, cols, 3), dtype=np.uint8)
                canvas[:resized.shape[0], :resized.shape[1]] = resized
                canvases.append(canvas)
            blob = cv2.dnn.blobFromImages(canvases, 1.0 / model.input_std, (cols, rows),
                                          (model.input_mean,) * 3, swapRB=True)
            outputs = self._session.run(model.output_names, {model.input_name: blob})
            for position, index in enumerate(members):
                found[index] = self._decode(outputs, position, scaled[index][1], rows, cols)
        return [found[index] for index in range(len(images))]

    def _decode(self, outputs: list[np.ndarray], index: int, scale: float, rows: int, cols: int) -> Detections:
        fmc = self._model.fmc
        scores, boxes, landmarks = [], [], []
        for level, stride in enumerate(self._model._feat_stride_fpn):
            level_scores = outputs[level][index].reshape(-1)
            keep = np.where(level_scores >= self.threshold)[0]
            if keep.size == 0:
                continue
            centers = _anchor_centers(rows // stride, cols // stride, stride, self._model._num_anchors)[keep]
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
