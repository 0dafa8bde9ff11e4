"""API keys: who is calling, for which tenant, and whether they may run operator actions.

Keys are never stored in clear: the key file holds SHA-256 digests. Its content is checked
at most once a second (by content, not modification time), so keys are added, rotated and
revoked without a restart. A file that cannot be read or has the wrong shape keeps the
last good keys in force, is logged once, and shows in health (`auth.keys_file`).

Key file (JSON, `API_KEYS_FILE`):

    {"keys": [
        {"sha256": "<hex digest of the key>", "tenant_id": "acme", "name": "acme-backend"},
        {"sha256": "<hex digest>", "role": "admin", "name": "ops"}
    ]}

Keys may also come from `API_KEYS` in the environment: comma-separated
`tenant_id:sha256` entries, or `admin:sha256` for operator keys (`admin` is therefore
not a usable tenant name there). `python -m serve_app.auth new TENANT` prints a fresh
key and its entry.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import logging
import os
import secrets
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from serve_app.errors import DomainError, Forbidden
from serve_app.schemas import ID_PATTERN, TenantId

logger = logging.getLogger("ray.serve")

ADMIN = "admin"
_ID = re.compile(ID_PATTERN)


class Unauthorized(DomainError):
    status_code = 401


def resolve_tenant(body_tenant: str | None, header_tenant: str | None) -> str:
    """The tenant of a request: the body's, the X-Tenant-ID header's, and never two."""
    if header_tenant is not None:
        if not header_tenant or len(header_tenant) > 64 or not _ID.match(header_tenant):
            raise DomainError("invalid_tenant_id", 422, source="X-Tenant-ID")
        if body_tenant is not None and body_tenant != header_tenant:
            raise Forbidden("tenant_mismatch")
        return header_tenant
    if body_tenant is None:
        raise DomainError("tenant_id_required", 422)
    return body_tenant


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: a tenant's key, an admin key, or anyone (auth off)."""

    tenant_id: str | None
    admin: bool
    name: str

    def tenant_for(self, body_tenant: str | None, header_tenant: str | None) -> str:
        """The request's tenant; with a tenant key, any other tenant named is refused."""
        if self.tenant_id is None:
            return resolve_tenant(body_tenant, header_tenant)
        for named in (body_tenant, header_tenant):
            if named is not None and named != self.tenant_id:
                raise Forbidden("tenant_mismatch")
        return self.tenant_id


ANONYMOUS = Principal(tenant_id=None, admin=True, name="anonymous (auth disabled)")


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class _Entry:
    sha256: str
    tenant_id: str | None
    admin: bool
    name: str


def _parse_env(value: str) -> list[_Entry]:
    entries = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        owner, _, sha = item.partition(":")
        if not owner or len(sha) != 64:
            raise ValueError("API_KEYS entries are tenant_id:sha256 or admin:sha256")
        admin = owner == ADMIN
        entries.append(_Entry(sha.lower(), None if admin else owner, admin, f"env:{owner}"))
    return entries


class _FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")
    tenant_id: TenantId | None = None
    role: Literal["admin"] | None = None
    name: str | None = Field(None, max_length=128)


class _KeyFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keys: list[_FileEntry]


def _parse_file(content: bytes) -> list[_Entry]:
    """The entries of a key file; ValueError (pydantic's ValidationError is one) on any flaw."""
    document = _KeyFile.model_validate_json(content)
    entries = []
    for index, item in enumerate(document.keys):
        admin = item.role == ADMIN
        if not admin and not item.tenant_id:
            raise ValueError(f"entry {index} needs a tenant_id or role admin")
        entries.append(_Entry(item.sha256.lower(), None if admin else item.tenant_id, admin,
                              item.name or f"key{index}"))
    return entries


class KeyRing:
    def __init__(self, enabled: bool, keys_file: Path | None, env_keys: str | None,
                 check_interval_s: float = 1.0) -> None:
        self.enabled = enabled
        self.keys_file = keys_file
        self.check_interval_s = check_interval_s
        self._env_entries = _parse_env(env_keys or "")
        self._file_entries: list[_Entry] = []
        self._file_digest: str | None = None
        self._checked_at = float("-inf")
        self._problem: str | None = None
        self._lock = threading.Lock()
        self._reload()
        if not enabled:
            logger.warning("AUTH DISABLED: every caller may act for any tenant and as admin. "
                           "Set AUTH_ENABLED=true (configs/production.yaml does) outside local development.")
        elif not self._entries():
            logger.warning("AUTH ENABLED but no API keys are configured: every request will be refused.")

    def _entries(self) -> list[_Entry]:
        return self._env_entries + self._file_entries

    def _reload(self) -> None:
        """Re-read the key file if its content changed (at most once per check interval)."""
        if self.keys_file is None:
            return
        now = time.monotonic()
        if now - self._checked_at < self.check_interval_s:
            return
        self._checked_at = now
        try:
            content = self.keys_file.read_bytes()
        except FileNotFoundError:
            if self._file_entries:
                logger.warning("API key file %s disappeared; its keys are revoked", self.keys_file)
            self._file_entries, self._file_digest = [], None
            self._note_problem("missing")
            return
        except OSError as error:
            self._note_problem(f"unreadable: {type(error).__name__}")
            return
        content_digest = hashlib.sha256(content).hexdigest()
        if content_digest == self._file_digest:
            return
        try:
            entries = _parse_file(content)
        except ValueError as error:
            # Keep the last good keys rather than locking everyone out on a bad edit.
            self._note_problem(f"invalid: {type(error).__name__}")
            logger.debug("key file error detail: %s", error)
            return
        self._file_entries, self._file_digest = entries, content_digest
        self._problem = None
        logger.info("loaded %d API keys from %s", len(entries), self.keys_file)

    def _note_problem(self, problem: str) -> None:
        if problem != self._problem:  # once per new problem, not on every request
            logger.error("API key file %s is %s; the last good keys stay in force", self.keys_file, problem)
        self._problem = problem

    def status(self) -> dict[str, Any]:
        """What health shows of authentication (never the keys)."""
        with self._lock:
            self._reload()
            return {"enabled": self.enabled, "keys": len(self._entries()),
                    "keys_file": "not configured" if self.keys_file is None else (self._problem or "ok")}

    def authenticate(self, key: str | None) -> Principal:
        if not self.enabled:
            return ANONYMOUS
        if not key:
            raise Unauthorized("api_key_required")
        with self._lock:
            self._reload()
            entries = self._entries()
        presented = digest(key)
        for entry in entries:
            if hmac.compare_digest(entry.sha256, presented):
                return Principal(entry.tenant_id, entry.admin, entry.name)
        raise Unauthorized("invalid_api_key")


def require_admin(principal: Principal) -> None:
    if not principal.admin:
        raise Forbidden("admin_required")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m serve_app.auth", description="Make API keys.")
    sub = parser.add_subparsers(dest="command", required=True)
    new = sub.add_parser("new", help="print a new random key and its key-file entry")
    new.add_argument("tenant", help="tenant id, or 'admin' for an operator key")
    sub.add_parser("hash", help="print the sha256 of a key read from API_KEY in the environment")
    args = parser.parse_args(argv)
    if args.command == "new":
        key = secrets.token_urlsafe(32)
        entry = {"sha256": digest(key), "name": f"{args.tenant}-key"}
        entry.update({"role": ADMIN} if args.tenant == ADMIN else {"tenant_id": args.tenant})
        print(f"key (give to the client, store nowhere else): {key}")
        print(f"key file entry: {json.dumps(entry)}")
    else:
        print(digest(os.environ["API_KEY"]))


if __name__ == "__main__":
    main()
