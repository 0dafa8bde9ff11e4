"""`face-ops similarity`: why a probe does (not) verify against an identity (the plan's
`test_similarity.py`, for "Verification Always Fails")."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from serve_app.errors import DomainError
from serve_app.flows.explain import explain_similarity
from serve_app.flows.ports import PipelineEmbedder, Ports, ThreadedAdmin, ThreadedRepository
from serve_app.model_identity import model_identity
from serve_app.ops.context import OpsError, console, reports_errors, state


def render(data: dict[str, Any]) -> None:
    ident = data["identity"]
    face = data["probe_face"]
    box = face["box"]
    console.print(f"probe: {face['faces_in_image']} face(s) in {face['image']['width']}x{face['image']['height']} px; "
                  f"largest {box['x2'] - box['x1']:.0f}x{box['y2'] - box['y1']:.0f} px, det_score {face['det_score']}")
    table = Table(title=f"{ident['tenant_id']}/{ident['identity_id']}")
    table.add_column("probe against")
    table.add_column("similarity", justify="right")
    table.add_row("template (decides)", f"{data['similarity']:.4f}")
    for photo in data["enrollment_photos"]:
        table.add_row(f"enrollment photo {photo['image_index']}", f"{photo['similarity']:.4f}")
    console.print(table)
    colour = "green" if data["verified"] else "red"
    console.print(f"threshold {data['threshold']:.2f}, margin [{colour}]{data['margin']:+.4f}[/{colour}], "
                  f"enrollment consistency {data['enrollment_consistency']}")
    console.print(f"[{colour}]{data['reason']}[/{colour}]")


@reports_errors
def similarity(
    ctx: typer.Context,
    identity: Annotated[str, typer.Option("--identity", "-i", help="identity_id")],
    probe: Annotated[Path, typer.Option("--probe", exists=True, dir_okay=False, help="Probe photo (JPEG/PNG)")],
    tenant: Annotated[str, typer.Option("--tenant", "-t")] = "test-tenant",
    threshold: Annotated[float | None, typer.Option(
        "--threshold", help="hi_threshold to try (not below the floor)")] = None,
) -> None:
    """The probe's face, its similarity to the template and to each enrollment photo, the
    threshold and margin, and why it would or would not verify."""
    ops = state(ctx)
    image = probe.read_bytes()
    if ops.live:
        data = ops.call("POST", f"/api/v1/admin/tenants/{tenant}/identities/{identity}/similarity",
                        json={"image_b64": base64.b64encode(image).decode(), "hi_threshold": threshold})
    else:
        from serve_app.embedding import load_pipeline

        settings = ops.settings()
        with ops.repository() as repository:
            ports = Ports(PipelineEmbedder(load_pipeline(settings)), ThreadedRepository(repository), settings)
            admin = ThreadedAdmin(repository, settings, model_identity(settings))
            try:
                explained = asyncio.run(explain_similarity(ports, admin, tenant, identity, image, threshold))
            except DomainError as error:
                raise OpsError(f"{error.code} {error.extra or ''}".strip()) from error
        data = explained.model_dump(mode="json")
    ops.emit(data, render)
