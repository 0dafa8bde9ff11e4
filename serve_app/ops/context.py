"""What every subcommand shares: where the service is, how to reach the store, output."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, ParamSpec, TypeVar

import httpx
import typer
from rich.console import Console

from serve_app.backup import RestoreRefused
from serve_app.config import Settings
from serve_app.errors import DomainError
from serve_app.repository import FaceRepository
from serve_app.vectordb import open_store
from serve_app.vectordb.edge import StoreLocked

DEFAULT_URL = "http://127.0.0.1:8001"
console = Console()
err_console = Console(stderr=True)


class OpsError(Exception):
    """A refusal or failure to report in one line (exit code 1), never a traceback."""


@dataclass
class OpsContext:
    url: str = DEFAULT_URL
    api_key: str | None = None
    direct: bool = False
    data_dir: Path | None = None
    as_json: bool = False
    _live: bool | None = field(default=None, repr=False)

    # --- settings and store -----------------------------------------------------------
    def settings(self) -> Settings:
        overrides: dict[str, Any] = {}
        if self.data_dir is not None:
            overrides["qdrant_path"] = self.data_dir
        return Settings(**overrides)

    @contextmanager
    def repository(self) -> Iterator[FaceRepository]:
        """The store opened by this process (only for a stopped service, or a Qdrant server)."""
        settings = self.settings()
        where = settings.qdrant_url if not settings.embedded_store else str(settings.qdrant_path)
        err_console.print(f"[dim]working on the store directly: {where}[/dim]", soft_wrap=True)
        store = open_store(settings)
        try:
            yield FaceRepository.for_settings(store, settings)
        except StoreLocked as error:
            how = "without --direct" if self.direct else f"--url; no service answered at {self.url}"
            raise OpsError(f"the embedded store {error.path.parent} is held by a running service: stop it, "
                           f"or reach the service over HTTP ({how})") from error
        finally:
            store.close()

    # --- the running service --------------------------------------------------------------
    @property
    def live(self) -> bool:
        """Whether a service answers at --url (and --direct was not asked for)."""
        if self._live is None:
            if self.direct:
                self._live = False
            else:
                try:
                    httpx.get(f"{self.url}/api/v1/health", timeout=10)
                    self._live = True
                except httpx.TransportError:
                    self._live = False
                    err_console.print(f"[dim]no service answers at {self.url}[/dim]")
        return self._live

    def http(self, timeout: float = 120.0) -> httpx.Client:
        headers = {"X-API-Key": self.api_key} if self.api_key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One admin call; an error answer becomes an OpsError naming its detail code."""
        with self.http() as client:
            response = client.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = response.text[:200]
            raise OpsError(f"{method} {path}: HTTP {response.status_code} {body}")
        return response.json()

    # --- output ---------------------------------------------------------------------------
    def emit(self, data: Any, render: Callable[[Any], None]) -> None:
        if self.as_json:
            typer.echo(json.dumps(data, indent=2, default=str))
        else:
            render(data)


P = ParamSpec("P")
R = TypeVar("R")


def reports_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Refusals (OpsError, a refused restore, a missing file) end in one red line, exit 1."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except (OpsError, RestoreRefused, FileExistsError, FileNotFoundError) as error:
            fail(str(error))
        except DomainError as error:  # a refusal of the store opened here (e.g. model_mismatch)
            fail(" ".join([error.code, *(str(value) for value in error.extra.values())]))

    return run


def fail(message: str) -> NoReturn:
    err_console.print(f"[red]error:[/red] {message}", soft_wrap=True)
    raise typer.Exit(1)


def state(ctx: typer.Context) -> OpsContext:
    value = ctx.obj
    assert isinstance(value, OpsContext)
    return value
