"""`face-ops identity show`: one identity as stored (the plan's scroll query), either engine."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Annotated, Any

import typer
from rich.table import Table

from serve_app.ops.context import OpsError, console, reports_errors, state

app = typer.Typer(help="One enrolled identity: template metadata and enrollment photos.", no_args_is_help=True)

TenantOption = typer.Option("test-tenant", "--tenant", "-t", help="Tenant the identity belongs to")


def render(data: dict[str, Any]) -> None:
    template = data["template"]
    console.print(f"[bold]{template['tenant_id']}/{template['identity_id']}[/bold] point {data['point_id']}")
    for key, value in template.items():
        if key == "enrolled_at" and isinstance(value, int | float):
            value = dt.datetime.fromtimestamp(value, dt.UTC).isoformat(timespec="seconds")
        if key not in ("tenant_id", "identity_id"):
            console.print(f"  {key}: {value}")
    table = Table(title="enrollment photos (faces_v1, source=enrollment)")
    for column in ("#", "point", "det_score", "box"):
        table.add_column(column)
    for face in data["enrollment_faces"]:
        box = face.get("box") or {}
        table.add_row(str(face.get("image_index")), face["point_id"], str(face.get("det_score")),
                      f"{box.get('x1')},{box.get('y1')} - {box.get('x2')},{box.get('y2')}")
    console.print(table)
    console.print(f"gallery faces tagged with this identity: {data['gallery_faces_tagged']}")
    if data.get("template_vector"):
        vector = data["template_vector"]
        console.print(f"template vector ({len(vector)}-d): {vector[:4]} ...")


@app.command()
@reports_errors
def show(
    ctx: typer.Context,
    identity: Annotated[str, typer.Option("--identity", "-i", help="identity_id")],
    tenant: str = TenantOption,
    vectors: Annotated[bool, typer.Option("--vectors", help="Include the template and face vectors")] = False,
) -> None:
    """The identity's template metadata, enrollment photos and gallery tags (no vectors
    unless --vectors)."""
    ops = state(ctx)
    if ops.live:
        data = ops.call("GET", f"/api/v1/admin/tenants/{tenant}/identities/{identity}",
                        params={"vectors": str(vectors).lower()})
    else:
        with ops.repository() as repository:
            view = repository.describe_identity(tenant, identity, vectors)
        if view is None:
            raise OpsError(f"tenant {tenant} has no identity {identity} (identity_not_enrolled)")
        data = dataclasses.asdict(view)
    ops.emit(data, render)
