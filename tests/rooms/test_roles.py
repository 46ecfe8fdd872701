"""Every role's grants, as the issue states them."""

from __future__ import annotations

import pytest

from orbridge.rooms.roles import DEFAULT_GRANTS, Grant, Role, ceiling, resolve_grants

G = Grant
EXPECTED = {
    Role.SURGEON: {
        G.PUBLISH_VIDEO, G.PUBLISH_AUDIO, G.PUBLISH_VITALS, G.SUBSCRIBE_AUDIO,
        G.SUBSCRIBE_ANNOTATIONS,
    },
    Role.EXPERT: {
        G.SUBSCRIBE_VIDEO, G.SUBSCRIBE_AUDIO, G.SUBSCRIBE_VITALS, G.SUBSCRIBE_ANNOTATIONS,
        G.PUBLISH_AUDIO, G.ANNOTATE, G.VIEW_RECORDINGS,
    },
    Role.TRAINEE: {
        G.SUBSCRIBE_VIDEO, G.SUBSCRIBE_AUDIO, G.SUBSCRIBE_VITALS, G.SUBSCRIBE_ANNOTATIONS,
        G.VIEW_RECORDINGS,
    },
    Role.DEVICE: {G.PUBLISH_VITALS},
    Role.MODERATOR: set(Grant),
}  # fmt: skip


@pytest.mark.parametrize("role", list(Role))
def test_default_grants(role: Role) -> None:
    assert set(DEFAULT_GRANTS[role]) == EXPECTED[role]


def test_trainee_can_neither_publish_nor_annotate() -> None:
    forbidden = {G.PUBLISH_VIDEO, G.PUBLISH_AUDIO, G.PUBLISH_VITALS, G.ANNOTATE, G.RECORD}
    assert not ceiling(Role.TRAINEE) & forbidden


def test_only_moderators_record_and_remove() -> None:
    for role in Role:
        has = {G.RECORD, G.REMOVE_PARTICIPANTS} <= ceiling(role)
        assert has == (role is Role.MODERATOR)


def test_expert_camera_is_optional() -> None:
    assert G.PUBLISH_VIDEO not in DEFAULT_GRANTS[Role.EXPERT]
    assert G.PUBLISH_VIDEO in resolve_grants(Role.EXPERT, {G.PUBLISH_VIDEO})
    with pytest.raises(ValueError):
        resolve_grants(Role.DEVICE, {G.SUBSCRIBE_VIDEO})


def test_recordings_are_for_trainees_experts_and_moderators() -> None:
    for role in (Role.TRAINEE, Role.EXPERT, Role.MODERATOR):
        assert G.VIEW_RECORDINGS in DEFAULT_GRANTS[role]
    # A surgeon may be given them; a device never.
    assert G.VIEW_RECORDINGS not in DEFAULT_GRANTS[Role.SURGEON]
    assert G.VIEW_RECORDINGS in resolve_grants(Role.SURGEON, {G.VIEW_RECORDINGS})
    assert G.VIEW_RECORDINGS not in ceiling(Role.DEVICE)
