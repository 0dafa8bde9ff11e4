"""One onnxruntime model: its file's fingerprint, facts read from its graph and checked
once at load, the session on the chosen providers, and a warm-up run.

Each model (detector, recognizer) reads what it needs from the graph in `_prepare`,
refusing a model that does not fit with `UnsuitableModel`, and may correct the graph's
declarations there before the session is built from the corrected bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from google.protobuf.message import DecodeError

from serve_app.models.pack import ModelPackError

# Symbolic name given to a batch axis that a graph declared as fixed.
BATCH_AXIS = "batch"
# Ops that, fed straight from the graph's input, mean the graph normalises pixels itself
# (MXNet-exported ArcFace models start with `_minusscalar` / `_mulscalar`).
_NORMALISING_OPS = frozenset({"Sub", "Mul", "Div", "Add"})


class UnsuitableModel(ModelPackError):
    """A model file that cannot serve the role it was configured for."""


@dataclass(frozen=True)
class ModelFingerprint:
    """Which model produced a vector: file name and content hash."""

    name: str
    sha256: str


def fingerprint_of(path: Path) -> ModelFingerprint:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return ModelFingerprint(path.name, digest.hexdigest())


Dim = int | str  # a fixed size, or the name of a symbolic axis ("" when unnamed)


def declared_shape(value: onnx.ValueInfoProto) -> list[Dim]:
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value.type.tensor_type.shape.dim]


def make_batch_axis_symbolic(model: onnx.ModelProto) -> None:
    """Declare axis 0 of every input and output as a symbolic batch axis.

    Some exports (w600k_mbf.onnx) declare [1, 512] and a fixed batch of 1 on every
    intermediate although the graph batches; onnxruntime then warns on each batched run.
    The intermediate shape hints are dropped: onnxruntime infers them again.
    """
    for value in [*model.graph.input, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value"):
            dims[0].ClearField("dim_value")
            dims[0].dim_param = BATCH_AXIS
    del model.graph.value_info[:]


def normalises_input(model: onnx.ModelProto) -> bool:
    """Whether the graph's input goes first through arithmetic (built-in mean/std)."""
    input_name = model.graph.input[0].name
    return any(node.op_type in _NORMALISING_OPS and input_name in node.input for node in model.graph.node)


class OnnxModel:
    """Base of the face models; subclasses read their facts in `_prepare` and run a
    representative batch in `warm_up` (called at load, so the first request does not
    pay for onnxruntime's first-run allocation and, on CUDA, its autotuning)."""

    def __init__(self, path: Path, providers: Sequence[str], intra_op_threads: int = 0) -> None:
        self.path = path
        self.fingerprint = fingerprint_of(path)
        try:
            model = onnx.load(str(path))
        except (OSError, DecodeError) as error:
            raise UnsuitableModel(f"{path.name} is not a readable ONNX model ({error})") from error
        if len(model.graph.input) < 1 or len(model.graph.output) < 1:
            raise UnsuitableModel(f"{path.name} has no inputs or no outputs")
        self._prepare(model)
        options = ort.SessionOptions()
        if intra_op_threads:
            options.intra_op_num_threads = intra_op_threads
        self.session = ort.InferenceSession(model.SerializeToString(), sess_options=options,
                                            providers=list(providers))
        self.input_name: str = self.session.get_inputs()[0].name
        self.output_names: list[str] = [output.name for output in self.session.get_outputs()]
        try:
            self.warm_up()
        except UnsuitableModel:
            raise
        except Exception as error:  # onnxruntime's own errors share no base class but Exception
            raise UnsuitableModel(f"{path.name} failed its warm-up run ({type(error).__name__}: {error})") from error

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def provider(self) -> str:
        """The provider onnxruntime actually placed the session on (CUDA may fall back)."""
        return str(self.session.get_providers()[0])

    def _prepare(self, model: onnx.ModelProto) -> None:
        raise NotImplementedError

    def warm_up(self) -> None:
        raise NotImplementedError

    def _run(self, blob: np.ndarray) -> list[np.ndarray]:
        outputs = self.session.run(self.output_names, {self.input_name: np.ascontiguousarray(blob, np.float32)})
        return [np.asarray(output) for output in outputs]
