"""The request bodies and query strings of the recordings API (signaling/web/recordings.py).

Pydantic models with their limits: :class:`LibraryQuery` (the search of
``GET /api/recordings``: text, tag, dates, paging, and which manifests match) and
:class:`RecordingPatch` / :class:`ConsentPatch` (``PATCH /api/recordings/{id}``: metadata and
consent only, printable text, applied to a manifest).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from orbridge.recording.manifest import CONSENT_STATES, Consent, Manifest

__all__ = ["ConsentPatch", "LibraryQuery", "RecordingPatch"]

MAX_TAGS = 16
MAX_TAG = 40
MAX_NOTE = 500
MAX_TEXT = 200  # procedure, hospital
DEFAULT_LIMIT = 50
MAX_LIMIT = 200

Day = Annotated[str, StringConstraints(pattern=r"^\d{4}-\d{2}-\d{2}$")]
Text = Annotated[str, StringConstraints(strip_whitespace=True, max_length=MAX_TEXT)]


class LibraryQuery(BaseModel):
    """The query string of ``GET /api/recordings`` (strings, converted; unknown keys ignored)."""

    model_config = ConfigDict(populate_by_name=True)

    q: Text = ""
    procedure: Text = ""
    hospital: Text = ""
    tag: Annotated[str, StringConstraints(strip_whitespace=True, max_length=MAX_TAG)] = ""
    date_from: Day | None = Field(None, alias="from")
    date_to: Day | None = Field(None, alias="to")
    tz: int = Field(0, ge=-14 * 60, le=14 * 60)  # minutes east of UTC of the dates
    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)
    offset: int = Field(0, ge=0, le=1_000_000)

    @field_validator("date_from", "date_to")
    @classmethod
    def _real_date(cls, value: str | None) -> str | None:
        if value is not None:
            date.fromisoformat(value)  # 2026-02-30: ValueError, a 400
        return value

    @model_validator(mode="after")
    def _ordered(self) -> LibraryQuery:
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise ValueError("'from' is after 'to'")
        return self

    def _day_ms(self, day: str) -> int:
        zone = timedelta(minutes=self.tz)
        start = datetime.combine(date.fromisoformat(day), datetime.min.time(), UTC) - zone
        return int(start.timestamp() * 1000)

    def matches(self, manifest: Manifest) -> bool:
        if self.q:
            needle = self.q.casefold()
            people = [p.name for p in manifest.participants]
            people += [p.identity for p in manifest.participants]
            fields = [manifest.procedure, manifest.hospital, manifest.room, *manifest.tags, *people]
            if not any(needle in f.casefold() for f in fields):
                return False
        if self.procedure and self.procedure.casefold() not in manifest.procedure.casefold():
            return False
        if self.hospital and self.hospital.casefold() not in manifest.hospital.casefold():
            return False
        if self.tag and self.tag.casefold() not in {t.casefold() for t in manifest.tags}:
            return False
        if self.date_from and manifest.started_ms < self._day_ms(self.date_from):
            return False
        day = 24 * 3600 * 1000
        return not (self.date_to and manifest.started_ms >= self._day_ms(self.date_to) + day)


Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TAG)]


def _printable(value: str) -> str:
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("control characters are not allowed")
    return value


class ConsentPatch(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    state: str
    note: Annotated[str, StringConstraints(strip_whitespace=True, max_length=MAX_NOTE)] = ""

    @field_validator("state")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in CONSENT_STATES:
            raise ValueError(f"must be one of {', '.join(CONSENT_STATES)}")
        return value

    @field_validator("note")
    @classmethod
    def _note(cls, value: str) -> str:
        return _printable(value.replace("\n", " "))


class RecordingPatch(BaseModel):
    """``PATCH /api/recordings/{id}``: metadata only, never media, tracks or times."""

    model_config = ConfigDict(extra="forbid", strict=True)

    procedure: Text | None = None
    hospital: Text | None = None
    tags: Annotated[list[Tag], Field(max_length=MAX_TAGS)] | None = None
    consent: ConsentPatch | None = None

    @field_validator("procedure", "hospital")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        return None if value is None else _printable(value)

    @field_validator("tags")
    @classmethod
    def _tags(cls, tags: list[str] | None) -> list[str] | None:
        if tags is None:
            return None
        return list(dict.fromkeys(_printable(t) for t in tags))

    @model_validator(mode="after")
    def _something(self) -> RecordingPatch:
        if not self.model_fields_set:
            raise ValueError("give at least one of procedure, hospital, tags, consent")
        for name in self.model_fields_set:
            if getattr(self, name) is None:
                raise ValueError(f"{name} may not be null")
        return self

    def apply(self, manifest: Manifest, by: str, now_ms: int) -> None:
        if self.procedure is not None:
            manifest.procedure = self.procedure
        if self.hospital is not None:
            manifest.hospital = self.hospital
        if self.tags is not None:
            manifest.tags = list(self.tags)
        if self.consent is not None:
            manifest.consent = Consent(self.consent.state, self.consent.note, now_ms, by)
