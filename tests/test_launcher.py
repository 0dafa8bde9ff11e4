"""The launcher starts Ray with configs/ray.env, and the caller's environment wins."""

from __future__ import annotations

from pathlib import Path

import pytest
from dotenv import dotenv_values

from loadtests.launcher import RAY_ENV_FILE, ServeProcess


def test_ray_env_file_reaches_ray(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tuning = dotenv_values(RAY_ENV_FILE)
    assert tuning["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    for key in tuning:
        monkeypatch.delenv(key, raising=False)
    env = ServeProcess(tmp_path)._env()
    assert {key: env[key] for key in tuning} == tuning
    assert env["QDRANT_PATH"] == str(tmp_path / "qdrant")


def test_environment_overrides_ray_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_SERVE_THROUGHPUT_OPTIMIZED", "0")
    env = ServeProcess(tmp_path, env={"RAY_SERVE_LOG_TO_STDERR": "0"})._env()
    assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "0"
    assert env["RAY_SERVE_LOG_TO_STDERR"] == "0"
