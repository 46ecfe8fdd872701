"""JSON request bodies, bounded in size and in nesting before they are parsed.

Python's json parser recurses per nesting level: a body of 100,000 `[` raises RecursionError
(and deep structures cost the validators too). The nesting is counted on the raw text first,
outside strings, so a hostile body is refused in one linear pass.
"""

from __future__ import annotations

import json
from typing import Any

from orbridge.rooms.errors import DomainError

MAX_DEPTH = 32


def nesting_depth(text: str, limit: int = MAX_DEPTH) -> int:
    """The deepest nesting of JSON arrays and objects in `text`, counting stops past `limit`."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
        elif char in "]}":
            depth -= 1
    return deepest


def parse_json(raw: bytes, max_depth: int = MAX_DEPTH) -> Any:
    """The body's JSON value; DomainError `invalid_payload` (in our words) otherwise."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DomainError("invalid_payload", "the body is not UTF-8 text") from None
    if nesting_depth(text, max_depth) > max_depth:
        raise DomainError("invalid_payload", f"the body nests deeper than {max_depth} levels")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DomainError(
            "invalid_payload", f"the body is not JSON (line {exc.lineno} column {exc.colno})"
        ) from None
    except RecursionError:  # not reachable past the depth check; kept as a last guard
        raise DomainError("invalid_payload", "the body nests too deeply") from None
