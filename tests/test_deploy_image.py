"""The container image, checked without Docker (none on this machine or CI): hadolint and
shellcheck, the build context, stage 1's wheel built for real from exactly what it
copies, and what the runtime stage promises (non-root, health check, data volume)."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import ray
from docker.utils.build import exclude_paths
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def dockerfile() -> DockerfileParser:
    return DockerfileParser(str(DOCKERFILE))


def _stages(parser: DockerfileParser) -> list[list[dict[str, str]]]:
    stages: list[list[dict[str, str]]] = []
    for instruction in parser.structure:
        if instruction["instruction"] == "FROM":
            stages.append([])
        if stages and instruction["instruction"] != "COMMENT":
            stages[-1].append(instruction)
    return stages


def _global_args(parser: DockerfileParser) -> dict[str, str]:
    """ARG defaults declared before the first FROM (usable in FROM lines)."""
    args: dict[str, str] = {}
    for instruction in parser.structure:
        if instruction["instruction"] == "FROM":
            break
        if instruction["instruction"] == "ARG" and "=" in instruction["value"]:
            name, value = instruction["value"].split("=", 1)
            args[name] = value
    return args


def _values(stage: list[dict[str, str]], name: str) -> list[str]:
    return [i["value"] for i in stage if i["instruction"] == name]


def test_hadolint_finds_nothing() -> None:
    # Any finding, down to "info", fails: the Dockerfile is small enough to keep clean.
    result = subprocess.run([str(BIN / "hadolint"), "--failure-threshold", "info", "--no-color", str(DOCKERFILE)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_entry_script_passes_shellcheck() -> None:
    result = subprocess.run([str(BIN / "shellcheck"), str(ROOT / "deploy" / "docker" / "start.sh")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_multi_stage_wheel_into_a_ray_image_of_the_installed_ray(dockerfile: DockerfileParser) -> None:
    wheel, runtime = _stages(dockerfile)
    assert "AS wheel" in wheel[0]["value"]
    assert any("--from=wheel" in value for value in _values(runtime, "COPY"))
    # Head and workers must run the Ray the project resolves to.
    args = _global_args(dockerfile)
    assert args["RAY_VERSION"] == ray.__version__
    assert args["PYTHON_TAG"] == f"py3{sys.version_info.minor}"
    assert args["RAY_FLAVOR"] == "cpu"
    assert dockerfile.baseimage == f"rayproject/ray:{ray.__version__}-{args['PYTHON_TAG']}-cpu"


def test_runtime_runs_as_non_root_with_health_check_and_data_volume(dockerfile: DockerfileParser) -> None:
    runtime = _stages(dockerfile)[-1]
    user = _values(runtime, "USER")[-1]
    assert user.split(":")[0].isdigit() and int(user.split(":")[0]) != 0
    (health,) = _values(runtime, "HEALTHCHECK")
    assert "http://127.0.0.1:8001/api/v1/health" in health
    (volume,) = _values(runtime, "VOLUME")
    assert json.loads(volume) == ["/data"]
    env = dict(pair.split("=", 1) for pair in shlex.split(" ".join(_values(runtime, "ENV"))))
    assert env["QDRANT_PATH"].startswith("/data/")
    assert "8001" in _values(runtime, "EXPOSE")[0].split()
    # The image's default profile exists and listens beyond the container's loopback.
    config = ROOT / Path(env["SERVE_CONFIG"]).relative_to("/home/ray/face-pipeline")
    assert config.is_file() and "host: 0.0.0.0" in config.read_text()


def _context_sources(parser: DockerfileParser) -> list[str]:
    sources = []
    for stage in _stages(parser):
        for value in _values(stage, "COPY"):
            words = [w for w in value.split() if not w.startswith("--")]
            if "--from=" not in value:
                sources += words[:-1]
    return sources


def test_build_context_holds_what_the_image_copies_and_nothing_else(dockerfile: DockerfileParser) -> None:
    patterns = [line for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    context = exclude_paths(str(ROOT), patterns)
    for source in _context_sources(dockerfile):
        assert any(path == source or path.startswith(source.rstrip("/") + "/") for path in context), source
    for private in (".venv", "data", "tests", ".git", "results", "deploy/secrets"):
        assert not any(path == private or path.startswith(private + "/") for path in context), private


def test_stage_one_builds_the_service_wheel_from_what_it_copies(
        dockerfile: DockerfileParser, tmp_path: Path) -> None:
    """Stage 1 for real: the copied files alone make a wheel holding every serve_app module."""
    src = tmp_path / "src"
    src.mkdir()
    wheel_stage = _stages(dockerfile)[0]
    for value in _values(wheel_stage, "COPY"):
        *sources, target = value.split()
        for source in sources:
            destination = src / target / Path(source).name if target.endswith("/") else src / target
            subprocess.run(["cp", "-r", str(ROOT / source), str(destination)], check=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(tmp_path / "dist"), str(src)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("face_pipeline-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / "serve_app").rglob("*.py")}
    assert modules <= names, sorted(modules - names)
    assert not any(name.startswith("tests/") for name in names)
