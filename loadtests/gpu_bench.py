"""The face models on a GPU: provider check, GPU-vs-CPU agreement, and throughput.

    python -m loadtests.gpu_bench --images photo1.jpg photo2.jpg --out results/gpu/models.json

Needs only numpy, OpenCV, onnx and onnxruntime (onnxruntime-gpu for CUDA) beside
`serve_app.models`: it runs where the rest of the service's dependencies are not
installed (scripts/gpu_check.sh uses it that way), and as one step of the full check.

What it measures, on the providers `choose_providers("cuda")` picks:
- that the sessions really run on CUDAExecutionProvider (onnxruntime falls back to CPU
  silently when a CUDA library is missing);
- that detection and embedding agree with the CPU sessions (same faces; embeddings at
  cosine >= 0.999), so a GPU deployment serves the same answers;
- images/s of the detector (photos of mixed shapes, as requests bring them) and faces/s
  of the recognizer at several batch sizes, with the latency of one batch (p50/p95),
  after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from serve_app.models.detector import FaceDetector
from serve_app.models.pack import choose_providers, locate_pack
from serve_app.models.recognizer import FaceRecognizer

CPU = ["CPUExecutionProvider"]


def timed(step: Callable[[], object], seconds: float) -> list[float]:
    """Latencies (s) of repeated calls for about `seconds`, after two warm-up calls."""
    step()
    step()
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(latencies) < 5:
        started = time.perf_counter()
        step()
        latencies.append(time.perf_counter() - started)
    return latencies


def summary(latencies: list[float], items: int) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "per_s": round(items * len(latencies) / sum(latencies), 1),
        "batch_p50_ms": round(statistics.median(ordered) * 1000, 2),
        "batch_p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 2),
    }


def agreement(images: list[np.ndarray], det_gpu: FaceDetector, rec_gpu: FaceRecognizer,
              det_cpu: FaceDetector, rec_cpu: FaceRecognizer) -> dict[str, Any]:
    """Same faces found, and embeddings of the same crops, on both providers."""
    faces, lowest, box_shift = 0, 1.0, 0.0
    for image in images:
        on_gpu, on_cpu = det_gpu.detect([image])[0], det_cpu.detect([image])[0]
        if len(on_gpu) != len(on_cpu):
            return {"same_faces": False, "gpu_faces": len(on_gpu), "cpu_faces": len(on_cpu)}
        if not len(on_cpu):
            continue
        box_shift = max(box_shift, float(np.abs(on_gpu.boxes - on_cpu.boxes).max()))
        crops = [rec_cpu.align(image, landmarks) for landmarks in on_cpu.landmarks]
        cosines = np.sum(rec_gpu.embed(crops) * rec_cpu.embed(crops), axis=1)
        lowest = min(lowest, float(cosines.min()))
        faces += len(crops)
    return {"same_faces": True, "faces": faces, "lowest_cosine": round(lowest, 5),
            "largest_box_shift_px": round(box_shift, 3)}


def run(images: list[np.ndarray], seconds: float, batches: list[int]) -> dict[str, Any]:
    model_dir = os.environ.get("FACE_MODEL_DIR")
    pack = locate_pack(Path(model_dir) if model_dir else None)
    providers = choose_providers("cuda")
    # As load_pipeline builds it on CUDA: every photo on the full square (one input shape).
    det_gpu = FaceDetector(pack.detector, providers, square_canvas=True)
    rec_gpu = FaceRecognizer(pack.recognizer, providers)
    report: dict[str, Any] = {
        "providers": {"detector": det_gpu.provider, "recognizer": rec_gpu.provider},
        "models": {"detector": det_gpu.name, "recognizer": rec_gpu.name},
    }
    if det_gpu.provider != "CUDAExecutionProvider" or rec_gpu.provider != "CUDAExecutionProvider":
        report["error"] = "the sessions did not land on CUDAExecutionProvider"
        return report
    report["agreement"] = agreement(images, det_gpu, rec_gpu, FaceDetector(pack.detector, CPU, square_canvas=True),
                                    FaceRecognizer(pack.recognizer, CPU))
    crops = [rec_gpu.align(image, landmarks) for image in images
             for landmarks in det_gpu.detect([image])[0].landmarks]
    if not crops:
        report["error"] = "no face found in the given images"
        return report
    report["detector_images"] = {}
    report["recognizer_faces"] = {}
    for batch in batches:
        frames = [images[i % len(images)] for i in range(batch)]
        report["detector_images"][str(batch)] = summary(timed(partial(det_gpu.detect, frames), seconds), batch)
        faces = [crops[i % len(crops)] for i in range(batch)]
        report["recognizer_faces"][str(batch)] = summary(timed(partial(rec_gpu.embed, faces), seconds), batch)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", nargs="+", type=Path, required=True, help="photos with faces")
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per batch size")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--out", type=Path, help="also write the report here (JSON)")
    args = parser.parse_args(argv)
    images = [cv2.imread(str(path), cv2.IMREAD_COLOR) for path in args.images]
    if any(image is None for image in images):
        parser.error("an image could not be read")
    report = run(images, args.seconds, args.batches)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    healthy = "error" not in report and report["agreement"].get("same_faces") \
        and report["agreement"].get("lowest_cosine", 0) >= 0.999
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
