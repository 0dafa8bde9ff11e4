"""Backups of both collections: a consistent snapshot, a manifest, and a checked restore.

A backup is a folder: one snapshot per collection (the embedded engine's shard folder, or
a Qdrant server snapshot file) and `manifest.json`, written last, so that a folder without
one is an unfinished backup. The manifest names the engine, the model that wrote the
vectors and each collection's point count; a restore refuses another model or vector size
and checks the counts it put back.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from serve_app import __version__
from serve_app.config import Settings
from serve_app.errors import DomainError
from serve_app.model_identity import ModelIdentity
from serve_app.repository import FaceRepository

MANIFEST = "manifest.json"
FORMAT = "face-pipeline-backup/1"


class CollectionEntry(BaseModel):
    points: int
    dim: int
    distance: str
    indexes: dict[str, str]
    file: str


class Manifest(BaseModel):
    format: str
    created_at: str
    engine: str
    service_version: str
    model: dict[str, Any]
    vector_dim: int
    collections: dict[str, CollectionEntry]
    # How long the service's writes waited for the copy.
    writes_paused_s: float = 0.0


class RestoreRefused(Exception):
    """The backup cannot go into this store (another model, vector size or engine)."""


def create_backup(repository: FaceRepository, dest: Path, model: ModelIdentity,
                  collections: Sequence[str] | None = None) -> Manifest:
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} is not empty; a backup goes into a new folder")
    entries, paused_s = repository.snapshot(dest, collections)
    # The manifest names whose vectors these are: the model the collections recorded
    # (the service's own when they recorded none).
    recorded = {ModelIdentity.from_dict(entry["model"]) for entry in entries.values()} - {None}
    if len(recorded) == 1:
        model = recorded.pop()  # type: ignore[assignment]
    manifest = Manifest(
        format=FORMAT,
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        engine=repository.store.engine,
        service_version=__version__,
        model=model.as_dict(),
        vector_dim=repository.dim,
        collections={name: CollectionEntry(**{k: v for k, v in entry.items() if k != "model"})
                     for name, entry in entries.items()},
        writes_paused_s=round(paused_s, 4),
    )
    (dest / MANIFEST).write_text(manifest.model_dump_json(indent=2))
    return manifest


def read_manifest(source: Path) -> Manifest:
    path = Path(source) / MANIFEST
    if not path.is_file():
        raise RestoreRefused(f"{source} has no {MANIFEST}: not a backup, or an unfinished one")
    manifest = Manifest.model_validate(json.loads(path.read_text()))
    if manifest.format != FORMAT:
        raise RestoreRefused(f"unknown backup format {manifest.format!r} (this release reads {FORMAT})")
    return manifest


def check_restorable(manifest: Manifest, model: ModelIdentity, vector_dim: int, engine: str) -> None:
    """Refuse a backup whose vectors this service could not compare with its own."""
    if manifest.engine != engine:
        raise RestoreRefused(f"the backup is of a {manifest.engine} store; this store is {engine}")
    dims = {manifest.vector_dim, *(entry.dim for entry in manifest.collections.values())}
    if dims != {vector_dim}:
        raise RestoreRefused(f"the backup holds {sorted(dims)}-d vectors; this service uses {vector_dim}-d "
                             "(VECTOR_DIM)")
    written_by = ModelIdentity.from_dict(manifest.model)
    if written_by != model:
        raise RestoreRefused(f"the backup was written by model {written_by}; this service embeds with {model}: "
                             "its vectors would not be comparable")


def restore_backup(source: Path, repository: FaceRepository, model: ModelIdentity) -> dict[str, dict[str, int]]:
    """Put every collection of the backup into the (stopped, fresh) store behind
    `repository`, then count: each collection must hold what the manifest says."""
    source = Path(source)
    manifest = read_manifest(source)
    check_restorable(manifest, model, repository.dim, repository.store.engine)
    wanted = {spec.name for spec in repository.specs()}
    foreign = sorted(set(manifest.collections) - wanted)
    if foreign:
        raise RestoreRefused(f"the backup holds {foreign}; this service's collections are {sorted(wanted)} "
                             "(QDRANT_COLLECTION, IDENTITY_COLLECTION)")
    present = [name for name in manifest.collections if repository.store.exists(name)]
    if present:
        raise RestoreRefused(f"{present} already exist in the target store; restore into a fresh data "
                             "directory (or erase those collections first)")
    for name, entry in manifest.collections.items():
        repository.store.restore(name, source / entry.file)
    counts = {}
    for name, entry in manifest.collections.items():
        restored = repository.store.describe(name).points
        if restored != entry.points:
            raise RuntimeError(f"{name}: restored {restored} points, the manifest says {entry.points}")
        counts[name] = {"points": restored, "expected": entry.points}
    return counts


def backup_into(repository: FaceRepository, settings: Settings, model: ModelIdentity, name: str | None,
                collections: Sequence[str] | None) -> tuple[Path, Manifest]:
    """The admin route's backup: a new folder `name` under BACKUP_DIR (callers never name
    a path on the service's host)."""
    wanted = {spec.name for spec in repository.specs()}
    unknown = sorted(set(collections or ()) - wanted)
    if unknown:
        raise DomainError("unknown_collection", 422, collections=unknown, known=sorted(wanted))
    dest = settings.backups_path.resolve() / (name or backup_name())
    try:
        dest.mkdir(parents=True, exist_ok=False)
    except FileExistsError:
        raise DomainError("backup_exists", 409, name=dest.name) from None
    return dest, create_backup(repository, dest, model, collections)


def backup_name(now: dt.datetime | None = None) -> str:
    return "backup-" + (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
