"""Alarms on vitals numerics: per-room limits with hysteresis.

An alarm is raised when a value crosses its limit and cleared only once the value is back
beyond the limit by the hysteresis band, so a value hovering at the limit raises it once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from orbridge.rooms.errors import DomainError
from orbridge.rooms.vitals.model import NUMERICS, Numeric


@dataclass(frozen=True, slots=True)
class Limit:
    low: float | None = None
    high: float | None = None
    hysteresis: float = 0.0

    def public(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, "hysteresis": self.hysteresis}


# SpO2 < 90 %, heart rate < 50 or > 120 /min, systolic < 90 mmHg (the defaults)
DEFAULT_LIMITS: dict[str, Limit] = {
    "spo2": Limit(low=90, hysteresis=2),
    "hr": Limit(low=50, high=120, hysteresis=3),
    "nibp_sys": Limit(low=90, hysteresis=3),
}


@dataclass(frozen=True, slots=True)
class Alarm:
    id: str
    room: str
    kind: str
    condition: str  # low | high
    limit: float
    value: float
    raised_ms: int
    source: str

    def public(self) -> dict[str, Any]:
        k = NUMERICS[self.kind]
        return {
            "id": self.id, "room": self.room, "kind": self.kind, "label": k.label,
            "condition": self.condition, "limit": self.limit, "value": self.value,
            "unit": k.unit, "raised_ms": self.raised_ms, "source": self.source,
        }  # fmt: skip


def check_limits(raw: dict[str, Any]) -> dict[str, Limit]:
    """Validate limits a client sends: {kind: {low?, high?, hysteresis?}}."""
    limits: dict[str, Limit] = {}
    for key, spec in raw.items():
        kind = NUMERICS.get(key)
        if kind is None:
            raise DomainError("invalid_payload", f"limits: unknown vital {key!r}")
        low, high, band = spec.get("low"), spec.get("high"), spec.get("hysteresis", 0.0)
        for name, value in (("low", low), ("high", high)):
            if value is not None and not kind.low <= value <= kind.high:
                raise DomainError(
                    "invalid_payload", f"limits: {key}.{name} outside {kind.low}-{kind.high}"
                )
        if low is not None and high is not None and low >= high:
            raise DomainError("invalid_payload", f"limits: {key}.low must be below high")
        if not 0 <= band <= (kind.high - kind.low) / 4:
            raise DomainError("invalid_payload", f"limits: {key}.hysteresis out of range")
        limits[key] = Limit(low, high, band)
    return limits


class AlarmEngine:
    """The alarm state of one room."""

    def __init__(self, room: str, limits: dict[str, Limit] | None = None) -> None:
        self.room = room
        self.limits = dict(DEFAULT_LIMITS if limits is None else limits)
        self.active: dict[tuple[str, str], Alarm] = {}

    def set_limits(self, limits: dict[str, Limit]) -> None:
        self.limits.update(limits)

    def evaluate(self, numeric: Numeric) -> list[tuple[str, Alarm]]:
        """("raised" | "cleared", alarm) for what this value changes."""
        limit = self.limits.get(numeric.kind)
        if limit is None:
            return []
        changes: list[tuple[str, Alarm]] = []
        for condition, bound in (("low", limit.low), ("high", limit.high)):
            if bound is None:
                continue
            key = (numeric.kind, condition)
            active = self.active.get(key)
            beyond = numeric.value < bound if condition == "low" else numeric.value > bound
            back = (
                numeric.value >= bound + limit.hysteresis
                if condition == "low"
                else numeric.value <= bound - limit.hysteresis
            )
            if active is None and beyond:
                alarm = Alarm(
                    id=f"{self.room}:{numeric.kind}:{condition}:{numeric.time_ms}",
                    room=self.room, kind=numeric.kind, condition=condition, limit=bound,
                    value=numeric.value, raised_ms=numeric.time_ms, source=numeric.source,
                )  # fmt: skip
                self.active[key] = alarm
                changes.append(("raised", alarm))
            elif active is not None and back:
                del self.active[key]
                changes.append(("cleared", replace(active, value=numeric.value)))
        return changes
