"""Perceptual hashes for gallery de-duplication.

A 64-bit pHash (DCT of the downscaled grey image, `imagehash.phash`) survives
re-encoding, resizing and mild colour changes; near copies differ in a few bits.

Candidate lookup without scanning the gallery: the hash is cut into 8 bands of 8 bits,
stored as keywords in the indexed `p_hash_prefix` payload field ("0:c0", "1:5a", ...).
Two hashes within Hamming distance 7 differ in at most 7 bands, so they share at least
one band exactly (pigeonhole): a match-any on the probe's bands finds every candidate
within the bound, and the exact distance is then checked on the few candidates.
"""

from __future__ import annotations

import imagehash
import numpy as np
from PIL import Image

BANDS = 8
HEX_PER_BAND = 16 // BANDS
MAX_SUPPORTED_DISTANCE = BANDS - 1


def perceptual_hash(image_bgr: np.ndarray) -> str:
    """64-bit pHash of a BGR image, as 16 hex digits."""
    return str(imagehash.phash(Image.fromarray(np.ascontiguousarray(image_bgr[:, :, ::-1]))))


def hash_bands(p_hash: str) -> list[str]:
    return [f"{i}:{p_hash[i * HEX_PER_BAND:(i + 1) * HEX_PER_BAND]}" for i in range(BANDS)]


def hamming(a: str, b: str) -> int:
    return int(bin(int(a, 16) ^ int(b, 16)).count("1"))
