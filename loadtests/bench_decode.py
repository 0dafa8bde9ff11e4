"""Decode cost of a 12 MP phone photo, and what decoding at the detector's scale saves.

Prints milliseconds (median of `--repeats`, one process, one thread for the decoders) for:
  - load_image: the full-resolution decode (format checks, EXIF orientation, BGR);
  - scaled decode: what the pipeline decodes for a probe (the coarsest DCT scale that
    still covers the detector's canvas) and for a gallery image (twice that);
  - cv2.imdecode full and IMREAD_REDUCED_COLOR_4, for reference;
  - the in-process pipeline (decode + detect + align + embed, largest face), full
    resolution vs scaled.

    python -m loadtests.bench_decode [--repeats 15]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
from PIL import Image

from serve_app.samples import encode_jpeg, pad, read_package_image

PHONE_SIZE = (4032, 3024)


def phone_photo() -> bytes:
    """A 12 MP JPEG of the package portrait, with EXIF orientation 1 (as most phones write)."""
    portrait = pad(read_package_image("yaoming.jpg"), 0.3)
    photo = cv2.resize(portrait, PHONE_SIZE, interpolation=cv2.INTER_CUBIC)
    data = encode_jpeg(photo, 92)
    assert Image.open(__import__("io").BytesIO(data)).size == PHONE_SIZE
    return data


def median_ms(call: Callable[[], Any], repeats: int) -> float:
    call()  # warm caches and lazy imports
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)

    from serve_app.config import Settings
    from serve_app.embedding import EmbedRequest, load_pipeline
    from serve_app.images import DecodeLimits, load_image, open_image

    settings = Settings(_env_file=None)
    data = phone_photo()
    buffer = np.frombuffer(data, np.uint8)
    limits = DecodeLimits(settings.max_image_pixels)
    rows: list[tuple[str, float]] = [
        ("load_image (full resolution)", median_ms(lambda: load_image(data, settings.max_image_pixels), args.repeats)),
    ]
    for label, canvas in (("probe", settings.det_size), ("gallery", 2 * settings.det_size)):
        def scaled(canvas: int = canvas) -> None:
            source = open_image(data, limits)
            source.decode(source.coarsest_scale(canvas))

        scale = open_image(data, limits).coarsest_scale(canvas)
        rows.append((f"scaled decode, {label} (1/{scale})", median_ms(scaled, args.repeats)))
    rows.append(("cv2.imdecode full", median_ms(lambda: cv2.imdecode(buffer, cv2.IMREAD_COLOR), args.repeats)))
    rows.append(("cv2.imdecode REDUCED_4",
                 median_ms(lambda: cv2.imdecode(buffer, cv2.IMREAD_REDUCED_COLOR_4), args.repeats)))

    pipeline = load_pipeline(settings)
    request = [EmbedRequest(data)]
    rows.append(("pipeline, largest face, scaled decode", median_ms(lambda: pipeline.run(request), args.repeats)))
    pipeline.scaled_decode = False
    rows.append(("pipeline, largest face, full decode", median_ms(lambda: pipeline.run(request), args.repeats)))

    print(f"12 MP JPEG {PHONE_SIZE[0]}x{PHONE_SIZE[1]}, {len(data) / 1e6:.2f} MB; median of {args.repeats}")
    for label, ms in rows:
        print(f"  {label:42s} {ms:8.1f} ms")


if __name__ == "__main__":
    main()
