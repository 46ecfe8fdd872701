"""Domain errors carry a stable machine-readable code and a human message."""

from __future__ import annotations


class DomainError(Exception):
    """An error that is safe to show to a client: a code and a message, no internals."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class PresenceUnavailable(DomainError):
    """The shared presence backend (Redis) cannot be reached: what needs it is degraded."""

    def __init__(self, message: str = "presence is unavailable; try again shortly") -> None:
        super().__init__("presence_unavailable", message)
