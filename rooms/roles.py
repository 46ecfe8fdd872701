"""Roles and the grants they carry.

A token names a role and a set of grants. The grants must lie within the role's
ceiling (its default grants plus the optional ones), so a token minted for a
trainee can never carry a publishing grant, whatever its author wrote.
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    SURGEON = "surgeon"
    EXPERT = "expert"
    TRAINEE = "trainee"
    DEVICE = "device"
    MODERATOR = "moderator"


class Grant(StrEnum):
    PUBLISH_VIDEO = "publish_video"
    PUBLISH_AUDIO = "publish_audio"
    PUBLISH_VITALS = "publish_vitals"
    SUBSCRIBE_VIDEO = "subscribe_video"
    SUBSCRIBE_AUDIO = "subscribe_audio"
    SUBSCRIBE_VITALS = "subscribe_vitals"
    SUBSCRIBE_ANNOTATIONS = "subscribe_annotations"
    ANNOTATE = "annotate"
    RECORD = "record"
    REMOVE_PARTICIPANTS = "remove_participants"
    CONFIGURE_ALARMS = "configure_alarms"
    CLEAR_ANNOTATIONS = "clear_annotations"
    VIEW_RECORDINGS = "view_recordings"  # the library and replay of the token's rooms
    END_CONSULTATION = "end_consultation"  # end the room's consultation for everyone


_SUBSCRIBE_ALL = frozenset(
    {
        Grant.SUBSCRIBE_VIDEO,
        Grant.SUBSCRIBE_AUDIO,
        Grant.SUBSCRIBE_VITALS,
        Grant.SUBSCRIBE_ANNOTATIONS,
    }
)

DEFAULT_GRANTS: dict[Role, frozenset[Grant]] = {
    Role.SURGEON: frozenset(
        {
            Grant.PUBLISH_VIDEO,
            Grant.PUBLISH_AUDIO,
            Grant.PUBLISH_VITALS,
            Grant.SUBSCRIBE_AUDIO,
            Grant.SUBSCRIBE_ANNOTATIONS,
        }
    ),
    Role.EXPERT: _SUBSCRIBE_ALL | {Grant.PUBLISH_AUDIO, Grant.ANNOTATE, Grant.VIEW_RECORDINGS},
    Role.TRAINEE: _SUBSCRIBE_ALL | {Grant.VIEW_RECORDINGS},
    Role.DEVICE: frozenset({Grant.PUBLISH_VITALS}),
    Role.MODERATOR: frozenset(Grant),
}

# Grants a token may add on top of the defaults: an expert may show a camera,
# a surgeon may be given the vitals and video of the room, and its recordings.
OPTIONAL_GRANTS: dict[Role, frozenset[Grant]] = {
    Role.SURGEON: frozenset(
        {
            Grant.SUBSCRIBE_VIDEO,
            Grant.SUBSCRIBE_VITALS,
            Grant.CONFIGURE_ALARMS,
            Grant.VIEW_RECORDINGS,
        }
    ),
    Role.EXPERT: frozenset({Grant.PUBLISH_VIDEO, Grant.CONFIGURE_ALARMS}),
    Role.TRAINEE: frozenset(),
    Role.DEVICE: frozenset(),
    Role.MODERATOR: frozenset(),
}


def ceiling(role: Role) -> frozenset[Grant]:
    """Every grant a token of this role may carry."""
    return DEFAULT_GRANTS[role] | OPTIONAL_GRANTS[role]


def resolve_grants(role: Role, extra: set[Grant] | None = None) -> frozenset[Grant]:
    """The defaults of a role plus optional extras; extras beyond the ceiling are refused."""
    extra = {Grant(g) for g in extra or ()}
    beyond = extra - ceiling(role)
    if beyond:
        names = ", ".join(sorted(beyond))
        raise ValueError(f"role {role.value} cannot be given {names}")
    return DEFAULT_GRANTS[role] | frozenset(extra)
