"""`face-ops collections ensure|show`: the plan's Steps 2.2/2.3 (collections and indexes)."""

from __future__ import annotations

import dataclasses
from typing import Any

import typer
from rich.table import Table

from serve_app.model_identity import ensure_collections, model_identity
from serve_app.ops.context import console, reports_errors, state

app = typer.Typer(help="The two collections: their vector size, points, payload indexes, model.", no_args_is_help=True)


def render(data: dict[str, Any]) -> None:
    table = Table(title=f"collections ({data['engine']})")
    for column in ("collection", "vectors", "points (indexed)", "payload indexes", "missing", "written by"):
        table.add_column(column)
    for entry in data["collections"]:
        if not entry["exists"]:
            table.add_row(entry["name"], f"[red]missing[/red] (expects {entry['expected_dim']}-d)", "-", "-",
                          ", ".join(entry["missing_indexes"]), "-")
            continue
        model = entry.get("model") or {}
        written_by = f"{model['name']}@{str(model['sha256'])[:8]}" if model else "(not recorded)"
        kinds: dict[str, list[str]] = {}
        for field_name, kind in entry["indexes"].items():
            kinds.setdefault(kind, []).append(field_name)
        indexes = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in kinds.items()) or "none"
        missing = ", ".join(entry["missing_indexes"])
        points = f"{entry['points']} ({entry.get('indexed_vectors') or 0})"
        table.add_row(entry["name"], f"{entry['dim']}-d {entry['distance']}", points, indexes,
                      f"[red]{missing}[/red]" if missing else "[green]none[/green]", written_by)
    console.print(table)
    if data.get("model"):
        model = data["model"]
        console.print(f"service model: {model['name']} sha256 {str(model['sha256'])[:12]} ({model['dim']}-d)")


def _direct(ctx: typer.Context, ensure: bool) -> dict[str, Any]:
    ops = state(ctx)
    settings = ops.settings()
    model = model_identity(settings)
    with ops.repository() as repository:
        if ensure:
            ensure_collections(repository, model)
        return {"engine": repository.store.engine, "model": model.as_dict(),
                "collections": [dataclasses.asdict(state) for state in repository.describe_collections()]}


@app.command()
@reports_errors
def show(ctx: typer.Context) -> None:
    """Each collection's vector size, distance, points, payload indexes (with types), the
    expected indexes missing, and the model that wrote it. Creates nothing."""
    ops = state(ctx)
    data = ops.call("GET", "/api/v1/admin/collections") if ops.live else _direct(ctx, ensure=False)
    ops.emit(data, render)


@app.command()
@reports_errors
def ensure(ctx: typer.Context) -> None:
    """Create the missing collections and payload indexes (idempotent), then show them."""
    ops = state(ctx)
    data = ops.call("POST", "/api/v1/admin/collections/ensure") if ops.live else _direct(ctx, ensure=True)
    ops.emit(data, render)
