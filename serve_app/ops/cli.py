"""The `face-ops` command: global options, then one subcommand (group) per runbook task."""

from __future__ import annotations

from pathlib import Path

from typing import Annotated

import typer

from serve_app.ops import backup, cleanup, collections, identity, leaks, profile, similarity
from serve_app.ops.context import DEFAULT_URL, OpsContext

app = typer.Typer(
    name="face-ops",
    help="Operate face-pipeline: collections, identities, similarity, cleanup, backup/restore, profile, leaks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(collections.app, name="collections")
app.add_typer(identity.app, name="identity")
app.command()(similarity.similarity)
app.command()(cleanup.cleanup)
app.command()(backup.backup)
app.command()(backup.restore)
app.command()(profile.profile)
app.command()(leaks.leaks)


@app.callback()
def options(
    ctx: typer.Context,
    url: Annotated[str, typer.Option("--url", envvar="FACE_OPS_URL", help="The running service")] = DEFAULT_URL,
    api_key: Annotated[str | None, typer.Option(
        "--api-key", envvar="FACE_OPS_API_KEY", help="An admin key (when AUTH_ENABLED)")] = None,
    direct: Annotated[bool, typer.Option(
        "--direct", help="Open the store directly, even if a service answers")] = False,
    data_dir: Annotated[Path | None, typer.Option(
        "--data-dir", help="Embedded store directory when opened directly (else QDRANT_PATH)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables")] = False,
) -> None:
    """With a service answering at --url, commands go through its admin API; otherwise
    those that can open the store do so themselves (a stopped service, or a Qdrant server)."""
    ctx.obj = OpsContext(url=url.rstrip("/"), api_key=api_key, direct=direct, data_dir=data_dir, as_json=as_json)


def main() -> None:
    app()


GLOBAL_FLAGS = {"--direct", "--json"}
GLOBAL_VALUED = {"--url", "--api-key", "--data-dir"}


def split_global(argv: list[str]) -> tuple[list[str], list[str]]:
    """The global options among a script's arguments (wherever they are), and the rest."""
    global_args: list[str] = []
    rest: list[str] = []
    args = iter(argv)
    for arg in args:
        name = arg.split("=", 1)[0]
        if name in GLOBAL_FLAGS:
            global_args.append(arg)
        elif name in GLOBAL_VALUED:
            global_args.append(arg)
            if "=" not in arg:
                global_args.append(next(args, ""))
        else:
            rest.append(arg)
    return global_args, rest


def run_as(*command: str) -> None:
    """For the plan's script names: `face-ops [global options] <command...> <arguments>`."""
    import sys

    global_args, rest = split_global(sys.argv[1:])
    app(args=[*global_args, *command, *rest], prog_name=Path(sys.argv[0]).name)
