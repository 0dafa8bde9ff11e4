"""Configuration: the plan's names and defaults, and env.example kept in step."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from serve_app.config import Settings

ENV_EXAMPLE = Path(__file__).resolve().parent.parent / "env.example"


def test_plan_defaults() -> None:
    settings = Settings(_env_file=None)
    assert settings.faces_collection == "faces_v1"
    assert settings.identity_collection == "identities_v1"
    assert settings.vector_dim == 512
    assert settings.verify_hi_threshold == 0.78
    assert settings.verify_top_k == 50
    assert settings.verify_hnsw_ef == 128
    assert settings.enable_verification_flow is True
    assert settings.embedded_store is True


def test_env_example_lists_every_setting() -> None:
    keys = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), re.M))
    assert keys == Settings.env_names()
    assert "QDRANT_COLLECTION" in keys  # the plan's name for the faces collection


def test_environment_names_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QDRANT_URL", "http://qdrant:6333")
    monkeypatch.setenv("VERIFY_HI_THRESHOLD", "0.8")
    monkeypatch.setenv("ENABLE_VERIFICATION_FLOW", "false")
    monkeypatch.setenv("QDRANT_COLLECTION", "faces_v2")
    settings = Settings(_env_file=None)
    assert settings.faces_collection == "faces_v2"
    assert settings.qdrant_url == "http://qdrant:6333" and not settings.embedded_store
    assert settings.verify_hi_threshold == 0.8
    assert settings.enable_verification_flow is False


def test_empty_values_from_a_copied_env_example_mean_default(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = tmp_path / ".env"
    env.write_text(ENV_EXAMPLE.read_text())
    settings = Settings(_env_file=env)
    assert settings.face_model_dir is None
    assert settings.qdrant_url is None


def test_floor_above_threshold_is_refused() -> None:
    with pytest.raises(ValidationError):
        Settings(_env_file=None, verify_hi_threshold=0.7, verify_threshold_floor=0.8)
