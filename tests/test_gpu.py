"""The models on CUDA agree with the CPU (run by scripts/gpu_check.sh on a GPU machine).

Skipped where onnxruntime offers no CUDAExecutionProvider: the CPU suite covers the same
code paths on the CPU provider.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from serve_app.models.detector import FaceDetector
from serve_app.models.pack import choose_providers, locate_pack
from serve_app.models.recognizer import FaceRecognizer
from serve_app.samples import read_package_image

pytestmark = pytest.mark.skipif("CUDAExecutionProvider" not in ort.get_available_providers(),
                                reason="onnxruntime offers no CUDAExecutionProvider here")
CPU = ["CPUExecutionProvider"]


def test_sessions_run_on_cuda_and_agree_with_cpu() -> None:
    pack = locate_pack(None)
    providers = choose_providers("cuda")
    detector, recognizer = FaceDetector(pack.detector, providers), FaceRecognizer(pack.recognizer, providers)
    assert detector.provider == recognizer.provider == "CUDAExecutionProvider"
    cpu_detector, cpu_recognizer = FaceDetector(pack.detector, CPU), FaceRecognizer(pack.recognizer, CPU)
    image = read_package_image("t1.jpg")
    on_gpu, on_cpu = detector.detect([image])[0], cpu_detector.detect([image])[0]
    assert len(on_gpu) == len(on_cpu) == 6
    np.testing.assert_allclose(on_gpu.boxes, on_cpu.boxes, atol=0.5)
    crops = [cpu_recognizer.align(image, landmarks) for landmarks in on_cpu.landmarks]
    cosines = np.sum(recognizer.embed(crops) * cpu_recognizer.embed(crops), axis=1)
    assert cosines.min() >= 0.999


def test_batched_detection_on_cuda_matches_single_images() -> None:
    pack = locate_pack(None)
    detector = FaceDetector(pack.detector, choose_providers("cuda"))
    images = [read_package_image(name) for name in ("t1.jpg", "gdp.jpg", "players.jpg")]
    batched = detector.detect(images)
    for image, found in zip(images, batched, strict=True):
        single = detector.detect([image])[0]
        assert len(single) == len(found)
        np.testing.assert_allclose(single.boxes, found.boxes, atol=1e-2)
