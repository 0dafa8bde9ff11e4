"""The bulk ingestion command on Ray Data, on a small synthetic gallery with bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import ray

from serve_app.config import Settings
from serve_app.embedding import EmbedRequest, FaceSelection
from serve_app.bulk_ingest import list_images, main, run_ingest
from serve_app.repository import FaceRepository
from serve_app.samples import synthetic_gallery
from serve_app.vectordb.edge import EdgeStore
from tests.helpers import faces_of


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    images = tmp_path / "crawl" / "nested"
    images.mkdir(parents=True)
    for name, data in synthetic_gallery(6, seed=7):
        (images / name).write_bytes(data)
    first = (images / "gallery_00000.jpg").read_bytes()
    (images / "truncated.jpg").write_bytes(first[: len(first) // 3])
    (images / "notes.jpg").write_bytes(b"this is not a picture")
    (images / "readme.txt").write_text("ignored: not an image suffix")
    return tmp_path / "crawl"


def test_folder_listing_is_recursive_and_by_suffix(folder: Path) -> None:
    names = [Path(p).name for p in list_images(str(folder))]
    assert names == sorted(names) and "readme.txt" not in names and len(names) == 8
    assert list_images(str(folder / "**" / "gallery_*.jpg")) == [p for p in list_images(str(folder))
                                                                  if "gallery_" in p]


def test_bulk_ingest_reports_bad_files_and_resumes(ray_local, folder: Path, tmp_path: Path, pipeline) -> None:
    settings = Settings(_env_file=None, qdrant_path=tmp_path / "qdrant")
    summary = run_ingest(str(folder), "bulk-tenant", "crawl", settings, batch_size=4, progress=False)
    expected_faces = sum(
        len(pipeline.run([EmbedRequest(Path(p).read_bytes(), FaceSelection.ALL)])[0].faces)
        for p in list_images(str(folder / "**" / "gallery_*.jpg"))
    )
    assert summary.images == 8
    assert summary.ingested + summary.no_faces == 6
    assert summary.faces == expected_faces > 0
    assert sorted((Path(f["path"]).name, f["reason"]) for f in summary.failures) == [
        ("notes.jpg", "not_an_image"), ("truncated.jpg", "truncated_image")]

    store = EdgeStore(settings.qdrant_path)
    repository = FaceRepository.for_settings(store, settings)
    repository.ensure_all()
    assert faces_of(repository, "bulk-tenant") == expected_faces
    store.close()

    again = run_ingest(str(folder), "bulk-tenant", "crawl", settings, batch_size=4, progress=False)
    assert again.skipped_already_ingested == summary.ingested
    assert again.ingested == 0 and again.faces == 0


def test_cli_writes_a_json_summary(ray_local, folder: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("QDRANT_PATH", str(tmp_path / "cli-store"))
    report = tmp_path / "summary.json"
    code = main([str(folder), "--tenant", "t", "--site", "s", "--no-progress", "--json", str(report)])
    assert code == 0
    written = json.loads(report.read_text())
    assert written["images"] == 8 and written["failure_reasons"] == {"not_an_image": 1, "truncated_image": 1}
    assert "failed:" in capsys.readouterr().err


def test_cli_refuses_bad_tenant(folder: Path) -> None:
    with pytest.raises(SystemExit):
        main([str(folder), "--tenant", "no spaces allowed", "--site", "s"])
