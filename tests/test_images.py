"""Unit tests of serve_app.images: base64 decoding and safe image loading.

Every image is generated in memory with Pillow, so the tests need no fixture files.
"""

from __future__ import annotations

import base64
import io

import struct

import numpy as np
import pytest
from PIL import Image, ImageOps

import serve_app.images as images_module
from serve_app.errors import InvalidImage
from serve_app.images import DecodeLimits, decode_base64, jpeg_scan_count, load_image, open_image
from tests.hostile_images import crafted_exif_jpeg, scan_bomb_jpeg

MAX_BYTES = 1_000_000
MAX_PIXELS = 1_000_000


# --- helpers -------------------------------------------------------------------------

def encode(image: Image.Image, fmt: str, **save_args) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save_args)
    return buffer.getvalue()


def png_bytes(mode: str = "RGB", size: tuple[int, int] = (4, 3), color=(10, 20, 30)) -> bytes:
    return encode(Image.new(mode, size, color), "PNG")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def assert_invalid(excinfo: pytest.ExceptionInfo[InvalidImage], code: str, status: int) -> None:
    assert excinfo.value.code == code
    assert excinfo.value.status_code == status


def assert_bgr8(array: np.ndarray, height: int, width: int) -> None:
    """The contract of load_image: an 8-bit, 3-channel (H, W, 3) array."""
    assert isinstance(array, np.ndarray)
    assert array.dtype == np.uint8
    assert array.shape == (height, width, 3)


# --- decode_base64 -------------------------------------------------------------------

class TestDecodeBase64:
    def test_bare_base64_decodes(self):
        data = png_bytes()
        assert decode_base64(b64(data), MAX_BYTES) == data

    def test_data_uri_decodes(self):
        data = png_bytes()
        assert decode_base64(f"data:image/png;base64,{b64(data)}", MAX_BYTES) == data

    def test_data_uri_mime_is_case_insensitive(self):
        data = png_bytes()
        assert decode_base64(f"DATA:IMAGE/PNG;BASE64,{b64(data)}", MAX_BYTES) == data

    def test_url_safe_unpadded_base64_accepted(self):
        # Pick bytes whose standard encoding contains '+' and '/' and needs padding, so
        # both the alphabet translation and the re-padding are exercised.
        data = bytes([0xFB, 0xEF, 0xFF, 0xFE, 0x3F])
        standard = base64.b64encode(data).decode()
        assert "+" in standard and "/" in standard and standard.endswith("=")
        url_safe = base64.urlsafe_b64encode(data).decode().rstrip("=")
        assert "-" in url_safe and "_" in url_safe and "=" not in url_safe
        assert decode_base64(url_safe, MAX_BYTES) == data

    def test_whitespace_and_newlines_tolerated(self):
        data = png_bytes()
        text = b64(data)
        # MIME-style line wrapping plus stray spaces and tabs.
        wrapped = "\n".join(text[i:i + 20] for i in range(0, len(text), 20))
        wrapped = "  " + wrapped.replace("A", "A \t", 1) + "\r\n"
        assert decode_base64(wrapped, MAX_BYTES) == data
        assert decode_base64("data:image/png;base64," + wrapped, MAX_BYTES) == data

    @pytest.mark.parametrize("blank", ["\x0b", "\x0c", "\x1c", "\x1f", "\u2003", "\u3000"])
    def test_every_whitespace_the_slow_path_strips_is_still_stripped(self, blank):
        # Payloads without whitespace skip the regex; any whitespace character, ASCII
        # or not, must still take it.
        data = png_bytes()
        text = b64(data)
        assert decode_base64(text[:8] + blank + text[8:], MAX_BYTES) == data

    @pytest.mark.parametrize("text", ["not base64 at all!", "abc$def", "a"])
    def test_invalid_base64(self, text):
        with pytest.raises(InvalidImage) as excinfo:
            decode_base64(text, MAX_BYTES)
        assert_invalid(excinfo, "invalid_base64", 422)

    @pytest.mark.parametrize("text", ["", "   \n\t ", "data:image/png;base64,"])
    def test_empty(self, text):
        with pytest.raises(InvalidImage) as excinfo:
            decode_base64(text, MAX_BYTES)
        assert_invalid(excinfo, "empty_image", 422)

    def test_non_image_mime_rejected(self):
        with pytest.raises(InvalidImage) as excinfo:
            decode_base64(f"data:text/plain;base64,{b64(b'hello world')}", MAX_BYTES)
        assert_invalid(excinfo, "invalid_data_uri", 422)

    def test_data_uri_without_base64_marker_rejected(self):
        # A percent-encoded data URI: not something we decode.
        with pytest.raises(InvalidImage) as excinfo:
            decode_base64("data:image/png,%89PNG%0D%0A", MAX_BYTES)
        assert_invalid(excinfo, "invalid_data_uri", 422)

    def test_malformed_data_uri_rejected(self):
        with pytest.raises(InvalidImage) as excinfo:
            decode_base64("data:;;;garbage", MAX_BYTES)
        assert_invalid(excinfo, "invalid_data_uri", 422)

    def test_oversized_text_rejected_before_decoding(self):
        max_bytes = 100
        # The text is not even valid base64: if it were decoded first we would get
        # invalid_base64, so image_too_large proves the size check comes first.
        text = "!" * ((max_bytes * 4) // 3 + 1025)
        with pytest.raises(InvalidImage) as excinfo:
            decode_base64(text, max_bytes)
        assert_invalid(excinfo, "image_too_large", 413)

    def test_decoded_size_over_limit_rejected(self):
        # Text within the slack allowed on the encoded length but decoding to more
        # than max_bytes must still be refused.
        max_bytes = 100
        data = b"\x00" * (max_bytes + 1)
        with pytest.raises(InvalidImage) as excinfo:
            decode_base64(b64(data), max_bytes)
        assert_invalid(excinfo, "image_too_large", 413)

    def test_exactly_max_bytes_accepted(self):
        data = b"\x01" * 100
        assert decode_base64(b64(data), 100) == data


# --- load_image: refusals ------------------------------------------------------------

class TestLoadImageRefusals:
    def test_random_bytes_not_an_image(self):
        rng = np.random.default_rng(0)
        with pytest.raises(InvalidImage) as excinfo:
            load_image(rng.bytes(2048), MAX_PIXELS)
        assert_invalid(excinfo, "not_an_image", 422)

    def test_empty_bytes_not_an_image(self):
        with pytest.raises(InvalidImage) as excinfo:
            load_image(b"", MAX_PIXELS)
        assert_invalid(excinfo, "not_an_image", 422)

    @pytest.mark.parametrize("fmt", ["GIF", "TIFF"])
    def test_unsupported_format(self, fmt):
        data = encode(Image.new("RGB", (8, 8), (1, 2, 3)), fmt)
        with pytest.raises(InvalidImage) as excinfo:
            load_image(data, MAX_PIXELS)
        assert_invalid(excinfo, "unsupported_image_format", 415)

    def test_too_many_pixels_checked_from_header(self):
        # A 3000x3000 1-bit PNG is a few KB but claims 9 MP.
        data = encode(Image.new("1", (3000, 3000), 0), "PNG")
        assert len(data) < 50_000
        with pytest.raises(InvalidImage) as excinfo:
            load_image(data, max_pixels=1_000_000)
        assert_invalid(excinfo, "image_too_many_pixels", 413)

    def test_pixel_limit_is_inclusive(self):
        # Exactly max_pixels is allowed; one more is not.
        data = encode(Image.new("RGB", (10, 10)), "PNG")
        assert_bgr8(load_image(data, max_pixels=100), 10, 10)
        with pytest.raises(InvalidImage) as excinfo:
            load_image(data, max_pixels=99)
        assert_invalid(excinfo, "image_too_many_pixels", 413)

    def test_truncated_jpeg(self):
        # Noise so the entropy-coded data is large and cutting it loses real scanlines.
        rng = np.random.default_rng(1)
        pixels = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
        data = encode(Image.fromarray(pixels), "JPEG", quality=90)
        with pytest.raises(InvalidImage) as excinfo:
            load_image(data[: len(data) // 2], MAX_PIXELS)
        assert_invalid(excinfo, "truncated_image", 422)

    def test_truncated_png(self):
        rng = np.random.default_rng(2)
        pixels = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
        data = encode(Image.fromarray(pixels), "PNG")
        with pytest.raises(InvalidImage) as excinfo:
            load_image(data[: len(data) // 2], MAX_PIXELS)
        assert_invalid(excinfo, "truncated_image", 422)


# --- load_image: conversions ---------------------------------------------------------

class TestLoadImageConversions:
    def test_channel_order_is_bgr(self):
        data = png_bytes("RGB", (3, 2), (255, 0, 0))
        array = load_image(data, MAX_PIXELS)
        assert_bgr8(array, 2, 3)
        assert (array == [0, 0, 255]).all()

    def test_rgb_values_and_layout(self):
        # Distinct pixels at known positions: catches a transposed or flipped result.
        image = Image.new("RGB", (3, 2), (0, 0, 0))
        image.putpixel((2, 0), (10, 20, 30))   # x=2, y=0: top right
        image.putpixel((0, 1), (40, 50, 60))   # x=0, y=1: bottom left
        array = load_image(encode(image, "PNG"), MAX_PIXELS)
        assert_bgr8(array, 2, 3)
        assert array[0, 2].tolist() == [30, 20, 10]
        assert array[1, 0].tolist() == [60, 50, 40]
        assert array[0, 0].tolist() == [0, 0, 0]

    def test_result_is_contiguous(self):
        # The models take the buffer directly; a negative-stride view would break them.
        array = load_image(png_bytes(), MAX_PIXELS)
        assert array.flags["C_CONTIGUOUS"]

    def test_exif_orientation_applied(self):
        # Stored 40 wide x 20 high; Orientation=6 means "rotate 90° clockwise to view",
        # so the upright image is 20 wide x 40 high.
        image = Image.new("RGB", (40, 20), (200, 100, 50))
        exif = Image.Exif()
        exif[0x0112] = 6
        data = encode(image, "JPEG", exif=exif.tobytes())
        assert Image.open(io.BytesIO(data)).size == (40, 20)  # sanity: stored unrotated
        array = load_image(data, MAX_PIXELS)
        assert_bgr8(array, 40, 20)

    def test_exif_orientation_rotates_content(self):
        # Left half red, right half blue, stored 40x20; after a 90° clockwise turn the
        # left half ends up on top.
        image = Image.new("RGB", (40, 20), (0, 0, 255))
        image.paste((255, 0, 0), (0, 0, 20, 20))
        exif = Image.Exif()
        exif[0x0112] = 6
        array = load_image(encode(image, "JPEG", exif=exif.tobytes(), quality=95), MAX_PIXELS)
        assert_bgr8(array, 40, 20)
        top, bottom = array[5, 10].astype(int), array[35, 10].astype(int)
        assert top[2] > 200 and top[0] < 60      # red (BGR: R last)
        assert bottom[0] > 200 and bottom[2] < 60  # blue

    def test_grayscale(self):
        array = load_image(png_bytes("L", (5, 4), 77), MAX_PIXELS)
        assert_bgr8(array, 4, 5)
        assert (array == 77).all()

    def test_rgba_transparent_becomes_white(self):
        image = Image.new("RGBA", (2, 1), (255, 0, 0, 255))
        image.putpixel((1, 0), (0, 0, 0, 0))  # fully transparent black
        array = load_image(encode(image, "PNG"), MAX_PIXELS)
        assert_bgr8(array, 1, 2)
        assert array[0, 0].tolist() == [0, 0, 255]      # opaque red kept
        assert array[0, 1].tolist() == [255, 255, 255]  # transparent -> white, not black

    def test_grayscale_alpha_transparent_becomes_white(self):
        image = Image.new("LA", (2, 1), (0, 255))
        image.putpixel((1, 0), (0, 0))
        array = load_image(encode(image, "PNG"), MAX_PIXELS)
        assert_bgr8(array, 1, 2)
        assert array[0, 0].tolist() == [0, 0, 0]
        assert array[0, 1].tolist() == [255, 255, 255]

    def test_palette(self):
        image = Image.new("P", (3, 2), 0)
        image.putpalette([0, 255, 0] + [0, 0, 0] * 255)  # index 0 = green
        data = encode(image, "PNG")
        assert Image.open(io.BytesIO(data)).mode == "P"
        array = load_image(data, MAX_PIXELS)
        assert_bgr8(array, 2, 3)
        assert (array == [0, 255, 0]).all()

    def test_palette_with_transparency_becomes_white(self):
        image = Image.new("P", (2, 1), 0)
        image.putpalette([255, 0, 0, 0, 0, 0] + [0, 0, 0] * 254)  # 0 = red, 1 = black
        image.putpixel((1, 0), 1)
        data = encode(image, "PNG", transparency=1)  # index 1 transparent
        array = load_image(data, MAX_PIXELS)
        assert_bgr8(array, 1, 2)
        assert array[0, 0].tolist() == [0, 0, 255]
        assert array[0, 1].tolist() == [255, 255, 255]

    def test_16bit_grayscale_rescaled_not_clipped(self):
        pixels = np.array([[65535, 32768, 0]], dtype=np.uint16)
        data = encode(Image.fromarray(pixels), "PNG")
        assert Image.open(io.BytesIO(data)).mode.startswith("I")  # sanity: 16-bit decode path
        array = load_image(data, MAX_PIXELS)
        assert_bgr8(array, 1, 3)
        assert array[0, 0].tolist() == [255, 255, 255]
        assert all(abs(int(v) - 128) <= 1 for v in array[0, 1])  # clipping would give 255
        assert array[0, 2].tolist() == [0, 0, 0]

    def test_dark_16bit_grayscale_stays_dark(self):
        # A 16-bit image whose values all fit in 8 bits is still on the 0..65535 scale:
        # 255/65535 is nearly black, not white.
        pixels = np.array([[255, 100]], dtype=np.uint16)
        array = load_image(encode(Image.fromarray(pixels), "PNG"), MAX_PIXELS)
        assert_bgr8(array, 1, 2)
        assert array.max() <= 1

    def test_cmyk_jpeg(self):
        image = Image.new("CMYK", (6, 4), (0, 255, 255, 0))  # pure red in CMYK
        data = encode(image, "JPEG", quality=95)
        assert Image.open(io.BytesIO(data)).mode == "CMYK"
        array = load_image(data, MAX_PIXELS)
        assert_bgr8(array, 4, 6)
        b, g, r = array[2, 3].astype(int)
        assert r > 200 and g < 60 and b < 60

    @pytest.mark.parametrize("fmt", ["BMP", "WEBP", "JPEG"])
    def test_other_allowed_formats(self, fmt):
        save_args = {"lossless": True} if fmt == "WEBP" else {}
        data = encode(Image.new("RGB", (8, 6), (0, 0, 255)), fmt, **save_args)
        array = load_image(data, MAX_PIXELS)
        assert_bgr8(array, 6, 8)
        b, g, r = array[3, 4].astype(int)
        assert b > 200 and g < 40 and r < 40

    @pytest.mark.parametrize("fmt", ["WEBP", "PNG"])
    def test_animated_first_frame(self, fmt):
        first = Image.new("RGB", (8, 8), (255, 0, 0))
        second = Image.new("RGB", (8, 8), (0, 0, 255))
        save_args = {"lossless": True} if fmt == "WEBP" else {}
        data = encode(first, fmt, save_all=True, append_images=[second], duration=100, loop=0, **save_args)
        opened = Image.open(io.BytesIO(data))
        assert getattr(opened, "n_frames", 1) == 2  # sanity: really animated
        array = load_image(data, MAX_PIXELS)
        assert_bgr8(array, 8, 8)
        assert (array == [0, 0, 255]).all()  # red (first frame), in BGR


# --- the two steps together ----------------------------------------------------------

def test_decode_then_load_round_trip():
    data = png_bytes("RGB", (4, 3), (1, 2, 3))
    array = load_image(decode_base64(f"data:image/png;base64,{b64(data)}", MAX_BYTES), MAX_PIXELS)
    assert_bgr8(array, 3, 4)
    assert (array == [3, 2, 1]).all()


def test_invalid_image_survives_pickling():
    # Errors cross Ray process boundaries; code and status must survive the trip.
    import pickle

    with pytest.raises(InvalidImage) as excinfo:
        load_image(b"junk", MAX_PIXELS)
    clone = pickle.loads(pickle.dumps(excinfo.value))
    assert isinstance(clone, InvalidImage)
    assert (clone.code, clone.status_code) == ("not_an_image", 422)


# --- EXIF orientation, also when the EXIF block is malformed -------------------------

def _quadrants() -> Image.Image:
    """40x20 with four distinct colours, so any flip or turn shows."""
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 255, 0), (20, 0, 40, 10))
    image.paste((0, 0, 255), (0, 10, 20, 20))
    image.paste((255, 255, 0), (20, 10, 40, 20))
    return image


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pillow(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(_quadrants(), "PNG", exif=exif.tobytes())  # lossless: pixels compare exactly
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))[:, :, ::-1]
    np.testing.assert_array_equal(load_image(data, MAX_PIXELS), expected)


@pytest.mark.parametrize("tag", [0x011A, 0x0128], ids=["rational_as_text", "short_as_text"])
def test_malformed_exif_is_ignored_and_orientation_still_applied(tag):
    """Orientation 6 beside a tag of the wrong type: exif_transpose raises on it (TypeError
    or struct.error), which used to fail every request batched with the photo."""
    data = crafted_exif_jpeg(_quadrants(), tag)
    with pytest.raises((TypeError, struct.error)):
        ImageOps.exif_transpose(Image.open(io.BytesIO(data)))  # sanity: the crafted block bites
    array = load_image(data, MAX_PIXELS)
    assert_bgr8(array, 40, 20)  # turned a quarter clockwise
    top_left = array[3, 3].astype(int)  # the stored bottom-left (blue) quadrant
    assert top_left[0] > 200 and top_left[2] < 60


def test_unreadable_exif_counts_as_no_orientation(monkeypatch):
    def broken(self):
        raise AttributeError("crafted")

    monkeypatch.setattr(Image.Image, "getexif", broken)
    array = load_image(encode(_quadrants(), "PNG"), MAX_PIXELS)
    assert_bgr8(array, 20, 40)


def test_unexpected_decoder_exception_is_this_images_invalid_image(monkeypatch):
    def explode(image):
        raise RuntimeError("decoder bug")

    monkeypatch.setattr(images_module, "_to_rgb8", explode)
    with pytest.raises(InvalidImage) as excinfo:
        load_image(png_bytes(), MAX_PIXELS)
    assert_invalid(excinfo, "invalid_image", 422)


def test_unexpected_parser_exception_is_invalid_image(monkeypatch):
    def explode(*args, **kwargs):
        raise struct.error("crafted header")

    monkeypatch.setattr(images_module, "jpeg_scan_count", explode)
    with pytest.raises(InvalidImage) as excinfo:
        open_image(encode(Image.new("RGB", (8, 8)), "JPEG"), DecodeLimits(MAX_PIXELS))
    assert_invalid(excinfo, "invalid_image", 422)


# --- decode budget ---------------------------------------------------------------------

def _photo(size: tuple[int, int] = (96, 64)) -> Image.Image:
    rng = np.random.default_rng(3)
    return Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8))


class TestDecodeBudget:
    def test_scan_counts_of_real_encodings(self):
        photo = _photo()
        assert jpeg_scan_count(encode(photo, "JPEG"), 1000) == 1
        assert jpeg_scan_count(encode(photo, "JPEG", progressive=True), 1000) == 10
        assert jpeg_scan_count(encode(photo.convert("L"), "JPEG", progressive=True), 1000) == 6

    def test_scans_of_an_embedded_thumbnail_or_second_image_are_not_counted(self):
        photo = _photo()
        progressive = encode(photo, "JPEG", progressive=True)
        # A JPEG inside an APP segment (as EXIF thumbnails are) is skipped by length.
        app = b"\xff\xe2" + struct.pack(">H", len(progressive) + 2) + progressive
        baseline = encode(photo, "JPEG")
        assert jpeg_scan_count(baseline[:2] + app + baseline[2:], 1000) == 1
        # An MPO's second image follows the first one's EOI: never decoded, not counted.
        mpo = encode(photo, "MPO", save_all=True, append_images=[photo])
        assert Image.open(io.BytesIO(mpo)).format == "MPO"
        assert jpeg_scan_count(mpo, 1000) == 1

    def test_repeated_scan_bomb_refused_before_decoding(self):
        bomb = scan_bomb_jpeg(_photo((256, 256)), 1500)
        assert len(bomb) < 4_000_000
        assert jpeg_scan_count(bomb, 10**6) == 1510
        with pytest.raises(InvalidImage) as excinfo:
            open_image(bomb, DecodeLimits(MAX_PIXELS))
        assert_invalid(excinfo, "image_too_complex", 422)
        assert excinfo.value.extra == {"reason": "jpeg_scans"}

    def test_scan_limit_is_inclusive(self):
        data = encode(_photo(), "JPEG", progressive=True)
        assert_bgr8(load_image(data, MAX_PIXELS, max_jpeg_scans=10), 64, 96)
        with pytest.raises(InvalidImage) as excinfo:
            load_image(data, MAX_PIXELS, max_jpeg_scans=9)
        assert_invalid(excinfo, "image_too_complex", 422)

    def test_marker_flood_refused(self):
        # Thousands of empty segments: cheap bytes, each a step for the header walk.
        data = encode(_photo(), "JPEG")
        flood = data[:2] + b"\xff\xfe\x00\x02" * 5000 + data[2:]
        with pytest.raises(InvalidImage) as excinfo:
            load_image(flood, MAX_PIXELS)
        assert_invalid(excinfo, "image_too_complex", 422)
        assert excinfo.value.extra == {"reason": "jpeg_markers"}

    def test_decoder_stopped_at_the_deadline(self, monkeypatch):
        # A clock that advances one second per look: reads stop once the budget is spent.
        ticks = iter(range(10**6))
        monkeypatch.setattr(images_module.time, "monotonic", lambda: float(next(ticks)))
        data = encode(_photo((512, 512)), "PNG")  # several decoder blocks
        assert len(data) > 4 * 16 * 1024
        with pytest.raises(InvalidImage) as excinfo:
            load_image(data, MAX_PIXELS, max_decode_seconds=3)
        assert_invalid(excinfo, "image_too_complex", 422)
        assert excinfo.value.extra == {"reason": "decode_time"}
        assert_bgr8(load_image(data, MAX_PIXELS, max_decode_seconds=10**5), 512, 512)


# --- what phones produce ---------------------------------------------------------------

class TestPhoneFormats:
    def test_mpo_decodes_as_its_first_image(self):
        first, second = Image.new("RGB", (32, 24), (255, 0, 0)), Image.new("RGB", (32, 24), (0, 0, 255))
        data = encode(first, "MPO", save_all=True, append_images=[second], quality=95)
        assert Image.open(io.BytesIO(data)).format == "MPO"
        array = load_image(data, MAX_PIXELS)
        assert_bgr8(array, 24, 32)
        b, g, r = array[12, 16].astype(int)
        assert r > 200 and b < 60

    def test_heic_with_rotation(self):
        # pillow-heif stores EXIF orientation 6 as an HEIF rotation and applies it on decode.
        exif = Image.Exif()
        exif[0x0112] = 6
        data = encode(_quadrants(), "HEIF", quality=95, exif=exif.tobytes())
        assert data[4:12] == b"ftypheic"
        array = load_image(data, MAX_PIXELS)
        assert_bgr8(array, 40, 20)
        top_left = array[3, 3].astype(int)  # the stored bottom-left (blue) quadrant
        assert top_left[0] > 200 and top_left[2] < 60

    def test_avif(self):
        data = encode(Image.new("RGB", (16, 8), (0, 0, 255)), "AVIF", quality=95)
        array = load_image(data, MAX_PIXELS)
        assert_bgr8(array, 8, 16)
        b, g, r = array[4, 8].astype(int)
        assert b > 200 and r < 60


# --- decoding at a reduced scale ----------------------------------------------------------

class TestScaledDecode:
    @pytest.mark.parametrize("scale", [1, 2, 4, 8])
    def test_jpeg_decodes_at_dct_scales(self, scale):
        source = open_image(encode(_photo((100, 60)), "JPEG"), DecodeLimits(MAX_PIXELS))
        decoded = source.decode(scale)
        assert decoded.scale == scale
        assert_bgr8(decoded.pixels, -(-60 // scale), -(-100 // scale))
        assert (decoded.width, decoded.height) == (100, 60)
        assert decoded.pixels.flags["C_CONTIGUOUS"]

    def test_scaled_decode_keeps_the_orientation_and_reports_the_upright_size(self):
        exif = Image.Exif()
        exif[0x0112] = 6
        image = _quadrants().resize((400, 200), Image.NEAREST)
        decoded = open_image(encode(image, "JPEG", exif=exif.tobytes(), quality=95),
                             DecodeLimits(MAX_PIXELS)).decode(4)
        assert decoded.scale == 4 and (decoded.width, decoded.height) == (200, 400)
        assert_bgr8(decoded.pixels, 100, 50)
        top_left = decoded.pixels[5, 5].astype(int)
        assert top_left[0] > 200 and top_left[2] < 60

    def test_scaled_decode_looks_like_the_full_one_shrunk(self):
        photo = Image.open(io.BytesIO(encode(_quadrants().resize((400, 200)), "JPEG", quality=95)))
        data = encode(photo, "JPEG", quality=95)
        full = open_image(data, DecodeLimits(MAX_PIXELS)).decode(1).pixels
        quarter = open_image(data, DecodeLimits(MAX_PIXELS)).decode(4).pixels
        shrunk = full.reshape(50, 4, 100, 4, 3).mean(axis=(1, 3))
        assert np.abs(shrunk - quarter).mean() < 3

    def test_other_formats_decode_whole(self):
        source = open_image(encode(_photo((100, 60)), "PNG"), DecodeLimits(MAX_PIXELS))
        assert source.coarsest_scale(10) == 1
        decoded = source.decode(4)
        assert decoded.scale == 1 and decoded.pixels.shape == (60, 100, 3)

    def test_coarsest_scale_keeps_the_longer_side(self):
        source = open_image(encode(_photo((4000, 3000)), "JPEG"), DecodeLimits(20_000_000))
        assert source.coarsest_scale(640) == 4  # 1000 px; 1/8 would give 500
        assert source.coarsest_scale(1280) == 2
        assert source.coarsest_scale(400) == 8
        assert source.coarsest_scale(5000) == 1
