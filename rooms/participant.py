"""A participant as presence records it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from orbridge.rooms.roles import Grant, Role


@dataclass(frozen=True, slots=True)
class Participant:
    room: str
    identity: str
    name: str
    role: Role
    grants: frozenset[Grant]
    node: str
    sid: str
    joined_at: int  # ms since the epoch, on the node that accepted the join
    state: str = "connected"  # connected | reconnecting
    transport: str = "unknown"  # websocket | polling
    quality: str = "unknown"  # reported by the client: good | fair | poor | unknown
    attributes: dict[str, str] = field(default_factory=dict)
    token_id: str = ""  # the jti of the session's latest token (never shown to others)
    token_chain: str = ""  # the jti its session started with: revoked on removal

    def public(self) -> dict[str, Any]:
        """What other participants and the HTTP API see (no connection ids)."""
        return {
            "identity": self.identity,
            "name": self.name,
            "role": self.role.value,
            "grants": sorted(g.value for g in self.grants),
            "node": self.node,
            "state": self.state,
            "transport": self.transport,
            "quality": self.quality,
            "joined_at": self.joined_at,
            "attributes": dict(self.attributes),
        }

    def with_changes(self, **changes: Any) -> Participant:
        return replace(self, **changes)

    def to_json(self) -> str:
        data = asdict(self)
        data["role"] = self.role.value
        data["grants"] = sorted(g.value for g in self.grants)
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> Participant:
        data = json.loads(raw)
        data["role"] = Role(data["role"])
        data["grants"] = frozenset(Grant(g) for g in data["grants"])
        return cls(**data)
