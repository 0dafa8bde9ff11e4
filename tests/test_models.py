"""The real models on photos that ship inside installed packages."""

from __future__ import annotations

import hashlib
import itertools
import warnings

import cv2
import numpy as np
import pytest
import onnx
import onnx.numpy_helper
from insightface.model_zoo import get_model
from insightface.utils import face_align

from serve_app.embedding import EmbedRequest, FacePipeline, FaceSelection
from serve_app.models.alignment import similarity_transform
from serve_app.models.detector import FaceDetector
from serve_app.models.onnx_model import UnsuitableModel
from serve_app.models.pack import ModelPackError, choose_providers, locate_pack
from serve_app.models.recognizer import FaceRecognizer
from serve_app.samples import (
    adjust,
    crop_box,
    encode_jpeg,
    package_image_path,
    read_package_image,
    resize,
    rotate,
)
from serve_app.similarity import cosine, similarity_from_cosine

THRESHOLD = 0.78  # the plan's production threshold, (1+cos)/2 scale


def embed_all(pipeline: FacePipeline, image: np.ndarray):
    return pipeline.run([EmbedRequest(encode_jpeg(image, 95), FaceSelection.ALL)])[0]


def embed_largest(pipeline: FacePipeline, image: np.ndarray) -> np.ndarray:
    return pipeline.run([EmbedRequest(encode_jpeg(image, 95))])[0].largest().embedding


@pytest.fixture(scope="module")
def players(pipeline: FacePipeline):
    image = read_package_image("players.jpg")
    result = embed_all(pipeline, image)
    assert len(result.faces) >= 10, "players.jpg should show many faces"
    return image, result


def test_default_pack_is_located_without_download() -> None:
    pack = locate_pack(None)
    assert pack.detector.name == "scrfd_500m_bnkps.onnx"
    assert pack.recognizer.name == "w600k_mbf.onnx"
    assert pack.detector.is_file() and pack.recognizer.is_file()


def test_model_dir_without_models_is_refused(tmp_path) -> None:
    with pytest.raises(ModelPackError, match="detector"):
        locate_pack(tmp_path)


def test_cpu_provider_always_last() -> None:
    assert choose_providers("cpu") == ["CPUExecutionProvider"]
    assert choose_providers("auto")[-1] == "CPUExecutionProvider"


def test_embeddings_are_unit_length_and_512d(players) -> None:
    _, result = players
    vectors = np.stack([face.embedding for face in result.faces])
    assert vectors.shape[1] == 512
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)


def test_different_people_are_not_verified_against_each_other(players) -> None:
    _, result = players
    for a, b in itertools.combinations(result.faces, 2):
        similarity = similarity_from_cosine(cosine(a.embedding, b.embedding))
        assert similarity < THRESHOLD, (a.box, b.box, similarity)


@pytest.mark.parametrize(
    "name, transform",
    [
        ("flip", lambda im: cv2.flip(im, 1)),
        ("scale_0.6", lambda im: resize(im, 0.6)),
        ("scale_1.5", lambda im: resize(im, 1.5)),
        ("brighter", lambda im: adjust(im, brightness=40)),
        ("darker", lambda im: adjust(im, brightness=-40, contrast=0.8)),
        ("rotate_10", lambda im: rotate(im, 10)),
        ("jpeg_q40", lambda im: cv2.imdecode(np.frombuffer(encode_jpeg(im, 40), np.uint8), cv2.IMREAD_COLOR)),
    ],
)
def test_same_face_survives_photometric_and_geometric_changes(pipeline, players, name, transform) -> None:
    image, result = players
    # Each of a few players, cut out with context, transformed, must still match itself.
    for face in result.faces[:4]:
        crop = crop_box(image, face.box, margin=0.8)
        probe = embed_largest(pipeline, transform(crop))
        similarity = similarity_from_cosine(cosine(probe, face.embedding))
        assert similarity >= THRESHOLD, (name, face.box, similarity)
        # ...and matches itself better than anyone else in the photo.
        best = max(result.faces, key=lambda other: cosine(probe, other.embedding))
        assert best is face, name


def test_batched_detection_matches_single_image_detection(pipeline) -> None:
    images = [read_package_image(n) for n in ("players.jpg", "gdp.jpg", "yaoming.jpg", "t1.jpg")]
    batched = pipeline.detector.detect(images)
    for image, together in zip(images, batched, strict=True):
        alone = pipeline.detector.detect([image])[0]
        assert len(alone) == len(together) > 0
        # Each image keeps its own canvas in a batch, so batching changes nothing.
        np.testing.assert_allclose(alone.boxes, together.boxes, atol=1e-3)


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    x1, y1 = np.maximum(box[0], others[:, 0]), np.maximum(box[1], others[:, 1])
    x2, y2 = np.minimum(box[2], others[:, 2]), np.minimum(box[3], others[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / (area(box) + area(others) - inter)


def test_detection_matches_insightface_on_its_full_square_input(pipeline) -> None:
    """Our canvas is only as large as the scaled photo; InsightFace pads to 640x640.
    Same scale, so the same faces in the same places. Scores move by a little (padding,
    and our area-averaging downscale), so a face near the threshold may flip: every face
    either side finds its twin on the other unless it scores under 0.7, and a small face
    downscaled by area rather than bilinearly may shift by a pixel of the detector's input."""
    reference = get_model(str(locate_pack(None).detector), providers=["CPUExecutionProvider"], download=False)
    reference.prepare(ctx_id=-1, input_size=(640, 640), det_thresh=0.5)
    for name in ("t1.jpg", "gdp.jpg", "yaoming.jpg", "players.jpg"):
        image = read_package_image(name)
        expected, _ = reference.detect(image, input_size=(640, 640))
        ours = pipeline.detector.detect([image])[0]
        assert len(ours) > 0 and abs(len(ours) - len(expected)) <= 1, name
        for boxes, scores, others in ((expected[:, :4], expected[:, 4], ours.boxes),
                                      (ours.boxes, ours.scores, expected[:, :4])):
            for box in boxes[scores >= 0.7]:
                assert _iou(box, others).max() > 0.8, (name, box)


def test_pipeline_batch_keeps_requests_apart(pipeline, samples) -> None:
    requests = [
        EmbedRequest(samples["group"], FaceSelection.ALL),
        EmbedRequest(samples["frontal"]),
        EmbedRequest(b"not an image"),
        EmbedRequest(encode_jpeg(np.full((200, 200, 3), 127, np.uint8))),
    ]
    group, frontal, garbage, blank = pipeline.run(requests)
    assert len(group.faces) == 6
    assert len(frontal.faces) == 1 and frontal.error is None
    assert garbage.error is not None and garbage.error.code == "not_an_image"
    assert blank.error is not None and blank.error.code == "no_face_detected"
    single = pipeline.run([EmbedRequest(samples["frontal"])])[0].faces[0]
    np.testing.assert_allclose(single.embedding, frontal.faces[0].embedding, atol=1e-5)


def test_largest_face_is_chosen_for_probes(pipeline) -> None:
    image = read_package_image("gdp.jpg")
    everyone = embed_all(pipeline, image).faces
    largest = embed_largest(pipeline, image)
    areas = [(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]) for f in everyone]
    expected = everyone[int(np.argmax(areas))].embedding
    assert cosine(largest, expected) > 0.999


def test_faces_below_minimum_size_are_refused_for_probes(pipeline) -> None:
    portrait = read_package_image("yaoming.jpg")
    tiny = resize(portrait, 0.15)  # a ~16 px face: detected, but below the 20 px minimum
    canvas = np.full((200, 200, 3), 90, np.uint8)
    canvas[: tiny.shape[0], : tiny.shape[1]] = tiny
    result = pipeline.run([EmbedRequest(encode_jpeg(canvas))])[0]
    assert result.error is not None and result.error.code == "face_too_small"
    assert result.small_faces_dropped == 1


def test_package_image_lookup_refuses_unknown_names() -> None:
    assert package_image_path("players.jpg").is_file()
    with pytest.raises(FileNotFoundError):
        package_image_path("nobody.jpg")


CPU = ["CPUExecutionProvider"]


def test_model_facts_are_read_from_the_graphs(pipeline) -> None:
    detector, recognizer = pipeline.detector, pipeline.recognizer
    assert [(level.stride, level.anchors) for level in detector.levels] == [(8, 2), (16, 2), (32, 2)]
    assert (detector.mean, detector.std) == (127.5, 128.0)
    assert (recognizer.crop_size, recognizer.dim, recognizer.mean, recognizer.std) == (112, 512, 127.5, 127.5)
    assert detector.provider == recognizer.provider == "CPUExecutionProvider"


def test_recognizer_fingerprint_is_the_file_hash(pipeline) -> None:
    path = locate_pack(None).recognizer
    assert pipeline.recognizer.fingerprint.name == "w600k_mbf.onnx"
    assert pipeline.recognizer.fingerprint.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_batched_recognizer_runs_without_a_shape_warning(pipeline, capfd) -> None:
    """The graph declares [1, 512]; the corrected declaration keeps onnxruntime quiet."""
    crops = [np.full((112, 112, 3), value, np.uint8) for value in (40, 120, 200)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vectors = pipeline.recognizer.embed(crops)
    assert vectors.shape == (3, 512)
    assert "does not match" not in capfd.readouterr().err


def test_models_in_the_wrong_role_are_refused(tmp_path) -> None:
    pack = locate_pack(None)
    with pytest.raises(UnsuitableModel, match="fixed input size"):
        FaceDetector(pack.recognizer, CPU)
    with pytest.raises(UnsuitableModel, match="input shape"):
        FaceRecognizer(pack.detector, CPU)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(UnsuitableModel, match="not a readable ONNX model"):
        FaceRecognizer(garbage, CPU)


def test_detector_without_landmarks_is_refused(tmp_path) -> None:
    model = onnx.load(str(locate_pack(None).detector))
    kept = [output for output in model.graph.output if not output.name.startswith("kps")]
    del model.graph.output[:]
    model.graph.output.extend(kept)
    path = tmp_path / "scrfd_no_kps.onnx"
    onnx.save(model, str(path))
    with pytest.raises(UnsuitableModel, match="no landmarks"):
        FaceDetector(path, CPU)


def test_detector_input_size_must_fit_its_coarsest_stride() -> None:
    with pytest.raises(UnsuitableModel, match="coarsest stride 32"):
        FaceDetector(locate_pack(None).detector, CPU, input_size=650)


def test_similarity_transform_recovers_a_known_one() -> None:
    rng = np.random.default_rng(3)
    source = rng.uniform(0, 200, (5, 2))
    angle, scale, shift = 0.4, 0.7, np.array([12.0, -30.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    target = source @ (scale * rotation).T + shift
    matrix = similarity_transform(source, target)
    np.testing.assert_allclose(matrix, np.hstack([scale * rotation, shift[:, None]]), atol=1e-9)
    # A mirrored target is not reachable by a similarity: no reflection comes back.
    assert np.linalg.det(similarity_transform(source, target * [-1, 1])[:, :2]) > 0


def test_alignment_matches_insightface_norm_crop(pipeline, players) -> None:
    image, _ = players
    found = pipeline.detector.detect([image])[0]
    ours = [pipeline.recognizer.align(image, landmarks) for landmarks in found.landmarks]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # scikit-image's deprecated `estimate`, in insightface
        theirs = [face_align.norm_crop(image, landmark=landmarks, image_size=112) for landmarks in found.landmarks]
    for mine, reference in zip(ours, theirs, strict=True):
        difference = np.abs(mine.astype(np.int16) - reference.astype(np.int16))
        assert difference.max() <= 1, difference.max()  # rounding of the warp, nothing more
    cosines = np.sum(pipeline.recognizer.embed(ours) * pipeline.recognizer.embed(theirs), axis=1)
    assert len(cosines) >= 10 and cosines.min() > 0.999, cosines.min()


def test_recognizer_that_cannot_batch_is_refused_at_warm_up(tmp_path) -> None:
    """A graph that really fixes the batch at 1 (here: a Reshape to [1, 512] after the
    embedding) cannot be corrected by a declaration; the warm-up batch of two says so."""
    model = onnx.load(str(locate_pack(None).recognizer))
    graph = model.graph
    output = graph.output[0].name
    graph.initializer.append(onnx.numpy_helper.from_array(np.array([1, 512], np.int64), "fixed_shape"))
    graph.node.append(onnx.helper.make_node("Reshape", [output, "fixed_shape"], ["fixed_output"]))
    graph.output[0].name = "fixed_output"
    path = tmp_path / "w600k_batch_one.onnx"
    onnx.save(model, str(path))
    with pytest.raises(UnsuitableModel, match="warm-up"):
        FaceRecognizer(path, CPU)


def test_square_canvas_gives_one_network_call_and_insightface_s_layout(pipeline) -> None:
    """The GPU layout: every photo on the full square, so a batch of mixed photos is one
    input shape (one call) and the result is InsightFace's own, to a fraction of a pixel."""
    pack = locate_pack(None)
    square = FaceDetector(pack.detector, ["CPUExecutionProvider"], square_canvas=True)
    fitted = FaceDetector(pack.detector, ["CPUExecutionProvider"])
    images = [read_package_image(name) for name in ("t1.jpg", "gdp.jpg", "yaoming.jpg")]
    calls: list[tuple[int, ...]] = []
    for detector in (square, fitted):
        run = detector._run
        detector._run = lambda blob, run=run: calls.append(blob.shape) or run(blob)  # type: ignore[method-assign]
    square.detect(images)
    assert calls == [(3, 3, 640, 640)]
    calls.clear()
    fitted.detect(images)
    assert len(calls) == 3
    reference = get_model(str(pack.detector), providers=["CPUExecutionProvider"], download=False)
    reference.prepare(ctx_id=-1, input_size=(640, 640), det_thresh=0.5)
    for image, ours in zip(images, square.detect(images), strict=True):
        expected, _ = reference.detect(image, input_size=(640, 640))
        strong = expected[expected[:, 4] >= 0.7]
        assert len(strong) > 0
        for box in strong[:, :4]:
            assert np.abs(ours.boxes - box).max(axis=1).min() < 2.0
