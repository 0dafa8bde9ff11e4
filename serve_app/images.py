"""Turning client-supplied image strings into pixel arrays, refusing anything unsafe.

Two steps, so that each runs where it is cheapest:
- `decode_base64` runs in the gateway: it bounds the size before decoding and turns a
  data URI or bare base64 into bytes.
- `open_image` runs in the embedder: it checks format, pixel count and (for JPEG) the
  number of scans from the bytes, before any pixel is decoded, so bombs cost nothing.
  `SourceImage.decode` then decodes at the scale asked for (JPEG: 1/2, 1/4 or 1/8 in
  the DCT domain, several times cheaper than a full decode), under a time budget, applies
  EXIF orientation and converts every mode to 8-bit BGR for the models.

Every refusal is an `InvalidImage` with a stable code; any other exception a decoder
raises on a crafted file becomes `invalid_image` here, so one image never fails anything
but its own request.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import pillow_heif
from PIL import Image, UnidentifiedImageError

from serve_app.config import DEFAULT_MAX_DECODE_SECONDS, DEFAULT_MAX_JPEG_SCANS
from serve_app.errors import InvalidImage

logger = logging.getLogger(__name__)

# What phones and browsers produce and Pillow decodes. MPO is a JPEG with an MPF segment
# (a second image: depth map, gain map or stereo view), decoded as its first image.
ALLOWED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "BMP", "HEIF", "AVIF"})
_JPEG_FORMATS = frozenset({"JPEG", "MPO"})
_DCT_SCALES = (8, 4, 2, 1)

# libjpeg decodes every scan of a progressive JPEG over the whole coefficient buffer, so
# work grows with scans x pixels while the file stays small (~60 bytes per repeated scan).
# Encoders write 1 (baseline), 3 (non-interleaved) or about 10 (progressive) scans: the
# default limit (config.DEFAULT_MAX_JPEG_SCANS) leaves room for any real encoder.
# Markers other than restarts; real files carry a few dozen. Bounds the header walk itself.
_MAX_JPEG_MARKERS = 2000
# Bytes handed to a decoder between two looks at the clock.
_DECODE_BLOCK = 16 * 1024

_ORIENTATION_TAG = 0x0112

_DATA_URI = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,", re.I)
_WHITESPACE = re.compile(r"\s+")
# A marker as libjpeg's next_marker finds it: fill bytes (0xFF), then a code that is
# neither a stuffed zero nor a restart marker (RST0-7 sit inside entropy-coded data).
_JPEG_MARKER = re.compile(rb"\xff\xff*([^\x00\xff\xd0-\xd7])")
_JPEG_STANDALONE = frozenset({0x01, 0xD8})  # TEM, SOI: no length field
_JPEG_EOI, _JPEG_SOS = 0xD9, 0xDA
# The ASCII characters `\s` matches: if an ASCII payload has none of them (the usual
# case), the regex pass, which costs ~100 ms on a 12 MP photo's 2 MB of text, is skipped.
_ASCII_WHITESPACE = " \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"

# Our own pixel-count check (from the header, before decoding) answers with a clear
# code; PIL's guard would only warn or raise its own error, so it is switched off.
Image.MAX_IMAGE_PIXELS = None
pillow_heif.register_heif_opener()


@dataclass(frozen=True)
class DecodeLimits:
    """The work one image may cost: pixels, JPEG scans and decoder time."""

    max_pixels: int
    max_jpeg_scans: int = DEFAULT_MAX_JPEG_SCANS
    max_decode_seconds: float = DEFAULT_MAX_DECODE_SECONDS


@dataclass(frozen=True)
class Decoded:
    pixels: np.ndarray  # (h, w, 3) uint8 BGR, upright, C-contiguous
    scale: int  # original pixels per decoded pixel along each side: 1, 2, 4 or 8
    width: int  # the upright image's full size, whatever scale it was decoded at
    height: int


def too_complex(reason: str) -> InvalidImage:
    return InvalidImage("image_too_complex", 422, reason=reason)


def decode_base64(value: str, max_bytes: int) -> bytes:
    """Bytes of a `data:image/...;base64,` URI or of bare base64 text."""
    match = _DATA_URI.match(value)
    if match:
        if not match.group("b64"):
            raise InvalidImage("invalid_data_uri", 422)
        mime = (match.group("mime") or "").lower()
        if mime and not mime.startswith("image/"):
            raise InvalidImage("invalid_data_uri", 422, mime=mime)
        value = value[match.end():]
    elif value.startswith("data:"):
        raise InvalidImage("invalid_data_uri", 422)
    if len(value) > (max_bytes * 4) // 3 + 1024:
        # Checked on the text so that an oversized payload is never decoded.
        raise InvalidImage("image_too_large", 413, max_bytes=max_bytes)
    if not value.isascii() or any(char in value for char in _ASCII_WHITESPACE):
        value = _WHITESPACE.sub("", value)
    if not value:
        raise InvalidImage("empty_image", 422)
    # Accept unpadded and URL-safe base64, which many clients emit.
    value = value.replace("-", "+").replace("_", "/")
    value += "=" * (-len(value) % 4)
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidImage("invalid_base64", 422) from None
    if not data:
        raise InvalidImage("empty_image", 422)
    if len(data) > max_bytes:
        raise InvalidImage("image_too_large", 413, max_bytes=max_bytes)
    return data


def jpeg_scan_count(data: bytes, stop_after: int) -> int:
    """Scans (SOS segments) of the first image of a JPEG stream, walked as libjpeg walks it.

    Segments are skipped by their length (an EXIF thumbnail's own scans are not counted);
    entropy-coded data is searched for the next marker; the first EOI ends the image
    (an MPO's further images are never decoded). Stops counting past `stop_after`."""
    scans = markers = 0
    position = 2  # after SOI
    while scans <= stop_after:
        match = _JPEG_MARKER.search(data, position)
        if match is None:
            break
        marker = match.group(1)[0]
        position = match.end()
        if marker == _JPEG_EOI:
            break
        markers += 1
        if markers > _MAX_JPEG_MARKERS:
            raise too_complex("jpeg_markers")
        if marker in _JPEG_STANDALONE:
            continue
        if marker == _JPEG_SOS:
            scans += 1
        position += int.from_bytes(data[position:position + 2], "big")
    return scans


class _BudgetedReader(io.BytesIO):
    """The image bytes, refusing to hand out more once the decode deadline has passed.

    Pillow feeds its decoders through `read`, so a file whose structure makes a decoder
    slow (not its size) is stopped within one block of the deadline."""

    def __init__(self, data: bytes, seconds: float) -> None:
        super().__init__(data)
        self._deadline = time.monotonic() + seconds

    def read(self, size: int | None = -1) -> bytes:
        if time.monotonic() > self._deadline:
            raise too_complex("decode_time")
        return super().read(size)


def _open(data: bytes, limits: DecodeLimits) -> Image.Image:
    reader = _BudgetedReader(data, limits.max_decode_seconds)
    try:
        image = Image.open(reader)
    except InvalidImage:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise InvalidImage("not_an_image", 422) from None
    image.decodermaxblock = _DECODE_BLOCK
    return image


class SourceImage:
    """Image bytes whose header passed every check; decodable at the scales its format allows."""

    def __init__(self, data: bytes, limits: DecodeLimits) -> None:
        self._data = data
        self._limits = limits
        with _open(data, limits) as image:
            if image.format not in ALLOWED_FORMATS:
                raise InvalidImage("unsupported_image_format", 415, format=image.format,
                                   allowed=sorted(ALLOWED_FORMATS))
            width, height = image.size
            self.format: str = image.format
        if width <= 0 or height <= 0:
            raise InvalidImage("not_an_image", 422)
        if width * height > limits.max_pixels:
            raise InvalidImage("image_too_many_pixels", 413, max_pixels=limits.max_pixels)
        if self.format in _JPEG_FORMATS and jpeg_scan_count(data, limits.max_jpeg_scans) > limits.max_jpeg_scans:
            raise too_complex("jpeg_scans")
        self.stored_size = (width, height)  # as stored, before EXIF orientation

    def coarsest_scale(self, min_side: int) -> int:
        """The cheapest decode scale whose longer side still has `min_side` pixels."""
        if self.format not in _JPEG_FORMATS:
            return 1
        longer = max(self.stored_size)
        return next((s for s in _DCT_SCALES if longer // s >= min_side), 1)

    def decode(self, scale: int = 1) -> Decoded:
        """Upright 8-bit BGR pixels at 1/`scale` (JPEG; other formats always decode whole)."""
        try:
            with _open(self._data, self._limits) as image:
                actual = 1
                if scale > 1 and self.format in _JPEG_FORMATS:
                    width, height = self.stored_size
                    drafted = image.draft(None, (max(1, width // scale), max(1, height // scale)))
                    if drafted is not None:
                        actual = round(width / drafted[1][2])
                image.load()
                orientation = _orientation(image)
                rgb = _to_rgb8(image)
        except InvalidImage:
            raise
        except (OSError, ValueError, SyntaxError, EOFError):
            raise InvalidImage("truncated_image", 422) from None
        pixels = _upright_bgr(rgb, orientation)
        width, height = self.stored_size
        if orientation >= 5:  # a quarter turn: the upright image is the other way round
            width, height = height, width
        return Decoded(pixels, actual, width, height)


def open_image(data: bytes, limits: DecodeLimits) -> SourceImage:
    """Check the header of image bytes (format, pixels, scans) without decoding a pixel.

    Any exception a crafted header provokes in a parser is this image's `invalid_image`."""
    try:
        return SourceImage(data, limits)
    except InvalidImage:
        raise
    except Exception as error:  # a parser bug must fail only this image, never the batch
        logger.warning("image refused: parser raised %s", type(error).__name__)
        raise InvalidImage("invalid_image", 422) from None


def load_image(
    data: bytes,
    max_pixels: int,
    max_jpeg_scans: int = DEFAULT_MAX_JPEG_SCANS,
    max_decode_seconds: float = DEFAULT_MAX_DECODE_SECONDS,
) -> np.ndarray:
    """Decode image bytes at full resolution into an 8-bit BGR array (H, W, 3), upright per EXIF."""
    source = open_image(data, DecodeLimits(max_pixels, max_jpeg_scans, max_decode_seconds))
    return decode_safely(source).pixels


def decode_safely(source: SourceImage, scale: int = 1) -> Decoded:
    """`source.decode`, with any unexpected decoder exception as this image's `invalid_image`."""
    try:
        return source.decode(scale)
    except InvalidImage:
        raise
    except Exception as error:  # a decoder bug must fail only this image, never the batch
        logger.warning("image refused: decoder raised %s", type(error).__name__)
        raise InvalidImage("invalid_image", 422) from None


def _orientation(image: Image.Image) -> int:
    """EXIF orientation 1-8; a broken EXIF block is ignored, as viewers ignore it.

    Read here rather than through `ImageOps.exif_transpose`, which re-serialises the whole
    EXIF block and raises on a tag of the wrong type (a rational stored as text)."""
    try:
        value = image.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # any malformed EXIF: the pixels are still the photo
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


# EXIF orientation -> the OpenCV operations that make the image upright (Pillow's
# exif_transpose table); OpenCV's copies run several times faster than numpy's strided ones.
_UPRIGHT: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda a: cv2.flip(a, 1),
    3: lambda a: cv2.rotate(a, cv2.ROTATE_180),
    4: lambda a: cv2.flip(a, 0),
    5: lambda a: cv2.transpose(a),
    6: lambda a: cv2.rotate(a, cv2.ROTATE_90_CLOCKWISE),
    7: lambda a: cv2.flip(cv2.transpose(a), -1),
    8: lambda a: cv2.rotate(a, cv2.ROTATE_90_COUNTERCLOCKWISE),
}


def _upright_bgr(rgb: np.ndarray, orientation: int) -> np.ndarray:
    """RGB -> BGR, then EXIF orientation; always a new C-contiguous array."""
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    turn = _UPRIGHT.get(orientation)
    return turn(bgr) if turn is not None else bgr


def _to_rgb8(image: Image.Image) -> np.ndarray:
    if image.mode == "RGB":
        return np.asarray(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # PIL's convert("RGB") clips 16-bit values at 255 (a white image): rescale instead.
        wide = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or wide.max() > 255 else 255.0
        gray = np.clip(wide / top * 255.0, 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Composite transparency onto white rather than black, as a viewer shows it.
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return np.asarray(canvas)
    return np.asarray(image.convert("RGB"))
