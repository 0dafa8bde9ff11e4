"""`face-ops backup` / `face-ops restore`: consistent snapshots of both collections."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from serve_app.backup import backup_name, create_backup, read_manifest, restore_backup
from serve_app.model_identity import model_identity
from serve_app.ops.context import OpsError, console, err_console, reports_errors, state


def render_backup(data: dict[str, Any]) -> None:
    manifest = data["manifest"]
    table = Table(title=f"backup {data['path']}")
    for column in ("collection", "points", "vectors", "snapshot"):
        table.add_column(column)
    for name, entry in manifest["collections"].items():
        table.add_row(name, str(entry["points"]), f"{entry['dim']}-d {entry['distance']}", entry["file"])
    console.print(table)
    model = manifest["model"]
    console.print(f"engine {manifest['engine']}, model {model['name']} sha256 {model['sha256'][:12]}, "
                  f"taken {manifest['created_at']}"
                  f" (writes paused {manifest.get('writes_paused_s', 0):.3f} s)")


@reports_errors
def backup(
    ctx: typer.Context,
    collection: Annotated[list[str] | None, typer.Option(
        "--collection", "-c", help="Only this collection (repeatable; default: both)")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Backup folder name (default backup-<UTC time>)")] = None,
    out: Annotated[Path, typer.Option(
        "--out", help="Parent folder, when this process opens the store itself (a running service writes under its "
                      "BACKUP_DIR)")] = Path("backups"),
) -> None:
    """A consistent snapshot while the service keeps answering: writes pause (those in
    flight finish first) for the flush and copy, reads go on. Writes manifest.json with
    the counts and the model that wrote the vectors."""
    ops = state(ctx)
    name = name or backup_name()
    if ops.live:
        data = ops.call("POST", "/api/v1/admin/backup", json={"name": name, "collections": collection or None})
    else:
        settings = ops.settings()
        dest = out / name
        with ops.repository() as repository:
            manifest = create_backup(repository, dest, model_identity(settings), collection or None)
        data = {"path": str(dest.resolve()), "manifest": manifest.model_dump()}
    ops.emit(data, render_backup)


def render_restore(data: dict[str, Any]) -> None:
    for name, counts in data["collections"].items():
        console.print(f"{name}: {counts['points']} points restored (manifest: {counts['expected']})")
    console.print(f"[green]restored {data['source']} into {data['target']}[/green]")


@reports_errors
def restore(
    ctx: typer.Context,
    source: Annotated[Path, typer.Argument(
        exists=True, file_okay=False, help="A backup folder (with manifest.json)")],
) -> None:
    """Put a backup into a store that does not have its collections yet (a fresh data
    directory: --data-dir or QDRANT_PATH; with the service stopped). Refuses a backup of
    another model or vector size, and checks every collection's count afterwards."""
    ops = state(ctx)
    settings = ops.settings()
    manifest = read_manifest(source)
    if settings.embedded_store and ops.data_dir is None and not ops.direct and ops.live:
        raise OpsError(f"a service answers at {ops.url}: restore goes into a stopped store; stop it, or "
                       "name a fresh --data-dir and point the service at it afterwards")
    err_console.print(f"[dim]backup of {manifest.created_at}: "
                      + ", ".join(f"{n} {e.points} points" for n, e in manifest.collections.items()) + "[/dim]")
    with ops.repository() as repository:
        counts = restore_backup(source, repository, model_identity(settings))
    target = settings.qdrant_url if not settings.embedded_store else str(Path(settings.qdrant_path).resolve())
    ops.emit({"source": str(source), "target": target, "collections": counts}, render_restore)
