"""ArcFace recognizer: aligned square face crops in, L2-normalised embeddings out."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import onnx

from serve_app.models.alignment import align_face, supports_crop_size
from serve_app.models.onnx_model import (
    OnnxModel,
    UnsuitableModel,
    declared_shape,
    make_batch_axis_symbolic,
    normalises_input,
)

# ArcFace's training normalisation, (pixel - 127.5) / 127.5, unless the graph does its own.
_MEAN, _STD = 127.5, 127.5


class FaceRecognizer(OnnxModel):
    def __init__(self, model_path: Path, providers: Sequence[str], intra_op_threads: int = 0) -> None:
        self.crop_size = 0
        self.dim = 0
        self.mean, self.std = _MEAN, _STD
        super().__init__(model_path, providers, intra_op_threads)

    def _prepare(self, model: onnx.ModelProto) -> None:
        shape = declared_shape(model.graph.input[0])
        if len(shape) != 4 or shape[1] != 3 or not isinstance(shape[2], int) or shape[2] != shape[3]:
            raise UnsuitableModel(f"{self.name}: input shape {shape} is not (batch, 3, size, size) "
                                  "with a fixed square size")
        if not supports_crop_size(shape[2]):
            raise UnsuitableModel(f"{self.name}: crop size {shape[2]} has no ArcFace alignment "
                                  "(a multiple of 112 or 128)")
        if len(model.graph.output) != 1:
            raise UnsuitableModel(f"{self.name} has {len(model.graph.output)} outputs; a recognizer has one")
        output = declared_shape(model.graph.output[0])
        if len(output) != 2 or not isinstance(output[1], int) or output[1] <= 0:
            raise UnsuitableModel(f"{self.name}: output shape {output} is not (batch, embedding size)")
        self.crop_size, self.dim = shape[2], output[1]
        if normalises_input(model):
            self.mean, self.std = 0.0, 1.0
        make_batch_axis_symbolic(model)

    def warm_up(self) -> None:
        """A blank batch of two; checks that the graph batches and yields `dim`-wide rows."""
        size = self.crop_size
        features = self._run(np.zeros((2, 3, size, size), np.float32))[0]
        if features.shape != (2, self.dim):
            raise UnsuitableModel(f"{self.name} turned a batch of 2 into {features.shape}, not (2, {self.dim})")

    def align(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """5-point similarity transform of one face to the recognizer's crop size."""
        return align_face(image, landmarks, self.crop_size)

    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        """(n, dim) float32, each row of unit length; one network call for the list."""
        if not crops:
            return np.zeros((0, self.dim), dtype=np.float32)
        size = (self.crop_size, self.crop_size)
        blob = cv2.dnn.blobFromImages(crops, 1.0 / self.std, size, (self.mean,) * 3, swapRB=True)
        features = self._run(blob)[0].astype(np.float32)
        norms = np.linalg.norm(features, axis=1, keepdims=True)
        return np.asarray(features / np.maximum(norms, 1e-12), np.float32)
