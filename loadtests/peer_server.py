"""Serve one of the benchmark's one-process peers with uvicorn (no Ray)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import uvicorn
from fastapi import FastAPI

from serve_app.config import Settings
from serve_app.repository import FaceRepository


def serve(build_app: Callable[[Settings], tuple[FastAPI, FaceRepository]], description: str, port: int,
          argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=port)
    args = parser.parse_args(argv)
    app, repository = build_app(Settings())
    try:
        uvicorn.run(app, host=args.host, port=args.port, workers=1, log_level="warning", access_log=False)
    finally:
        repository.store.close()
