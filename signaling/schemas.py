"""Schemas of the inbound Socket.IO payloads. Unknown fields are refused."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from signaling.tokens import MAX_DISPLAY_NAME, NAME_RE

MAX_ATTRIBUTES = 16
AttributeKey = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_.-]{0,31}$")]
AttributeValue = Annotated[str, StringConstraints(max_length=256)]
Identity = Annotated[str, StringConstraints(pattern=NAME_RE.pattern)]
DisplayName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_DISPLAY_NAME)
]
Quality = Literal["good", "fair", "poor", "unknown"]


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _bounded(attributes: dict[str, str] | None) -> dict[str, str] | None:
    if attributes is not None and len(attributes) > MAX_ATTRIBUTES:
        raise ValueError(f"at most {MAX_ATTRIBUTES} attributes")
    return attributes


class Empty(Message):
    pass


class Join(Message):
    quality: Quality = "unknown"
    attributes: dict[AttributeKey, AttributeValue] = Field(default_factory=dict)

    _check = field_validator("attributes")(_bounded)


class Update(Message):
    name: DisplayName | None = None
    quality: Quality | None = None
    attributes: dict[AttributeKey, AttributeValue] | None = None

    _check = field_validator("attributes")(_bounded)


class RemoveParticipant(Message):
    identity: Identity
    reason: Annotated[str, StringConstraints(max_length=200)] = ""
