"""Peer (a) of `make bench`: the user's alternative, written the way InsightFace's docs show.

One process, no Ray: FastAPI with plain (threadpool) endpoints, OpenCV's `cv2.imdecode`
(which applies EXIF orientation), the model zoo's SCRFD detector prepared at 640x640
(`get_model(...).prepare(...)` then `detect`), the recognizer's `get` (norm_crop +
`get_feat`), and the templates in the same store the service uses (`FaceRepository` on
Qdrant Edge). onnxruntime keeps its default threading, as a user's script would. The
same request and answer shapes as the service for enroll and verify, so the benchmark
sends both the same bodies.

    QDRANT_PATH=/tmp/peer-a python -m loadtests.insightface_peer --port 8012
"""

from __future__ import annotations

import base64

import cv2
import numpy as np
from fastapi import FastAPI, HTTPException
from insightface.app.common import Face
from insightface.model_zoo import get_model
from pydantic import BaseModel

from loadtests.peer_server import serve
from serve_app.config import Settings
from serve_app.models.pack import locate_pack
from serve_app.repository import FaceRepository
from serve_app.similarity import cosine, similarity_from_cosine
from serve_app.vectordb import open_store


class EnrollBody(BaseModel):
    tenant_id: str
    identity_id: str
    images_b64: list[str]


class VerifyBody(BaseModel):
    tenant_id: str
    identity_id: str
    image_b64: str
    hi_threshold: float | None = None


def decode(image_b64: str) -> np.ndarray:
    data = base64.b64decode(image_b64.split(",", 1)[-1])
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise HTTPException(422, "not_an_image")
    return image


class InsightFaceModels:
    """Detector and recognizer as the model zoo hands them out."""

    def __init__(self, settings: Settings) -> None:
        pack = locate_pack(settings.face_model_dir, settings.face_detector_file, settings.face_recognizer_file)
        self.detector = get_model(str(pack.detector), download=False)
        self.detector.prepare(ctx_id=-1, input_size=(640, 640), det_thresh=settings.det_threshold)
        self.recognizer = get_model(str(pack.recognizer), download=False)
        self.recognizer.prepare(ctx_id=-1)

    def largest_face(self, image: np.ndarray) -> np.ndarray:
        bboxes, kpss = self.detector.detect(image, max_num=0)
        if bboxes.shape[0] == 0:
            raise HTTPException(422, "no_face_detected")
        areas = (bboxes[:, 2] - bboxes[:, 0]) * (bboxes[:, 3] - bboxes[:, 1])
        best = int(np.argmax(areas))
        face = Face(bbox=bboxes[best, :4], kps=kpss[best], det_score=bboxes[best, 4])
        self.recognizer.get(image, face)
        return np.asarray(face.normed_embedding, dtype=np.float32)


def build_app(settings: Settings) -> tuple[FastAPI, FaceRepository]:
    models = InsightFaceModels(settings)
    repository = FaceRepository.for_settings(open_store(settings), settings)
    repository.ensure_all()
    app = FastAPI(title="insightface peer")

    @app.get("/api/v1/health")
    def health() -> dict[str, object]:
        provider = models.recognizer.session.get_providers()[0]
        return {"status": "healthy", "components": {"embedder": {"provider": provider}}}

    @app.post("/api/v1/enroll_identity")
    def enroll(body: EnrollBody) -> dict[str, object]:
        embeddings = np.stack([models.largest_face(decode(image)) for image in body.images_b64])
        mean = embeddings.mean(axis=0)
        template = mean / np.linalg.norm(mean)
        repository.save_identity(body.tenant_id, body.identity_id, template, [], {})
        return {"ok": True, "vector_dim": int(template.shape[0])}

    @app.post("/api/v1/verify")
    def verify(body: VerifyBody) -> dict[str, object]:
        embedding = models.largest_face(decode(body.image_b64))
        identity = repository.get_identity(body.tenant_id, body.identity_id)
        if identity is None:
            raise HTTPException(404, "identity_not_enrolled")
        similarity = similarity_from_cosine(cosine(embedding, identity.template))
        threshold = body.hi_threshold or settings.verify_hi_threshold
        return {"verified": similarity >= threshold, "similarity": round(similarity, 4), "results": [], "count": 0}

    return app, repository


def main(argv: list[str] | None = None) -> None:
    serve(build_app, "Serve the insightface-docs peer (one process, no Ray).", 8012, argv)


if __name__ == "__main__":
    main()
