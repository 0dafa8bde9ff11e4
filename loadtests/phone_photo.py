"""A 12 MP phone-like probe built from the package photos, for `make bench`.

Phones store 4032x3024 pixels as the sensor saw them and an EXIF orientation tag that
tells viewers to turn the picture upright. This builds the same from a sample probe:
the probe padded to 3:4 portrait, upscaled to 3024x4032, given a little sensor-like
noise (so the JPEG weighs what a phone's does, 1-3 MB, and decoding costs what it
costs), stored turned on its side (4032x3024) with orientation 6 ("rotate 90 degrees
clockwise to view"). Deterministic: the same bytes every run.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image

from serve_app.samples import sample_set

PHONE_SIZE = (3024, 4032)  # upright width x height
EXIF_ORIENTATION = 0x0112
ROTATE_90_CW_TO_VIEW = 6
NOISE_TILE = 509


def phone_photo(data: bytes, quality: int = 92, seed: int = 0) -> bytes:
    """JPEG bytes of `data` as a 12 MP portrait phone photo stored sideways with EXIF."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("not a decodable image")
    width, height = PHONE_SIZE
    # Pad the shorter dimension (mirrored borders look like a background) to 3:4.
    h, w = image.shape[:2]
    target_w = max(w, int(round(h * width / height)))
    target_h = max(h, int(round(target_w * height / width)))
    left, top = (target_w - w) // 2, (target_h - h) // 2
    image = cv2.copyMakeBorder(image, top, target_h - h - top, left, target_w - w - left, cv2.BORDER_REFLECT)
    upright = cv2.resize(image, (width, height), interpolation=cv2.INTER_CUBIC)
    # A tile of noise repeated (odd side: it never lines up with JPEG's 8x8 blocks);
    # drawing 36 M normal samples would take seconds.
    tile = np.random.default_rng(seed).standard_normal((NOISE_TILE, NOISE_TILE, 3), dtype=np.float32) * 3.0
    noise = np.tile(tile, (-(-height // NOISE_TILE), -(-width // NOISE_TILE), 1))[:height, :width]
    upright = cv2.add(upright, noise, dtype=cv2.CV_8U)
    # Stored as the sensor saw it: the upright picture turned 90 degrees counter-clockwise.
    stored = cv2.rotate(upright, cv2.ROTATE_90_COUNTERCLOCKWISE)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = ROTATE_90_CW_TO_VIEW
    buffer = io.BytesIO()
    Image.fromarray(stored[:, :, ::-1]).save(buffer, "JPEG", quality=quality, exif=exif.tobytes())
    return buffer.getvalue()


def phone_probes(names: tuple[str, ...]) -> dict[str, bytes]:
    """12 MP versions of the named samples."""
    samples = sample_set()
    return {name: phone_photo(samples[name], seed=index) for index, name in enumerate(names)}
