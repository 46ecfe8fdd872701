"""Signed join tokens: HS256 JWTs naming a room, an identity, a role and its grants.

A *library token* also carries a `library` claim (room globs): it opens the recordings of
those rooms (docs/library.md) and is refused for joining any room.
"""

from __future__ import annotations

import os
import re
import time
import unicodedata
import uuid
from dataclasses import dataclass
from urllib.parse import quote

import jwt

from orbridge.rooms.errors import DomainError
from orbridge.rooms.roles import Grant, Role, ceiling, resolve_grants

ISSUER = "orbridge"
ALGORITHM = "HS256"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
LIBRARY_GLOB_RE = re.compile(r"^[A-Za-z0-9*?][A-Za-z0-9._*?-]{0,63}$")
MAX_LIBRARY_GLOBS = 16
LIBRARY_ROOM = "library"  # the room claim of a library token (it joins no room)
MAX_DISPLAY_NAME = 80
MAX_TTL_S = 7 * 24 * 3600  # what `mint` accepts; a server also caps it (`max_token_ttl`)
DEFAULT_MAX_TTL_S = 24 * 3600
LEEWAY_S = 5
_TTL_RE = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_TTL_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True, slots=True)
class Claims:
    room: str
    identity: str
    name: str
    role: Role
    grants: frozenset[Grant]
    expires_at: int  # seconds since the epoch
    library: tuple[str, ...] = ()  # room globs of a library token; empty for a join token
    jti: str = ""  # this token's id
    chain: str = ""  # the id of the first token this one was refreshed from (itself if none)
    issued_at: int = 0

    @property
    def lifetime_s(self) -> int:
        return self.expires_at - self.issued_at

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) > self.expires_at + LEEWAY_S

    def allows(self, grant: Grant) -> bool:
        return grant in self.grants


def parse_ttl(text: str) -> int:
    """'90', '90s', '15m', '2h', '1d' -> seconds."""
    match = _TTL_RE.match(text)
    if not match:
        raise ValueError(f"cannot read TTL {text!r}: use e.g. 90s, 15m, 2h or 1d")
    seconds = int(match.group(1)) * _TTL_UNITS[match.group(2)]
    if not 0 < seconds <= MAX_TTL_S:
        raise ValueError(f"TTL must be between 1 s and {MAX_TTL_S // 86400} days")
    return seconds


def check_name(kind: str, value: str) -> str:
    if not NAME_RE.match(value):
        raise ValueError(
            f"{kind} {value!r} must be 1-64 characters of letters, digits, '.', '_' or '-'"
            " and start with a letter or digit"
        )
    return value


def check_library(globs: object) -> tuple[str, ...]:
    """1-16 room globs (fnmatch: `*`, `?`), each like a room name; ValueError otherwise."""
    if not isinstance(globs, list | tuple) or not 1 <= len(globs) <= MAX_LIBRARY_GLOBS:
        raise ValueError(f"library must list 1-{MAX_LIBRARY_GLOBS} room globs")
    for glob in globs:
        if not isinstance(glob, str) or not LIBRARY_GLOB_RE.match(glob):
            raise ValueError(
                f"library glob {glob!r} must be 1-64 characters of letters, digits, '.', '_',"
                " '-', '*' or '?'"
            )
    return tuple(dict.fromkeys(globs))


# Control, format (bidi overrides, zero-width), private-use, surrogate and line/paragraph
# separator characters: a name shown to a room must read as what it is.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cs", "Cn", "Zl", "Zp"})
_ROLE_WORDS = (
    "moderator", "surgeon", "expert", "trainee", "device", "admin", "administrator", "host",
    "主持人", "主持", "管理员", "外科医生", "主刀", "专家", "学员", "设备", "系统",
)  # fmt: skip
# ASCII and CJK (full-width, lenticular, tortoise-shell, corner, angle) brackets
_OPEN = "([{<\uff08\u3010\u3014\uff3b\uff5b\u3008\u300a\u300c\u300e"
_CLOSE = ")]}>\uff09\u3011\u3015\uff3d\uff5d\u3009\u300b\u300d\u300f"
_ROLE_IN_BRACKETS = re.compile(
    f"[{re.escape(_OPEN)}]\\s*(?:{'|'.join(map(re.escape, _ROLE_WORDS))})\\s*[{re.escape(_CLOSE)}]",
    re.IGNORECASE,
)


def check_display_name(value: str) -> str:
    """1-80 visible characters, NFC, single spaces; ValueError otherwise."""
    value = " ".join(unicodedata.normalize("NFC", value).split())
    if not value or len(value) > MAX_DISPLAY_NAME:
        raise ValueError(f"display name must be 1-{MAX_DISPLAY_NAME} characters")
    if any(unicodedata.category(c) in _HIDDEN_CATEGORIES for c in value):
        raise ValueError("display name must not contain control, format or invisible characters")
    return value


def check_chosen_name(value: str) -> str:
    """A name a participant gives itself (`update`): also no role in brackets, which would
    pass for a label the server adds ("Prof. Li (moderator)")."""
    value = check_display_name(value)
    if _ROLE_IN_BRACKETS.search(value):
        raise ValueError("display name must not name a role in brackets")
    return value


def mint(
    secret: str,
    room: str,
    role: Role,
    name: str,
    identity: str | None = None,
    ttl_s: int = 2 * 3600,
    extra_grants: set[Grant] | None = None,
    now: float | None = None,
    library: list[str] | tuple[str, ...] | None = None,
) -> str:
    """A join token for `room`; with `library` (room globs), a library token instead.

    A library token carries the role (a moderator's sees pending consent) but only the
    `view_recordings` grant: it is for the recordings API, never for a live room.
    """
    check_name("room", room)
    identity = check_name("identity", identity or f"{role.value}-{uuid.uuid4().hex[:8]}")
    name = check_display_name(name)
    if library is not None:
        globs = check_library(library)
        if set(extra_grants or ()) - {Grant.VIEW_RECORDINGS}:
            raise ValueError("a library token carries only the view_recordings grant")
        grants = resolve_grants(role, {Grant.VIEW_RECORDINGS}) & {Grant.VIEW_RECORDINGS}
    else:
        grants = resolve_grants(role, extra_grants)
    issued = int(now if now is not None else time.time())
    payload = {
        "iss": ISSUER,
        "sub": identity,
        "room": room,
        "name": name,
        "role": role.value,
        "grants": sorted(g.value for g in grants),
        "iat": issued,
        "nbf": issued - 30,  # tolerate a little clock skew between minting host and server
        "exp": issued + ttl_s,
        "jti": uuid.uuid4().hex,
    }
    if library is not None:
        payload["library"] = list(globs)
    return jwt.encode(payload, secret, algorithm=ALGORITHM)


def refresh(secret: str, claims: Claims, max_ttl_s: int = DEFAULT_MAX_TTL_S,
            now: float | None = None) -> str:  # fmt: skip
    """A new token with the same claims, a fresh expiry (the old one's lifetime, within
    `max_ttl_s`), a new id, and the same chain: a refreshed token is traceable to (and revoked
    with) the token its session started with."""
    issued = int(now if now is not None else time.time())
    ttl = max(1, min(claims.lifetime_s, max_ttl_s))
    payload: dict[str, object] = {
        "iss": ISSUER,
        "sub": claims.identity,
        "room": claims.room,
        "name": claims.name,
        "role": claims.role.value,
        "grants": sorted(g.value for g in claims.grants),  # exactly these, never the role's
        "iat": issued,
        "nbf": issued - 30,
        "exp": issued + ttl,
        "jti": uuid.uuid4().hex,
        "chain": claims.chain or claims.jti,
    }
    if claims.library:
        payload["library"] = list(claims.library)
    return jwt.encode(payload, secret, algorithm=ALGORITHM)


def verify(secret: str, token: object, room: str | None = None,
           max_ttl_s: int | None = DEFAULT_MAX_TTL_S) -> Claims:  # fmt: skip
    """Check signature, expiry, issuer, lifetime and claims; raise DomainError with a code.

    With `room` (joining it), a library token is refused: it opens recordings only. A token
    whose lifetime (`exp - iat`) is over `max_ttl_s` is refused whoever signed it."""
    if not isinstance(token, str) or not token:
        raise DomainError("token_missing", "a join token is required")
    if len(token) > 4096:
        raise DomainError("token_invalid", "the token is too long")
    try:
        payload = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "iss"]},
            leeway=LEEWAY_S,
        )
    except jwt.ExpiredSignatureError as exc:
        raise DomainError("token_expired", "the token has expired; ask for a new one") from exc
    except jwt.InvalidSignatureError as exc:
        raise DomainError("token_invalid", "the token's signature is not valid") from exc
    except jwt.PyJWTError as exc:
        raise DomainError("token_invalid", _jwt_reason(exc)) from exc
    try:
        claims_room = check_name("room", str(payload["room"]))
        identity = check_name("identity", str(payload["sub"]))
        name = check_display_name(str(payload["name"]))
        role = Role(payload["role"])
        grants = frozenset(Grant(g) for g in payload["grants"])
        library = check_library(payload["library"]) if "library" in payload else ()
        issued, expires = int(payload["iat"]), int(payload["exp"])
        jti = str(payload.get("jti") or "")
        chain = str(payload.get("chain") or jti)
        if len(jti) > 64 or len(chain) > 64:
            raise ValueError("jti")
    except (KeyError, ValueError, TypeError) as exc:
        field = exc.args[0] if isinstance(exc, KeyError) and exc.args else None
        what = f" ({field})" if isinstance(field, str) and field in _CLAIMS else ""
        raise DomainError("token_invalid", f"the token's claims are not valid{what}") from exc
    if max_ttl_s is not None and expires - issued > max_ttl_s + LEEWAY_S:
        raise DomainError(
            "token_invalid",
            f"the token lives longer than this server allows ({max_ttl_s // 3600} h at most)",
        )
    if not grants <= ceiling(role):
        raise DomainError("token_invalid", f"the token grants more than a {role.value} may have")
    if room is not None and library:
        raise DomainError("token_invalid", "a library token cannot join a room")
    if room is not None and room != claims_room:
        raise DomainError("token_wrong_room", f"this token is for another room, not {room!r}")
    return Claims(
        room=claims_room,
        identity=identity,
        name=name,
        role=role,
        grants=grants,
        expires_at=expires,
        library=library,
        jti=jti,
        chain=chain,
        issued_at=issued,
    )


def signed_subject(secret: str, token: object) -> dict[str, str] | None:
    """Who a refused token names (``identity``, ``role``, ``room``, ``jti``), if its signature
    holds, whatever else is wrong with it (expired, for another room, too long-lived); None
    when it is not ours. For the audit trail only: it admits no one."""
    if not isinstance(token, str) or not token or len(token) > 4096:
        return None
    try:
        payload = jwt.decode(token, secret, algorithms=[ALGORITHM],
                             options={"verify_exp": False, "verify_nbf": False,
                                      "verify_iat": False, "verify_iss": False})  # fmt: skip
    except jwt.PyJWTError:
        return None
    if not isinstance(payload, dict):
        return None
    names = {"identity": "sub", "role": "role", "room": "room", "jti": "jti"}
    return {mine: str(payload[theirs])[:64] for mine, theirs in names.items()
            if isinstance(payload.get(theirs), str)}  # fmt: skip


_CLAIMS = frozenset({"room", "sub", "name", "role", "grants", "library", "iat", "exp"})


def _jwt_reason(exc: Exception) -> str:
    # Our words for PyJWT's failures: its messages are not a protocol.
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "the token is not valid yet (check the clocks)"
    if isinstance(exc, jwt.InvalidIssuerError):
        return "the token was not issued by orbridge"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"the token lacks the {exc.claim!r} claim"
    if isinstance(exc, jwt.DecodeError):
        return "the token is not a well-formed JWT"
    return "the token is not valid"


def join_url(base_url: str, room: str, token: str) -> str:
    # The token travels in the fragment: browsers never send it, so no server logs it.
    return f"{base_url.rstrip('/')}/room/{quote(room)}#token={token}"


def library_url(base_url: str, token: str) -> str:
    """The library page with a library token (in the fragment, like a join link)."""
    return f"{base_url.rstrip('/')}/recordings#token={token}"


def cli_token(token: str | None, secret: str | None, room: str | None, role: Role, name: str,
              identity: str | None = None) -> str:  # fmt: skip
    """The token a CLI client connects with: the one given, or one minted with the secret
    (`--secret`, `--secret-file` or ORBRIDGE_SECRET). ValueError says what is missing or wrong."""
    if token:
        return token
    secret = secret or os.environ.get("ORBRIDGE_SECRET")
    if not room or not secret:
        raise ValueError(
            "give --token, or --room with ORBRIDGE_SECRET (or --secret-file) to mint one"
        )
    return mint(secret, room=room, role=role, name=name, identity=identity)
