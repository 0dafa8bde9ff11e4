"""Image bytes -> faces with embeddings, for a batch of requests at once.

Plain Python (no Ray): the FaceEmbedder deployment calls `FacePipeline.run` with the
requests that `@serve.batch` gathered; tests call it directly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeVar

import numpy as np

from serve_app.config import (
    DEFAULT_MAX_DECODE_SECONDS,
    DEFAULT_MAX_FACES_PER_IMAGE,
    DEFAULT_MAX_JPEG_SCANS,
    Settings,
)
from serve_app.coarse_to_fine import CoarseToFine
from serve_app.dedup import perceptual_hash
from serve_app.errors import DomainError, InvalidImage, NoFaceDetected
from serve_app.images import (
    Decoded,
    DecodeLimits,
    SourceImage,
    decode_safely,
    open_image,
)
from serve_app.models.detector import Detections, FaceDetector
from serve_app.models.recognizer import FaceRecognizer
from serve_app.quality import QualityMeasures, measure
from serve_app.stage_timing import BatchTimings

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
# Crops per recognizer call: beyond this a CPU gains nothing from a larger batch.
EMBED_SLICE = 32


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
    # Faces beyond the per-image cap (the smallest ones), found but not embedded.
    excess_faces_dropped: int = 0
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


@dataclass
class _Job:
    """One request on its way through a batch: its source image and what was decoded."""

    index: int
    request: EmbedRequest
    source: SourceImage
    decoded: Decoded
    crops: list[np.ndarray] = field(default_factory=list)
    faces: list[tuple[tuple[float, float, float, float], float, QualityMeasures]] = field(default_factory=list)


class FacePipeline:
    """Decode, detect, select, align and embed a batch of requests.

    Every step runs per image inside a guard: whatever one image makes a decoder or a
    model raise becomes that request's refusal (`invalid_image` unless a more precise
    code applies), and a batched model call that fails is re-run image by image, so one
    hostile member never fails its batch.
    """

    def __init__(
        self,
        detector: FaceDetector,
        recognizer: FaceRecognizer,
        min_face_size: int,
        max_image_pixels: int,
        *,
        max_jpeg_scans: int = DEFAULT_MAX_JPEG_SCANS,
        max_decode_seconds: float = DEFAULT_MAX_DECODE_SECONDS,
        max_faces_per_image: int = DEFAULT_MAX_FACES_PER_IMAGE,
        scaled_decode: bool = True,
        coarse_to_fine: bool = False,
    ) -> None:
        self.detector = detector
        self.recognizer = recognizer
        self.min_face_size = min_face_size
        self.limits = DecodeLimits(max_image_pixels, max_jpeg_scans, max_decode_seconds)
        self.max_faces_per_image = max_faces_per_image
        # Off: every image decoded at full resolution (the reference the tests compare to).
        self.scaled_decode = scaled_decode
        # Probes (largest face): a small canvas first, the full one only where it must.
        self.coarse_to_fine = CoarseToFine(detector) if coarse_to_fine else None

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
        jobs: list[_Job] = []
        for index, request in enumerate(requests):
            job = _guarded(results[index], self._open, index, request)
            if job is not None:
                jobs.append(job)

        decoded = time.perf_counter()
        detections = self._detect(jobs, results)
        detected = time.perf_counter()
        for job, found in zip(jobs, detections, strict=True):
            if found is not None:
                _guarded(results[job.index], self._crop, job, found, results[job.index])
            job.decoded = _RELEASED  # the pixels are not needed past alignment

        embedded = [job for job in jobs if job.crops and results[job.index].error is None]
        for job, vectors in zip(embedded, self._embed(embedded, results), strict=True):
            if vectors is None:
                continue
            for (box, score, quality), vector in zip(job.faces, vectors, strict=True):
                results[job.index].faces.append(Face(box=box, det_score=score, embedding=vector, quality=quality))
        # Alignment (and any finer re-decode it needed) counts with embedding, as before.
        timings = BatchTimings(decode=decoded - started, detect=detected - decoded,
                               embed=time.perf_counter() - detected)
        for result in results:
            result.timings = timings
        return results

    def _open(self, index: int, request: EmbedRequest) -> _Job:
        source = open_image(request.data, self.limits)
        # Detection needs the detector's canvas, never more: decode at the coarsest DCT
        # scale that still covers it (alignment decodes finer where a face needs it).
        # Gallery images keep twice that: their small faces' landmarks would otherwise
        # move by a detector pixel with the resampling (self-similarity 0.90 -> 0.99 on
        # a 12 MP group photo), while a probe's large face does not notice (0.998).
        canvas = self.detector.input_size * (2 if request.selection is FaceSelection.ALL else 1)
        scale = source.coarsest_scale(canvas) if self.scaled_decode else 1
        decoded = decode_safely(source, scale)
        return _Job(index, request, source, decoded)

    def _detect(self, jobs: list[_Job], results: list[EmbedResult]) -> list[Detections | None]:
        def detect(batch: list[_Job]) -> list[Detections]:
            # Probes go coarse-to-fine where that is on; everything else to the full canvas.
            stages = self.coarse_to_fine
            coarse = [stages is not None and job.request.selection is FaceSelection.LARGEST for job in batch]
            images = {flag: [job.decoded.pixels for job, c in zip(batch, coarse, strict=True) if c is flag]
                      for flag in (True, False)}
            found = {
                True: iter(stages.detect_largest(images[True]) if stages is not None and images[True] else []),
                False: iter(self.detector.detect(images[False]) if images[False] else []),
            }
            return [next(found[flag]) for flag in coarse]

        return _split_on_failure(jobs, results, "detection", detect)

    def _embed(self, jobs: list[_Job], results: list[EmbedResult]) -> list[np.ndarray | None]:
        def embed(batch: list[_Job]) -> list[np.ndarray]:
            crops = [crop for job in batch for crop in job.crops]
            # In slices: onnxruntime's arena keeps the largest activations it was ever
            # asked for, so one call of 800 crops would pin gigabytes for good.
            vectors = np.concatenate([self.recognizer.embed(crops[start:start + EMBED_SLICE])
                                      for start in range(0, len(crops), EMBED_SLICE)])
            bounds = np.cumsum([0] + [len(job.crops) for job in batch])
            return [vectors[bounds[i]:bounds[i + 1]] for i in range(len(batch))]

        return _split_on_failure(jobs, results, "embedding", embed) if jobs else []

    def _crop(self, job: _Job, found: Detections, result: EmbedResult) -> None:
        decoded = job.decoded
        result.width, result.height = decoded.width, decoded.height
        if job.request.with_phash:
            result.p_hash = perceptual_hash(decoded.pixels)
        # Boxes and landmarks in the original image's pixels (the decode may be scaled).
        boxes = found.boxes * decoded.scale
        landmarks = found.landmarks * decoded.scale
        chosen = self._select(boxes, job.request.selection, result)
        if not chosen:
            return
        # A face must span enough decoded pixels for the recognizer's crop; where one
        # would not, decode again at the finest scale it needs (full size at worst).
        smallest = min(_face_size(boxes[i]) for i in chosen)
        scale = decoded.scale
        while scale > 1 and smallest / scale < self.recognizer.crop_size:
            scale //= 2
        if scale != decoded.scale:
            decoded = decode_safely(job.source, scale)
        for i in chosen:
            crop = self.recognizer.align(decoded.pixels, landmarks[i] / decoded.scale)
            x1, y1, x2, y2 = (float(v) for v in boxes[i])
            score = float(found.scores[i])
            job.crops.append(crop)
            job.faces.append(((x1, y1, x2, y2), score, measure(crop, landmarks[i], (x1, y1, x2, y2), score)))

    def _select(self, boxes: np.ndarray, selection: FaceSelection, result: EmbedResult) -> list[int]:
        if len(boxes) == 0:
            if selection is FaceSelection.LARGEST:
                result.error = NoFaceDetected()
            return []
        widths = boxes[:, 2] - boxes[:, 0]
        heights = boxes[:, 3] - boxes[:, 1]
        sizes = np.minimum(widths, heights)
        big_enough = np.where(sizes >= self.min_face_size)[0]
        result.small_faces_dropped = int(len(boxes) - big_enough.size)
        if big_enough.size == 0:
            if selection is FaceSelection.LARGEST:
                result.error = DomainError("face_too_small", 422, min_face_size=self.min_face_size)
            return []
        areas = widths[big_enough] * heights[big_enough]
        if selection is FaceSelection.LARGEST:
            return [int(big_enough[int(np.argmax(areas))])]
        # A cap on the faces one image may store (each costs an alignment, an embedding
        # and a stored point): the largest are kept.
        kept = big_enough[np.argsort(-areas, kind="stable")[: self.max_faces_per_image]]
        result.excess_faces_dropped = int(big_enough.size - kept.size)
        # Gallery faces in a stable, readable order: left to right, top to bottom.
        return sorted(kept.tolist(), key=lambda i: (boxes[i, 0], boxes[i, 1]))


def _face_size(box: np.ndarray) -> float:
    return float(min(box[2] - box[0], box[3] - box[1]))


_RELEASED = Decoded(np.zeros((0, 0, 3), np.uint8), 1, 0, 0)


def _split_on_failure(jobs: list[_Job], results: list[EmbedResult], what: str,
                      call: Callable[[list[_Job]], list[_T]]) -> list[_T | None]:
    """One model call for the whole batch; should it fail, one call per image, so that the
    image that makes the model fail is refused and every other one answered."""
    try:
        return list(call(jobs))
    except Exception:
        if len(jobs) == 1:
            logger.warning("%s failed on one image", what, exc_info=True)
            results[jobs[0].index].error = InvalidImage("invalid_image", 422)
            return [None]
        logger.warning("batched %s failed; retrying image by image", what, exc_info=True)
        return [_split_on_failure([job], results, what, call)[0] for job in jobs]


def _guarded(result: EmbedResult, step: Callable[..., _T], *args: Any) -> _T | None:
    """Run one image's step; any failure becomes that request's refusal, never the batch's."""
    try:
        return step(*args)
    except DomainError as error:
        result.error = error
    except Exception:  # a bug or a model failure on this one image
        logger.warning("image refused: %s raised", getattr(step, "__name__", "step"), exc_info=True)
        result.error = InvalidImage("invalid_image", 422)
    return None


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
    return FacePipeline(detector, recognizer, settings.min_face_size, settings.max_image_pixels,
                        max_jpeg_scans=settings.max_jpeg_scans, max_decode_seconds=settings.max_decode_seconds,
                        max_faces_per_image=settings.max_faces_per_image, coarse_to_fine=settings.coarse_to_fine)
