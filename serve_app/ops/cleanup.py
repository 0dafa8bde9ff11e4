"""`face-ops cleanup`: remove test identities (the plan's Data Rollback), dry run first."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

import typer

from serve_app.ops.context import console, reports_errors, state


def render(data: dict[str, Any]) -> None:
    what = "removed" if data["applied"] else "would remove"
    scope = f"ids starting with {data['prefix']!r}" if data["prefix"] else "all identities"
    console.print(f"tenant {data['tenant_id']} ({scope}): {what} {data['identities']} identities "
                  f"(templates), {data['enrollment_faces']} enrollment photos, "
                  f"{data['gallery_faces_tagged']} gallery tags")
    shown = data["identity_ids"][:20]
    if shown:
        more = f" ... (+{len(data['identity_ids']) - len(shown)})" if len(data["identity_ids"]) > len(shown) else ""
        console.print("  " + ", ".join(shown) + more)
    if not data["applied"] and data["identities"]:
        console.print("[yellow]dry run: nothing removed; run again with --apply[/yellow]")


@reports_errors
def cleanup(
    ctx: typer.Context,
    tenant: Annotated[str, typer.Option("--tenant", "-t", help="Tenant whose identities go")],
    prefix: Annotated[str, typer.Option("--prefix", "-p", help="Only identity ids starting with this")] = "",
    apply: Annotated[bool, typer.Option("--apply", help="Remove them (default: dry run, counts only)")] = False,
) -> None:
    """Remove a tenant's (test) identities: templates, enrollment photos and their tags on
    gallery faces. Ingested gallery faces stay (erase a whole tenant with
    DELETE /api/v1/admin/tenants/{tenant_id})."""
    ops = state(ctx)
    if ops.live:
        data = ops.call("POST", f"/api/v1/admin/tenants/{tenant}/cleanup", json={"prefix": prefix, "apply": apply})
    else:
        with ops.repository() as repository:
            data = dataclasses.asdict(repository.cleanup_identities(tenant, prefix, apply))
    ops.emit(data, render)
