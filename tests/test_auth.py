"""API keys: hashing, tenant binding, admin role, rotation without restart."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from serve_app.auth import ANONYMOUS, KeyRing, Unauthorized, digest, require_admin
from serve_app.errors import DomainError, Forbidden
from tests.helpers import write_keys


@pytest.fixture
def keyfile(tmp_path: Path) -> Path:
    path = tmp_path / "keys.json"
    write_keys(path, [{"sha256": digest("acme-secret"), "tenant_id": "acme", "name": "acme"},
                      {"sha256": digest("ops-secret"), "role": "admin", "name": "ops"}])
    return path


def test_disabled_auth_acts_as_anonymous_admin() -> None:
    ring = KeyRing(False, None, None)
    assert ring.authenticate(None) is ANONYMOUS
    assert ANONYMOUS.tenant_for("t1", None) == "t1"


def test_missing_and_unknown_keys_are_401(keyfile: Path) -> None:
    ring = KeyRing(True, keyfile, None, check_interval_s=0)
    for key, code in ((None, "api_key_required"), ("", "api_key_required"), ("guess", "invalid_api_key")):
        with pytest.raises(Unauthorized) as refused:
            ring.authenticate(key)
        assert refused.value.code == code and refused.value.status_code == 401


def test_tenant_key_binds_the_tenant(keyfile: Path) -> None:
    principal = KeyRing(True, keyfile, None, check_interval_s=0).authenticate("acme-secret")
    assert principal.tenant_id == "acme" and not principal.admin
    assert principal.tenant_for(None, None) == "acme"
    assert principal.tenant_for("acme", "acme") == "acme"
    for body, header in (("other", None), (None, "other"), ("acme", "other")):
        with pytest.raises(Forbidden) as refused:
            principal.tenant_for(body, header)
        assert refused.value.code == "tenant_mismatch"
    with pytest.raises(Forbidden) as refused:
        require_admin(principal)
    assert refused.value.code == "admin_required"


def test_admin_key_may_act_for_any_named_tenant(keyfile: Path) -> None:
    admin = KeyRing(True, keyfile, None, check_interval_s=0).authenticate("ops-secret")
    require_admin(admin)
    assert admin.tenant_for("anyone", None) == "anyone"
    with pytest.raises(DomainError) as missing:
        admin.tenant_for(None, None)
    assert missing.value.code == "tenant_id_required"


def test_rotation_and_revocation_without_restart(keyfile: Path) -> None:
    ring = KeyRing(True, keyfile, None, check_interval_s=0)
    assert ring.authenticate("acme-secret").tenant_id == "acme"
    write_keys(keyfile, [{"sha256": digest("acme-rotated"), "tenant_id": "acme"}])
    assert ring.authenticate("acme-rotated").tenant_id == "acme"
    with pytest.raises(Unauthorized):
        ring.authenticate("acme-secret")
    keyfile.unlink()
    with pytest.raises(Unauthorized):
        ring.authenticate("acme-rotated")


def test_a_broken_edit_keeps_the_last_good_keys(keyfile: Path) -> None:
    ring = KeyRing(True, keyfile, None, check_interval_s=0)
    keyfile.write_text("{ not json")
    os.utime(keyfile, (time.time() + 50, time.time() + 50))
    assert ring.authenticate("acme-secret").tenant_id == "acme"


def test_a_key_file_holding_clear_keys_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "clear.json"
    write_keys(path, [{"sha256": "acme-secret", "tenant_id": "acme"}])
    with pytest.raises(Unauthorized):
        KeyRing(True, path, None, check_interval_s=0).authenticate("acme-secret")


def test_environment_keys(tmp_path: Path) -> None:
    ring = KeyRing(True, None, f"beta:{digest('b-key')}, admin:{digest('root')}")
    assert ring.authenticate("b-key").tenant_id == "beta"
    assert ring.authenticate("root").admin
    with pytest.raises(ValueError):
        KeyRing(True, None, "beta:not-a-digest")


@pytest.mark.parametrize("content", ["[]", "null", '"x"', '{"keys": {}}', '{"keys": [1]}',
                                     '{"keys": [{"sha256": "ab"}]}', "\xff\xfe"])
def test_any_wrongly_shaped_key_file_keeps_the_last_good_keys(keyfile: Path, content: str, caplog) -> None:
    ring = KeyRing(True, keyfile, None, check_interval_s=0)
    keyfile.write_text(content, encoding="latin-1")
    for _ in range(3):
        assert ring.authenticate("acme-secret").tenant_id == "acme"
        assert ring.authenticate("ops-secret").admin
    assert ring.status()["keys_file"].startswith("invalid")
    assert sum("last good keys" in record.message for record in caplog.records) == 1  # logged once
    write_keys(keyfile, [{"sha256": digest("acme-secret"), "tenant_id": "acme"}])
    assert ring.status()["keys_file"] == "ok"


def test_revocation_is_noticed_by_content_even_with_the_old_mtime(keyfile: Path) -> None:
    ring = KeyRing(True, keyfile, None, check_interval_s=0)
    assert ring.authenticate("acme-secret").tenant_id == "acme"
    stat = keyfile.stat()
    keyfile.write_text(json.dumps({"keys": [{"sha256": digest("ops-secret"), "role": "admin"}]}))
    os.utime(keyfile, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(Unauthorized):
        ring.authenticate("acme-secret")


def test_the_file_is_checked_at_most_once_per_interval(keyfile: Path) -> None:
    ring = KeyRing(True, keyfile, None, check_interval_s=3600)
    keyfile.write_text(json.dumps({"keys": []}))
    assert ring.authenticate("acme-secret").tenant_id == "acme"  # not re-read within the interval
    ring.check_interval_s = 0
    with pytest.raises(Unauthorized):
        ring.authenticate("acme-secret")
