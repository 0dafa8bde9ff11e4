"""Domain errors: each carries a stable snake_case code and the HTTP status it maps to.

The HTTP layer turns them into `{"detail": code, ...extra}`; flows raise them and never
build HTTP responses themselves.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    status_code: int = 422

    def __init__(self, code: str, status_code: int | None = None, **extra: Any) -> None:
        super().__init__(code)
        self.code = code
        if status_code is not None:
            self.status_code = status_code
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"detail": self.code, **self.extra}

    def __reduce__(self) -> tuple[Any, ...]:
        # Crosses Ray process boundaries: keep code, status and extras when pickled.
        return (_rebuild, (type(self), self.code, self.status_code, self.extra))


def _rebuild(cls: type[DomainError], code: str, status: int, extra: dict[str, Any]) -> DomainError:
    # Subclasses have their own __init__ signatures: restore through the base one.
    error = cls.__new__(cls)
    DomainError.__init__(error, code, status, **extra)
    return error


class InvalidImage(DomainError):
    """The bytes are not a usable image (bad base64, not an image, truncated, too big)."""


class NoFaceDetected(DomainError):
    def __init__(self, **extra: Any) -> None:
        super().__init__("no_face_detected", 422, **extra)


class NotFound(DomainError):
    status_code = 404


class Forbidden(DomainError):
    status_code = 403


class Unavailable(DomainError):
    status_code = 503
