"""FacePipeline with the real models: one image never fails another, faces per image are
capped, and decoding at a reduced scale does not move results."""

from __future__ import annotations

import asyncio
import cv2
import numpy as np
import pytest
from PIL import Image

import serve_app.deployments.embedder as embedder_module
import serve_app.embedding as embedding_module
from serve_app.coarse_to_fine import CoarseToFine
from serve_app.deployments.embedder import FaceEmbedder
from serve_app.embedding import EmbedRequest, EmbedResult, FacePipeline, FaceSelection
from serve_app.samples import encode_jpeg, read_package_image
from tests.hostile_images import corpus, crafted_exif_jpeg, scan_bomb_jpeg

HOSTILE = {name: (data, status, code) for name, data, status, code in corpus()}


def copy_of(pipeline: FacePipeline, **changes) -> FacePipeline:
    clone = FacePipeline(pipeline.detector, pipeline.recognizer, pipeline.min_face_size,
                         pipeline.limits.max_pixels, max_jpeg_scans=pipeline.limits.max_jpeg_scans,
                         max_decode_seconds=pipeline.limits.max_decode_seconds,
                         max_faces_per_image=pipeline.max_faces_per_image)
    for name, value in changes.items():
        setattr(clone, name, value)
    return clone


def assert_same_faces(alone: EmbedResult, batched: EmbedResult) -> None:
    assert batched.error is None and len(batched.faces) == len(alone.faces) > 0
    for a, b in zip(alone.faces, batched.faces, strict=True):
        np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-5)


# --- one image never fails another ------------------------------------------------------

def mixed_batch(samples: dict[str, bytes]) -> tuple[list[EmbedRequest], dict[int, str | None]]:
    """Good probes interleaved with every hostile image; index -> expected error code."""
    requests, expected = [], {}
    face = Image.fromarray(read_package_image("yaoming.jpg")[:, :, ::-1])
    hostile = [
        (crafted_exif_jpeg(face.rotate(90, expand=True)), None),  # accepted: broken EXIF ignored
        (scan_bomb_jpeg(face, 500), "image_too_complex"),
        (HOSTILE["truncated_jpeg"][0], "truncated_image"),
        (HOSTILE["bomb_png_header"][0], "image_too_many_pixels"),
        (HOSTILE["gif"][0], "unsupported_image_format"),
        (b"\xff\xd8\xff" + b"\x00" * 100, "not_an_image"),
    ]
    for data, code in hostile:
        expected[len(requests)] = None
        requests.append(EmbedRequest(samples["frontal"]))
        expected[len(requests)] = code
        requests.append(EmbedRequest(data))
    expected[len(requests)] = None
    requests.append(EmbedRequest(samples["group"], FaceSelection.ALL, with_phash=True))
    return requests, expected


def check_mixed(results: list[EmbedResult], requests: list[EmbedRequest], expected: dict[int, str | None],
                alone: dict[bytes, EmbedResult]) -> None:
    for index, (request, result) in enumerate(zip(requests, results, strict=True)):
        code = expected[index]
        if code is None:
            assert_same_faces(alone[request.data], result)
        else:
            assert result.error is not None and result.error.code == code, (index, result.error)
            assert 400 <= result.error.status_code < 500


def test_hostile_images_fail_only_themselves_in_a_batch(pipeline, samples) -> None:
    requests, expected = mixed_batch(samples)
    alone = {r.data: pipeline.run([r])[0] for i, r in enumerate(requests) if expected[i] is None}
    check_mixed(pipeline.run(requests), requests, expected, alone)


class FlakyDetector:
    """The real detector, except that a call fails whenever one image has a given shape."""

    def __init__(self, real, poisoned_shape: tuple[int, int]) -> None:
        self.real, self.poisoned_shape, self.calls = real, poisoned_shape, 0
        self.input_size = real.input_size

    def detect(self, images):
        self.calls += 1
        if any(image.shape[:2] == self.poisoned_shape for image in images):
            raise RuntimeError("detector failed on one image")
        return self.real.detect(images)


class FlakyRecognizer:
    """The real recognizer, except that a call fails whenever it gets a crop taken from an
    image of a given shape."""

    def __init__(self, real, poisoned_shape: tuple[int, int]) -> None:
        self.real, self.poisoned_shape, self.calls = real, poisoned_shape, 0
        self.crop_size, self.dim = real.crop_size, real.dim
        self.poisoned: set[int] = set()

    def align(self, image, landmarks):
        crop = self.real.align(image, landmarks)
        if image.shape[:2] == self.poisoned_shape:
            self.poisoned.add(id(crop))
        return crop

    def embed(self, crops):
        self.calls += 1
        if any(id(crop) in self.poisoned for crop in crops):
            raise RuntimeError("recognizer failed on one crop")
        return self.real.embed(crops)


def shape_of(data: bytes) -> tuple[int, int]:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape[:2]


def test_a_model_failing_on_one_image_fails_only_that_request(pipeline, samples) -> None:
    # As a buggy model might: the detector fails on one image, the recognizer on another's
    # crop. Each failure must stay with its own request.
    detector = FlakyDetector(pipeline.detector, shape_of(samples["different_person"]))
    recognizer = FlakyRecognizer(pipeline.recognizer, shape_of(samples["left"]))
    flaky = copy_of(pipeline, detector=detector, recognizer=recognizer)
    requests = [EmbedRequest(samples["frontal"]), EmbedRequest(samples["different_person"]),
                EmbedRequest(samples["probe_same_person"]), EmbedRequest(samples["left"]),
                EmbedRequest(samples["group"], FaceSelection.ALL)]
    results = flaky.run(requests)
    for index in (0, 2, 4):
        assert_same_faces(pipeline.run([requests[index]])[0], results[index])
    for index in (1, 3):
        assert results[index].error is not None and results[index].error.code == "invalid_image"
        assert results[index].error.status_code == 422
    assert detector.calls > 1 and recognizer.calls > 1  # the batched calls failed and were split


class RecordedMetrics:
    def __init__(self) -> None:
        self.batches: list[tuple[int, int]] = []

    def batch(self, timings, images: int, faces: int) -> None:
        self.batches.append((images, faces))


def bare_embedder(pipeline: FacePipeline):
    """A FaceEmbedder around the test's pipeline, outside Serve, and the undecorated body of
    its @serve.batch method (what each batch runs)."""
    cls = FaceEmbedder.func_or_class
    embedder = cls.__new__(cls)
    embedder.pipeline = pipeline
    embedder.metrics = RecordedMetrics()
    return embedder, cls.embed.__wrapped__


def test_the_deployments_batch_method_isolates_requests(pipeline, samples, monkeypatch) -> None:
    """FaceEmbedder.embed (the body @serve.batch runs): hostile members answer alone, and
    should FacePipeline.run itself raise for a batch, its requests are re-run one by one."""
    embedder, batch_method = bare_embedder(pipeline)
    requests, expected = mixed_batch(samples)
    alone = {r.data: pipeline.run([r])[0] for i, r in enumerate(requests) if expected[i] is None}
    check_mixed(asyncio.run(batch_method(embedder, requests)), requests, expected, alone)
    assert embedder.metrics.batches[0][0] == len(requests)

    poison = b"poison"
    real_run = pipeline.run

    def run_raising(batch):
        if any(request.data == poison for request in batch):
            raise RuntimeError("escaped the pipeline")
        return real_run(batch)

    monkeypatch.setattr(pipeline, "run", run_raising)
    good = [EmbedRequest(samples["frontal"]), EmbedRequest(samples["probe_same_person"])]
    results = asyncio.run(batch_method(embedder, [good[0], EmbedRequest(poison), good[1]]))
    assert_same_faces(alone[samples["frontal"]], results[0])
    assert_same_faces(real_run([good[1]])[0], results[2])
    assert results[1].error is not None and results[1].error.code == "invalid_image"


# --- faces per image ----------------------------------------------------------------------

def test_faces_per_image_are_capped_keeping_the_largest(pipeline) -> None:
    data = encode_jpeg(read_package_image("players.jpg"), 95)
    everyone = pipeline.run([EmbedRequest(data, FaceSelection.ALL)])[0]
    assert len(everyone.faces) > 8 and everyone.excess_faces_dropped == 0
    capped = copy_of(pipeline, max_faces_per_image=5).run([EmbedRequest(data, FaceSelection.ALL)])[0]
    assert len(capped.faces) == 5
    assert capped.excess_faces_dropped == len(everyone.faces) - 5
    area = lambda face: (face.box[2] - face.box[0]) * (face.box[3] - face.box[1])  # noqa: E731
    largest = sorted(everyone.faces, key=area, reverse=True)[:5]
    assert sorted(map(area, capped.faces)) == pytest.approx(sorted(map(area, largest)))
    assert [f.box[0] for f in capped.faces] == sorted(f.box[0] for f in capped.faces)  # still left to right
    # A probe takes its largest face whatever the cap.
    probe = copy_of(pipeline, max_faces_per_image=1).run([EmbedRequest(data)])[0]
    assert probe.excess_faces_dropped == 0 and area(probe.faces[0]) == pytest.approx(area(largest[0]))


def test_recognizer_calls_are_bounded_however_many_faces_a_batch_has(pipeline, monkeypatch) -> None:
    """onnxruntime keeps the largest activations it was ever asked for: 8 gallery images
    of ~20 faces in one call pinned 1.2 GB more RSS than slices of 32 crops do."""
    sizes: list[int] = []
    real_embed = pipeline.recognizer.embed

    def spy(crops):
        sizes.append(len(crops))
        return real_embed(crops)

    monkeypatch.setattr(pipeline.recognizer, "embed", spy)
    data = encode_jpeg(read_package_image("players.jpg"), 95)
    results = pipeline.run([EmbedRequest(data, FaceSelection.ALL)] * 4)
    assert sum(sizes) == sum(len(r.faces) for r in results) > embedding_module.EMBED_SLICE
    assert max(sizes) <= embedding_module.EMBED_SLICE
    for result in results[1:]:
        assert_same_faces(results[0], result)


def test_heap_released_after_a_batch_with_a_large_image(pipeline, samples, photos, monkeypatch) -> None:
    calls: list[bool] = []
    monkeypatch.setattr(embedder_module, "release_free_heap", lambda: calls.append(True) or True)
    embedder, batch_method = bare_embedder(pipeline)
    asyncio.run(batch_method(embedder, [EmbedRequest(samples["frontal"])] * 2))
    assert calls == []  # small photos: nothing worth a trim
    asyncio.run(batch_method(embedder, [EmbedRequest(samples["frontal"]), EmbedRequest(photos["frontal@12MP"])]))
    assert calls == [True]
    assert embedder_module.release_free_heap() in (True, False)  # glibc here; harmless elsewhere


# --- decoding only what is needed ----------------------------------------------------------

def upscaled_to_12mp(data: bytes) -> bytes:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    factor = (12e6 / (image.shape[0] * image.shape[1])) ** 0.5
    return encode_jpeg(cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC), 92)


@pytest.fixture(scope="module")
def photos(samples) -> dict[str, bytes]:
    photos = dict(samples)
    for name in ("players.jpg", "gdp.jpg", "yaoming.jpg", "t1.jpg"):
        photos[name] = encode_jpeg(read_package_image(name), 95)
    for name in ("frontal", "probe_same_person", "group", "players.jpg", "gdp.jpg"):
        photos[f"{name}@12MP"] = upscaled_to_12mp(photos[name])
    return photos


def tolerance_cases(photos: dict[str, bytes]) -> list[EmbedRequest]:
    """Every photo as a probe; the group photos and the 12 MP ones also as gallery images."""
    requests = []
    for name, data in photos.items():
        requests.append(EmbedRequest(data, FaceSelection.LARGEST, with_phash=True))
        if "12MP" in name or name in ("group", "players.jpg"):
            requests.append(EmbedRequest(data, FaceSelection.ALL, with_phash=True))
    return requests


@pytest.fixture(scope="module")
def full_resolution(pipeline, photos) -> tuple[np.ndarray, list[EmbedResult]]:
    """The enrolled template and every case's result on the full-resolution, full-canvas path."""
    full = copy_of(pipeline, scaled_decode=False)
    assert full.coarse_to_fine is None
    enrolled = [full.run([EmbedRequest(photos[k])])[0].largest().embedding for k in ("frontal", "left", "right")]
    template = np.mean(enrolled, axis=0)
    return template / np.linalg.norm(template), [full.run([request])[0] for request in tolerance_cases(photos)]


@pytest.mark.parametrize("coarse_to_fine", [False, True], ids=["scaled_decode", "scaled_decode+coarse_to_fine"])
def test_scaled_decoding_does_not_move_results(pipeline, photos, full_resolution, monkeypatch, coarse_to_fine) -> None:
    """Against the full-resolution, full-canvas path: the same faces (boxes in original
    pixels), and a verify's similarity against an enrolled template within 0.01, for
    probes (largest face) and gallery images (every face)."""
    template, references = full_resolution
    fast = copy_of(pipeline, coarse_to_fine=CoarseToFine(pipeline.detector) if coarse_to_fine else None)
    scales: list[int] = []
    real_decode = embedding_module.decode_safely

    def spy(source, scale=1):
        decoded = real_decode(source, scale)
        scales.append(decoded.scale)
        return decoded

    monkeypatch.setattr(embedding_module, "decode_safely", spy)
    for request, reference in zip(tolerance_cases(photos), references, strict=True):
        if coarse_to_fine and request.selection is FaceSelection.ALL:
            continue  # coarse-to-fine serves probes only
        result = fast.run([request])[0]
        case = (len(request.data), request.selection)
        assert result.error is None and reference.error is None, case
        assert (result.width, result.height) == (reference.width, reference.height)
        assert len(result.faces) == len(reference.faces) > 0, case
        for ref, face in zip(reference.faces, result.faces, strict=True):
            side = max(ref.quality.face_size, 1.0)
            assert np.abs(np.subtract(ref.box, face.box)).max() < 0.05 * side, (case, ref.box, face.box)
            assert abs(ref.det_score - face.det_score) < 0.1, (case, ref.det_score, face.det_score)
            moved = abs(float(template @ ref.embedding) - float(template @ face.embedding)) / 2
            assert moved < 0.01, (case, moved)
        distance = bin(int(result.p_hash, 16) ^ int(reference.p_hash, 16)).count("1")
        assert distance <= 4, (case, distance)  # well inside the de-duplication distance
    assert 4 in scales  # 12 MP probes were decoded at 1/4
    assert coarse_to_fine or 2 in scales  # and 12 MP gallery images at 1/2


def test_coarse_to_fine_falls_back_to_the_full_canvas(pipeline, samples, monkeypatch) -> None:
    """No face, a small face or two faces of about one size on the small canvas: the full
    canvas decides, as without coarse-to-fine."""
    stages = CoarseToFine(pipeline.detector)
    full_calls: list[int] = []
    real_detect = pipeline.detector.detect
    monkeypatch.setattr(pipeline.detector, "detect", lambda images: full_calls.append(len(images)) or
                        real_detect(images))
    portrait = cv2.imdecode(np.frombuffer(samples["frontal"], np.uint8), cv2.IMREAD_COLOR)
    stages.detect_largest([portrait])
    assert full_calls == []  # a probe's face settles it on the small canvas
    blank = np.full((300, 300, 3), 128, np.uint8)
    small = cv2.resize(portrait, None, fx=0.5, fy=0.5)
    tiny = np.full((1200, 1200, 3), 90, np.uint8)
    tiny[:small.shape[0], :small.shape[1]] = small
    twins = np.hstack([portrait, cv2.flip(portrait, 1)])
    found = stages.detect_largest([blank, tiny, twins])
    assert full_calls == [3]
    assert len(found[0]) == 0 and len(found[1]) >= 1 and len(found[2]) == 2
