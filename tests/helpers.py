"""Small helpers shared by the test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from serve_app.auth import digest
from serve_app.repository import FaceRepository

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def faces_of(repository: FaceRepository, tenant_id: str) -> int:
    return repository.store.count(repository.faces, {"tenant_id": tenant_id})


def identities_of(repository: FaceRepository, tenant_id: str) -> int:
    return repository.store.count(repository.identities, {"tenant_id": tenant_id})


def key_entry(owner: str, key: str, **extra: str) -> dict[str, str]:
    """A key-file entry: `owner` is a tenant id, or "admin" for an operator key."""
    role = {"role": "admin"} if owner == "admin" else {"tenant_id": owner}
    return {"sha256": digest(key), **role, **extra}


def write_keys(path: Path, entries: list[dict[str, str]]) -> None:
    path.write_text(json.dumps({"keys": entries}))
    # A new mtime even within one filesystem tick, so the key ring notices the change.
    later = time.time() + 5 + len(entries) + hash(json.dumps(entries)) % 1000
    os.utime(path, (later, later))
