"""A corpus of hostile or unusual images, built in memory, with the answer each must get.

`None` as the expected code means "must be accepted" (200, or a face-related 422).
"""

from __future__ import annotations

import io
import re
import struct
import zlib

import numpy as np
from PIL import Image

from serve_app.samples import encode_jpeg, read_package_image


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a huge size in its header: a decompression bomb's opening."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _save(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def corpus() -> list[tuple[str, bytes, int | None, str | None]]:
    """(name, bytes, expected status or None, expected detail or None)."""
    face = read_package_image("yaoming.jpg")
    rgb = Image.fromarray(face[:, :, ::-1])
    jpeg = encode_jpeg(face)
    return [
        ("bomb_png_header", _png_header_only(100_000, 100_000), 413, "image_too_many_pixels"),
        ("truncated_jpeg", jpeg[: len(jpeg) // 2], 422, "truncated_image"),
        ("jpeg_header_only", jpeg[:20], 422, None),
        ("gif", _save(rgb, "GIF"), 415, "unsupported_image_format"),
        ("tiff", _save(rgb, "TIFF"), 415, "unsupported_image_format"),
        ("ico", _save(rgb.resize((64, 64)), "ICO"), 415, "unsupported_image_format"),
        ("svg_text", b'<svg xmlns="http://www.w3.org/2000/svg"><rect/></svg>', 422, "not_an_image"),
        ("html_polyglot", b"<html><script>alert(1)</script></html>" + jpeg, 422, "not_an_image"),
        ("zero_bytes_after_magic", b"\xff\xd8\xff" + b"\x00" * 100, 422, None),
        ("one_pixel_png", _save(Image.new("RGB", (1, 1)), "PNG"), 422, "no_face_detected"),
        ("sliver_1x4000", _save(Image.new("RGB", (1, 4000), (128, 90, 70)), "PNG"), 422, "no_face_detected"),
        ("grayscale", _save(rgb.convert("L"), "PNG"), None, None),
        ("rgba", _save(rgb.convert("RGBA"), "PNG"), None, None),
        ("sixteen_bit", _save(Image.fromarray((np.asarray(rgb.convert("L"), np.uint16) * 257)), "PNG"),
         None, None),
        ("cmyk_jpeg", _save(rgb.convert("CMYK"), "JPEG"), None, None),
        ("webp", _save(rgb, "WEBP"), None, None),
        ("bmp", _save(rgb, "BMP"), None, None),
        ("animated_webp", _save(rgb, "WEBP", save_all=True, append_images=[rgb.rotate(90)]), None, None),
        ("exif_rotated", _save(rgb.rotate(90, expand=True), "JPEG",
                               exif=_exif_orientation(8)), None, None),
        # Orientation 6 beside a rational tag stored as text: ImageOps.exif_transpose raised
        # TypeError on it, which failed every request batched with it. The pixels are fine.
        ("exif_rational_as_text", crafted_exif_jpeg(rgb.rotate(90, expand=True)), None, None),
        ("jpeg_scan_bomb", scan_bomb_jpeg(rgb, 1000), 422, "image_too_complex"),
        ("mpo", _save(rgb, "MPO", save_all=True, append_images=[rgb.resize((64, 64))]), None, None),
        ("heic", _save(rgb, "HEIF", quality=90), None, None),
        ("avif", _save(rgb, "AVIF", quality=90), None, None),
    ]


def _tiff_ifd(entries: list[tuple[int, int, int, bytes]]) -> bytes:
    """A little-endian TIFF header and one IFD of (tag, type, count, raw value) entries."""
    table_end = 8 + 2 + 12 * len(entries) + 4
    table, values = struct.pack("<H", len(entries)), b""
    for tag, kind, count, value in entries:
        if len(value) <= 4:
            table += struct.pack("<HHI", tag, kind, count) + value.ljust(4, b"\x00")
        else:
            table += struct.pack("<HHII", tag, kind, count, table_end + len(values))
            values += value
    return b"II*\x00" + struct.pack("<I", 8) + table + struct.pack("<I", 0) + values


def crafted_exif_jpeg(image: Image.Image, rational_tag: int = 0x011A) -> bytes:
    """A JPEG whose EXIF has Orientation 6 and a RATIONAL tag (XResolution by default)
    stored as ASCII text, which Pillow reads but cannot write back."""
    text = b"72/1 dpi\x00"
    exif = _tiff_ifd([(0x0112, 3, 1, struct.pack("<H", 6)), (rational_tag, 2, len(text), text)])
    return _save(image, "JPEG", exif=b"Exif\x00\x00" + exif)


_SOS = re.compile(rb"\xff\xda")
_NEXT_MARKER = re.compile(rb"\xff+[^\x00\xff\xd0-\xd7]")


def scan_bomb_jpeg(image: Image.Image, repeats: int) -> bytes:
    """A real progressive JPEG of `image` whose smallest scan is repeated `repeats` times
    more: libjpeg decodes every repeat over the whole coefficient buffer."""
    data = _save(image, "JPEG", progressive=True, quality=80)
    scans = []
    for match in _SOS.finditer(data):
        header_end = match.start() + 2 + int.from_bytes(data[match.start() + 2:match.start() + 4], "big")
        end = _NEXT_MARKER.search(data, header_end)
        assert end is not None
        scans.append((match.start(), end.start()))
    start, end = min(scans[1:], key=lambda scan: scan[1] - scan[0])  # an AC scan (the first is DC)
    return data[:end] + data[start:end] * repeats + data[end:]


def _exif_orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()
