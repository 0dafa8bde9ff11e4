"""Image bytes -> faces with embeddings, for a batch of requests at once.

Plain Python (no Ray): the FaceEmbedder deployment calls `FacePipeline.run` with the
requests that `@serve.batch` gathered; tests call it directly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from serve_app.config import Settings
from serve_app.dedup import perceptual_hash
from serve_app.errors import DomainError, NoFaceDetected
from serve_app.images import load_image
from serve_app.models.detector import FaceDetector
from serve_app.models.recognizer import FaceRecognizer
from serve_app.quality import QualityMeasures, measure
from serve_app.stage_timing import BatchTimings


class FaceSelection(str, Enum):
    LARGEST = "largest"  # probes and enrollment photos: the subject is the biggest face
    ALL = "all"  # gallery ingestion: every face


@dataclass(frozen=True)
class Face:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in image pixels
    det_score: float
    embedding: np.ndarray  # (dim,) float32, unit length
    quality: QualityMeasures

    def describe(self) -> dict[str, Any]:
        """Box and detector score as stored with the face and shown to clients."""
        x1, y1, x2, y2 = (round(float(v), 1) for v in self.box)
        return {"box": {"x1": x1, "y1": y1, "x2": x2, "y2": y2}, "det_score": round(self.det_score, 4)}


@dataclass(frozen=True)
class EmbedRequest:
    data: bytes
    selection: FaceSelection = FaceSelection.LARGEST
    # Gallery ingestion also wants the image's perceptual hash, computed here because
    # this is where the image is decoded.
    with_phash: bool = False


@dataclass
class EmbedResult:
    faces: list[Face] = field(default_factory=list)
    width: int = 0
    height: int = 0
    small_faces_dropped: int = 0
    p_hash: str | None = None
    error: DomainError | None = None
    # The stage times of the batch this request ran in (for the Server-Timing header).
    timings: BatchTimings | None = None

    def largest(self) -> Face:
        """The one face of a probe; raises the refusal the request earned."""
        if self.error is not None:
            raise self.error
        if not self.faces:
            raise NoFaceDetected()
        return self.faces[0]


class FacePipeline:
    def __init__(
        self,
        detector: FaceDetector,
        recognizer: FaceRecognizer,
        min_face_size: int,
        max_image_pixels: int,
    ) -> None:
        self.detector = detector
        self.recognizer = recognizer
        self.min_face_size = min_face_size
        self.max_image_pixels = max_image_pixels

    @property
    def dim(self) -> int:
        return self.recognizer.dim

    def describe(self) -> dict[str, Any]:
        """What health shows of the models: the providers that actually run them."""
        return {"provider": self.recognizer.provider, "detector_provider": self.detector.provider,
                "vector_dim": self.dim}

    def run(self, requests: list[EmbedRequest]) -> list[EmbedResult]:
        started = time.perf_counter()
        results = [EmbedResult() for _ in requests]
        images: list[np.ndarray] = []
        owners: list[int] = []
        for index, request in enumerate(requests):
            try:
                image = load_image(request.data, self.max_image_pixels)
            except DomainError as error:
                results[index].error = error
                continue
            results[index].height, results[index].width = image.shape[:2]
            if request.with_phash:
                results[index].p_hash = perceptual_hash(image)
            images.append(image)
            owners.append(index)

        decoded = time.perf_counter()
        detections = self.detector.detect(images)
        detected = time.perf_counter()
        crops: list[np.ndarray] = []
        pending: list[tuple[int, tuple[float, float, float, float], float, QualityMeasures]] = []
        for image, owner, found in zip(images, owners, detections, strict=True):
            chosen = self._select(found, requests[owner].selection, results[owner])
            for face_index in chosen:
                crop = self.recognizer.align(image, found.landmarks[face_index])
                x1, y1, x2, y2 = (float(v) for v in found.boxes[face_index])
                score = float(found.scores[face_index])
                crops.append(crop)
                pending.append((owner, (x1, y1, x2, y2), score,
                                measure(crop, found.landmarks[face_index], (x1, y1, x2, y2), score)))

        embeddings = self.recognizer.embed(crops)
        for (owner, box, score, quality), embedding in zip(pending, embeddings, strict=True):
            results[owner].faces.append(Face(box=box, det_score=score, embedding=embedding, quality=quality))
        timings = BatchTimings(decode=decoded - started, detect=detected - decoded,
                               embed=time.perf_counter() - detected)
        for result in results:
            result.timings = timings
        return results

    def _select(self, found: Any, selection: FaceSelection, result: EmbedResult) -> list[int]:
        if len(found) == 0:
            if selection is FaceSelection.LARGEST:
                result.error = NoFaceDetected()
            return []
        widths = found.boxes[:, 2] - found.boxes[:, 0]
        heights = found.boxes[:, 3] - found.boxes[:, 1]
        sizes = np.minimum(widths, heights)
        big_enough = np.where(sizes >= self.min_face_size)[0]
        result.small_faces_dropped = int(len(found) - big_enough.size)
        if big_enough.size == 0:
            if selection is FaceSelection.LARGEST:
                result.error = DomainError("face_too_small", 422, min_face_size=self.min_face_size)
            return []
        if selection is FaceSelection.LARGEST:
            areas = widths[big_enough] * heights[big_enough]
            return [int(big_enough[int(np.argmax(areas))])]
        # Gallery faces in a stable, readable order: left to right, top to bottom.
        return sorted(big_enough.tolist(), key=lambda i: (found.boxes[i, 0], found.boxes[i, 1]))


def load_pipeline(settings: Settings) -> FacePipeline:
    """The detector and recognizer of the configured pack on the best provider."""
    from serve_app.models.pack import choose_providers, locate_pack

    pack = locate_pack(settings.face_model_dir, settings.face_detector_file, settings.face_recognizer_file)
    providers = choose_providers(settings.face_device)
    detector = FaceDetector(pack.detector, providers, input_size=settings.det_size,
                            threshold=settings.det_threshold,
                            intra_op_threads=settings.ort_intra_op_threads,
                            square_canvas=providers[0] == "CUDAExecutionProvider")
    recognizer = FaceRecognizer(pack.recognizer, providers,
                                intra_op_threads=settings.ort_intra_op_threads)
    if recognizer.dim != settings.vector_dim:
        raise ValueError(f"recognizer {pack.recognizer.name} yields {recognizer.dim}-d vectors, "
                         f"VECTOR_DIM is {settings.vector_dim}")
    return FacePipeline(detector, recognizer, settings.min_face_size, settings.max_image_pixels)
