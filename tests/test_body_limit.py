"""The request body limit, declared or streamed, answers 413 request_too_large."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from serve_app.web.errors import install_error_handlers
from serve_app.web.body_limit import BodySizeLimit


def make_client(limit: int) -> TestClient:
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=limit)

    @app.post("/echo")
    async def echo(request: Request) -> dict:
        return {"size": len(await request.body())}

    return TestClient(app)


def test_small_body_passes() -> None:
    assert make_client(100).post("/echo", content=b"x" * 100).json() == {"size": 100}


def test_declared_oversize_is_refused_before_reading() -> None:
    response = make_client(100).post("/echo", content=b"x" * 101)
    assert response.status_code == 413
    assert response.json() == {"detail": "request_too_large", "max_bytes": 100}


def test_streamed_oversize_without_length_is_refused() -> None:
    def chunks():
        for _ in range(10):
            yield b"y" * 50

    response = make_client(100).post("/echo", content=chunks())
    assert response.status_code == 413 and response.json()["detail"] == "request_too_large"
