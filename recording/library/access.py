"""Who may see and edit which recording (docs/library.md, "Access").

A caller is an API key (``None``: every recording) or a verified token's claims. A token sees
the recordings of the rooms in its scope (its room for a join token, its globs for a library
token) if it has the ``view_recordings`` grant; pending or withdrawn consent hides a recording
from everyone but the moderators of its room (and API keys).
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from orbridge.recording.manifest import Manifest
from orbridge.rooms.roles import Grant, Role
from orbridge.rooms.tokens import Claims

__all__ = ["in_scope", "may_edit", "may_view", "visible_recordings"]


def in_scope(claims: Claims, room: str) -> bool:
    """The room is the token's own, or matches a glob of a library token."""
    if claims.library:
        # A library token's room claim is a placeholder: only its globs count.
        return any(fnmatchcase(room, glob) for glob in claims.library)
    return claims.room == room


def may_view(claims: Claims | None, manifest: Manifest) -> bool:
    if claims is None:
        return True
    if not claims.allows(Grant.VIEW_RECORDINGS) or not in_scope(claims, manifest.room):
        return False
    return manifest.visible or claims.role is Role.MODERATOR


def may_edit(claims: Claims | None, manifest: Manifest) -> bool:
    """Metadata and consent: an API key, or a moderator of the recording's room."""
    if claims is None:
        return True
    return claims.role is Role.MODERATOR and may_view(claims, manifest)


def visible_recordings(claims: Claims | None, manifests: list[Manifest]) -> list[Manifest]:
    return [m for m in manifests if may_view(claims, m)]
