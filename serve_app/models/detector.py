"""SCRFD face detector, batched over images.

The SCRFD graphs take dynamic batch, height and width axes. Every image is scaled as
InsightFace's `SCRFD.detect` scales it (longer side to the input size), and images go
through the network in batches (what lets a GPU batch across requests).

InsightFace pads every image to the full input square. Here an image's canvas is only as
large as the scaled image, rounded up to the coarsest stride: the network's cost follows
its input area, and a 4:3 photo's padding was a quarter of it. Scale, and therefore what
is detected, stay InsightFace's. Images of one canvas shape share a network call; on a
GPU, photos from one camera or client mostly share one.

The graph's facts (feature levels, their strides, anchors per location, pixel
normalisation) are read from the model at load and checked on a warm-up run.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import onnx

from serve_app.models.onnx_model import OnnxModel, UnsuitableModel, declared_shape, normalises_input

# What each SCRFD head predicts per anchor, by the width of its output.
_SCORE, _BOX, _KEYPOINTS = 1, 4, 10
# InsightFace's export names its heads `score_8`, `bbox_16`, `kps_32`...
_HEAD_NAME = re.compile(r"^(score|bbox|kps)_(\d+)$")
# ...and exports without those names follow SCRFD's two FPN layouts, by level count.
_CONVENTIONAL_STRIDES = {3: (8, 16, 32), 5: (8, 16, 32, 64, 128)}
# SCRFD's training normalisation, (pixel - 127.5) / 128, unless the graph does its own.
_MEAN, _STD = 127.5, 128.0


@dataclass(frozen=True)
class FeatureLevel:
    stride: int
    anchors: int  # anchors per feature-map location
    score: int  # indexes of this level's heads in the session's outputs
    box: int
    keypoints: int


@dataclass(frozen=True)
class Detections:
    """Faces found in one image, in that image's pixel coordinates."""

    boxes: np.ndarray  # (n, 4) x1, y1, x2, y2
    scores: np.ndarray  # (n,)
    landmarks: np.ndarray  # (n, 5, 2)

    def __len__(self) -> int:
        return int(self.scores.shape[0])


_NO_FACES = Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))


@lru_cache(maxsize=128)
def _anchor_centers(rows: int, cols: int, stride: int, anchors: int) -> np.ndarray:
    """(x, y) of every anchor of a rows x cols feature map, in the network's row-major order."""
    ys, xs = np.mgrid[:rows, :cols]
    grid = np.stack([xs, ys], axis=-1).astype(np.float32)
    centers = (grid * stride).reshape(-1, 2)
    return np.repeat(centers, anchors, axis=0) if anchors > 1 else centers


def non_maximum_suppression(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """Greedy NMS, highest score first. Box areas count the +1 pixel InsightFace's SCRFD
    counts, so the same boxes survive as in its reference implementation."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size > 0:
        best, rest = int(order[0]), order[1:]
        keep.append(best)
        width = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + 1)
        height = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + 1)
        overlap = width * height
        order = rest[overlap / (areas[best] + areas[rest] - overlap) <= threshold]
    return keep


def _levels_from_outputs(outputs: Sequence[onnx.ValueInfoProto], name: str) -> list[tuple[int, int, int, int]]:
    """(stride, score, box, keypoints output indexes) per feature level, from the graph."""
    heads: dict[int, list[int]] = {_SCORE: [], _BOX: [], _KEYPOINTS: []}
    for index, output in enumerate(outputs):
        shape = declared_shape(output)
        if len(shape) != 3:
            raise UnsuitableModel(f"{name}: output {output.name} has shape {shape}; a batched SCRFD "
                                  "detector has (batch, anchors, values) outputs")
        width = shape[-1]
        if not isinstance(width, int) or width not in heads:
            raise UnsuitableModel(f"{name}: output {output.name} of width {width} is not an SCRFD head "
                                  "(score 1, box 4, landmarks 10)")
        heads[width].append(index)
    levels = len(heads[_SCORE])
    if not heads[_KEYPOINTS]:
        raise UnsuitableModel(f"{name} predicts no landmarks; alignment needs SCRFD's 5 keypoints")
    if not levels or len(heads[_BOX]) != levels or len(heads[_KEYPOINTS]) != levels:
        raise UnsuitableModel(f"{name}: {len(heads[_SCORE])} score, {len(heads[_BOX])} box and "
                              f"{len(heads[_KEYPOINTS])} landmark outputs; expected one of each per level")
    named = [_HEAD_NAME.match(outputs[i].name) for i in heads[_SCORE]]
    if all(named):
        strides = tuple(int(match.group(2)) for match in named if match)
    elif levels in _CONVENTIONAL_STRIDES:
        strides = _CONVENTIONAL_STRIDES[levels]
    else:
        raise UnsuitableModel(f"{name}: cannot tell the strides of its {levels} feature levels")
    return [(stride, *indexes)
            for stride, indexes in zip(strides, zip(heads[_SCORE], heads[_BOX], heads[_KEYPOINTS], strict=True),
                                       strict=True)]


class FaceDetector(OnnxModel):
    def __init__(
        self,
        model_path: Path,
        providers: Sequence[str],
        input_size: int = 640,
        threshold: float = 0.5,
        nms_threshold: float = 0.4,
        intra_op_threads: int = 0,
        square_canvas: bool = False,
    ) -> None:
        self.input_size = input_size
        # Every image on the full input square (InsightFace's own layout): one input shape
        # for every batch. GPUs need that: cuDNN picks its convolution algorithms per input
        # shape, and each new shape costs a search (on an H200, 8 photos of 3 shapes ran at
        # 2-16 images/s, 8 of one shape at 220-360). On a CPU the fitted canvas is cheaper.
        self.square_canvas = square_canvas
        self.threshold = threshold
        self.nms_threshold = nms_threshold
        self._heads: list[tuple[int, int, int, int]] = []
        self.levels: tuple[FeatureLevel, ...] = ()
        self.mean, self.std = _MEAN, _STD
        super().__init__(model_path, providers, intra_op_threads)

    @property
    def coarsest_stride(self) -> int:
        """Canvas sides are multiples of it, so every level's map covers the canvas exactly."""
        return max(stride for stride, *_ in self._heads)

    def _prepare(self, model: onnx.ModelProto) -> None:
        shape = declared_shape(model.graph.input[0])
        if len(shape) != 4 or shape[1] != 3:
            raise UnsuitableModel(f"{self.name}: input shape {shape} is not (batch, 3, height, width)")
        if isinstance(shape[0], int) and shape[0] > 0:
            raise UnsuitableModel(f"{self.name} has a fixed batch of {shape[0]}; batched detection needs a batch axis")
        if any(isinstance(side, int) and side > 0 for side in shape[2:]):
            raise UnsuitableModel(f"{self.name} has a fixed input size {shape[2:]}; canvases need dynamic sides")
        self._heads = _levels_from_outputs(model.graph.output, self.name)
        if self.input_size % self.coarsest_stride:
            raise UnsuitableModel(f"detector input size {self.input_size} is not a multiple of "
                                  f"{self.name}'s coarsest stride {self.coarsest_stride}")
        if normalises_input(model):
            self.mean, self.std = 0.0, 1.0

    def warm_up(self) -> None:
        """Two blank full-size canvases; their output sizes give each level's anchors per location."""
        side = self.input_size
        outputs = self._run(np.zeros((2, 3, side, side), np.float32))
        levels = []
        for stride, score, box, keypoints in self._heads:
            rows = outputs[score].shape[1]
            locations = (side // stride) ** 2
            if rows % locations or outputs[box].shape[1] != rows or outputs[keypoints].shape[1] != rows:
                raise UnsuitableModel(f"{self.name}: stride-{stride} outputs {[outputs[i].shape for i in (score, box)]}"
                                      f" do not fit a {side // stride}x{side // stride} feature map")
            levels.append(FeatureLevel(stride, rows // locations, score, box, keypoints))
        if len({level.anchors for level in levels}) != 1:
            raise UnsuitableModel(f"{self.name}: levels differ in anchors per location {levels}")
        self.levels = tuple(levels)

    def _scaled(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """Longer side to the input size (InsightFace's scale), aspect kept."""
        height, width = image.shape[:2]
        scale = self.input_size / max(height, width)
        new_w = min(self.input_size, max(1, int(round(width * scale))))
        new_h = min(self.input_size, max(1, int(round(height * scale))))
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        return cv2.resize(image, (new_w, new_h), interpolation=interpolation), scale

    def _align_up(self, value: int) -> int:
        return -(-value // self.coarsest_stride) * self.coarsest_stride

    def detect(self, images: list[np.ndarray]) -> list[Detections]:
        """Detect faces in BGR images; one network call per canvas shape in the list."""
        scaled = [self._scaled(image) for image in images]
        # Each image gets its own canvas shape, whatever it is batched with: the padding
        # reaches the network's receptive fields, so sharing a larger canvas would move
        # landmarks (and embeddings) by a hair depending on the other requests.
        groups: dict[tuple[int, int], list[int]] = {}
        for index, (resized, _) in enumerate(scaled):
            shape = (self.input_size, self.input_size) if self.square_canvas else \
                (self._align_up(resized.shape[0]), self._align_up(resized.shape[1]))
            groups.setdefault(shape, []).append(index)
        found: dict[int, Detections] = {}
        for (rows, cols), members in groups.items():
            canvases = []
            for index in members:
                resized = scaled[index][0]
                # Pad right and bottom with black, as InsightFace does.
                canvas = np.zeros((rows, cols, 3), dtype=np.uint8)
                canvas[:resized.shape[0], :resized.shape[1]] = resized
                canvases.append(canvas)
            blob = cv2.dnn.blobFromImages(canvases, 1.0 / self.std, (cols, rows), (self.mean,) * 3, swapRB=True)
            outputs = self._run(blob)
            for position, index in enumerate(members):
                found[index] = self._decode(outputs, position, scaled[index][1], rows, cols)
        return [found[index] for index in range(len(images))]

    def _decode(self, outputs: list[np.ndarray], index: int, scale: float, rows: int, cols: int) -> Detections:
        scores, boxes, landmarks = [], [], []
        for level in self.levels:
            level_scores = outputs[level.score][index].reshape(-1)
            keep = np.where(level_scores >= self.threshold)[0]
            if keep.size == 0:
                continue
            centers = _anchor_centers(rows // level.stride, cols // level.stride, level.stride, level.anchors)[keep]
            scores.append(level_scores[keep])
            # Distances from the anchor centre, in units of the stride: left, top, right, bottom...
            distances = outputs[level.box][index][keep] * level.stride
            boxes.append(np.hstack([centers - distances[:, :2], centers + distances[:, 2:]]))
            # ...and (dx, dy) of each of the 5 keypoints.
            offsets = outputs[level.keypoints][index][keep].reshape(-1, 5, 2) * level.stride
            landmarks.append(centers[:, None, :] + offsets)
        if not scores:
            return _NO_FACES
        all_scores = np.concatenate(scores)
        order = np.argsort(-all_scores, kind="stable")
        all_boxes = (np.vstack(boxes) / scale)[order].astype(np.float32)
        all_scores = all_scores[order].astype(np.float32)
        kps = (np.vstack(landmarks) / scale)[order].astype(np.float32)
        keep_list = non_maximum_suppression(all_boxes, all_scores, self.nms_threshold)
        return Detections(all_boxes[keep_list], all_scores[keep_list], kps[keep_list])
