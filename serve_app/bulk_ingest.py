"""Bulk gallery ingestion on Ray Data: `python -m serve_app.bulk_ingest SOURCE --tenant T --site S`.

    files --read (tasks)--> bytes --detect+embed+pHash (actor pool, batches)--> faces
          --de-duplicate, tag, write (driver, in order)--> faces_v1

Writes go through the same `store_embedded_image` as `POST /api/v1/ingest`, one image
at a time in arrival order, so copies inside one run are caught like copies across runs.
Re-running skips images already in the gallery (same bytes); a bad file is reported with
its reason and the run goes on.

The store is opened directly (QDRANT_URL, or the embedded shards under QDRANT_PATH). An
embedded store can be open in one process only: stop the service first, or use a Qdrant
server for both.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import logging
import os
import pickle
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from serve_app.config import Settings
from serve_app.embedding import EmbedRequest, EmbedResult, FacePipeline, FaceSelection, load_pipeline
from serve_app.errors import DomainError
from serve_app.flows.ingest import image_id_of, store_embedded_image
from serve_app.flows.ports import Ports, ThreadedRepository
from serve_app.images import ALLOWED_FORMATS
from serve_app.models.pack import choose_providers
from serve_app.repository import FaceRepository
from serve_app.schemas import ID_PATTERN, IngestResponse, IngestStatus
from serve_app.vectordb import open_store

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
assert {s.lstrip(".").upper().replace("JPG", "JPEG") for s in IMAGE_SUFFIXES} <= ALLOWED_FORMATS


def list_images(source: str) -> list[str]:
    """A directory (recursively, by image suffix) or a glob pattern, sorted."""
    path = Path(source)
    if path.is_dir():
        found = (p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        found = (Path(p) for p in glob.glob(source, recursive=True) if Path(p).is_file())
    return sorted(str(p.resolve()) for p in found)


class EmbedImages:
    """Ray Data actor: one model pair per actor, reused for every batch it is given."""

    def __init__(self, settings: Settings) -> None:
        self.pipeline: FacePipeline = load_pipeline(settings)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        datas = [bytes(data) for data in batch["bytes"]]
        results = self.pipeline.run([EmbedRequest(data, FaceSelection.ALL, with_phash=True) for data in datas])
        return {
            "path": batch["path"],
            "image_id": np.array([image_id_of(data) for data in datas], dtype=object),
            # Faces (arrays and boxes) travel as one opaque blob per image.
            "result": np.array([pickle.dumps(result) for result in results], dtype=object),
        }


class _NoEmbedder:
    """Bulk ingest embeds on Ray Data actors, then stores through the flows: they never embed."""

    async def embed(self, request: EmbedRequest) -> EmbedResult:
        raise RuntimeError("bulk ingest embeds images on its actors, not through the ports")


@dataclass
class Summary:
    tenant_id: str
    site: str
    images: int = 0
    skipped_already_ingested: int = 0
    ingested: int = 0
    no_faces: int = 0
    duplicates: int = 0
    faces: int = 0
    tagged: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def record(self, answer: IngestResponse) -> None:
        status = answer.status
        if status is IngestStatus.INGESTED:
            self.ingested += 1
            self.faces += answer.count
            self.tagged += sum(face.identity_id is not None for face in answer.faces)
        elif status is IngestStatus.NO_FACES:
            self.no_faces += 1
        elif status is IngestStatus.DUPLICATE:
            self.duplicates += 1
        elif status is IngestStatus.ALREADY_INGESTED:
            self.skipped_already_ingested += 1

    def as_dict(self) -> dict[str, Any]:
        processed = self.images - self.skipped_already_ingested
        seconds = self.seconds or float("inf")
        return {
            **self.__dict__,
            "failure_reasons": dict(Counter(f["reason"] for f in self.failures)),
            "images_per_s": round(processed / seconds, 2),
            "faces_per_s": round(self.faces / seconds, 2),
        }


def run_ingest(
    source: str,
    tenant_id: str,
    site: str,
    settings: Settings,
    batch_size: int = 8,
    workers: int = 1,
    progress: bool = True,
) -> Summary:
    import ray
    from tqdm import tqdm

    paths = list_images(source)
    summary = Summary(tenant_id, site, images=len(paths))
    repository = FaceRepository.for_settings(open_store(settings), settings)
    started = time.perf_counter()
    try:
        repository.ensure_all()
        ports = Ports(embedder=_NoEmbedder(), repository=ThreadedRepository(repository), settings=settings)
        if not paths:
            return summary
        if not ray.is_initialized():
            ray.init(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        ray.data.DataContext.get_current().print_on_execution_start = False

        known = repository.ingested_image_ids(tenant_id)
        use_gpu = "CUDAExecutionProvider" in choose_providers(settings.face_device)
        dataset = (
            ray.data.read_binary_files(paths, include_paths=True)
            # Resumable: same bytes as an image already in the gallery -> not embedded again.
            .filter(lambda row: image_id_of(row["bytes"]) not in known)
            .map_batches(EmbedImages, fn_constructor_kwargs={"settings": settings}, batch_size=batch_size,
                         compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, workers)),
                         num_cpus=1, num_gpus=1 if use_gpu else 0,
                         batch_format="numpy")
        )
        pending = set(paths)
        bar = tqdm(total=len(paths), unit="img", disable=not progress, desc="ingest")
        with asyncio.Runner() as runner:  # one event loop for every write of the run
            for batch in dataset.iter_batches(batch_size=batch_size, batch_format="numpy"):
                for path, image_id, blob in zip(batch["path"], batch["image_id"], batch["result"], strict=True):
                    pending.discard(path)
                    try:
                        answer = runner.run(store_embedded_image(
                            ports, tenant_id, site, str(image_id), pickle.loads(blob), url=Path(path).as_uri()))
                        summary.record(answer)
                    except DomainError as error:
                        summary.failures.append({"path": str(path), "reason": error.code})
                    bar.update(1)
        summary.skipped_already_ingested += len(pending)  # filtered out before embedding
        bar.update(len(pending))
        bar.close()
    finally:
        summary.seconds = round(time.perf_counter() - started, 2)
        repository.store.close()
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="face-ingest", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="a folder (searched recursively) or a glob pattern of images")
    parser.add_argument("--tenant", required=True, help="tenant the faces belong to")
    parser.add_argument("--site", required=True, help="site label stored with every face")
    parser.add_argument("--batch-size", type=int, default=8, help="images per model batch")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                        help="most embedding actors (one model pair each)")
    parser.add_argument("--json", type=Path, help="also write the summary as JSON here")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    for name, value in (("--tenant", args.tenant), ("--site", args.site)):
        if not re.match(ID_PATTERN, value) or len(value) > 64:
            parser.error(f"{name} must match {ID_PATTERN} (at most 64 characters)")
    try:
        summary = run_ingest(args.source, args.tenant, args.site, Settings(), args.batch_size,
                             args.workers, progress=not args.no_progress)
    except RuntimeError as error:
        print(f"face-ingest: {error}", file=sys.stderr)
        return 2
    report = summary.as_dict()
    print(json.dumps({k: v for k, v in report.items() if k != "failures"}, indent=2))
    for failure in summary.failures:
        print(f"failed: {failure['path']}: {failure['reason']}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
