"""ArcFace recognizer: aligned 112x112 face crops in, L2-normalised embeddings out."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from insightface.model_zoo import get_model
from insightface.model_zoo.arcface_onnx import ArcFaceONNX
from insightface.utils import face_align

from serve_app.models.pack import session_options

# w600k_mbf.onnx declares its output as [1, 512] although the graph batches; onnxruntime
# then warns on every batched call. Only this session's log level is raised, to ERROR.
_ORT_LOG_ERROR = 3

# insightface's norm_crop calls a scikit-image method deprecated in 0.26 (same result);
# its FutureWarning would reach every embedder log and means nothing to an operator.
warnings.filterwarnings("ignore", message=r".*`estimate` is deprecated", category=FutureWarning,
                        module=r"insightface\.utils\.face_align")


class FaceRecognizer:
    def __init__(self, model_path: Path, providers: list[str], intra_op_threads: int = 0) -> None:
        model = get_model(
            str(model_path),
            providers=providers,
            sess_options=session_options(intra_op_threads, log_severity=_ORT_LOG_ERROR),
            download=False,
        )
        if not isinstance(model, ArcFaceONNX):
            raise ValueError(f"{model_path} is not an ArcFace recognition model")
        self._model = model
        self._session = model.session
        self.crop_size = int(model.input_size[0])
        self.dim = int(model.output_shape[-1])

    @property
    def provider(self) -> str:
        return str(self._session.get_providers()[0])

    def align(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """5-point similarity transform of one face to the recognizer's crop size."""
        return np.asarray(face_align.norm_crop(image, landmark=landmarks, image_size=self.crop_size))

    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        """(n, dim) float32, each row of unit length; one network call for the list."""
        if not crops:
            return np.zeros((0, self.dim), dtype=np.float32)
        features = np.asarray(self._model.get_feat(crops), dtype=np.float32)
        norms = np.linalg.norm(features, axis=1, keepdims=True)
        return np.asarray(features / np.maximum(norms, 1e-12), dtype=np.float32)
