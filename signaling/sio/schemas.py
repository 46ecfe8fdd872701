"""Schemas of the inbound Socket.IO payloads. Unknown fields are refused."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from orbridge.rooms.tokens import MAX_DISPLAY_NAME, NAME_RE, check_chosen_name
from orbridge.rooms.tracks import Source

MAX_ATTRIBUTES = 16
AttributeKey = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_.-]{0,31}$")]
AttributeValue = Annotated[str, StringConstraints(max_length=256)]
Identity = Annotated[str, StringConstraints(pattern=NAME_RE.pattern)]
DisplayName = Annotated[
    str,
    StringConstraints(max_length=4 * MAX_DISPLAY_NAME),  # bounded before the rules run
    AfterValidator(check_chosen_name),
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


MAX_BAN_S = 7 * 24 * 3600  # also "the rest of the consultation": bans end when the room closes


class RemoveParticipant(Message):
    identity: Identity
    reason: Annotated[str, StringConstraints(max_length=200)] = ""
    # seconds the identity may not rejoin; 0: no ban; absent: the rest of the consultation
    ban_s: Annotated[int, Field(ge=0, le=MAX_BAN_S)] | None = None


# media (issue #3) ------------------------------------------------------------------------
MAX_SDP = 48 * 1024
Sdp = Annotated[str, StringConstraints(min_length=10, max_length=MAX_SDP)]
Mid = Annotated[str, StringConstraints(min_length=1, max_length=32)]
TrackId = Annotated[str, StringConstraints(pattern=r"^TR_[0-9a-f]{12}$")]


class TrackSource(Message):
    mid: Mid
    source: Source


class Publish(Message):
    sdp: Sdp
    tracks: Annotated[list[TrackSource], Field(max_length=8)] = Field(default_factory=list)

    @field_validator("tracks")
    @classmethod
    def _unique_mids(cls, tracks: list[TrackSource]) -> list[TrackSource]:
        if len({t.mid for t in tracks}) != len(tracks):
            raise ValueError("each mid may appear once")
        return tracks


class Unpublish(Message):
    track_ids: Annotated[list[TrackId], Field(max_length=8)] | None = None


class SubscriberAnswer(Message):
    sdp: Sdp


# vitals (issue #4) -----------------------------------------------------------------------
Kind = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]{1,16}$")]
DeviceId = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Number = Annotated[float, Field(allow_inf_nan=False)]


class NumericIn(Message):
    kind: Kind
    value: Number
    unit: Annotated[str, StringConstraints(max_length=32)] | None = None
    time_ms: Annotated[int, Field(ge=0, le=2**53)] | None = None


class WaveformIn(Message):
    kind: Kind
    start_ms: Annotated[float, Field(ge=0, le=2**53)]
    rate_hz: Annotated[float, Field(gt=0, le=10000)]
    seq: Annotated[int, Field(ge=0, le=2**53)]
    samples: Annotated[list[Number], Field(min_length=1, max_length=2000)]
    unit: Annotated[str, StringConstraints(max_length=32)] | None = None


class PublishVitals(Message):
    source: DeviceId | None = None
    numerics: Annotated[list[NumericIn], Field(max_length=32)] = Field(default_factory=list)
    waveforms: Annotated[list[WaveformIn], Field(max_length=8)] = Field(default_factory=list)


class LimitIn(Message):
    low: Number | None = None
    high: Number | None = None
    hysteresis: Annotated[float, Field(ge=0)] = 0.0


class AlarmLimits(Message):
    limits: Annotated[dict[Kind, LimitIn], Field(min_length=1, max_length=16)]


# annotations (issue #5) ------------------------------------------------------------------
Unit = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class FrameRef(Message):
    rtp_timestamp: Annotated[int, Field(ge=0, le=2**32 - 1)]
    media_time: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None


class Annotate(Message):
    type: Literal["arrow", "circle", "stroke", "text", "pointer"]
    track_id: TrackId
    points: Annotated[list[Annotated[list[Unit], Field(min_length=2, max_length=2)]],
                      Field(min_length=1, max_length=2000)]  # fmt: skip
    text: Annotated[str, StringConstraints(max_length=200)] = ""
    width: Annotated[float, Field(ge=0.002, le=0.05)] = 0.006
    frame: FrameRef | None = None
    frozen: bool = False
    client_id: Annotated[str, StringConstraints(max_length=64)] = ""
    sent_ms: Annotated[int, Field(ge=0, le=2**53)] | None = None


class AnnotationClear(Message):
    scope: Literal["own", "all"] = "own"


Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=40)]
ShortText = Annotated[str, StringConstraints(strip_whitespace=True, max_length=120)]


class StartRecording(Message):
    consent: Literal["written", "verbal", "pending", "not_required"]
    consent_note: Annotated[str, StringConstraints(max_length=500)] = ""
    procedure: ShortText = ""
    hospital: ShortText = ""
    tags: Annotated[list[Tag], Field(max_length=16)] = Field(default_factory=list)


class MarkChapter(Message):
    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=120)]
