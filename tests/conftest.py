"""Shared fixtures: the real models (loaded once) and the package-shipped sample photos."""

from __future__ import annotations

import pytest

from serve_app.config import Settings
from serve_app.embedding import FacePipeline, load_pipeline
from serve_app.samples import sample_set


@pytest.fixture(scope="session")
def settings() -> Settings:
    # Built from defaults only: a developer's .env or shell must not change test outcomes.
    return Settings(_env_file=None)


@pytest.fixture(scope="session")
def pipeline(settings: Settings) -> FacePipeline:
    return load_pipeline(settings)


@pytest.fixture(scope="session")
def samples() -> dict[str, bytes]:
    return sample_set()
