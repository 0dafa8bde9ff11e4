"""The seams between the layers agree: every store operation the flows may call is a
declared method, with the same signature, of the Protocol, the in-process adapter, the
FaceStore deployment and the Gateway's typed client of it."""

from __future__ import annotations

import inspect

from serve_app.deployments.clients import EmbedderClient, StoreClient
from serve_app.deployments.embedder import FaceEmbedder
from serve_app.deployments.store import FaceStore
from serve_app.flows.ports import EmbedderPort, PipelineEmbedder, RepositoryPort, ThreadedRepository
from serve_app.repository import FaceRepository


def operations(cls: type) -> dict[str, inspect.Signature]:
    return {name: inspect.signature(member) for name, member in inspect.getmembers(cls, inspect.isfunction)
            if not name.startswith("_")}


def test_every_repository_operation_is_a_method_of_each_implementation() -> None:
    port = operations(RepositoryPort)
    assert {"delete_identity", "delete_tenant", "stats", "retag_identity"} <= set(port)
    store_deployment = FaceStore.func_or_class
    for implementation in (ThreadedRepository, StoreClient, store_deployment):
        methods = operations(implementation)
        missing = set(port) - set(methods)
        assert not missing, f"{implementation.__name__} lacks {missing}"
        for name, signature in port.items():
            assert methods[name] == signature, f"{implementation.__name__}.{name}{methods[name]} != {signature}"
            assert inspect.iscoroutinefunction(getattr(implementation, name)), name


def test_the_port_mirrors_the_repository() -> None:
    plain = operations(FaceRepository)
    for name, signature in operations(RepositoryPort).items():
        assert list(plain[name].parameters) == list(signature.parameters), name


def test_embedder_seam() -> None:
    port = operations(EmbedderPort)
    for implementation in (PipelineEmbedder, EmbedderClient):
        assert operations(implementation)["embed"] == port["embed"]
    assert "embed" in operations(FaceEmbedder.func_or_class)
    assert {"health"} <= set(operations(EmbedderClient)) & set(operations(StoreClient))
